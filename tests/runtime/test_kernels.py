"""Every kernel against a numpy reference over odd shapes, at every ISA level (see conftest.ISA_LEVELS)."""

import math

import numpy as np
import pytest

from conftest import ISA_LEVELS, rel_err
from trimformer import _core

SHAPES = [(1, 1, 1), (1, 7, 3), (5, 33, 17), (13, 37, 29), (3, 65, 130), (31, 97, 61), (67, 129, 71), (2, 300, 5)]
ACTS = {0: lambda x: x, 1: lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
        2: lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        3: lambda x: np.maximum(x, 0), 4: np.tanh}


# (301, 45, 1001): more rows than one cache block at every level (avx512: 120-row blocks at k = 1001, the last
# one ragged; avx2: 192 rows x 256 inputs, so K blocks accumulate into C too)
@pytest.mark.parametrize("m,n,k", [*SHAPES, (301, 45, 1001)])
def test_gemm_f32_matches_numpy(isa, rng, m, n, k):
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    res = rng.standard_normal((m, n), dtype=np.float32)
    for act, fn in ACTS.items():
        got = _core.gemm_f32(a, w, bias=bias, act=act, residual=res, alpha=0.5, isa=isa)
        ref = fn(0.5 * (a.astype(np.float64) @ w.T.astype(np.float64)) + bias) + res
        assert got.shape == (m, n)
        assert rel_err(got, ref) < 1e-5, (act, rel_err(got, ref))
    # B given as [k, n] (the attention P.V layout)
    got = _core.gemm_f32(a, np.ascontiguousarray(w.T), isa=isa, w_is_kn=True)
    assert rel_err(got, a.astype(np.float64) @ w.T) < 1e-5


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_s8_is_exact(isa, rng, m, n, k):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    ws = rng.random(n, dtype=np.float32) + 0.01
    a_scale, zp = np.float32(0.0173), 131
    got = _core.gemm_s8(a, w, ws, float(a_scale), zp, isa=isa)
    acc = a.astype(np.int64) @ w.T.astype(np.int64)
    colsum = w.astype(np.int64).sum(1)
    # the same float32 operations as the kernels: (acc - zp * colsum) * (a_scale * w_scale)
    ref = (acc.astype(np.float32) - np.float32(zp) * colsum.astype(np.float32)) * (a_scale * ws)
    np.testing.assert_array_equal(got, ref.astype(np.float32))


@pytest.mark.parametrize("m,n,k", [(1, 5, 3), (7, 70, 33), (13, 130, 64)])
def test_gemm_s8_requantizing_epilogue(isa, rng, m, n, k):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    ws = (rng.random(n, dtype=np.float32) + 0.5) * 1e-3
    bias = rng.standard_normal(n, dtype=np.float32)
    as_float = _core.gemm_s8(a, w, ws, 0.02, 9, bias=bias, act=1, isa=isa)
    q = _core.gemm_s8(a, w, ws, 0.02, 9, bias=bias, act=1, isa=isa, out_scale=0.01, out_zp=17)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, _core.quantize_u8(as_float, 0.01, 17, isa=isa))


def test_gemm_s8_identical_across_isa_levels(rng):
    a = rng.integers(0, 256, (19, 203), dtype=np.uint8)
    w = rng.integers(-127, 128, (77, 203), dtype=np.int8)
    ws = rng.random(77, dtype=np.float32)
    bias = rng.standard_normal(77, dtype=np.float32)
    # the integer part and the dequantization are bit-identical at every level (ReLU epilogue: exact too)
    outs = [_core.gemm_s8(a, w, ws, 0.02, 7, bias=bias, act=3, isa=i) for i in ISA_LEVELS]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    # transcendental epilogues use FMA where the level has it: equal to float32 rounding
    outs = [_core.gemm_s8(a, w, ws, 0.02, 7, bias=bias, act=1, isa=i) for i in ISA_LEVELS]
    for o in outs[1:]:
        assert rel_err(o, outs[0]) < 1e-6


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 17), (7, 384), (5, 1001)])
def test_row_ops(isa, rng, rows, cols):
    x = (rng.standard_normal((rows, cols), dtype=np.float32) * 4).astype(np.float32)
    g = rng.standard_normal(cols, dtype=np.float32)
    b = rng.standard_normal(cols, dtype=np.float32)
    x64 = x.astype(np.float64)
    ln = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5) * g + b
    assert rel_err(_core.rowop(x, "layernorm", g, b, 1e-5, isa=isa), ln) < 1e-5
    e = np.exp(x64 - x64.max(1, keepdims=True))
    assert np.abs(_core.rowop(x, "softmax", isa=isa) - e / e.sum(1, keepdims=True)).max() < 1e-6
    for name, code in (("gelu", 1), ("gelu_tanh", 2), ("relu", 3), ("tanh", 4)):
        assert np.abs(_core.rowop(x, name, isa=isa) - ACTS[code](x64)).max() < 2e-6 * max(1, np.abs(x).max())


