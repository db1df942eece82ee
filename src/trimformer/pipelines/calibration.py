"""Calibration batches for int8-static: real Wikipedia sentences (the calibration slice), tokenized."""

from __future__ import annotations

import re

import numpy as np
from tokenizers import Tokenizer

_FALLBACK_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def calibration_sentences(n: int, min_words: int = 5, max_words: int = 60) -> list[str]:
    """The first `n` sentences of `assets.text_slice("calibration")` (disjoint from every evaluation split).

    Deterministic: the slice is in sorted-title order and sentences are taken in order.
    """
    from .. import assets

    split = getattr(assets, "_sentences", None) or (lambda t: [s.strip() for s in _FALLBACK_SPLIT.split(t)])
    out: list[str] = []
    for paragraph in assets.text_slice("calibration").split("\n\n"):
        for s in split(paragraph):
            if min_words <= len(s.split()) <= max_words:
                out.append(s)
                if len(out) >= n:
                    return out
    if not out:
        raise ValueError("the calibration slice yielded no sentences")
    return out


def tokenize_batches(tokenizer: Tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 128,
                     pad_id: int | None = None, with_token_types: bool = True) -> list[dict[str, np.ndarray]]:
    """Tokenize texts into padded numpy batches `{"input_ids", "attention_mask", "token_type_ids"}` (in order)."""
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_padding()
    tok.enable_truncation(max_length)
    if pad_id is None:
        pad = tokenizer.padding
        pad_id = pad["pad_id"] if pad else next(
            (i for t in ("[PAD]", "<pad>") if (i := tok.token_to_id(t)) is not None), 0)
    batches = []
    for start in range(0, len(texts), batch_size):
        encs = tok.encode_batch(texts[start:start + batch_size])
        width = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), width), pad_id, np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for r, e in enumerate(encs):
            ids[r, : len(e.ids)] = e.ids
            mask[r, : len(e.ids)] = 1
            types[r, : len(e.ids)] = e.type_ids
        b = {"input_ids": ids, "attention_mask": mask}
        if with_token_types:
            b["token_type_ids"] = types
        batches.append(b)
    return batches


def calibration_batches(tokenizer: Tokenizer, n_samples: int = 128, batch_size: int = 16,
                        max_length: int = 128) -> list[dict[str, np.ndarray]]:
    """`n_samples` calibration sentences tokenized into padded batches for `trimformer.compile(calibration=...)`."""
    if n_samples < 1:
        raise ValueError(f"calibration needs at least 1 sample, got {n_samples}")
    return tokenize_batches(tokenizer, calibration_sentences(n_samples), batch_size, max_length)

