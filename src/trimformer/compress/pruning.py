"""Magnitude pruning of Hugging Face encoders (PyTorch side) in the patterns the runtime's kernels execute."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..formats.sparsity import PATTERNS, magnitude_mask

# Linear layers inside the encoder blocks (BERT/RoBERTa "encoder.layer", DistilBERT "transformer.layer"); heads,
# poolers and embeddings are left dense.
_ENCODER_SCOPES = ("encoder.layer.", "transformer.layer.")


def encoder_linears(model: Any) -> dict[str, Any]:
    """Qualified name -> nn.Linear for every Linear inside the encoder blocks of `model`."""
    import torch

    return {name: mod for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and any(s in name for s in _ENCODER_SCOPES)}


def prune_magnitude(model: Any, sparsity: float | dict[str, float], pattern: str = "unstructured") -> dict[str, float]:
    """Zero the smallest-magnitude weights of every encoder Linear in place, layer by layer.

    sparsity: one target for every layer, or {qualified layer name: target} (layers not named are left alone).
    pattern: "unstructured", "block" (4x4 blocks: the block-sparse INT8 kernel's layout), "2:4" or "4:8".
    Returns the achieved sparsity per layer.
    """
    import torch

    if pattern not in PATTERNS:
        raise ValueError(f"unknown sparsity pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    layers = encoder_linears(model)
    if not layers:
        raise ValueError("no encoder Linear layers found (supported: BERT, MiniLM, DistilBERT, RoBERTa)")
    targets = sparsity if isinstance(sparsity, dict) else {name: float(sparsity) for name in layers}
    unknown = set(targets) - set(layers)
    if unknown:
        raise ValueError(f"no such encoder Linear layers: {sorted(unknown)[:5]}")
    achieved = {}
    with torch.no_grad():
        for name, target in targets.items():
            lin = layers[name]
            w = lin.weight.detach().float().cpu().numpy()
            keep = magnitude_mask(w, target, pattern)
            lin.weight.mul_(torch.from_numpy(keep.astype(np.float32)).to(lin.weight.dtype))
            achieved[name] = float(1.0 - keep.mean())
    return achieved
