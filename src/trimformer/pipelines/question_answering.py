"""question-answering: extractive answers with character offsets; long contexts are split into strided windows."""

from __future__ import annotations

from typing import Any

import numpy as np
from tokenizers import Encoding

from .base import Pipeline, softmax


class QuestionAnsweringPipeline(Pipeline):
    """Extractive QA mirroring Hugging Face's pipeline: `qa(question=..., context=...)`.

    Returns {"score", "start", "end", "answer"} (character offsets into the context), or a list of the top_k
    best for top_k > 1; lists of questions/contexts give a list of results. A context longer than max_length
    tokens is split into overlapping windows (doc_stride tokens of overlap); the best span over all windows
    wins. Scores are softmax(start) * softmax(end) within a window, spans at most max_answer_len tokens.
    align_to_words=True widens the answer to whole words; handle_impossible_answer=True allows "" (the CLS
    token) as the answer.
    """

    task = "question-answering"

    def parameters(self) -> dict[str, Any]:
        return {"top_k": 1, "doc_stride": 128, "max_answer_len": 15, "handle_impossible_answer": False,
                "align_to_words": True}

    @staticmethod
    def _examples(args: tuple, question: Any, context: Any) -> tuple[list[tuple[str, str]], bool]:
        if args:
            if len(args) == 2 and question is None and context is None:
                question, context = args
            elif len(args) == 1 and question is None and context is None:
                x = args[0]
                xs = [x] if isinstance(x, dict) else list(x)
                if not all(isinstance(d, dict) and "question" in d and "context" in d for d in xs):
                    raise ValueError("question-answering inputs are dicts with 'question' and 'context' keys, or "
                                     "question=..., context=...")
                pairs = [(d["question"], d["context"]) for d in xs]
                return pairs, isinstance(x, dict)
            else:
                raise ValueError("pass question=..., context=... (or a {'question', 'context'} dict)")
        if question is None or context is None:
            raise ValueError("question-answering needs both question= and context=")
        single = isinstance(question, str) and isinstance(context, str)
        qs = [question] if isinstance(question, str) else list(question)
        cs = [context] if isinstance(context, str) else list(context)
        if len(qs) == 1 and len(cs) > 1:
            qs = qs * len(cs)
        elif len(cs) == 1 and len(qs) > 1:
            cs = cs * len(qs)
        if len(qs) != len(cs):
            raise ValueError(f"{len(qs)} questions for {len(cs)} contexts")
        return list(zip(qs, cs, strict=True)), single

    def __call__(self, *args: Any, question: Any = None, context: Any = None, **kwargs: Any) -> Any:
        """Answer `question` from `context` (strings, or lists of them)."""
        opts = self._options(kwargs)
        examples, single = self._examples(args, question, context)
        for q, c in examples:
            if not isinstance(q, str) or not isinstance(c, str):
                raise TypeError("question and context must be strings")
            if not q.strip():
                raise ValueError("question is empty")
        per_example = [self._windows(q, c, int(opts["doc_stride"])) for q, c in examples]
        windows: list[Encoding] = [w for ws in per_example for w in ws]
        outs = iter(self.forward(windows, ("start_logits", "end_logits")))
        results = []
        for (_, c), ws in zip(examples, per_example, strict=True):
            cands: list[dict] = []
            null_score = 1.0
            for w in ws:
                o = next(outs)
                found, null = self._spans(c, w, o["start_logits"], o["end_logits"], opts)
                cands += found
                null_score = min(null_score, null)
            if opts["handle_impossible_answer"]:
                cands.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
            top_k = max(1, int(opts["top_k"]))
            cands = sorted(cands, key=lambda a: a["score"], reverse=True)[:top_k]
            if not cands:
                cands = [{"score": 0.0, "start": 0, "end": 0, "answer": ""}]
            results.append(cands[0] if top_k == 1 else cands)
        return results[0] if single else results

    def _windows(self, question: str, context: str, doc_stride: int) -> list[Encoding]:
        tok = self.tokenizer
        q_len = len(tok.encode(question, add_special_tokens=False).ids)
        specials = tok.post_processor.num_special_tokens_to_add(True) if tok.post_processor is not None else 0
        room = self.max_length - q_len - specials
        if room < 2:
            raise ValueError(f"the question is {q_len} tokens: too long for max_length={self.max_length}")
        stride = max(0, min(doc_stride, room // 2))
        tok.enable_truncation(self.max_length, stride=stride, strategy="only_second")
        try:
            enc = tok.encode(question, context, add_special_tokens=True)
        finally:
            tok.enable_truncation(self.max_length)
        return [enc, *enc.overflowing]

    @staticmethod
    def _spans(context: str, w: Encoding, start: np.ndarray, end: np.ndarray, opts: dict) -> tuple[list, float]:
        seq = w.sequence_ids
        desired = np.array([s == 1 for s in seq])
        if w.special_tokens_mask and w.special_tokens_mask[0]:
            desired[0] = True  # the CLS token stays in the softmax (some models use it for "no answer")
        start = softmax(np.where(desired, start, -10000.0))
        end = softmax(np.where(desired, end, -10000.0))
        null = float(start[0] * end[0])
        start[0] = end[0] = 0.0
        cand = np.tril(np.triu(np.outer(start, end)), int(opts["max_answer_len"]) - 1)
        top_k = max(1, int(opts["top_k"]))
        flat = cand.ravel()
        order = np.argsort(-flat, kind="stable")[: top_k if top_k == 1 else top_k * 4]
        found = []
        for f in order:
            s, e = divmod(int(f), cand.shape[1])
            if not (seq[s] == 1 and seq[e] == 1) or flat[f] <= 0:
                continue
            if opts["align_to_words"] and w.word_ids[s] is not None and w.word_ids[e] is not None:
                c0 = w.word_to_chars(w.word_ids[s], 1)[0]
                c1 = w.word_to_chars(w.word_ids[e], 1)[1]
            else:
                c0, c1 = w.offsets[s][0], w.offsets[e][1]
            found.append({"score": float(flat[f]), "start": int(c0), "end": int(c1), "answer": context[c0:c1]})
            if len(found) >= top_k:
                break
        return found, null
