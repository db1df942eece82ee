"""Every sparse registry format through the executor's own loader and dispatch (LinearRunner): INT8 formats are
bit-identical to dense INT8, float32 formats within 1e-5 relative of dense float32, over odd shapes, random
patterns with empty rows, 0% and 100% density, at every ISA level; corrupt tensors raise, never crash."""

import numpy as np
import pytest

from conftest import rel_err
from trimformer import _core
from trimformer.formats.registry import get_format
from trimformer.formats.sparsity import decode_block_int8, magnitude_mask

# (70, 45, 1539): rows long enough for the avx512 csr kernels' multi-row walks (rows_entries, rows_dot), an odd row
# count and a partial second token tile
SHAPES = [(1, 1, 1), (3, 9, 13), (33, 70, 130), (130, 36, 67), (20, 8, 300), (70, 45, 1539)]
F32_FORMATS = {"unstructured": ["csr-f32"], "block": ["block-f32", "csr-f32"], "2:4": ["nm-f32", "csr-f32"],
               "4:8": ["nm-f32"]}
INT8_FORMATS = {"unstructured": ["csr-int8"], "block": ["block-int8", "csr-int8"], "2:4": ["nm-int8"],
                "4:8": ["nm-int8", "csr-int8"]}


def _runner(fmt, w, bias, isa, threads=2):
    stored = {"lin" + sfx: t for sfx, t in get_format(fmt).encode(w).items()}
    stored["lin.bias"] = bias
    return _core.LinearRunner(stored, "lin", isa, threads)


def _weight(rng, n, k, pattern, sparsity):
    w = rng.standard_normal((n, k)).astype(np.float32)
    w *= magnitude_mask(w, sparsity, pattern)
    w[0] = 0.0  # an empty output row
    return w


@pytest.mark.parametrize("pattern", ["unstructured", "block", "2:4", "4:8"])
@pytest.mark.parametrize("sparsity", [0.0, 0.6, 0.95, 1.0])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_sparse_formats_equal_dense(isa, rng, m, n, k, pattern, sparsity):
    w = _weight(rng, n, k, pattern, sparsity)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal((m, n)).astype(np.float32)
    ref_f32 = _runner("f32", w, bias, isa).run(x, 1, res)
    ref_s8 = _runner("int8", w, bias, isa).run(x, 1, res)
    for fmt in F32_FORMATS[pattern]:
        r = _runner(fmt, w, bias, isa)
        assert r.kind in ("sparse-f32", "nm-f32")
        assert rel_err(r.run(x, 1, res), ref_f32) < 1e-5, fmt
    for fmt in INT8_FORMATS[pattern]:
        r = _runner(fmt, w, bias, isa)
        assert r.kind == ("perm-s8" if fmt == "nm-int8" and _core.perm_s8_kernel(isa) else "bsr-s8")
        np.testing.assert_array_equal(r.run(x, 1, res), ref_s8, err_msg=fmt)
    # block-int7: codes in [-64, 64] (4x4 blocks: at avx2 multiplied 8-bit, vpmaddubsw) equal dense INT8 run on
    # the same codes and scales
    t7 = get_format("block-int7").encode(w)
    codes = decode_block_int8(t7)
    assert np.abs(codes.astype(np.int32)).max(initial=0) <= 64
    dense7 = {"lin.qweight": codes, "lin.wscale": t7[".wscale"], "lin.bias": bias}
    r = _runner("block-int7", w, bias, isa)
    assert r.kind == "bsr-s8"
    np.testing.assert_array_equal(r.run(x, 1, res), _core.LinearRunner(dense7, "lin", isa, 2).run(x, 1, res))
    # block-bf16 / nm-bf16: bf16 values widened at load, then the float32 kernel: equal block-f32 / nm-f32 on the
    # rounded weight
    wb = get_format("bf16").decode(get_format("bf16").encode(w))
    np.testing.assert_array_equal(_runner("block-bf16", w, bias, isa).run(x, 1, res),
                                  _runner("block-f32", wb, bias, isa).run(x, 1, res))
    if pattern in ("2:4", "4:8"):
        r = _runner("nm-bf16", w, bias, isa)
        assert r.kind == "nm-f32"
        np.testing.assert_array_equal(r.run(x, 1, res), _runner("nm-f32", wb, bias, isa).run(x, 1, res))


