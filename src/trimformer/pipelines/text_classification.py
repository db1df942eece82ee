"""text-classification: sequence-classification heads, single texts or text pairs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Pipeline, softmax

_LEGACY = object()  # top_k not given: one {"label", "score"} per input, as Hugging Face does by default
FUNCTIONS = ("softmax", "sigmoid", "none")


class TextClassificationPipeline(Pipeline):
    """Labels and scores from a sequence-classification head (softmax over logits; spec.id2label names).

    Inputs: a string, a (text, text_pair) tuple, a {"text", "text_pair"} dict, or a list of them.
    Default (top_k not given): `[{"label", "score"}]` for a single input, one dict per input for a list.
    top_k=k (or None for all labels): a list of the k best dicts per input (a list of such lists for a list).
    function_to_apply: "softmax" (default; "sigmoid" for a single-logit head), "sigmoid" or "none".
    """

    task = "text-classification"

    def parameters(self) -> dict[str, Any]:
        return {"top_k": _LEGACY, "function_to_apply": None, "text_pair": None}

    def _labels(self, n: int) -> list[str]:
        names = self.engine.spec.id2label or {}
        return [names.get(i, f"LABEL_{i}") for i in range(n)]

    @staticmethod
    def _as_item(x: Any, pair: Any = None) -> str | tuple[str, str]:
        if isinstance(x, dict):
            if "text" not in x:
                raise ValueError("a dict input needs a 'text' key (and optionally 'text_pair')")
            pair = x.get("text_pair")
            x = x["text"]
        elif isinstance(x, (tuple, list)):
            if len(x) != 2:
                raise ValueError(f"a text pair must have 2 elements, got {len(x)}")
            x, pair = x
        if not isinstance(x, str) or (pair is not None and not isinstance(pair, str)):
            raise TypeError("inputs must be strings or text pairs of strings")
        return x if pair is None else (x, pair)

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """Classify a text, a text pair, or a list of them."""
        opts = self._options(kwargs)
        pair = opts["text_pair"]
        single = isinstance(inputs, (str, dict, tuple))
        if single:
            items = [self._as_item(inputs, pair)]
        else:
            raw = list(inputs)
            pairs = [None] * len(raw) if pair is None else list(pair) if not isinstance(pair, str) else [pair]
            if len(pairs) != len(raw):
                raise ValueError(f"text_pair has {len(pairs)} entries for {len(raw)} inputs")
            items = [self._as_item(x, p) for x, p in zip(raw, pairs, strict=True)]
        outs = self.forward(self.encode(items), ("logits",))
        top_k = opts["top_k"]
        results = [self._postprocess(o["logits"], opts["function_to_apply"], top_k) for o in outs]
        if top_k is _LEGACY:
            return [results[0]] if single else results
        return results[0] if single else results

    def _postprocess(self, logits: np.ndarray, fn: str | None, top_k: Any) -> Any:
        logits = np.asarray(logits, dtype=np.float64)
        fn = fn or ("sigmoid" if logits.shape[-1] == 1 else "softmax")
        if fn == "softmax":
            scores = softmax(logits)
        elif fn == "sigmoid":
            scores = 1.0 / (1.0 + np.exp(-logits))
        elif fn == "none":
            scores = logits
        else:
            raise ValueError(f"function_to_apply must be one of {FUNCTIONS}, got {fn!r}")
        labels = self._labels(len(scores))
        if top_k is _LEGACY:
            i = int(np.argmax(scores))
            return {"label": labels[i], "score": float(scores[i])}
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            if int(top_k) < 1:
                raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
            order = order[: int(top_k)]
        return [{"label": labels[i], "score": float(scores[i])} for i in order]
