"""Block-sparse INT8 GEMM: bit-identical to the dense INT8 kernel (same integer sums, same dequantization) over odd
shapes, random block patterns (empty rows, 0% and 100% density), 1x4 and 4x4 blocks, at every ISA level."""

import numpy as np
import pytest

from trimformer import _core

SHAPES = [(1, 1, 1), (5, 17, 13), (37, 70, 130), (130, 33, 67), (19, 23, 1001), (200, 50, 9), (64, 96, 64)]


@pytest.mark.parametrize("block_rows", [1, 4])
@pytest.mark.parametrize("density", [0.0, 0.03, 0.3, 1.0])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_block_sparse_equals_dense_int8(isa, rng, m, n, k, density, block_rows):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    keep = rng.random((-(-n // block_rows), -(-k // 4))) < density
    keep[0] = False  # an empty row block
    w = (w * np.repeat(np.repeat(keep, block_rows, 0), 4, 1)[:n, :k]).astype(np.int8)
    ws = rng.random(n, dtype=np.float32) + 0.01
    bias = rng.standard_normal(n, dtype=np.float32)
    for act in (0, 1):
        dense = _core.gemm_s8(a, w, ws, 0.013, 5, bias=bias, act=act, isa=isa)
        sparse = _core.gemm_bsr_s8(a, w, ws, 0.013, 5, bias=bias, act=act, isa=isa, block_rows=block_rows)
        np.testing.assert_array_equal(sparse, dense)


def test_bad_block_rows():
    a = np.zeros((2, 4), np.uint8)
    w = np.zeros((2, 4), np.int8)
    with pytest.raises(ValueError, match="block_rows"):
        _core.gemm_bsr_s8(a, w, np.ones(2, np.float32), 1.0, 0, block_rows=3)