def test_gelu_table_accuracy_and_edges(isa):
    """GELU (erf) by table (32 cubics at avx512, 8 degree-6 polynomials at avx2 and scalar): within 6e-7 of the
    exact function everywhere (both tables' segment boundaries included), 0 at 0, NaN stays NaN, +inf stays +inf,
    large negative inputs give ~0."""
    bounds = [(np.arange(n) + 0.5) / k for n, k in ((32, 5.63636351), (8, 1.27272725))]  # kGeluK, kGelu8K
    x = np.concatenate([np.linspace(-12, 12, 200_001), *bounds, *(-b for b in bounds),
                        [0.0, -0.0, 1e-30, -1e-30, 5.5, -5.5, 1e4, -1e4]]).astype(np.float32)
    got = _core.rowop(x[None], "gelu", isa=isa)[0].astype(np.float64)
    assert np.abs(got - ACTS[1](x.astype(np.float64))).max() < 6e-7
    assert got[-8] == 0.0 and got[-2] == 1e4 and abs(got[-1]) < 2e-7
    small = x[:-8][np.abs(x[:-8]) < 1e-3]
    small = small[small != 0]
    exact = ACTS[1](small.astype(np.float64))
    assert (np.abs(_core.rowop(small[None], "gelu", isa=isa)[0] - exact) / np.abs(exact)).max() < 1e-6
    edge = _core.rowop(np.array([[np.nan, np.inf]], np.float32), "gelu", isa=isa)[0]
    assert np.isnan(edge[0]) and edge[1] == np.inf


def test_gelu_vector_lanes_and_scalar_tail_agree_bit_for_bit(isa, rng):
    """Each level's vector GELU (gelu_erf8 / gelu_erf16, also the sparse kernels' fused finish) and its scalar form
    (row tails, calls of fewer than 8 values) do the same arithmetic on the same table."""
    x = (rng.standard_normal(1001) * 4).astype(np.float32)
    whole = _core.rowop(x[None], "gelu", isa=isa)[0]
    tails = np.concatenate([_core.rowop(x[i:i + 7][None], "gelu", isa=isa)[0] for i in range(0, len(x), 7)])
    np.testing.assert_array_equal(whole, tails)


def test_softmax_is_stable_for_large_inputs(isa):
    x = np.array([[1e4, 1e4 - 1, -1e30, 0.0]], np.float32)
    y = _core.rowop(x, "softmax", isa=isa)
    assert np.all(np.isfinite(y)) and abs(y.sum() - 1) < 1e-6 and y[0, 2] == 0


def _attention_reference(qkv, heads, bias, alpha):
    seq, width = qkv.shape
    H = width // 3
    d = H // heads
    x = qkv.astype(np.float64)
    out = np.zeros((seq, H))
    for h in range(heads):
        q, k, v = (x[:, j * H + h * d: j * H + (h + 1) * d] for j in range(3))
        s = alpha * q @ k.T + bias[None, :]
        e = np.exp(s - s.max(1, keepdims=True))
        out[:, h * d:(h + 1) * d] = (e / e.sum(1, keepdims=True)) @ v
    return out


# seq and head sizes off the kernel's 16-key / 16-channel panels and 6-row blocks; heads side by side in qkv's rows
@pytest.mark.parametrize("seq,heads,d", [(1, 1, 1), (5, 2, 8), (7, 3, 12), (17, 2, 20), (33, 1, 33), (130, 2, 64),
                                         (64, 4, 32), (47, 1, 72)])
