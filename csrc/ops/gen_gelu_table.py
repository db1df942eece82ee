"""Writes csrc/ops/gelu_table.h: the piecewise-cubic table behind every GELU (erf) path.

    python csrc/ops/gen_gelu_table.py            # rewrites the header and prints the measured error

GELU(x) = x * Phi(x) = max(x, 0) - g(|x|) with g(a) = a * (1 - Phi(a)), a bounded bump (g <= 0.17) that decays to 0,
so an absolute error in g is the absolute error of GELU, whatever the size of x. g is tabulated as 32 cubics in a
(not in a local offset: g's Taylor terms are small, so the global form loses nothing in float32 and saves two ops)
over [0, AMAX], segment i centred on i / K with K = 31 / AMAX: the index is round(a * K), which one FMA with 2^23
leaves in the low mantissa bits, where vpermt2ps reads it. Beyond AMAX, g < 1.1e-7 and the last segment's value
stands in. Segment 0 has no constant term and a linear term of exactly 1/2, so GELU(0) = 0 and small inputs keep
their relative accuracy.
Each segment is a minimax fit (Lawson's iteratively reweighted least squares) on its interval widened by 2%, as
rounding of a * K may pick either neighbour at a boundary.

A second table serves the levels with 8-lane permutes (avx2, and the scalar level that must match its tails): 32
entries cost four vpermps and three blends per coefficient there (bench/results/gelu_table8_avx2_ab.md: FFN1, whose
GELU runs in the sparse kernel's epilogue, 7.14 ms per pass with them, 5.76 ms with this table). Instead g is 8 sextics in the local variable u = a * K8 - round(a * K8)
in [-0.5, 0.5] (a global a**6 would cancel badly in float32): one vpermps per coefficient, 21 ops where the 32-cubic
lookup took 37, and more accurate (the error is float32 rounding of max(x, 0) - g). Same index trick, and u is one
more FMA: u = a * K8 - (t - 2^23) with t = a * K8 + 2^23. The sextic is evaluated by Estrin's scheme (u^2, u^4 and pairs), three
FMA latencies deep where Horner's rule is six. The avx512 level keeps the 32 cubics: one vpermt2ps per
coefficient, 12 ops.
"""

from __future__ import annotations

from math import erfc, sqrt
from pathlib import Path

import numpy as np

SEGMENTS = 32
AMAX = 5.5
SEGMENTS8, DEGREE8 = 8, 6
HEADER = Path(__file__).with_name("gelu_table.h")


def _g(a: np.ndarray) -> np.ndarray:
    return a * 0.5 * np.vectorize(lambda t: erfc(t / sqrt(2)))(a)


def _minimax(x: np.ndarray, y: np.ndarray, degree: int, iters: int = 60) -> np.ndarray:
    return _minimax_basis(np.vander(x, degree + 1, increasing=True), y, iters)


def _minimax_basis(basis: np.ndarray, y: np.ndarray, iters: int = 60) -> np.ndarray:
    w = np.full(len(y), 1.0 / len(y))
    best = (np.inf, None)
    for _ in range(iters):
        c = np.linalg.lstsq(basis * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)[0]
        e = np.abs(basis @ c - y)
        if e.max() < best[0]:
            best = (e.max(), c)
        w = np.maximum(w * e / max((w * e).sum(), 1e-300), 1e-12)
    return best[1]


def fit() -> tuple[np.float32, np.float32, np.ndarray]:
    k = np.float32((SEGMENTS - 1) / AMAX)
    amax = np.float32((SEGMENTS - 1) / k)
    coef = np.zeros((4, SEGMENTS))
    for i in range(SEGMENTS):
        lo, hi = max(0.0, (i - 0.5) / k), min(float(amax), (i + 0.5) / k)
        pad = 0.02 * (hi - lo)
        x = np.linspace(max(lo - pad, 1e-6), min(hi + pad, float(amax)), 2000)
        if i == 0:
            # g(a) = a * r(a) with r(0) = 1/2 exactly: no constant term in g and a linear term of exactly 1/2, so
            # small inputs keep their relative accuracy (a free linear term left r 1.5e-6 off at 0, 3e-6 relative
            # for |x| << 1); the a^2 and a^3 terms are a minimax fit of g(a) - a/2
            coef[1, 0] = 0.5
            coef[2:, 0] = _minimax_basis(np.stack([x**2, x**3], axis=1), _g(x) - 0.5 * x)
        else:
            coef[:, i] = _minimax(x, _g(x), 3)
    return k, amax, coef.astype(np.float32)


def gelu(x: np.ndarray, k: np.float32, amax: np.float32, c: np.ndarray) -> np.ndarray:
    """The kernels' arithmetic in float32 (each FMA rounded once)."""
    def fma(a, b, d):
        return (a.astype(np.float64) * b + d).astype(np.float32)
    x = x.astype(np.float32)
    ac = np.minimum(np.abs(x), amax)
    i = fma(ac, k, np.float32(2.0**23)).view(np.int32) & (SEGMENTS - 1)
    p = fma(fma(fma(c[3][i], ac, c[2][i]), ac, c[1][i]), ac, c[0][i])
    return (np.maximum(x, np.float32(0)) - p).astype(np.float32)


