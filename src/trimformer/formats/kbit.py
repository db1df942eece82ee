"""Grouped k-bit weight types: the numpy reference shared by the compressor, the packer and the kernels.

A grouped k-bit weight W [n, k] (Linear layout: out x in) is stored as

    codes   uint8   [n, k]       values in [0, 2**bits)
    scales  float32 [n, k // g]  one per group of g consecutive input features (g = k: per output channel)
    offsets float32 [n, k // g]  all zeros for symmetric / non-affine types

and dequantizes as ``W[i, j] = LUT[codes[i, j]] * scales[i, j // g] + offsets[i, j // g]``.

Scale rule (round-to-nearest), per group:
- symmetric types (``intB``, ``nf4``, ``fp4``, ``fp8-*``): ``scale = absmax / qmax`` where ``qmax`` is the
  largest magnitude representable with both signs (``KbitType.qmax``): 2^(B-1)-1 for ``intB`` (so int4 codes
  are -8..7 but round-to-nearest only reaches -7..7; the extra negative level is used by error-corrected
  solvers such as GPTQ), 1 for nf4, 6 for fp4, 448 for fp8-e4m3, 57344 for fp8-e5m2.
- affine types (``intB-asym``): LUT = 0..2^B-1, ``scale = (max - min) / (2^B - 1)``, ``offset = min``.
A group that is all zeros (or constant, for affine types) gets scale 0 and dequantizes exactly.
Codes are always the nearest LUT level given the group's parameters (ties resolved to the lower value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

__all__ = [
    "KBIT_TYPES",
    "KbitType",
    "dequantize",
    "get_kbit_type",
    "group_params",
    "quantize_rtn",
    "quantize_with_params",
    "resolve_group_size",
]


@dataclass(frozen=True)
class KbitType:
    name: str  # e.g. "int4", "int4-asym", "nf4", "fp8-e4m3"
    bits: int
    lut: np.ndarray = field(repr=False)  # float32 [2**bits]: code -> value
    affine: bool  # True: offsets used (asymmetric integer)
    # Sorted distinct representable values and, for each, the code that produces it (NaN/inf codes excluded).
    levels: np.ndarray = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    level_codes: np.ndarray = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    @property
    def qmax(self) -> float:
        """Largest magnitude representable with both signs (symmetric scale = absmax / qmax)."""
        if self.affine:
            return float(self.levels[-1])
        return float(min(-self.levels[0], self.levels[-1]))

    @property
    def uniform(self) -> bool:
        """Integer grids: the LUT is ``code + lut[0]`` (fast rounding path)."""
        return self.name.startswith("int")


def _make_type(name: str, bits: int, lut: np.ndarray, affine: bool, valid: np.ndarray | None = None) -> KbitType:
    lut = np.asarray(lut, dtype=np.float32)
    assert lut.shape == (1 << bits,), (name, lut.shape)
    codes = np.arange(lut.size) if valid is None else np.flatnonzero(valid)
    # first occurrence wins: +0 (code 0) over -0, the lowest code among duplicates
    values, first = np.unique(lut[codes], return_index=True)
    lut.setflags(write=False)
    level_codes = codes[first].astype(np.uint8)
    values = values.astype(np.float32)
    values.setflags(write=False)
    level_codes.setflags(write=False)
    return KbitType(name, bits, lut, affine, values, level_codes)


def _nf4_lut() -> np.ndarray:
    """The 16 NormalFloat levels (QLoRA): 8 positive and 7 negative normal quantiles plus an exact zero."""
    nd = NormalDist()
    offset = 0.9677083
    pos = [nd.inv_cdf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
    neg = [-nd.inv_cdf(p) for p in np.linspace(offset, 0.5, 8)[:-1]]
    v = np.sort(np.array(pos + [0.0] + neg, dtype=np.float64))
    return (v / np.abs(v).max()).astype(np.float32)


def _fp4_e2m1_lut() -> np.ndarray:
    mags = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)
    return np.concatenate([mags, -mags])  # code bit 3 is the sign


def _fp8_lut(exp_bits: int, man_bits: int, fn: bool) -> tuple[np.ndarray, np.ndarray]:
    """All 256 fp8 codes (sign, exponent, mantissa). ``fn``: only the all-ones code is NaN, no infinities
    (E4M3FN); otherwise IEEE-like (E5M2: the top exponent is inf/NaN). Invalid codes -> 0, valid=False."""
    bias = (1 << (exp_bits - 1)) - 1
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    man = codes & ((1 << man_bits) - 1)
    frac = man / float(1 << man_bits)
    value = np.where(exp == 0, frac * 2.0 ** (1 - bias), (1.0 + frac) * 2.0 ** (exp - bias))
    top = exp == (1 << exp_bits) - 1
    invalid = (top & (man == (1 << man_bits) - 1)) if fn else top
    value = np.where(invalid, 0.0, sign * value)
    return value.astype(np.float32), ~invalid


def _build_types() -> dict[str, KbitType]:
    types: dict[str, KbitType] = {}
    for bits in (2, 3, 4, 8):
        types[f"int{bits}"] = _make_type(f"int{bits}", bits, np.arange(1 << bits) - (1 << (bits - 1)), False)
        types[f"int{bits}-asym"] = _make_type(f"int{bits}-asym", bits, np.arange(1 << bits), True)
    types["nf4"] = _make_type("nf4", 4, _nf4_lut(), False)
    types["fp4"] = _make_type("fp4", 4, _fp4_e2m1_lut(), False)
    lut, valid = _fp8_lut(4, 3, fn=True)
    types["fp8-e4m3"] = _make_type("fp8-e4m3", 8, lut, False, valid)
    lut, valid = _fp8_lut(5, 2, fn=False)
    types["fp8-e5m2"] = _make_type("fp8-e5m2", 8, lut, False, valid)
    return types


KBIT_TYPES: dict[str, KbitType] = _build_types()


def get_kbit_type(name: str) -> KbitType:
    """The k-bit type called ``name``; ValueError listing the known names otherwise."""
    try:
        return KBIT_TYPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown k-bit type {name!r}; known: {', '.join(KBIT_TYPES)}") from None


def resolve_group_size(k: int, group_size: int | None) -> int:
    """``None``, 0 or -1 mean one group per output channel (g = k). k must be a multiple of g."""
    g = k if group_size in (None, 0, -1) else int(group_size)
    if g <= 0:
        raise ValueError(f"group_size must be positive (or None/-1 for per-channel), got {group_size}")
    if k % g != 0:
        raise ValueError(f"in_features {k} is not a multiple of group_size {g}")
    return g


def _as_matrix(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight [out, in], got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weight contains NaN or inf")
    return w


def group_params(w: np.ndarray, type_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Round-to-nearest parameters of ONE group per row: w [n, g] -> (scales [n], offsets [n]).

    Used by ``quantize_rtn`` and by GPTQ, which computes a group's parameters from the error-updated weights
    when it reaches the group's first column.
    """
    t = get_kbit_type(type_name)
    w = np.asarray(w, dtype=np.float32)
    if t.affine:
        lo, hi = w.min(axis=-1), w.max(axis=-1)
        scale = (hi.astype(np.float64) - lo) / t.qmax
        return scale.astype(np.float32), lo.astype(np.float32)
    amax = np.abs(w).max(axis=-1).astype(np.float64)
    return (amax / t.qmax).astype(np.float32), np.zeros(amax.shape, np.float32)