# (format, pattern, extra env): dense INT8, 4x4 quads, 1x4 rows as gathered quads and as pair records, N:M
U8_INPUT_CASES = [("int8", "block", {}), ("block-int8", "block", {}), ("csr-int8", "unstructured", {}),
                  ("csr-int8", "unstructured", {"TRIMFORMER_GATHERED_QUADS": "0"}), ("nm-int8", "2:4", {}),
                  ("nm-int8", "2:4", {"TRIMFORMER_PERM_QUADS": "0"})]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fmt,pattern,env", U8_INPUT_CASES)
def test_u8_input_equals_static_float_input(isa, rng, monkeypatch, fmt, pattern, env, threads):
    """u8_input (the input quantized with the layer's static parameters, and re-laid for block-sparse quads and
    gathered quads, before the call, as FFN2's arrives from FFN1's epilogue in a static INT8 pass: what the kernel
    benchmark's u8 mode times): the same bits as the static layer on float rows, from one token (the few-token path
    on float rows) to partial tiles and long rows, with an activation and a residual; timing in that mode leaves
    run() as it was; the static sparse layer gives the static dense INT8 layer's bits. Float formats and dynamic INT8
    refuse u8 input."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for m, n, k in [(1, 70, 45), (3, 36, 67), (17, 16, 64), (130, 70, 130), (37, 45, 1539)]:
        w = _weight(rng, n, k, pattern, 0.5 if ":" in pattern else 0.8)
        bias = rng.standard_normal(n).astype(np.float32)
        stored = {"lin" + sfx: t for sfx, t in get_format(fmt).encode(w).items()}
        stored["lin.bias"] = bias
        stored["lin.act_scale"] = np.array([4.0 / 255], np.float32)
        stored["lin.act_zero_point"] = np.array([120], np.int32)
        r = _core.LinearRunner(stored, "lin", isa, threads)
        x = rng.uniform(-2.5, 2.5, (m, k)).astype(np.float32)  # a few beyond the range: clamped alike
        res = rng.standard_normal((m, n)).astype(np.float32)
        want = r.run(x, 1, res)
        if fmt != "int8":  # static sparse equals static dense INT8, bit for bit (uniform_rows: hoisted products)
            dense = {"lin" + sfx: t for sfx, t in get_format("int8").encode(w).items()}
            dense.update({key: stored[key] for key in ("lin.bias", "lin.act_scale", "lin.act_zero_point")})
            ref = _core.LinearRunner(dense, "lin", isa, threads).run(x, 1, res)
            np.testing.assert_array_equal(want, ref, err_msg=f"{m}x{n}x{k}")
        np.testing.assert_array_equal(r.run(x, 1, res, u8_input=True), want, err_msg=f"{m}x{n}x{k}")
        np.testing.assert_array_equal(r.run(x, 0, u8_input=True), r.run(x, 0), err_msg=f"{m}x{n}x{k}")
        assert 0.0 < r.time(m, 2, True, False, True) < 1.0
        assert 0.0 < r.time(m, 2, False, True, True) < 1.0
        assert 0.0 < r.time(m, 1, True, False, True, warm_call=False) < 1.0  # the region's first call timed
        assert 0.0 < r.time(m, 1, False, True, True, warm_call=False) < 1.0
        np.testing.assert_array_equal(r.run(x, 1, res), want)
    x = rng.standard_normal((5, 45)).astype(np.float32)
    w = _weight(rng, 70, 45, pattern, 0.5)
    for other in (fmt, "f32"):  # dynamic INT8 (no static parameters) and float
        r = _runner(other, w, np.zeros(70, np.float32), isa, threads)
        with pytest.raises(ValueError, match="static activation parameters"):
            r.run(x, u8_input=True)
        with pytest.raises(ValueError, match="static activation parameters"):
            r.time(5, 2, False, False, True)


@pytest.mark.parametrize("n,k", [(16, 64), (45, 200), (70, 1532), (33, 7)])
@pytest.mark.parametrize("threads", [1, 2])
def test_csr_int8_row_pairs_equal_dense(isa, rng, monkeypatch, n, k, threads):
    """csr-int8 rows run in pairs where the level has them (avx512, rows under 384 quads, gathered quads off):
    rows matched within 16-row tiles, a tile's odd row alone, rows with nothing in common, identical rows, empty
    rows; the same bytes as dense INT8 for every token count and thread split."""
    monkeypatch.setenv("TRIMFORMER_GATHERED_QUADS", "0")
    w = _weight(rng, n, k, "unstructured", 0.7)
    w[1] = w[2]  # a pair that shares every quad
    w[3, : k // 2] = 0.0
    w[4, k // 2:] = 0.0  # rows 3 and 4 share none
    w[5] = 0.0
    bias = rng.standard_normal(n).astype(np.float32)
    r = _runner("csr-int8", w, bias, isa, threads)
    dense = _runner("int8", w, bias, isa, threads)
    assert r.row_pairs == (isa == "avx512_vnni" and (k + 3) // 4 < 384)
    assert not r.gathered_quads
    for m in (1, 17, 64, 131):
        x = rng.standard_normal((m, k)).astype(np.float32)
        res = rng.standard_normal((m, n)).astype(np.float32)
        np.testing.assert_array_equal(r.run(x, 1, res), dense.run(x, 1, res))
        np.testing.assert_array_equal(r.run(x, 0), dense.run(x, 0))


@pytest.mark.parametrize("n,k", [(16, 64), (45, 200), (70, 1539), (33, 7), (17, 3)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_csr_int8_gathered_quads_equal_dense(isa, rng, monkeypatch, n, k, threads, pattern):
    """1x4 INT8 rows whose quads are sparse run as gathered quads where the level has their byte re-layout
    (avx512): any four non-zeros of a row form one VNNI quad, their activation bytes interleaved at run time.
    Rows of 1, 2, 3 and 5 non-zeros (padded groups), an empty row, a dense row, rows sharing every input; static
    and dynamic activations, activation and residual epilogue, every token count from one to several partial
    tiles: the same bytes as dense INT8. (2:4 rows with the permuted quads off, which VBMI CPUs take for them.)"""
    monkeypatch.setenv("TRIMFORMER_PERM_QUADS", "0")
    w = _weight(rng, n, k, pattern, 0.5 if pattern == "2:4" else 0.85)
    if pattern == "unstructured" and n >= 8:
        for r, count in zip((1, 2, 3, 4), (1, 2, 3, 5), strict=True):
            w[r] = 0.0
            w[r, rng.choice(k, min(count, k), replace=False)] = rng.standard_normal(min(count, k))
        w[5] = rng.standard_normal(k)  # a dense row
        w[6] = w[7]
    bias = rng.standard_normal(n).astype(np.float32)
    fmt = "nm-int8" if pattern == "2:4" else "csr-int8"
    r = _runner(fmt, w, bias, isa, threads)
    assert r.gathered_quads == (isa == "avx512_vnni" and bool((w != 0).any()))
    assert ("gathered quads" in r.kernel) == r.gathered_quads
    dense = _runner("int8", w, bias, isa, threads)
    for m in (1, 16, 17, 63, 64, 65, 131, 200):
        x = rng.standard_normal((m, k)).astype(np.float32)
        res = rng.standard_normal((m, n)).astype(np.float32)
        np.testing.assert_array_equal(r.run(x, 1, res), dense.run(x, 1, res), err_msg=f"m={m}")
        np.testing.assert_array_equal(r.run(x, 0), dense.run(x, 0), err_msg=f"m={m}")


@pytest.mark.parametrize("n,k", [(32, 64), (45, 200), (70, 1539), (33, 7), (17, 3), (96, 130)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_int8_permuted_quads_equal_dense(isa, rng, n, k, threads, pattern):
    """N:M INT8 rows run as permuted quads where the CPU has AVX512-VBMI (vpermb picks each lane's four
    activations out of a 64-input chunk): panels of 32 rows and partial ones, chunks of 64 inputs and a partial
    last one (k under 64 too), rows sparser than the pattern (a chunk's steps are its fullest row's; the others
    padded with zero codes), empty rows and an empty chunk, bias, activation and residual, every token count
    around the 8-token micro-tile; the same bytes as dense INT8. Without VBMI (TRIMFORMER_NO_VBMI=1) the same
    weight loads as quads and agrees too."""
    w = _weight(rng, n, k, pattern, 0.5)
    if n >= 8:
        w[1] *= rng.random(k) < 0.3  # sparser than the pattern
        w[2, : min(k, 64)] = 0.0  # a chunk with nothing in it for this row
        w[3] = 0.0
    bias = rng.standard_normal(n).astype(np.float32)
    r = _runner("nm-int8", w, bias, isa, threads)
    assert r.kind == ("perm-s8" if _core.perm_s8_kernel(isa) else "bsr-s8")
    assert r.kernel.startswith(r.kind)
    assert _core.perm_s8_kernel(isa) == (isa == "avx512_vnni" and _core.perm_s8_kernel())
    dense = _runner("int8", w, bias, isa, threads)
    for m in (1, 2, 7, 8, 9, 16, 17, 63, 64, 131):
        x = rng.standard_normal((m, k)).astype(np.float32)
        res = rng.standard_normal((m, n)).astype(np.float32)
        np.testing.assert_array_equal(r.run(x, 1, res), dense.run(x, 1, res), err_msg=f"m={m}")
        np.testing.assert_array_equal(r.run(x, 0), dense.run(x, 0), err_msg=f"m={m}")


@pytest.mark.parametrize("n,k", [(1, 1), (16, 33), (70, 130), (300, 200), (45, 1539), (130, 36)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_csr_f32_generated_code_equals_plain_kernel(isa, rng, monkeypatch, n, k, threads):
    """csr-f32 runs as generated code at avx512 (one function per group of up to 28 output rows, blocks cut where
    the column splits of 2 .. threads threads fall): rows of one value and dense rows (a group's values pass the
    128 a compressed displacement reaches), inputs far apart (the At base moves), an empty row, groups of every
    size, every token count around the 16-token quarters and 64-token passes; within 1e-5 of the dense float32
    kernel and of the plain csr-f32 kernel (TRIMFORMER_JIT=0)."""
    w = _weight(rng, n, k, "unstructured", 0.9)
    if n >= 8:
        w[2] = rng.standard_normal(k)  # a dense row
        w[3] = 0.0
        w[3, k - 1] = 1.5  # one value at the last input
    bias = rng.standard_normal(n).astype(np.float32)
    r = _runner("csr-f32", w, bias, isa, threads)
    assert (r.jit_code_bytes > 0) == (isa == "avx512_vnni")
    assert ("generated code" in r.kernel) == (isa == "avx512_vnni")
    dense = _runner("f32", w, bias, isa, threads)
    # the plain walk, as the planner times it (csr_f32_code=False) and as TRIMFORMER_JIT=0 keeps it
    stored = {"lin" + sfx: t for sfx, t in get_format("csr-f32").encode(w).items()}
    stored["lin.bias"] = bias
    walk = _core.LinearRunner(stored, "lin", isa, threads, csr_f32_code=False)
    assert walk.jit_code_bytes == 0 and "generated code" not in walk.kernel
    monkeypatch.setenv("TRIMFORMER_JIT", "0")
    plain = _runner("csr-f32", w, bias, isa, threads)
    assert plain.jit_code_bytes == 0
    for m in (1, 15, 16, 17, 63, 64, 65, 131):
        x = rng.standard_normal((m, k)).astype(np.float32)
        res = rng.standard_normal((m, n)).astype(np.float32)
        got = r.run(x, 1, res)
        assert rel_err(got, dense.run(x, 1, res)) < 1e-5, m
        assert rel_err(got, plain.run(x, 1, res)) < 1e-5, m
        np.testing.assert_array_equal(walk.run(x, 1, res), plain.run(x, 1, res), err_msg=f"m={m}")
        assert rel_err(r.run(x, 0), dense.run(x, 0)) < 1e-5, m


def test_csr_f32_generated_code_only_where_it_stays_smaller_than_dense(rng):
    """The code and its values take about 14 bytes per stored value: a weight with more than 2 values in 7 stored
    (here half of them) keeps the plain kernel, which gives the same results."""
    bias = np.zeros(64, np.float32)
    for sparsity, generated in ((0.9, True), (0.75, True), (0.5, False)):
        w = _weight(rng, 64, 300, "unstructured", sparsity)
        r = _runner("csr-f32", w, bias, "")
        assert (r.jit_code_bytes > 0) == (generated and _core.resolve_isa("") == "avx512_vnni"), sparsity
        x = rng.standard_normal((20, 300)).astype(np.float32)
        assert rel_err(r.run(x), _runner("f32", w, bias, "").run(x)) < 1e-5


def test_nm_int8_without_vbmi_loads_as_quads(rng, monkeypatch):
    w = _weight(rng, 40, 96, "2:4", 0.5)
    bias = rng.standard_normal(40).astype(np.float32)
    x = rng.standard_normal((19, 96)).astype(np.float32)
    want = _runner("int8", w, bias, "").run(x, 1)
    for switch in ("TRIMFORMER_NO_VBMI", "TRIMFORMER_PERM_QUADS"):
        monkeypatch.setenv(switch, "1" if switch == "TRIMFORMER_NO_VBMI" else "0")
        assert not _core.perm_s8_kernel()
        r = _runner("nm-int8", w, bias, "")
        assert r.kind == "bsr-s8"
        np.testing.assert_array_equal(r.run(x, 1), want)
        monkeypatch.delenv(switch)


def test_dense_quads_stay_quads(isa, rng):
    """Block-pruned 1x4 rows (four non-zeros per quad) keep their quads: gathering would only add unpacks."""
    w = _weight(rng, 32, 96, "block", 0.75)
    r = _runner("csr-int8", w, np.zeros(32, np.float32), isa, 1)
    assert not r.gathered_quads


def test_sparse_storage_shrinks_with_sparsity(rng):
    w = _weight(rng, 64, 96, "unstructured", 0.9)
    f32 = sum(t.nbytes for t in get_format("f32").encode(w).values())
    csr = sum(t.nbytes for t in get_format("csr-f32").encode(w).values())
    assert csr < 0.2 * f32  # 10% values (4 B) + uint16 indices (2 B) + row pointers
    assert get_format("csr-f32").encode(w)[".csr_cols"].dtype == np.uint16
    w = _weight(rng, 64, 96, "2:4", 0.0)
    nm = get_format("nm-int8").encode(w)
    assert nm[".nm_index"].nbytes == 64 * 96 // 2 * 2 // 8  # 2 bits per kept value


def _expect_error(stored, match):
    with pytest.raises(ValueError, match=match):
        _core.LinearRunner(stored, "lin", "", 1)


def test_corrupt_sparse_tensors_fail_clearly(rng):
    w = _weight(rng, 12, 20, "unstructured", 0.7)
    for fmt in ("csr-f32", "csr-int8"):
        good = {"lin" + s: t for s, t in get_format(fmt).encode(w).items()}
        bad = dict(good, **{"lin.csr_cols": good["lin.csr_cols"].astype(np.int32)})
        bad["lin.csr_cols"][3] = 20
        _expect_error(bad, "out of range")
        bad = dict(good, **{"lin.csr_cols": good["lin.csr_cols"].astype(np.int32)})
        bad["lin.csr_cols"][5] = -1
        _expect_error(bad, "out of range")
        rp = good["lin.csr_rowptr"].copy()
        rp[3], rp[4] = rp[4], rp[3]
        _expect_error(dict(good, **{"lin.csr_rowptr": rp}), "decrease|increase")
        rp = good["lin.csr_rowptr"].copy()
        rp[-1] += 1
        _expect_error(dict(good, **{"lin.csr_rowptr": rp}), "shape|entries")
        cols = good["lin.csr_cols"].copy()
        row = int(np.argmax(np.diff(good["lin.csr_rowptr"]) >= 2))
        j = int(good["lin.csr_rowptr"][row])
        cols[j], cols[j + 1] = cols[j + 1], cols[j]
        _expect_error(dict(good, **{"lin.csr_cols": cols}), "increase")
        _expect_error(dict(good, **{"lin.csr_shape": np.array([12, 0], np.int32)}), "positive")
    good = {"lin" + s: t for s, t in get_format("block-f32").encode(w).items()}
    cols = good["lin.b41_cols"].astype(np.int32)
    cols[0] = 10**6
    _expect_error(dict(good, **{"lin.b41_cols": cols}), "out of range")
    _expect_error(dict(good, **{"lin.b41_values": good["lin.b41_values"][:-1]}), "shape")
    w = _weight(rng, 12, 20, "2:4", 0.0)
    for fmt in ("nm-f32", "nm-bf16", "nm-int8"):
        good = {"lin" + s: t for s, t in get_format(fmt).encode(w).items()}
        idx = good["lin.nm_index"].copy()
        idx[0, 0] = 0b0000_0101  # first group: indices 1 then 1 (not increasing)
        _expect_error(dict(good, **{"lin.nm_index": idx}), "increase")
        _expect_error(dict(good, **{"lin.nm_shape": np.array([12, 20, 3, 4], np.int32)}), "2:4 and 4:8")
        _expect_error(dict(good, **{"lin.nm_index": idx[:, :-1]}), "shape")
        values = "lin.nm_qvalues" if fmt == "nm-int8" else "lin.nm_values"
        _expect_error(dict(good, **{values: good[values][:, :-1]}), "shape")
        _expect_error(dict(good, **{"lin.nm_index": idx.astype(np.int32)}), "dtype")


def test_random_corruption_never_crashes(rng):
    """Random index bytes: the loader either accepts a still-valid weight or raises ValueError."""
    w = _weight(rng, 16, 40, "unstructured", 0.8)
    good = {"lin" + s: t for s, t in get_format("csr-f32").encode(w).items()}
    x = rng.standard_normal((3, 40)).astype(np.float32)
    for _ in range(200):
        bad = {k: v.copy() for k, v in good.items()}
        key = ["lin.csr_cols", "lin.csr_rowptr"][rng.integers(2)]
        flat = bad[key].reshape(-1)
        flat[rng.integers(flat.size)] = rng.integers(-5, 60)
        try:
            r = _core.LinearRunner(bad, "lin", "", 1)
        except ValueError:
            continue
        assert np.isfinite(r.run(x)).all()


@pytest.mark.parametrize("quantize", ["int8-dynamic", "int8-static"])
@pytest.mark.parametrize("mixed", [False, True])
def test_encoder_with_row_pairs_equals_rows_one_at_a_time(isa, rng, tmp_path, monkeypatch, quantize, mixed):
    """A whole 90% unstructured INT8 encoder (csr-int8 everywhere) loaded with gathered quads (the default at
    avx512; static INT8's FFN1 then writes FFN2's byte rows, or u8 rows with TRIMFORMER_FFN_BYTE_ROWS_OFF=1), with
    row pairs (TRIMFORMER_GATHERED_QUADS=0) and with neither (TRIMFORMER_ROW_PAIRS=0 too) gives the
    same bytes, in the team mode (batch 1: 33 tokens; 130 and 2 x 100, split between the threads) and side by
    side (batch 5).
    mixed: the attention output projections block-pruned (block-int8, 4x4 blocks) between gathered Linears: the
    threads' token cuts then differ between neighbouring ops."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch

    import trimformer as tf
    from conftest import tiny_bert
    from trimformer.compress import prune_magnitude
    from trimformer.runtime.engine import compile_encoder

    model = tiny_bert(intermediate=92, max_positions=160)
    prune_magnitude(model, 0.9, "unstructured")
    if mixed:
        for layer in model.encoder.layer:
            dense = layer.attention.output.dense
            with torch.no_grad():
                dense.weight.copy_(torch.randn_like(dense.weight) * magnitude_mask_torch(dense.weight))
    ids = rng.integers(1, 100, (5, 130))
    mask = np.ones_like(ids)
    mask[2, 20:] = 0
    calib = [{"input_ids": ids[:2], "attention_mask": mask[:2]}]
    eng = compile_encoder(model, quantize=quantize, calibration=calib, sparse=None, isa=isa, threads=2)
    want = {n: "block-int8" if mixed and n.endswith("attn_out") else "csr-int8" for n in eng.formats}
    assert eng.formats == want
    path = tf.save(eng, tmp_path / "m")
    monkeypatch.setenv("TRIMFORMER_GATHERED_QUADS", "0")
    paired = tf.load(path, isa=isa, threads=2)
    monkeypatch.setenv("TRIMFORMER_ROW_PAIRS", "0")
    single = tf.load(path, isa=isa, threads=2)
    monkeypatch.delenv("TRIMFORMER_ROW_PAIRS")
    monkeypatch.delenv("TRIMFORMER_GATHERED_QUADS")
    monkeypatch.setenv("TRIMFORMER_FFN_BYTE_ROWS_OFF", "1")  # static INT8: FFN1 writes u8 rows, FFN2 re-lays them
    gathered_rows = tf.load(path, isa=isa, threads=2)
    monkeypatch.delenv("TRIMFORMER_FFN_BYTE_ROWS_OFF")
    gathered = tf.load(path, isa=isa, threads=2)  # static INT8: FFN1 writes FFN2's byte rows
    for b, seq in ((1, 33), (1, 130), (2, 100), (5, 33), (5, 130)):
        want = single.run(ids[:b, :seq], mask[:b, :seq])["last_hidden_state"]
        np.testing.assert_array_equal(paired.run(ids[:b, :seq], mask[:b, :seq])["last_hidden_state"], want)
        np.testing.assert_array_equal(gathered_rows.run(ids[:b, :seq], mask[:b, :seq])["last_hidden_state"], want)
        np.testing.assert_array_equal(gathered.run(ids[:b, :seq], mask[:b, :seq])["last_hidden_state"], want)


