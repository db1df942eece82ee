"""Weight-only k-bit kernels (GEMV for decode, dequantization for prefill) against the numpy reference of
formats/kbit.py + registry.unpack_kbit, over odd shapes, every k-bit type and every ISA level."""

from __future__ import annotations

import numpy as np
import pytest

from trimformer import _core
from trimformer.formats.kbit import KBIT_TYPES, dequantize, quantize_rtn
from trimformer.formats.registry import pack_kbit, unpack_kbit

TYPES = sorted(KBIT_TYPES)


def _call(fn, st, *args, isa):
    mode, k, group = (int(v) for v in st[".kmeta"])
    return fn(*args, st[".kcodes"], st[".kscales"], st.get(".koffsets"), mode, k, group, st[".klut"], isa=isa)


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize("n,k,group", [(37, 96, 32), (5, 256, 128), (19, 64, 64), (3, 45, 45), (11, 48, 16),
                                       (7, 576, 128), (4, 100, 32)])  # ragged last groups
def test_pack_dequant_roundtrip(type_name, n, k, group, isa, rng):
    w = rng.standard_normal((n, k)).astype(np.float32)
    codes, scales, offsets = quantize_rtn(w, type_name, group)
    st = pack_kbit(codes, scales, offsets, type_name, group)
    ref = dequantize(codes, scales, offsets, type_name, group)
    np.testing.assert_array_equal(unpack_kbit(st), ref)
    got = _call(_core.kbit_dequant, st, isa=isa)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("n,k,group", [(37, 96, 32), (21, 384, 128), (9, 45, 45), (13, 576, 128), (5, 70, 32)])
def test_gemv_matches_dense_reference(type_name, m, n, k, group, isa, rng):
    w = rng.standard_normal((n, k)).astype(np.float32) * 0.1
    codes, scales, offsets = quantize_rtn(w, type_name, group)
    st = pack_kbit(codes, scales, offsets, type_name, group)
    x = rng.standard_normal((m, k)).astype(np.float32)
    ref = x.astype(np.float64) @ unpack_kbit(st).astype(np.float64).T
    got = _call(_core.kbit_gemv, st, x, isa=isa)
    assert got.shape == (m, n)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5 * np.abs(ref).max())