def _nearest_codes(t: KbitType, x: np.ndarray) -> np.ndarray:
    """Codes of the LUT levels nearest to the normalised values x (ties -> lower level)."""
    if t.uniform:
        lo = float(t.levels[0])
        # ceil(x - 0.5) rounds halves down, matching the searchsorted path below
        q = np.clip(np.ceil(x - 0.5), lo, float(t.levels[-1]))
        return (q - lo).astype(np.uint8)
    levels = t.levels.astype(np.float64)
    mids = (levels[1:] + levels[:-1]) / 2.0
    idx = np.searchsorted(mids, x, side="left")  # x == mid goes to the lower level
    return t.level_codes[idx]


def quantize_with_params(
    w: np.ndarray, scales: np.ndarray, offsets: np.ndarray, type_name: str
) -> np.ndarray:
    """Codes [n, k] (uint8) of the nearest LUT values given per-group scales/offsets [n, k // g]."""
    t = get_kbit_type(type_name)
    w = _as_matrix(w)
    scales = np.asarray(scales, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.float32)
    if scales.ndim == 1:
        scales, offsets = scales[:, None], offsets.reshape(-1, 1)
    n, k = w.shape
    if scales.shape != offsets.shape or scales.shape[0] != n or scales.shape[1] == 0 or k % scales.shape[1]:
        raise ValueError(f"scales/offsets shape {scales.shape}/{offsets.shape} does not fit weight {w.shape}")
    g = k // scales.shape[1]
    s = np.repeat(scales, g, axis=1).astype(np.float64)
    o = np.repeat(offsets, g, axis=1).astype(np.float64)
    safe = np.where(s > 0, s, 1.0)
    x = np.where(s > 0, (w - o) / safe, 0.0)  # zero-scale groups: every value is the offset (or 0)
    return _nearest_codes(t, x)


def quantize_rtn(
    w: np.ndarray, type_name: str, group_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-to-nearest grouped quantization: returns (codes uint8 [n,k], scales f32 [n,k//g], offsets)."""
    get_kbit_type(type_name)
    w = _as_matrix(w)
    n, k = w.shape
    g = resolve_group_size(k, group_size)
    scales, offsets = group_params(w.reshape(n, k // g, g), type_name)
    codes = quantize_with_params(w, scales, offsets, type_name)
    return codes, scales, offsets


def dequantize(codes: np.ndarray, scales: np.ndarray, offsets: np.ndarray, type_name: str) -> np.ndarray:
    """float32 [n, k]: ``LUT[codes] * scales[:, j // g] + offsets[:, j // g]``."""
    t = get_kbit_type(type_name)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [n, k], got shape {codes.shape}")
    if codes.size and int(codes.max()) >= (1 << t.bits):
        raise ValueError(f"codes out of range for {t.name} ({t.bits} bits): max {int(codes.max())}")
    scales = np.asarray(scales, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.float32)
    n, k = codes.shape
    if scales.shape != offsets.shape or scales.ndim != 2 or scales.shape[0] != n or k % max(scales.shape[1], 1):
        raise ValueError(f"scales/offsets shape {scales.shape}/{offsets.shape} does not fit codes {codes.shape}")
    g = k // scales.shape[1]
    vals = t.lut[codes.astype(np.intp)]
    return (vals * np.repeat(scales, g, axis=1) + np.repeat(offsets, g, axis=1)).astype(np.float32)