def magnitude_mask_torch(weight):
    """4x4 blocks kept (every other one): quads of four non-zeros, which stay quads when loaded"""
    import torch

    n, k = weight.shape
    keep = (torch.arange(n)[:, None] // 4 + torch.arange(k)[None, :] // 4) % 2 == 0
    return keep.to(weight.dtype)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("pattern,fmt", [("block", "block-int8"), ("unstructured", "csr-int8")])
def test_long_calls_at_every_tile_width_and_in_pieces(isa, rng, monkeypatch, threads, pattern, fmt):
    # Calls longer than 8 re-layout tiles (600 tokens: 4 token vectors per 4x4-block tile at the avx512 level, 2 on
    # calls of 129-512 tokens), under each TRIMFORMER_BSR_TILE_VECS (1, 2, 4; others: the kernel's rule), and 2
    # threads' long token split prepared and multiplied in pieces or (TRIMFORMER_BSR_PIECES_OFF=1) share by share:
    # the dense INT8 bits, with a bias, GELU and a residual
    m, n, k = 600, 70, 130
    w = _weight(rng, n, k, pattern, 0.8)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal((m, n)).astype(np.float32)
    ref = _runner("int8", w, bias, isa, threads).run(x, 1, res)
    for vecs, whole in (("0", "0"), ("1", "0"), ("2", "1"), ("3", "0"), ("4", "1"), ("0", "1")):
        monkeypatch.setenv("TRIMFORMER_BSR_TILE_VECS", vecs)  # read when the runner is built
        monkeypatch.setenv("TRIMFORMER_BSR_PIECES_OFF", whole)
        r = _runner(fmt, w, bias, isa, threads)
        assert r.kind == "bsr-s8"
        np.testing.assert_array_equal(r.run(x, 1, res), ref, err_msg=f"{vecs} {whole}")


@pytest.mark.parametrize("threads", [1, 2])
def test_row_pieces_with_and_without_residual_at_either_tile_width(isa, rng, monkeypatch, threads):
    # Calls of 3 to 8 re-layout tiles (300 tokens; 150 per thread on 2) whose 4x4-block tiles end in float token
    # rows: on Intel cores the pieces without a residual run 4 token vectors and those with one 2;
    # TRIMFORMER_BSR_PIECES_V2=1 runs 2 for both. The dense INT8 bits either way, with and without a residual
    m, n, k = 300, 83, 130
    w = _weight(rng, n, k, "block", 0.8)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal((m, n)).astype(np.float32)
    dense = _runner("int8", w, bias, isa, threads)
    want = {"residual": dense.run(x, 1, res), "none": dense.run(x, 1)}
    for v2 in ("0", "1"):
        monkeypatch.setenv("TRIMFORMER_BSR_PIECES_V2", v2)  # read when the runner is built
        r = _runner("block-int8", w, bias, isa, threads)
        np.testing.assert_array_equal(r.run(x, 1, res), want["residual"], err_msg=v2)
        np.testing.assert_array_equal(r.run(x, 1), want["none"], err_msg=v2)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1008, 1001])
