"""Sparsity masks respect their pattern exactly; the block-sparse format round-trips."""

import numpy as np
import pytest

from trimformer.formats.registry import get_format
from trimformer.formats.sparsity import (
    PATTERNS,
    block_density,
    decode_block_int8,
    encode_block_int8,
    magnitude_mask,
)


@pytest.mark.parametrize("shape", [(13, 22), (64, 64), (7, 5), (33, 130)])
def test_unstructured_and_block_masks(rng, shape):
    w = rng.standard_normal(shape).astype(np.float32)
    keep = magnitude_mask(w, 0.7, "unstructured")
    assert abs((1 - keep.mean()) - 0.7) < 1.0 / w.size + 1e-9
    assert np.abs(w[keep]).min() >= np.abs(w[~keep]).max()  # the smallest magnitudes go
    keep = magnitude_mask(w, 0.7, "block")
    rows, cols = shape[0] // 4 * 4, shape[1] // 4 * 4
    blocks = keep[:rows, :cols].reshape(rows // 4, 4, cols // 4, 4)
    # every (full) 4x4 block is all kept or all pruned
    assert np.all(blocks.all(axis=(1, 3)) | ~blocks.any(axis=(1, 3)))


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_n_m_masks(rng, pattern):
    n, m = (int(x) for x in pattern.split(":"))
    w = rng.standard_normal((9, 8 * m)).astype(np.float32)
    keep = magnitude_mask(w, 0.0, pattern)
    assert np.all(keep.reshape(9, -1, m).sum(-1) == n)
    groups = np.abs(w).reshape(9, -1, m)
    kept = keep.reshape(9, -1, m)
    assert np.all(np.where(kept, groups, np.inf).min(-1) >= np.where(kept, -np.inf, groups).max(-1))


def test_bad_pattern_and_sparsity(rng):
    w = rng.standard_normal((4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="pattern"):
        magnitude_mask(w, 0.5, "3:7")
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(w, 1.5)
    assert set(PATTERNS) == {"unstructured", "block", "2:4", "4:8"}


@pytest.mark.parametrize("block_rows", [1, 4])
@pytest.mark.parametrize("density", [0.0, 0.2, 1.0])
def test_block_format_round_trip(rng, block_rows, density):
    q = rng.integers(-127, 128, (18, 37)).astype(np.int8)
    keep = rng.random((-(-18 // block_rows), -(-37 // 4))) < density
    q = (q * np.repeat(np.repeat(keep, block_rows, 0), 4, 1)[:18, :37]).astype(np.int8)
    t = encode_block_int8(q, block_rows)
    np.testing.assert_array_equal(decode_block_int8(t), q)
    assert len(t[".bsr_cols"]) == int(keep.sum())
    assert block_density(q, block_rows) == pytest.approx(keep.mean())


def test_registry_block_int8_matches_dense_int8(rng):
    w = rng.standard_normal((20, 24)).astype(np.float32)
    w *= magnitude_mask(w, 0.8, "block")
    blk, dense = get_format("block-int8"), get_format("int8")
    np.testing.assert_array_equal(blk.decode(blk.encode(w)), dense.decode(dense.encode(w)))


# ---- CSR, 4x1 blocks and N:M (issue 3) ----------------------------------------------------------------------------

SPARSE_FORMATS = ["csr-f32", "csr-int8", "block-f32", "block-bf16", "nm-f32", "nm-bf16", "nm-int8", "block-int8",
                  "bitmask-f32", "bitmask-int8"]


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (13, 22), (33, 130), (9, 64)])
@pytest.mark.parametrize("pattern", ["unstructured", "block", "2:4", "4:8"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_sparse_formats_round_trip(rng, shape, pattern, sparsity):
    from trimformer.formats.sparsity import nm_pattern_of

    w = rng.standard_normal(shape).astype(np.float32)
    w *= magnitude_mask(w, sparsity, pattern)
    w[0] = 0.0  # an empty row
    deq = get_format("int8").decode(get_format("int8").encode(w))
    for name in SPARSE_FORMATS:
        fmt = get_format(name)
        if name.startswith("nm") and nm_pattern_of(w) is None:
            with pytest.raises(ValueError, match="sparse"):
                fmt.encode(w)
            continue
        stored = fmt.encode(w)
        assert set(stored) == set(fmt.suffixes) and fmt.sparse
        assert fmt.logical_shape(stored) == shape
        expect = deq if name.endswith("int8") else w
        if name in ("block-bf16", "nm-bf16"):
            expect = get_format("bf16").decode(get_format("bf16").encode(w))
        np.testing.assert_array_equal(fmt.decode(stored), expect, err_msg=name)


def test_csr_and_block4x1_layouts(rng):
    from trimformer.formats.sparsity import decode_block4x1, decode_csr, encode_block4x1, encode_csr

    w = np.zeros((6, 7), np.float32)
    w[0, 3], w[0, 6], w[2, 1], w[5, 0] = 1, 2, 3, 4
    t = encode_csr(w, ".csr_values")
    np.testing.assert_array_equal(t[".csr_rowptr"], [0, 2, 2, 3, 3, 3, 4])
    np.testing.assert_array_equal(t[".csr_cols"], [3, 6, 1, 0])
    np.testing.assert_array_equal(t[".csr_values"], [1, 2, 3, 4])
    np.testing.assert_array_equal(decode_csr(t, ".csr_values"), w)
    b = encode_block4x1(w)  # row blocks {0..3}, {4, 5}: inputs 1, 3, 6 and 0
    np.testing.assert_array_equal(b[".b41_rowptr"], [0, 3, 4])
    np.testing.assert_array_equal(b[".b41_cols"], [1, 3, 6, 0])
    np.testing.assert_array_equal(b[".b41_values"][0], [0, 0, 3, 0])
    np.testing.assert_array_equal(decode_block4x1(b), w)
    wide = np.zeros((2, 70_000), np.float32)
    wide[1, 69_999] = 1
    assert encode_csr(wide, ".csr_values")[".csr_cols"].dtype == np.int32  # indices past uint16


def test_nm_layout_and_errors(rng):
    from trimformer.formats.sparsity import decode_nm, encode_nm, nm_pattern_of, satisfies_nm

    w = np.zeros((1, 10), np.float32)
    w[0, [1, 3, 4, 9]] = [5, 6, 7, 8]  # groups [0..3]: {1, 3}; [4..7]: {4} + a zero; [8, 9]: {9} + a zero
    t = encode_nm(w, ".nm_values")
    assert nm_pattern_of(w) == "2:4" and list(t[".nm_shape"]) == [1, 10, 2, 4]
    np.testing.assert_array_equal(t[".nm_values"], [[5, 6, 7, 0, 0, 8]])
    # indices 1, 3 | 0, 1 | 0, 1 at 2 bits, little-endian: 0b11_01 + (0b01_00 << 4), then 0b01_00
    np.testing.assert_array_equal(t[".nm_index"], [[0b0100_1101, 0b0000_0100]])
    np.testing.assert_array_equal(decode_nm(t, ".nm_values"), w)
    dense = rng.standard_normal((3, 16)).astype(np.float32)
    assert nm_pattern_of(dense) is None and not satisfies_nm(dense, "4:8")
    with pytest.raises(ValueError, match="sparse"):
        encode_nm(dense, ".nm_values")
    w48 = dense * magnitude_mask(dense, 0.0, "4:8")
    assert nm_pattern_of(w48) == "4:8"
    np.testing.assert_array_equal(decode_nm(encode_nm(w48, ".nm_values"), ".nm_values"), w48)
