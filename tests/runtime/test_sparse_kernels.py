"""Block-sparse INT8 GEMM: bit-identical to the dense INT8 kernel (same integer sums, same dequantization) over odd
shapes, random block patterns (empty rows, 0% and 100% density), 1x4 and 4x4 blocks, at every ISA level."""

import numpy as np
import pytest

from conftest import rel_err
from trimformer import _core

# (70, 45, 1539): rows of more than 384 quads, which the avx512 1x4 kernel walks 4 at a time (rows_dot), over a
# partial second token tile and a last row tile of 13 rows
SHAPES = [(1, 1, 1), (5, 17, 13), (37, 70, 130), (130, 33, 67), (19, 23, 1001), (200, 50, 9), (64, 96, 64),
          (70, 45, 1539)]


# wmax 64: every weight within [-64, 64] (the block-int7 format), which levels with KernelTable::bsr_narrow_values
# multiply 8-bit (vpmaddubsw at avx2); the extremes (activations 255, weights +-64: pair sums of +-32640, 127 short
# of saturating) are in every such case
@pytest.mark.parametrize("wmax", [127, 64])
@pytest.mark.parametrize("block_rows", [1, 4])
@pytest.mark.parametrize("density", [0.0, 0.03, 0.3, 1.0])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_block_sparse_equals_dense_int8(isa, rng, m, n, k, density, block_rows, wmax):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-wmax, wmax + 1, (n, k), dtype=np.int8)
    if wmax == 64:
        a[: m // 2] = 255
        w[: n // 2, : k // 2] = 64
        w[n // 2:, k // 2:] = -64
    keep = rng.random((-(-n // block_rows), -(-k // 4))) < density
    keep[0] = False  # an empty row block
    w = (w * np.repeat(np.repeat(keep, block_rows, 0), 4, 1)[:n, :k]).astype(np.int8)
    ws = rng.random(n, dtype=np.float32) + 0.01
    bias = rng.standard_normal(n, dtype=np.float32)
    # -1: the level's own choice of re-layout; where 4x4 blocks of 16-bit (not narrow) weights could run over
    # either, both the quad and the pair-major one (BsrS8::pair_quads) are checked
    layouts = [-1]
    if block_rows == 4 and _core.bsr_pair_quads_max_k(isa) > 0 and np.abs(w.astype(np.int16)).max() > 64:
        layouts = [0, 1]
    for act in range(5):  # none, GELU (erf), GELU (tanh), ReLU, tanh: each finished in the kernel's own epilogue
        dense = _core.gemm_s8(a, w, ws, 0.013, 5, bias=bias, act=act, isa=isa)
        # requantizing epilogue (static INT8 FFN1 -> FFN2): the same u8 output as the dense kernel's
        dense_q = _core.gemm_s8(a, w, ws, 0.013, 5, bias=bias, act=act, isa=isa, out_scale=0.05, out_zp=17)
        for layout in layouts:
            sparse = _core.gemm_bsr_s8(a, w, ws, 0.013, 5, bias=bias, act=act, isa=isa, block_rows=block_rows,
                                       pair_quads=layout)
            np.testing.assert_array_equal(sparse, dense)
            sparse_q = _core.gemm_bsr_s8(a, w, ws, 0.013, 5, bias=bias, act=act, isa=isa, block_rows=block_rows,
                                         out_scale=0.05, out_zp=17, pair_quads=layout)
            np.testing.assert_array_equal(sparse_q, dense_q)
        if block_rows == 4 and m <= _core.bsr_few_tokens(isa):
            # a call of a few tokens over its u8 rows, no re-layout (where the level has it)
            few = _core.gemm_bsr_s8(a, w, ws, 0.013, 5, bias=bias, act=act, isa=isa, block_rows=4, few_tokens=True)
            np.testing.assert_array_equal(few, dense)
            few_q = _core.gemm_bsr_s8(a, w, ws, 0.013, 5, bias=bias, act=act, isa=isa, block_rows=4,
                                      few_tokens=True, out_scale=0.05, out_zp=17)
            np.testing.assert_array_equal(few_q, dense_q)


# calls of 1 .. 4 tokens (the avx512 level's bsr_few_tokens) over rows of odd widths, outputs ending in a partial
# row block and a partial 16-row tile
@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("n,k", [(6, 5), (45, 130), (70, 1001)])
@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
def test_few_token_calls_equal_dense_int8(isa, rng, m, n, k, density):
    if m > _core.bsr_few_tokens(isa):
        pytest.skip("no few-token path at this level")
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    a[0] = 255
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    keep = rng.random((-(-n // 4), -(-k // 4))) < density
    w = (w * np.repeat(np.repeat(keep, 4, 0), 4, 1)[:n, :k]).astype(np.int8)
    ws = rng.random(n, dtype=np.float32) + 0.01
    bias = rng.standard_normal(n, dtype=np.float32)
    for act in range(5):
        dense = _core.gemm_s8(a, w, ws, 0.02, 3, bias=bias, act=act, isa=isa)
        got = _core.gemm_bsr_s8(a, w, ws, 0.02, 3, bias=bias, act=act, isa=isa, block_rows=4, few_tokens=True)
        np.testing.assert_array_equal(got, dense)


def test_few_token_calls_refuse_what_they_cannot_run():
    few = _core.bsr_few_tokens("")
    if few == 0:
        pytest.skip("no few-token path at this level")
    a = np.zeros((few + 1, 8), np.uint8)
    w = np.ones((4, 8), np.int8)
    with pytest.raises(ValueError, match="few_tokens"):
        _core.gemm_bsr_s8(a, w, np.ones(4, np.float32), 1.0, 0, block_rows=4, few_tokens=True)
    with pytest.raises(ValueError, match="few_tokens"):
        _core.gemm_bsr_s8(a[:1], w, np.ones(4, np.float32), 1.0, 0, block_rows=1, few_tokens=True)


@pytest.mark.parametrize("m,k", [(1, 1), (7, 5), (8, 32), (16, 33), (37, 130), (130, 67), (64, 768), (9, 1001)])
def test_fused_quantize_and_relayout_equal_the_two_passes(isa, rng, m, k):
    """A static INT8 input's u8 rows (quantize_u8) equal clamp(rint(x * inv) + zp, 0, 255) (NaN to 0, +-inf to the
    ends), and where a level quantizes straight into the block kernels' re-layout (bsr_quant_pack_at) its bytes
    equal quantize_u8 + bsr_pack_at's, padding tokens and inputs past k included, over two token ranges."""
    x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
    x.flat[:: 11] = rng.choice(np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.5, -0.5, 2.5], np.float32),
                               x.flat[:: 11].shape)
    inv, zp = 1 / 0.05, 97
    q, plain, fused = _core.bsr_quant_pack(x, inv, zp, isa=isa)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = np.clip(np.rint(x * np.float32(inv)) + zp, 0, 255)
    ref[np.isnan(ref)] = 0
    np.testing.assert_array_equal(q[:, :k], ref.astype(np.uint8))
    assert (q[:, k:] == zp).all()  # padding columns hold the zero point
    if fused is not None:
        np.testing.assert_array_equal(fused, plain)
    if _core.bsr_pair_quads_max_k(isa) > 0:
        # the pair-major re-layout: each 32-byte quad of 8 tokens x 4 inputs (token-major) as the 8 tokens' inputs
        # 0, 1 then their inputs 2, 3; fused and unfused alike; the tail past the quads untouched in both
        _, plain_p, fused_p = _core.bsr_quant_pack(x, inv, zp, isa=isa, pair_quads=True)
        body = len(plain) - 64
        want = plain[:body].reshape(-1, 8, 2, 2).transpose(0, 2, 1, 3).reshape(-1)
        np.testing.assert_array_equal(plain_p[:body], want)
        np.testing.assert_array_equal(plain_p[body:], plain[body:])
        np.testing.assert_array_equal(fused_p, plain_p)


def test_bad_block_rows():
    a = np.zeros((2, 4), np.uint8)
    w = np.zeros((2, 4), np.int8)
    with pytest.raises(ValueError, match="block_rows"):
        _core.gemm_bsr_s8(a, w, np.ones(2, np.float32), 1.0, 0, block_rows=3)


# ---- FP32 sparse kernels (csr-f32, block-f32's 4x1 blocks, N:M) -------------------------------------------------

# k = 2100 crosses the CSR kernels' input chunks (1024 at AVX-512), k >= 130 the N:M chunks (96)
ODD_SHAPES = [(1, 1, 1), (5, 17, 13), (37, 70, 130), (130, 33, 67), (19, 23, 257), (200, 50, 9), (17, 5, 3),
              (70, 21, 2100)]
ACTS = {0: lambda x: x, 3: lambda x: np.maximum(x, 0), 4: np.tanh}


def _pattern_weight(rng, n, k, layout, density):
    """Random weight in `layout` with about `density` of its (blocks of) weights non-zero, row 0 (or row block 0)
    always empty; N:M weights keep at most N per group, some groups empty."""
    w = rng.standard_normal((n, k), dtype=np.float32)
    if layout == "csr":
        keep = rng.random((n, k)) < density
        keep[0] = False
    elif layout == "block":
        keep = np.repeat(rng.random((-(-n // 4), k)) < density, 4, 0)[:n]
        keep[:4] = False
    else:
        keep_n, m = (int(x) for x in layout.split(":"))
        groups = -(-k // m)
        scores = rng.random((n, groups, m))
        ranks = scores.argsort(-1).argsort(-1)
        per_group = rng.integers(0, keep_n + 1, (n, groups, 1))  # 0..N kept: empty and partial groups too
        keep = (ranks < per_group).reshape(n, -1)[:, :k]
        if density == 0.0:
            keep[:] = False
        elif density == 1.0:  # every group full
            keep = (ranks < keep_n).reshape(n, -1)[:, :k]
    return (w * keep).astype(np.float32)


@pytest.mark.parametrize("layout", ["csr", "block", "2:4", "4:8"])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.4, 1.0])
@pytest.mark.parametrize("m,n,k", ODD_SHAPES)
def test_sparse_f32_matches_reference(isa, rng, m, n, k, layout, density):
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = _pattern_weight(rng, n, k, layout, density)
    bias = rng.standard_normal(n, dtype=np.float32)
    res = rng.standard_normal((m, n), dtype=np.float32)
    exact = a.astype(np.float64) @ w.T.astype(np.float64)
    for act, fn in ACTS.items():
        got = _core.gemm_sparse_f32(a, w, layout, bias=bias, act=act, residual=res, alpha=0.5, isa=isa)
        ref = fn(0.5 * exact + bias) + res
        assert got.shape == (m, n)
        assert rel_err(got, ref) < 1e-5, (act, rel_err(got, ref))
    # GELU: the same epilogue code as the dense kernel, so compare against it
    dense = _core.gemm_f32(a, w, bias=bias, act=1, isa=isa)
    assert rel_err(_core.gemm_sparse_f32(a, w, layout, bias=bias, act=1, isa=isa), dense) < 1e-5
    if layout in ("csr", "block"):  # without chunk pointers the kernel walks whole rows
        whole = _core.gemm_sparse_f32(a, w, layout, isa=isa, chunk_pointers=False)
        assert rel_err(whole, exact) < 1e-5


def test_sparse_f32_rejects_bad_layouts():
    a = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="layout"):
        _core.gemm_sparse_f32(a, np.zeros((2, 8), np.float32), "3:4")
    with pytest.raises(ValueError, match="N:M"):
        _core.gemm_sparse_f32(a, np.ones((2, 8), np.float32), "2:4")
