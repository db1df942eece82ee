"""feature-extraction (token embeddings, like Hugging Face) and sentence-embedding (pooled vectors)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Pipeline, as_list

POOLINGS = (None, "mean", "cls", "max")


def pool(hidden: np.ndarray, pooling: str) -> np.ndarray:
    """Pool one sequence's token embeddings [seq, hidden] (padding already removed) into [hidden]."""
    if pooling == "mean":
        return hidden.mean(axis=0, dtype=np.float64).astype(np.float32)
    if pooling == "cls":
        return np.array(hidden[0], dtype=np.float32)
    if pooling == "max":
        return hidden.max(axis=0).astype(np.float32)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32)


class FeatureExtractionPipeline(Pipeline):
    """Token embeddings per input (`[1, seq, hidden]`, nested lists like HF or numpy with return_tensors=True).

    With pooling="mean"|"cls"|"max" each input gives one vector instead (numpy [hidden]; a list of inputs gives
    [n, hidden]); normalize=True L2-normalizes it. Text pairs are given as (text, text_pair) tuples.
    """

    task = "feature-extraction"

    def parameters(self) -> dict[str, Any]:
        return {"pooling": None, "normalize": False, "return_tensors": False}

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """Embed a string, a (text, text_pair) tuple, or a list of them."""
        opts = self._options(kwargs)
        pooling, normalize = opts["pooling"], bool(opts["normalize"])
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if normalize and pooling is None:
            raise ValueError("normalize=True needs pooling='mean', 'cls' or 'max'")
        items, single = as_list(inputs, (str, tuple))
        outs = self.forward(self.encode(items), ("last_hidden_state",))
        hidden = [o["last_hidden_state"] for o in outs]
        if pooling is None:
            res = [h[None] if opts["return_tensors"] else h[None].tolist() for h in hidden]
            return res[0] if single else res
        hidden_size = self.engine.spec.hidden
        vecs = np.stack([pool(h, pooling) for h in hidden]) if hidden else np.zeros((0, hidden_size), np.float32)
        if normalize:
            vecs = l2_normalize(vecs)
        return vecs[0] if single else vecs


class SentenceEmbeddingPipeline(FeatureExtractionPipeline):
    """Sentence embeddings: mean-pooled over the tokens and L2-normalized (as sentence-transformers' MiniLM)."""

    task = "sentence-embedding"

    def parameters(self) -> dict[str, Any]:
        return {"pooling": "mean", "normalize": True, "return_tensors": True}