def test_fused_attention_matches_numpy(isa, rng, seq, heads, d):
    if not _core.attention_f32_kernel(isa):
        pytest.skip(f"{isa} runs attention unfused (gemm_f32, softmax_rows, gemm_f32: tested above)")
    qkv = rng.standard_normal((seq, 3 * heads * d), dtype=np.float32)
    masked = rng.random(seq) < 0.3
    masked[0] = False
    bias = np.where(masked, -1e30, 0.0).astype(np.float32)
    alpha = 1 / math.sqrt(d)
    got = _core.attention_f32(qkv, heads, bias, alpha, isa=isa)
    assert got.shape == (seq, heads * d)
    assert rel_err(got, _attention_reference(qkv, heads, bias, alpha)) < 1e-5
    # masked keys weigh exactly 0: huge values in their V rows change nothing
    loud = qkv.copy()
    loud[masked, 2 * heads * d:] = 1e20
    np.testing.assert_array_equal(_core.attention_f32(loud, heads, bias, alpha, isa=isa), got)
    # peaked rows (scores with a standard deviation of 30: exp without the row max subtracted overflows float32
    # past 88; float32 scores of ~100 carry ~1e-5 relative error into the probabilities) and a sequence whose every
    # key is masked
    big = qkv.copy()
    big[:, : heads * d] *= 30
    assert rel_err(_core.attention_f32(big, heads, bias, alpha, isa=isa),
                   _attention_reference(big, heads, bias, alpha)) < 3e-5
    all_masked = np.full(seq, -1e30, np.float32)
    ref = _attention_reference(qkv, heads, all_masked, alpha)
    assert rel_err(_core.attention_f32(qkv, heads, all_masked, alpha, isa=isa), ref) < 1e-5


def test_fused_attention_rejects_bad_shapes():
    if not _core.attention_f32_kernel(""):
        pytest.skip("this CPU's level runs attention unfused")
    with pytest.raises(ValueError, match="3 \\* heads"):
        _core.attention_f32(np.zeros((4, 10), np.float32), 2, np.zeros(4, np.float32), 1.0)
    with pytest.raises(ValueError, match="one value per token"):
        _core.attention_f32(np.zeros((4, 12), np.float32), 2, np.zeros(3, np.float32), 1.0)


def test_quantize_u8(isa, rng):
    x = rng.standard_normal((9, 70), dtype=np.float32) * 3
    scale, zp = 0.05, 100
    ref = np.clip(np.rint(x * np.float32(1 / scale)) + zp, 0, 255).astype(np.uint8)
    got = _core.quantize_u8(x, scale, zp, isa=isa)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1  # rounding of exact .5 ties may differ by one


def test_forcing_an_unknown_isa_fails_clearly():
    with pytest.raises(ValueError, match="unknown ISA"):
        _core.resolve_isa("sse9")


@pytest.mark.skipif(not _core.has_avx512_bf16() or _core.detect_isa() != "avx512_vnni",
                    reason="CPU has no AVX512_BF16")
# m >= 16 runs on AMX tiles where the CPU has AMX-BF16 (row, K and column tails: 32-row blocks, 32-deep steps,
# 32-column halves of 64-column panels), fewer rows on vdpbf16ps
@pytest.mark.parametrize("m,n,k", [(1, 3, 1), (7, 65, 33), (13, 130, 64), (29, 64, 257), (16, 1, 2), (32, 32, 32),
                                   (37, 97, 31), (64, 130, 65), (100, 200, 771)])
def test_gemm_bf16_matches_reference(rng, m, n, k):
    from trimformer.formats.registry import from_bf16_bits, to_bf16_bits

    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    bias = rng.standard_normal(n, dtype=np.float32)
    bits = to_bf16_bits(w)
    got = _core.gemm_bf16(a, bits, bias=bias, act=3)
    # reference: the same bf16-rounded operands, exact products, float64 sums
    ref = np.maximum(from_bf16_bits(to_bf16_bits(a)).astype(np.float64) @ from_bf16_bits(bits).T + bias, 0)
    assert rel_err(got, ref) < 1e-5


def test_softmax_straight_to_u8(isa, rng):
    x = (rng.standard_normal((7, 45)) * 3).astype(np.float32)
    x[2, 5:] = -1e30  # masked keys
    q, scale = _core.softmax_u8(x, isa=isa)
    p = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # dequantized probabilities are within half a quantization step of the exact softmax
    assert np.all(np.abs(q * scale[:, None] - p) <= scale[:, None] * 0.5 + 1e-6)
    assert np.all(q.max(1) == 255) and np.all(q[2, 5:] == 0)


@pytest.mark.skipif(not _core.has_avx512_bf16() or _core.detect_isa() != "avx512_vnni",
                    reason="CPU has no AVX512_BF16")