def test_outputs_past_the_streaming_size_equal_dense(isa, rng, threads, n):
    # A call whose float output reaches _core.stream_output_bytes writes it by streaming stores at the avx512 level
    # where its rows lie on whole 64-byte lines (n = 1008: 63 lines per row), through the caches where they do not
    # (n = 1001): the dense INT8 bits either way, with a bias, GELU and a residual, over a partial last token tile
    k = 70
    m = _core.stream_output_bytes // (4 * n) + 37
    w = _weight(rng, n, k, "block", 0.9)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal((m, n)).astype(np.float32)
    assert m * n * 4 >= _core.stream_output_bytes
    r = _runner("block-int8", w, bias, isa, threads)
    assert r.kind == "bsr-s8"
    np.testing.assert_array_equal(r.run(x, 1, res), _runner("int8", w, bias, isa, threads).run(x, 1, res))


@pytest.mark.parametrize("threads", [1, 2])
def test_calls_of_a_few_tokens_equal_dense(isa, rng, monkeypatch, threads):
    # Calls of up to _core.bsr_few_tokens tokens run 4x4 blocks over the u8 rows, without a re-layout (at levels
    # that have it), and with TRIMFORMER_BSR_FEW_TOKENS_OFF=1 as longer calls do: the dense INT8 bits either way, one
    # token past the limit too, with a bias, GELU and a residual, on outputs that end in a partial row block
    n, k = 70, 130
    w = _weight(rng, n, k, "block", 0.8)
    bias = rng.standard_normal(n).astype(np.float32)
    dense = _runner("int8", w, bias, isa, threads)
    few = _runner("block-int8", w, bias, isa, threads)
    monkeypatch.setenv("TRIMFORMER_BSR_FEW_TOKENS_OFF", "1")  # read when the runner is built
    tiles = _runner("block-int8", w, bias, isa, threads)
    for m in range(1, max(_core.bsr_few_tokens(isa), 1) + 2):
        x = rng.standard_normal((m, k)).astype(np.float32)
        res = rng.standard_normal((m, n)).astype(np.float32)
        want = dense.run(x, 1, res)
        np.testing.assert_array_equal(few.run(x, 1, res), want, err_msg=str(m))
        np.testing.assert_array_equal(tiles.run(x, 1, res), want, err_msg=str(m))