def fit8() -> tuple[np.float32, np.float32, np.ndarray]:
    """The 8-segment table: coef[j, i] multiplies u**j in segment i, u = a * K8 - i."""
    k = np.float32((SEGMENTS8 - 1) / AMAX)
    amax = np.float32((SEGMENTS8 - 1) / k)
    coef = np.zeros((DEGREE8 + 1, SEGMENTS8))
    for i in range(SEGMENTS8):
        lo, hi = max(0.0, i - 0.5), min(SEGMENTS8 - 1.0, i + 0.5)  # in units of a * K8
        pad = 0.02 * (hi - lo)
        u = np.linspace(max(lo - pad, 1e-6 if i == 0 else -1.0), min(hi + pad, SEGMENTS8 - 1.0), 3000) - i
        a = (u + i) / float(k)
        if i == 0:  # g = u * r(u): no constant term, as in the 32-segment table
            coef[1:, 0] = _minimax(u, _g(a) / u, DEGREE8 - 1)
        else:
            coef[:, i] = _minimax(u, _g(a), DEGREE8)
    return k, amax, coef.astype(np.float32)


def gelu8(x: np.ndarray, k: np.float32, amax: np.float32, c: np.ndarray, fused: bool = True) -> np.ndarray:
    """The 8-segment form's arithmetic in float32: with FMA (avx2) or each product rounded (the scalar level)."""
    def fma(a, b, d):
        if fused:
            return (a.astype(np.float64) * b + d).astype(np.float32)
        return ((a * b).astype(np.float32) + d).astype(np.float32)
    x = x.astype(np.float32)
    ac = np.minimum(np.abs(x), amax)
    t = fma(ac, k, np.float32(2.0**23))
    i = t.view(np.int32) & (SEGMENTS8 - 1)
    u = fma(ac, k, -(t - np.float32(2.0**23)))
    assert DEGREE8 == 6, "Estrin's scheme below (gelu_erf8's order) is written for degree 6"
    u2 = (u * u).astype(np.float32)
    u4 = (u2 * u2).astype(np.float32)
    p01, p23 = fma(c[1][i], u, c[0][i]), fma(c[3][i], u, c[2][i])
    p46 = fma(c[6][i], u2, fma(c[5][i], u, c[4][i]))
    p = fma(p46, u4, fma(p23, u2, p01))
    return (np.maximum(x, np.float32(0)) - p).astype(np.float32)


def max_error(form, k: np.float32, amax: np.float32, c: np.ndarray, segments: int, **kw) -> tuple[float, float]:
    x = np.concatenate([np.linspace(-9, 9, 1_000_001), (np.arange(segments) + 0.5) / k,
                        -(np.arange(segments) + 0.5) / k]).astype(np.float32)
    ref = 0.5 * x.astype(np.float64) * np.vectorize(lambda t: erfc(-t / sqrt(2)))(x.astype(np.float64))
    err = np.abs(form(x, k, amax, c, **kw) - ref)
    return float(err.max()), float(x[err.argmax()])


def main() -> None:
    k, amax, c = fit()
    err, at = max_error(gelu, k, amax, c, SEGMENTS)
    k8, amax8, c8 = fit8()
    err8, at8 = max_error(gelu8, k8, amax8, c8, SEGMENTS8)
    err8s, _ = max_error(gelu8, k8, amax8, c8, SEGMENTS8, fused=False)
    def lit(v: float) -> str:
        t = f"{v:.9g}"
        return (t if any(ch in t for ch in ".en") else t + ".0") + "f"

    def row(cs: np.ndarray, j: int) -> str:
        vals = [lit(v) for v in cs[j]]
        return "    {" + ",\n     ".join(", ".join(vals[i:i + 6]) for i in range(0, len(vals), 6)) + "}"

    rows = ",\n".join(row(c, j) for j in range(4))
    rows8 = ",\n".join(row(c8, j) for j in range(DEGREE8 + 1))
    HEADER.write_text(f"""// GELU (erf) as max(x, 0) - g(|x|), g(a) = a * (1 - Phi(a)) tabulated as {SEGMENTS} cubics in a on [0, {AMAX}]:
// the avx512 level's table (rowops.inc's gelu_erf32, gelu_erf16 in epilogue_avx512.h); the avx2 and scalar levels
// read {SEGMENTS8} degree-{DEGREE8} polynomials in a local variable instead (gelu_erf8, below). Generated by gen_gelu_table.py
// (its docstring has the design). Max |error| vs the exact GELU: {err:.2g} (at x = {at:.3g}) with the {SEGMENTS} cubics,
// {err8:.2g} (at x = {at8:.3g}) with the {SEGMENTS8} polynomials ({err8s:.2g} without FMA, the scalar level).
#pragma once

namespace tf {{
constexpr float kGeluK = {k:.9g}f;     // segment index = round(min(|x|, kGeluAMax) * kGeluK)
constexpr float kGeluAMax = {amax:.9g}f;  // = 31 / kGeluK
// kGeluC[j][i]: coefficient of a^j in segment i
alignas(64) constexpr float kGeluC[4][{SEGMENTS}] = {{
{rows}}};

constexpr float kGelu8K = {k8:.9g}f;     // segment i = round(min(|x|, kGelu8AMax) * kGelu8K), u = |x| * kGelu8K - i
constexpr float kGelu8AMax = {amax8:.9g}f;  // = {SEGMENTS8 - 1} / kGelu8K
constexpr int kGelu8Degree = {DEGREE8};
// kGelu8C[j][i]: coefficient of u^j in segment i
alignas(32) constexpr float kGelu8C[{DEGREE8 + 1}][{SEGMENTS8}] = {{
{rows8}}};
}}  // namespace tf
""")
    print(f"wrote {HEADER}: max |error| {err:.3g} at x = {at:.4g} ({SEGMENTS} cubics), {err8:.3g} at x = {at8:.4g} "
          f"({SEGMENTS8} degree-{DEGREE8}; {err8s:.3g} without FMA)")


if __name__ == "__main__":
    main()