@pytest.mark.parametrize("cols", [1, 17, 45, 128, 130, 384])
def test_softmax_bf16_within_bf16_rounding(rng, cols):
    x = (rng.standard_normal((9, cols)) * 4).astype(np.float32)
    x[2, 1:] = -1e30  # masked keys
    x[3, 0] = 80.0  # one dominant key: the others' probabilities are tiny but not 0
    x[4] = -1e30  # a fully masked row: uniform, as the float softmax gives
    got = _core.softmax_bf16(x)
    p = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # the exponential's error (~4e-5) is far below bf16's rounding (at most 2^-8 relative); probabilities in the
    # denormal range (below 1e-37) may flush to 0
    normal = p > 1e-37
    assert np.all(np.abs(got - p)[normal] <= p[normal] * 2.0**-8)
    assert np.all(got[~normal] <= 1e-37)
    assert np.all(got[2, 1:] == 0) and got[2, 0] == 1


@pytest.mark.skipif(not _core.has_avx512_bf16() or _core.detect_isa() != "avx512_vnni",
                    reason="CPU has no AVX512_BF16")
@pytest.mark.parametrize("n,k", [(1, 1), (17, 33), (128, 64), (64, 128), (37, 96), (80, 100), (3, 161)])
def test_attention_bf16_packings_match_reference(rng, n, k):
    # K (packed from float rows) and V (packed from X [k][n]) for attention: the same words as the reference
    # packing of the bf16 bits, for every k (a k of 33 pairs or more spans several groups of 16 pairs)
    w = rng.standard_normal((n, k)).astype(np.float32)
    ref = _core.pack_bf16(w, "bits")
    np.testing.assert_array_equal(_core.pack_bf16(w, "nk"), ref)
    np.testing.assert_array_equal(_core.pack_bf16(w, "kn"), ref)


@pytest.mark.parametrize("n,ld,k", [(128, 2304, 64), (37, 50, 45), (1, 3, 3), (70, 130, 130), (65, 64, 64),
                                    (17, 100, 96), (130, 200, 197)])
def test_quant_pack_k_operand_in_one_pass(isa, rng, n, ld, k):
    # attention's K: the fused quantize + pack (avx512) gives quantize_rows_s8 + pack_s8's bytes, scales and sums,
    # over rows ld apart, odd token counts (a part panel: zero columns) and odd head sizes (zero k padding)
    x = (rng.standard_normal((n, ld)) * 3).astype(np.float32)
    x[0] = 0.0  # an all-zero row: scale 1
    x[-1, :k] = np.abs(x[-1, :k])
    plain, scale, sums, fused, fused_scale, fused_sums = _core.quant_pack_nk(x, k, isa=isa)
    if isa != "avx512_vnni":
        assert fused is None  # the other levels run the two calls
        return
    np.testing.assert_array_equal(fused, plain)
    np.testing.assert_array_equal(fused_scale, scale)
    np.testing.assert_array_equal(fused_sums, sums)


@pytest.mark.parametrize("cols", [1, 15, 16, 45, 64, 130])
def test_quantize_rows_per_row_ranges(isa, rng, cols):
    x = rng.standard_normal((6, cols), dtype=np.float32) * 3
    x[1] = np.abs(x[1])  # all positive: the range still includes 0
    x[2] = 0.0  # an all-zero row: scale 1, zero point 0
    q, scale, zp = _core.quantize_rows(x, pad=3, isa=isa)
    mn, mx = np.minimum(x.min(1), 0), np.maximum(x.max(1), 0)
    ref_scale = np.where(mx > mn, (mx - mn) / np.float32(255), 1).astype(np.float32)
    np.testing.assert_allclose(scale, ref_scale, rtol=1e-6)
    np.testing.assert_array_equal(zp, np.clip(np.rint(-mn / ref_scale), 0, 255))
    ref = np.clip(np.rint(x / scale[:, None]) + zp[:, None], 0, 255)
    assert np.abs(q[:, :cols].astype(int) - ref).max() <= 1  # exact .5 ties may round either way
    np.testing.assert_array_equal(q[:, cols:], np.repeat(zp[:, None], 3, 1))  # padding holds the zero point
    q8, s8, sums = _core.quantize_rows(x, symmetric=True, isa=isa)
    ref_s = np.where(np.abs(x).max(1) > 0, np.abs(x).max(1) / np.float32(127), 1).astype(np.float32)
    np.testing.assert_allclose(s8, ref_s, rtol=1e-6)
    ref8 = np.clip(np.rint(x / s8[:, None]), -127, 127)
    assert np.abs(q8.astype(int) - ref8).max() <= 1
    np.testing.assert_array_equal(sums, q8.astype(np.int64).sum(1))
