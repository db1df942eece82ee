"""An order of each encoder layer's FFN features chosen for the csr-int8 kernel.

csr-int8 stores a weight's 1x4 blocks (4 consecutive inputs of one output row) that hold a non-zero, and spends one
`vpdpbusd` per block and 16 tokens: at 90% unstructured sparsity a kept block holds 1.16 non-zeros on average. The
FFN's intermediate features can be put in any order without changing what the layer computes (FFN1's output rows
and FFN2's input columns permuted alike; every intermediate op is per feature), so the planner picks the order
that puts FFN2 columns whose non-zeros share rows in the same quad. Greedy pairing: each column in turn takes the
free column sharing most rows with it, then the pairs are paired the same way. On 90% unstructured BERT-base FFN2
weights it leaves 0.90x the blocks, and the kernel's time follows the blocks (0.93x, single Linears:
bench/results/csr_int8_column_order_zen4.md). INT8 results are unchanged to the bit: the products are summed in
int32, so their order does not matter.

Only where it pays and breaks no layout a kernel wants: FFN2 quantized to INT8 at a level whose kernels multiply
input quads (not the input-pair avx2 kernels), neither FFN2 nor FFN1 in a 4x4 block pattern, and at least
MIN_BLOCK_GAIN fewer blocks. An N:M layout of FFN2 may be broken: at the quad levels nm-int8 multiplies the same
1x4 blocks as csr-int8 (a 90%-sparse weight also fits 4:8 by chance), and a 2:4 weight keeps nearly every quad in
any order and stays dense INT8, so it is left as it is. TRIMFORMER_FEATURE_ORDER=0 turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np

from ..formats.sparsity import sparsity_stats

MIN_BLOCK_GAIN = 0.02  # keep the model's own order unless the new one leaves at least 2% fewer 1x4 blocks


def _pairs(vecs: np.ndarray) -> list[tuple[int, ...]]:
    """Rows of vecs (0/1 floats) in pairs, each free row in turn with the free row sharing most ones; an odd last
    row alone."""
    shared = vecs @ vecs.T
    free = np.ones(len(vecs), bool)
    out: list[tuple[int, ...]] = []
    for a in range(len(vecs)):
        if not free[a]:
            continue
        free[a] = False
        if not free.any():
            out.append((a,))
            break
        b = int(np.argmax(np.where(free, shared[a], -1.0)))
        free[b] = False
        out.append((a, b))
    return out


def quad_order(mask: np.ndarray) -> np.ndarray:
    """A permutation of the columns of `mask` [rows, k] (True where the weight is non-zero) that puts columns
    sharing rows in the same group of 4."""
    cols = np.ascontiguousarray(mask.T, dtype=np.float32)
    pairs = _pairs(cols)
    unions = np.stack([cols[list(p)].max(axis=0) for p in pairs])
    order = [c for group in _pairs(unions) for p in group for c in pairs[p]]
    return np.asarray(order, dtype=np.int64)


def quad_blocks(mask: np.ndarray) -> int:
    """1x4 blocks (4 consecutive columns of a row, k padded with zeros) holding a non-zero."""
    k = mask.shape[1]
    padded = np.pad(mask, ((0, 0), (0, (-k) % 4)))
    return int(padded.reshape(mask.shape[0], -1, 4).any(axis=2).sum())


def order_ffn_features(dense: Mapping[str, np.ndarray], layers: int, orders_for: Callable[[int], bool],
                       max_block_density: float) -> tuple[dict[str, np.ndarray], dict[int, tuple[int, int]]]:
    """A copy of `dense` with the FFN features of every layer i for which orders_for(i) holds put in quad_order of
    its FFN2 weight, where that leaves at least MIN_BLOCK_GAIN fewer 1x4 blocks, at most max_block_density of the
    quads (the planner's bound for the sparse INT8 formats: a denser weight stays dense INT8, whose order does not
    matter), and neither weight is 4x4-block-sparse (a 4x4 block density within the same bound). Also
    {layer: (FFN2 blocks before, after)} of the layers reordered."""
    if os.environ.get("TRIMFORMER_FEATURE_ORDER", "").strip() == "0":
        return dict(dense), {}
    out = dict(dense)
    changed: dict[int, tuple[int, int]] = {}
    for i in range(layers):
        p1, p2 = f"layers.{i}.ffn1", f"layers.{i}.ffn2"
        if not orders_for(i) or p1 + ".weight" not in dense or p2 + ".weight" not in dense:
            continue
        w1, w2 = np.asarray(dense[p1 + ".weight"]), np.asarray(dense[p2 + ".weight"])
        if w1.ndim != 2 or w2.ndim != 2 or w1.shape[0] != w2.shape[1] or w2.shape[1] < 8:
            continue
        st2 = sparsity_stats(w2)
        if st2["block_density"] <= max_block_density or st2["zeros"] == 0.0:
            continue
        if sparsity_stats(w1)["block_density"] <= max_block_density:
            continue
        mask = w2 != 0
        order = quad_order(mask)
        before, after = quad_blocks(mask), quad_blocks(mask[:, order])
        quads = w2.shape[0] * ((w2.shape[1] + 3) // 4)
        if after > (1.0 - MIN_BLOCK_GAIN) * before or after > max_block_density * quads:
            continue
        out[p1 + ".weight"] = np.ascontiguousarray(w1[order])
        if p1 + ".bias" in dense:
            out[p1 + ".bias"] = np.ascontiguousarray(np.asarray(dense[p1 + ".bias"])[order])
        out[p2 + ".weight"] = np.ascontiguousarray(w2[:, order])
        changed[i] = (before, after)
    return out, changed
