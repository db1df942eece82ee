"""Static activation ranges from calibration batches: min/max, percentile, MSE-optimal or KL (entropy) clipping.

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

CALIBRATION_METHODS = ("minmax", "percentile", "mse", "entropy")


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


def _entropy_range(hist: np.ndarray, edges: np.ndarray, steps: int = 24, levels: int = 256) -> tuple[float, float]:
    """KL (entropy) calibration, after TensorRT's, for an asymmetric range: among clipped ranges [a, b] (bin edges,
    shrinking each side towards 0, at least `levels` bins wide), the one whose quantized histogram Q is closest in
    KL(P || Q) to the reference P. P is the slice with the clipped tails folded into its edge bins; Q is the slice
    without them, merged into `levels` levels and spread back over each level's non-empty bins, so clipping mass
    costs KL and a range too narrow to merge bins does not win for free."""
    n = len(hist)
    lo0, hi0 = float(edges[0]), float(edges[-1])
    zero = int(np.clip(np.searchsorted(edges, 0.0), 0, n))
    fracs = np.linspace(1.0 / steps, 1.0, steps)
    starts = sorted({int(round(zero - f * zero)) for f in fracs}) if lo0 < 0 else [0]
    ends = sorted({int(round(zero + f * (n - zero))) for f in fracs}) if hi0 > 0 else [n]
    best, best_kl = (lo0, hi0), np.inf
    for i in starts:
        for j in ends:
            width = j - i
            if width < min(levels, n):
                continue
            sliced = hist[i:j].astype(np.float64)
            p = sliced.copy()
            p[0] += hist[:i].sum()
            p[-1] += hist[j:].sum()
            if sliced.sum() <= 0:
                continue
            level = np.minimum((np.arange(width) * levels) // width, levels - 1)
            nonzero = sliced > 0
            mass = np.bincount(level, weights=sliced, minlength=levels)
            count = np.bincount(level, weights=nonzero.astype(np.float64), minlength=levels)
            q = np.where(nonzero, mass[level] / np.maximum(count[level], 1), 0.0)
            ps, qs = p / p.sum(), q / q.sum()
            m = ps > 0
            kl = float(np.sum(ps[m] * np.log(ps[m] / np.maximum(qs[m], 1e-12))))
            if kl < best_kl:
                best, best_kl = (float(edges[i]), float(edges[j])), kl
    return best


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
        if method == "percentile":
            out[name] = _percentile_range(hist, edges, percentile)
        elif method == "entropy":
            out[name] = _entropy_range(hist, edges)
        else:
            out[name] = _mse_range(hist, edges)
    return out