@pytest.mark.parametrize("quantize", ["int8-dynamic", "int8-static"])
def test_encoder_on_a_few_tokens_equals_the_tiles_path(isa, rng, tmp_path, monkeypatch, quantize):
    """A 4x4 block-pruned INT8 encoder on passes of 1 to 9 tokens (its Linears' calls of a few tokens run over the
    u8 rows where the level has that path) gives the bytes of the same engine loaded with
    TRIMFORMER_BSR_FEW_TOKENS_OFF=1, static (requantized inputs from the previous epilogue: on a few tokens FFN1
    writes FFN2's u8 rows, which FFN2's call runs over, instead of its re-layout) and dynamic INT8."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import trimformer as tf
    from conftest import tiny_bert
    from trimformer.compress import prune_magnitude
    from trimformer.runtime.engine import compile_encoder

    model = tiny_bert(intermediate=92, max_positions=40)
    prune_magnitude(model, 0.8, "block")
    ids = rng.integers(1, 100, (3, 9))
    mask = np.ones_like(ids)
    calib = [{"input_ids": ids[:2], "attention_mask": mask[:2]}]
    eng = compile_encoder(model, quantize=quantize, calibration=calib, sparse=None, isa=isa, threads=2)
    assert set(eng.formats.values()) == {"block-int8"}
    path = tf.save(eng, tmp_path / "m")
    few = tf.load(path, isa=isa, threads=2)
    monkeypatch.setenv("TRIMFORMER_BSR_FEW_TOKENS_OFF", "1")
    tiles = tf.load(path, isa=isa, threads=2)
    for b, seq in ((1, 1), (1, 3), (1, 8), (1, 9), (2, 3), (3, 2)):
        want = tiles.run(ids[:b, :seq], mask[:b, :seq])["last_hidden_state"]
        np.testing.assert_array_equal(few.run(ids[:b, :seq], mask[:b, :seq])["last_hidden_state"], want)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("fmt", ["int8", "block-int8", "csr-f32"])
def test_timing_in_one_region_and_per_call(rng, fmt, threads):
    # LinearRunner.time runs its calls in one parallel region (each ending at the team's barrier, as a pass's ops)
    # or a region per call: both time real calls (a few tokens and tiles, hot and cold) and leave the runner as it
    # was, so that run() still gives the bits it gave before
    w = _weight(rng, 70, 45, "block", 0.9)
    r = _runner(fmt, w, rng.standard_normal(70).astype(np.float32), "", threads)
    x = rng.standard_normal((130, 45)).astype(np.float32)
    before = r.run(x)
    for m in (1, 130):
        for cold in (False, True):
            for per_call in (False, True):
                t = r.time(m, 3, cold, per_call)
                assert 0.0 < t < 1.0
    np.testing.assert_array_equal(r.run(x), before)
    for bad in ((0, 3), (4, 0)):
        with pytest.raises(ValueError, match="positive"):
            r.time(*bad, False, False)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("act", [0, 1, 2])
def test_block_int8_pieces_transposed_from_the_tile_equal_transpose16(isa, rng, monkeypatch, act, threads):
    # the tiles' pieces go back to token rows by load_transposed16 (inserts from memory); TRIMFORMER_BSR_TRANSPOSE16
    # keeps the register transpose: the same bits, with a residual and without, over partial pieces (tokens and
    # outputs not multiples of 16)
    w = _weight(rng, 70, 45, "block", 0.7)
    bias = rng.standard_normal(70).astype(np.float32)
    x = rng.standard_normal((133, 45)).astype(np.float32)
    res = rng.standard_normal((133, 70)).astype(np.float32)
    new = _runner("block-int8", w, bias, isa, threads)
    monkeypatch.setenv("TRIMFORMER_BSR_TRANSPOSE16", "1")
    old = _runner("block-int8", w, bias, isa, threads)
    np.testing.assert_array_equal(new.run(x, act), old.run(x, act))
    np.testing.assert_array_equal(new.run(x, act, res), old.run(x, act, res))