def test_extreme_codes_and_zero_groups(isa):
    # every code of every type appears, and a group of zeros has scale 0 (exact zeros)
    for type_name in TYPES:
        t = KBIT_TYPES[type_name]
        n_codes = 1 << t.bits
        k = 32 * ((n_codes + 31) // 32)
        codes = (np.arange(2 * k) % n_codes).astype(np.uint8).reshape(2, k)
        valid = np.isin(codes, t.level_codes)
        codes = np.where(valid, codes, t.level_codes[0]).astype(np.uint8)
        scales = np.array([[0.5] * (k // 32), [0.0] * (k // 32)], np.float32)
        offsets = np.full_like(scales, -0.25) if t.affine else None
        st = pack_kbit(codes, scales, offsets, type_name, 32)
        ref = unpack_kbit(st)
        np.testing.assert_allclose(_call(_core.kbit_dequant, st, isa=isa), ref, rtol=1e-6)


def test_bad_inputs_raise():
    st = pack_kbit(np.zeros((4, 64), np.uint8), np.ones((4, 2), np.float32), None, "int4", 32)
    with pytest.raises(ValueError):
        _core.kbit_gemv(np.zeros((1, 63), np.float32), st[".kcodes"], st[".kscales"], None, 0, 64, 32, st[".klut"])
    with pytest.raises(ValueError):
        _core.kbit_dequant(st[".kcodes"], st[".kscales"], None, 0, 64, 30, st[".klut"])
    with pytest.raises(ValueError):
        _core.kbit_dequant(st[".kcodes"][:, :16], st[".kscales"], None, 0, 64, 32, st[".klut"])
    with pytest.raises(ValueError):
        pack_kbit(np.full((2, 64), 16, np.uint8), np.ones((2, 2), np.float32), None, "int4", 32)


def _a8_reference(x, st):
    """numpy W4A8: the dequantized weights times per-token symmetric int8 activations (dequantized)."""
    from trimformer.formats.registry import unpack_kbit

    amax = np.abs(x).max(1)
    ax = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    xq = np.clip(np.rint(x * (np.float32(1) / ax[:, None])), -127, 127)
    return (xq * ax[:, None]).astype(np.float64) @ unpack_kbit(st).astype(np.float64).T


@pytest.mark.parametrize("type_name", ["int4", "int4-asym", "int3", "int2", "int2-asym"])
@pytest.mark.parametrize("m", [1, 3, 4, 7, 33])
@pytest.mark.parametrize("n,k,group", [(37, 128, 32), (19, 576, 128), (5, 192, 64), (3, 64, 64)])
def test_w4a8_gemv_matches_int8_activation_reference(type_name, m, n, k, group, isa, rng):
    w = rng.standard_normal((n, k)).astype(np.float32)
    codes, scales, offsets = quantize_rtn(w, type_name, group)
    st = pack_kbit(codes, scales, offsets, type_name, group)
    x = rng.standard_normal((m, k)).astype(np.float32)
    ref = _a8_reference(x, st)
    got = _call(_core.kbit_gemv_a8, st, x, isa=isa)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("type_name", ["int4", "int4-asym", "int2-asym"])
@pytest.mark.parametrize("m", [1, 3, 13, 37])
@pytest.mark.parametrize("n,k,group", [(37, 128, 32), (19, 576, 128), (5, 192, 64), (33, 576, 32), (16, 64, 64)])
def test_w4a8_prefill_gemm_equals_the_gemv(type_name, m, n, k, group, rng):
    # the prefill GEMM (codes expanded once per 16 rows into a VNNI panel; avx512 only) computes the GEMV's
    # integer group sums, so only the order of float rounding differs: row counts past and short of its 8-token
    # register block, row blocks short of 16, group 32's interleaved runs, and extreme codes (0 and 15)
    if not _core.kbit_gemm_a8_available("avx512_vnni") or _core.resolve_isa("") != "avx512_vnni":
        pytest.skip("no W4A8 prefill GEMM on this CPU")
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[0, :] = 0.0  # a row whose groups are all zero
    w[-1, : k // 2] = 40.0 * np.sign(w[-1, : k // 2])  # codes at the ends of the range
    codes, scales, offsets = quantize_rtn(w, type_name, group)
    st = pack_kbit(codes, scales, offsets, type_name, group)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[0] *= 50.0  # a row with a large scale
    gemv = _call(_core.kbit_gemv_a8, st, x, isa="avx512_vnni")
    gemm = _core.kbit_gemv_a8(x, st[".kcodes"], st[".kscales"], st.get(".koffsets"), *(int(v) for v in st[".kmeta"]),
                              st[".klut"], isa="avx512_vnni", gemm=True)
    np.testing.assert_allclose(gemm, gemv, rtol=1e-5, atol=1e-5 * np.abs(gemv).max())
    np.testing.assert_allclose(gemm, _a8_reference(x, st), rtol=1e-4, atol=1e-4 * np.abs(gemv).max())


@pytest.mark.parametrize("k,group", [(64, 64), (576, 32), (576, 128), (192, 64), (96, 32), (100, 50)])
def test_w4a8_activation_quantization_equals_the_scalar_loop(k, group, isa, rng):
    # the vector quantization (k % 64 == 0) stores the same bytes in the same a8 slots, with the same group sums
    x = rng.standard_normal((5, k)).astype(np.float32)
    x[1] = 0.0
    x[2, ::7] *= 1e3  # a few large inputs: most of the row rounds to small integers, ties included
    x[3] = rng.integers(-100, 100, k) + 0.5  # max |x| 127 -> scale 1: every input a tie (nearest even)
    x[3, 0] = 127.0
    got, want = _core.quantize_a8(x, group, isa=isa), _core.quantize_a8(x, group, isa="scalar")
    assert got[1][3] == 1.0
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_w4a8_prefill_gemm_only_where_it_exists():
    st = pack_kbit(np.zeros((2, 64), np.uint8), np.ones((2, 2), np.float32), None, "int4", 32)
    for level in ("avx2", "scalar"):
        assert not _core.kbit_gemm_a8_available(level)
        with pytest.raises(ValueError, match="prefill GEMM"):
            _core.kbit_gemv_a8(np.zeros((2, 64), np.float32), st[".kcodes"], st[".kscales"], None,
                               *(int(v) for v in st[".kmeta"]), st[".klut"], isa=level, gemm=True)


def test_w4a8_rejects_unsupported_layouts():
    st = pack_kbit(np.zeros((2, 96), np.uint8), np.ones((2, 3), np.float32), None, "int4", 32)
    with pytest.raises(ValueError, match="W4A8"):
        _call(_core.kbit_gemv_a8, st, np.zeros((1, 96), np.float32), isa="")
