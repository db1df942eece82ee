"""Static activation ranges from calibration batches: min/max, percentile, or MSE-optimal clipping.

The float engine observes every Linear input (a min/max pass); for "percentile" and "mse" a second pass builds a
histogram of each input over its observed range, and the range is then clipped: at the given percentiles, or
where the expected squared error of asymmetric u8 quantization (rounding inside the range plus clipping outside
it) is smallest. Clipping matters for inputs with long tails (GELU outputs, LayerNorm outlier channels), where a
min/max range spends most of the 256 levels on a few values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

CALIBRATION_METHODS = ("minmax", "percentile", "mse")


def _percentile_range(hist: np.ndarray, edges: np.ndarray, pct: float) -> tuple[float, float]:
    cdf = np.cumsum(hist) / max(hist.sum(), 1.0)
    tail = (100.0 - pct) / 100.0
    lo = edges[int(np.searchsorted(cdf, tail))]
    hi = edges[min(int(np.searchsorted(cdf, 1.0 - tail)) + 1, len(edges) - 1)]
    return float(lo), float(hi)


def _mse_range(hist: np.ndarray, edges: np.ndarray, steps: int = 48) -> tuple[float, float]:
    centers = (edges[:-1] + edges[1:]) / 2
    lo0, hi0 = min(float(edges[0]), 0.0), max(float(edges[-1]), 0.0)
    fracs = np.linspace(1.0 / steps, 1.0, steps)
    los = lo0 * fracs if lo0 < 0 else np.zeros(1)
    his = hi0 * fracs if hi0 > 0 else np.zeros(1)
    a = los[:, None, None]
    b = his[None, :, None]
    scale = np.maximum(b - a, 1e-12) / 255.0
    x = centers[None, None, :]
    err = np.where(x < a, (x - a) ** 2, np.where(x > b, (x - b) ** 2, scale**2 / 12.0))
    cost = (err * hist[None, None, :]).sum(-1)
    i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
    return float(los[i]), float(his[j])


def calibrate_ranges(engine: Any, batches: Iterable[Mapping[str, Any]], method: str = "minmax", *,
                     bins: int = 2048, percentile: float = 99.99) -> dict[str, tuple[float, float]]:
    """Per-Linear input ranges observed by a float engine on `batches`, clipped by `method`."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    batches = list(batches)
    ranges = engine.observe(batches)
    if method == "minmax" or not ranges:
        return ranges
    engine._native.set_histograms(ranges, bins)
    try:
        engine.observe(batches)
        hists = engine._native.histograms()
    finally:
        engine._native.set_histograms({}, 0)
    out = {}
    for name, (lo, hi) in ranges.items():
        hist = np.asarray(hists[name], np.float64)
        edges = np.linspace(lo, hi, len(hist) + 1)
        out[name] = _percentile_range(hist, edges, percentile) if method == "percentile" else _mse_range(hist, edges)
    return out
