"""formats/kbit.py: LUTs, round-to-nearest grouping, nearest-level property and the fp8 tables."""

import numpy as np
import pytest

from trimformer.formats.kbit import (
    KBIT_TYPES,
    dequantize,
    get_kbit_type,
    quantize_rtn,
    quantize_with_params,
)

ALL_TYPES = list(KBIT_TYPES)


def test_known_types_and_luts():
    for name in ("int2", "int3", "int4", "int8", "int4-asym", "int3-asym", "int2-asym", "nf4", "fp4",
                 "fp8-e4m3", "fp8-e5m2"):
        assert name in KBIT_TYPES
    assert get_kbit_type("int4").lut.tolist() == list(range(-8, 8))
    assert get_kbit_type("int4").qmax == 7 and get_kbit_type("int8").qmax == 127
    assert get_kbit_type("int4-asym").lut.tolist() == list(range(16))
    fp4 = get_kbit_type("fp4")
    assert sorted(set(np.abs(fp4.lut).tolist())) == [0, 0.5, 1, 1.5, 2, 3, 4, 6] and fp4.qmax == 6
    nf4 = get_kbit_type("nf4")
    assert nf4.lut[0] == -1 and nf4.lut[-1] == 1 and 0.0 in nf4.lut.tolist()
    assert np.all(np.diff(nf4.lut) > 0)
    # the QLoRA table (bitsandbytes): a couple of its published values
    assert abs(nf4.lut[1] - -0.6961928) < 1e-5 and abs(nf4.lut[8] - 0.0795803) < 1e-5
    assert get_kbit_type("fp8-e4m3").qmax == 448 and get_kbit_type("fp8-e5m2").qmax == 57344
    with pytest.raises(ValueError, match="known"):
        get_kbit_type("int5")


@pytest.mark.parametrize("name,dtype", [("fp8-e4m3", "float8_e4m3fn"), ("fp8-e5m2", "float8_e5m2")])
def test_fp8_lut_matches_torch(name, dtype):
    torch = pytest.importorskip("torch")
    ref = torch.arange(256, dtype=torch.uint8).view(getattr(torch, dtype)).float().numpy()
    lut = get_kbit_type(name).lut
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(lut[finite], ref[finite])
    assert np.all(lut[~finite] == 0)  # NaN / inf codes map to 0 and are never produced
    # our RTN codes agree with torch's own float -> fp8 conversion (round to nearest even) away from ties
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 64)) * rng.choice([1e-3, 1.0, 50.0], (8, 1))).astype(np.float32)
    codes = quantize_with_params(x, np.ones((8, 1), np.float32), np.zeros((8, 1), np.float32), name)
    assert set(np.unique(codes)).isdisjoint(set(np.flatnonzero(~finite)))
    tq = torch.from_numpy(x).to(getattr(torch, dtype)).float().numpy()
    np.testing.assert_array_equal(dequantize(codes, np.ones((8, 1)), np.zeros((8, 1)), name), tq)


@pytest.mark.parametrize("name", ALL_TYPES)
@pytest.mark.parametrize("g", [32, 64, 128])
def test_rtn_shapes_range_and_nearest_level(rng, name, g):
    t = get_kbit_type(name)
    n, k = 7, 256
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 3, (n, 1))).astype(np.float32)
    w[0, :g] = 0.0  # an all-zero group dequantizes exactly
    codes, scales, offsets = quantize_rtn(w, name, g)
    assert codes.dtype == np.uint8 and codes.shape == (n, k)
    assert scales.shape == offsets.shape == (n, k // g) and scales.dtype == np.float32
    assert int(codes.max()) < 2**t.bits
    if not t.affine:
        assert np.all(offsets == 0)
    deq = dequantize(codes, scales, offsets, name)
    assert np.all(deq[0, :g] == 0)
    # nearest-level property: no other LUT value (with the group's params) is closer
    s = np.repeat(scales, g, axis=1)[..., None].astype(np.float64)
    o = np.repeat(offsets, g, axis=1)[..., None].astype(np.float64)
    cand = t.levels.astype(np.float64)[None, None, :] * s + o
    best = np.abs(cand - w[..., None]).min(axis=-1)
    err = np.abs(deq.astype(np.float64) - w)
    assert np.all(err <= best + 1e-6 * (1 + np.abs(w)))
    # the group absmax (or min/max) is represented: round-trip error bounded by half the coarsest step
    assert np.all(err <= np.repeat(scales, g, axis=1) * (np.diff(t.levels).max() / 2) + 1e-6)


@pytest.mark.parametrize("name", ["int4", "int8", "int3-asym", "nf4", "fp4", "fp8-e4m3"])
def test_round_trip_is_idempotent(rng, name):
    w = rng.standard_normal((5, 96)).astype(np.float32)
    codes, scales, offsets = quantize_rtn(w, name, 32)
    deq = dequantize(codes, scales, offsets, name)
    codes2 = quantize_with_params(deq, scales, offsets, name)
    np.testing.assert_array_equal(dequantize(codes2, scales, offsets, name), deq)


def test_per_channel_default_and_int8_matches_registry(rng):
    from trimformer.formats.registry import quantize_int8_per_channel

    w = rng.standard_normal((6, 40)).astype(np.float32)
    codes, scales, offsets = quantize_rtn(w, "int8", None)
    assert scales.shape == (6, 1)
    q, s = quantize_int8_per_channel(w)
    np.testing.assert_allclose(scales[:, 0], s, rtol=1e-6)
    np.testing.assert_array_equal(get_kbit_type("int8").lut[codes], q.astype(np.float32))


def test_asym_reproduces_min_and_max(rng):
    w = rng.standard_normal((4, 64)).astype(np.float32)
    codes, scales, offsets = quantize_rtn(w, "int4-asym", 32)
    deq = dequantize(codes, scales, offsets, "int4-asym")
    g = deq.reshape(4, 2, 32)
    np.testing.assert_allclose(g.min(-1), w.reshape(4, 2, 32).min(-1), atol=1e-6)
    np.testing.assert_allclose(g.max(-1), w.reshape(4, 2, 32).max(-1), atol=1e-5)


def test_bad_arguments(rng):
    w = rng.standard_normal((4, 100)).astype(np.float32)
    with pytest.raises(ValueError, match="multiple"):
        quantize_rtn(w, "int4", 64)
    with pytest.raises(ValueError, match="2-D"):
        quantize_rtn(w[0], "int4", 50)
    with pytest.raises(ValueError, match="unknown"):
        quantize_rtn(w, "int9", 50)
    with pytest.raises(ValueError, match="out of range"):
        dequantize(np.full((4, 100), 16, np.uint8), np.ones((4, 2)), np.zeros((4, 2)), "int4")
    with pytest.raises(ValueError, match="NaN"):
        quantize_rtn(np.full((2, 4), np.nan, np.float32), "int4", 4)
