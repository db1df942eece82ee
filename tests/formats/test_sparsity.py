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
