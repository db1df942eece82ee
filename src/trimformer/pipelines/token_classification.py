"""token-classification (NER-style): a label per token, optionally aggregated into entity spans."""

from __future__ import annotations

from typing import Any

import numpy as np
from tokenizers import Encoding

from .base import Pipeline, as_list, softmax

AGGREGATIONS = ("none", "simple", "first", "average", "max")


def _tag(label: str) -> tuple[str, str]:
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


class TokenClassificationPipeline(Pipeline):
    """Per-token labels from a token-classification head, with character offsets into the input text.

    aggregation_strategy="none" (default): one {"entity", "score", "index", "word", "start", "end"} per
    non-special token. "simple": consecutive tokens with the same entity type (B-/I- prefixes understood)
    are merged into {"entity_group", "score" (mean), "word", "start", "end"}. "first" | "average" | "max": a
    label per word first (its first sub-token, the average of its sub-tokens' probabilities, or its most
    confident sub-token), then merged as "simple". Labels in ignore_labels (default ["O"]) are dropped.
    Inputs longer than max_length tokens are truncated.
    """

    task = "token-classification"

    def parameters(self) -> dict[str, Any]:
        return {"aggregation_strategy": "none", "ignore_labels": ("O",)}

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """Label the tokens of a string or of each string in a list."""
        opts = self._options(kwargs)
        strategy = opts["aggregation_strategy"] or "none"
        strategy = strategy.lower() if isinstance(strategy, str) else strategy
        if strategy not in AGGREGATIONS:
            raise ValueError(f"aggregation_strategy must be one of {AGGREGATIONS}, got {strategy!r}")
        texts, single = as_list(inputs)
        encs = self.encode(texts)
        outs = self.forward(encs, ("logits",))
        ignore = set(opts["ignore_labels"] or ())
        res = [self._postprocess(t, e, o["logits"], strategy, ignore)
               for t, e, o in zip(texts, encs, outs, strict=True)]
        return res[0] if single else res

    def _postprocess(self, text: str, enc: Encoding, logits: np.ndarray, strategy: str, ignore: set) -> list[dict]:
        probs = softmax(logits)
        names = self.engine.spec.id2label or {}
        labels = [names.get(i, f"LABEL_{i}") for i in range(probs.shape[-1])]
        toks = [t for t in range(len(probs)) if not enc.special_tokens_mask[t]]
        if strategy == "none":
            ents = []
            for t in toks:
                k = int(np.argmax(probs[t]))
                s, e = enc.offsets[t]
                ents.append({"entity": labels[k], "score": float(probs[t, k]), "index": t, "word": enc.tokens[t],
                             "start": s, "end": e})
            return [x for x in ents if x["entity"] not in ignore]
        if strategy == "simple":
            units = [(t, probs[t], [t]) for t in toks]
        else:
            words: list[list[int]] = []
            for t in toks:
                if words and enc.word_ids[t] is not None and enc.word_ids[t] == enc.word_ids[words[-1][-1]]:
                    words[-1].append(t)
                else:
                    words.append([t])
            units = []
            for w in words:
                if strategy == "first":
                    p = probs[w[0]]
                elif strategy == "average":
                    p = probs[w].mean(axis=0)
                else:
                    p = probs[w[int(np.argmax(probs[w].max(axis=1)))]]
                units.append((w[0], p, w))
        ents = []
        for _, p, span in units:
            k = int(np.argmax(p))
            ents.append({"entity": labels[k], "score": float(p[k]), "start": enc.offsets[span[0]][0],
                         "end": enc.offsets[span[-1]][1]})
        groups = self._group(text, ents)
        return [g for g in groups if g["entity_group"] not in ignore]

    @staticmethod
    def _group(text: str, ents: list[dict]) -> list[dict]:
        groups: list[list[dict]] = []
        for ent in ents:
            bi, tag = _tag(ent["entity"])
            if groups and bi != "B" and _tag(groups[-1][-1]["entity"])[1] == tag:
                groups[-1].append(ent)
            else:
                groups.append([ent])
        out = []
        for g in groups:
            start, end = g[0]["start"], g[-1]["end"]
            out.append({"entity_group": _tag(g[0]["entity"])[1], "score": float(np.mean([e["score"] for e in g])),
                        "word": text[start:end], "start": start, "end": end})
        return out
