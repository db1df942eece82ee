"""Deterministic decoder-LLM text slices: the perplexity slice and the (disjoint) calibration samples.

Perplexity slice (docs/llm.md): the last 400 Wikipedia articles by sorted title (``assets.slice_titles(
"perplexity")``), joined with "\\n\\n", tokenized without special tokens, first 8,192 tokens, scored in
non-overlapping 1,024-token windows (each window predicts its tokens 2..1024 from the ones before).
Calibration samples: random ``seqlen``-token windows (seeded numpy generator) of the calibration slice
(``assets.slice_titles("calibration")``: the first 2,000 articles by sorted title that are in neither the
perplexity slice nor the topic validation/test splits), so calibration never sees evaluation text.

Tokenizers: a ``transformers`` tokenizer or a ``tokenizers.Tokenizer``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import assets

__all__ = [
    "PERPLEXITY_TOKENS",
    "PERPLEXITY_WINDOW",
    "calibration_samples",
    "calibration_tokens",
    "encode",
    "perplexity_tokens",
    "torch_perplexity",
]

PERPLEXITY_TOKENS = 8192
PERPLEXITY_WINDOW = 1024
# tokenizing the whole calibration slice is slow; this many characters give ~250k tokens, plenty of windows
_CALIBRATION_CHARS = 1_200_000


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (BOS/EOS) for either tokenizer flavour."""
    if hasattr(tokenizer, "encode_batch") and not hasattr(tokenizer, "convert_tokens_to_ids"):
        return list(tokenizer.encode(text, add_special_tokens=False).ids)  # tokenizers.Tokenizer
    if callable(getattr(tokenizer, "encode", None)):
        return list(tokenizer.encode(text, add_special_tokens=False))
    raise TypeError(f"unsupported tokenizer type {type(tokenizer).__name__} (need transformers or tokenizers)")


def perplexity_tokens(tokenizer: Any, n_tokens: int = PERPLEXITY_TOKENS) -> np.ndarray:
    """int64 [n_tokens]: the first ``n_tokens`` tokens of the perplexity slice."""
    ids = encode(tokenizer, assets.text_slice("perplexity", max_chars=n_tokens * 8))
    if len(ids) < n_tokens:
        ids = encode(tokenizer, assets.text_slice("perplexity"))
    if len(ids) < n_tokens:
        raise ValueError(f"the perplexity slice has only {len(ids)} tokens, asked for {n_tokens}")
    return np.asarray(ids[:n_tokens], dtype=np.int64)


def calibration_tokens(tokenizer: Any) -> np.ndarray:
    """int64: the tokenized calibration slice (cut to ~1.2M characters)."""
    return np.asarray(encode(tokenizer, assets.text_slice("calibration", max_chars=_CALIBRATION_CHARS)), np.int64)


def calibration_samples(tokenizer: Any, n: int, seqlen: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` int64 [seqlen] windows drawn uniformly (seeded) from the calibration slice."""
    if n <= 0 or seqlen <= 1:
        raise ValueError(f"need n >= 1 and seqlen >= 2, got n={n}, seqlen={seqlen}")
    ids = calibration_tokens(tokenizer)
    if len(ids) <= seqlen:
        raise ValueError(f"calibration slice has {len(ids)} tokens, fewer than seqlen {seqlen}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - seqlen, size=n)
    return [ids[s:s + seqlen].copy() for s in starts]


def torch_perplexity(model: Any, tokens: np.ndarray, window: int = PERPLEXITY_WINDOW, batch_size: int = 4) -> float:
    """exp(mean next-token NLL) of a torch causal LM over non-overlapping ``window``-token windows.

    Full windows run ``batch_size`` at a time (same result as one by one); a trailing partial window
    (shorter than ``window``) is scored too if it has at least 2 tokens.
    """
    import torch

    tokens = np.asarray(tokens, dtype=np.int64).ravel()
    if tokens.size < 2:
        raise ValueError("need at least 2 tokens")
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    device = next(model.parameters()).device
    full = tokens.size // window
    chunks = [tokens[i * window:(i + 1) * window] for i in range(full)]
    batches = [np.stack(chunks[i:i + batch_size]) for i in range(0, full, max(1, batch_size))]
    if tokens.size - full * window >= 2:
        batches.append(tokens[full * window:][None])
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            ids = torch.from_numpy(batch).to(device)
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                    reduction="sum")
            total += float(nll)
            count += ids[:, 1:].numel()
    return float(np.exp(total / count))
