"""Sparsity patterns shared by the pruner and the packer: magnitude masks and the sparse weight layouts.

Patterns:
- "unstructured": any weight may be zero;
- "block": zero blocks of 4 output rows x 4 consecutive inputs (BLOCK_ROWS x 4), the layout the block-sparse
  INT8 kernels skip (4x4 measured faster than 1x4 on AVX-512 VNNI: each activation load feeds 4 dot products);
- "2:4" / "4:8": N:M along the input dimension (at most N non-zeros in every M consecutive inputs).
"""

from __future__ import annotations

import numpy as np

PATTERNS = ("unstructured", "block", "2:4", "4:8")
BLOCK_ROWS = 4


def _nm(pattern: str) -> tuple[int, int]:
    n, m = pattern.split(":")
    return int(n), int(m)


def magnitude_mask(w: np.ndarray, sparsity: float, pattern: str = "unstructured") -> np.ndarray:
    """Boolean keep-mask of `w` [out, in] that zeroes the smallest-magnitude weights (or blocks) in the pattern.

    For N:M patterns the sparsity is fixed by the pattern (1 - N/M) and `sparsity` is ignored.
    """
    w = np.asarray(w, np.float32)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {w.shape}")
    if pattern not in PATTERNS:
        raise ValueError(f"unknown sparsity pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    if pattern in ("2:4", "4:8"):
        n, m = _nm(pattern)
        rows, cols = w.shape
        pad = (-cols) % m
        a = np.abs(np.pad(w, ((0, 0), (0, pad)))).reshape(rows, -1, m)
        order = np.argsort(-a, axis=-1, kind="stable")
        keep = np.zeros_like(a, dtype=bool)
        np.put_along_axis(keep, order[..., :n], True, axis=-1)
        return keep.reshape(rows, -1)[:, :cols]
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if pattern == "unstructured":
        count = int(round(sparsity * w.size))
        keep = np.ones(w.size, bool)
        keep[np.argsort(np.abs(w).ravel(), kind="stable")[:count]] = False
        return keep.reshape(w.shape)
    rows, cols = w.shape
    pr, pc = (-rows) % BLOCK_ROWS, (-cols) % 4
    a = np.abs(np.pad(w, ((0, pr), (0, pc))))
    br, bc = a.shape[0] // BLOCK_ROWS, a.shape[1] // 4
    score = a.reshape(br, BLOCK_ROWS, bc, 4).sum(axis=(1, 3)).ravel()
    count = int(round(sparsity * score.size))
    keep_blocks = np.ones(score.size, bool)
    keep_blocks[np.argsort(score, kind="stable")[:count]] = False
    keep = np.repeat(np.repeat(keep_blocks.reshape(br, bc), BLOCK_ROWS, axis=0), 4, axis=1)
    return keep[:rows, :cols]


def block_density(w: np.ndarray, block_rows: int = BLOCK_ROWS) -> float:
    """Fraction of (block_rows x 4) blocks of `w` holding any non-zero."""
    w = np.asarray(w)
    rows, cols = w.shape
    a = np.pad(w != 0, ((0, (-rows) % block_rows), (0, (-cols) % 4)))
    blocks = a.reshape(a.shape[0] // block_rows, block_rows, a.shape[1] // 4, 4).any(axis=(1, 3))
    return float(blocks.mean()) if blocks.size else 1.0


def encode_block_int8(q: np.ndarray, block_rows: int = BLOCK_ROWS) -> dict[str, np.ndarray]:
    """INT8 weight [out, in] -> block-sparse tensors (suffix -> array) holding only blocks with a non-zero."""
    rows, cols = q.shape
    a = np.pad(q, ((0, (-rows) % block_rows), (0, (-cols) % 4)))
    br, bc = a.shape[0] // block_rows, a.shape[1] // 4
    blocks = a.reshape(br, block_rows, bc, 4).transpose(0, 2, 1, 3)  # [row block, k/4, rows, 4]
    nonzero = blocks.any(axis=(2, 3))
    rowptr = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32)
    rb, cb = np.nonzero(nonzero)
    return {
        ".bsr_shape": np.array([rows, cols, block_rows], np.int32),
        ".bsr_rowptr": rowptr,
        ".bsr_cols": cb.astype(index_dtype(bc)),
        ".bsr_values": np.ascontiguousarray(blocks[rb, cb].reshape(len(rb), 4 * block_rows)).astype(np.int8),
    }


def decode_block_int8(t: dict[str, np.ndarray]) -> np.ndarray:
    rows, cols, block_rows = (int(x) for x in t[".bsr_shape"])
    br, bc = -(-rows // block_rows), -(-cols // 4)
    blocks = np.zeros((br, bc, block_rows, 4), np.int8)
    rowptr = t[".bsr_rowptr"]
    rb = np.repeat(np.arange(br), np.diff(rowptr))
    blocks[rb, t[".bsr_cols"]] = t[".bsr_values"].reshape(-1, block_rows, 4)
    return blocks.transpose(0, 2, 1, 3).reshape(br * block_rows, bc * 4)[:rows, :cols]


# ---- unstructured (CSR), 4x1 blocks and N:M layouts (issue 3) ----------------------------------------------------


def index_dtype(limit: int) -> type:
    """Smallest stored dtype for indices in [0, limit): uint16 when they fit, else int32."""
    return np.uint16 if limit <= 1 << 16 else np.int32


def encode_csr(w: np.ndarray, values_key: str) -> dict[str, np.ndarray]:
    """Weight [out, in] -> CSR tensors: every non-zero, row by row in input order."""
    rows, cols = w.shape
    nz = w != 0
    rowptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int32)
    r, c = np.nonzero(nz)
    return {".csr_shape": np.array([rows, cols], np.int32), ".csr_rowptr": rowptr,
            ".csr_cols": c.astype(index_dtype(cols)), values_key: np.ascontiguousarray(w[r, c])}


def decode_csr(t: dict[str, np.ndarray], values_key: str) -> np.ndarray:
    rows, cols = (int(x) for x in t[".csr_shape"])
    values = np.asarray(t[values_key])
    out = np.zeros((rows, cols), values.dtype)
    r = np.repeat(np.arange(rows), np.diff(t[".csr_rowptr"]))
    out[r, np.asarray(t[".csr_cols"], np.int64)] = values
    return out


def encode_block4x1(w: np.ndarray) -> dict[str, np.ndarray]:
    """float32 weight [out, in] -> 4x1 blocks (4 consecutive output rows x 1 input) holding a non-zero."""
    rows, cols = w.shape
    a = np.pad(np.asarray(w, np.float32), ((0, (-rows) % 4), (0, 0)))
    blocks = a.reshape(-1, 4, cols).transpose(0, 2, 1)  # [row block, input, 4]
    nonzero = blocks.any(axis=2)
    rowptr = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32)
    rb, cb = np.nonzero(nonzero)
    return {".b41_shape": np.array([rows, cols], np.int32), ".b41_rowptr": rowptr,
            ".b41_cols": cb.astype(index_dtype(cols)), ".b41_values": np.ascontiguousarray(blocks[rb, cb])}


def decode_block4x1(t: dict[str, np.ndarray]) -> np.ndarray:
    rows, cols = (int(x) for x in t[".b41_shape"])
    nb = -(-rows // 4)
    blocks = np.zeros((nb, cols, 4), np.float32)
    rb = np.repeat(np.arange(nb), np.diff(t[".b41_rowptr"]))
    blocks[rb, np.asarray(t[".b41_cols"], np.int64)] = t[".b41_values"]
    return blocks.transpose(0, 2, 1).reshape(nb * 4, cols)[:rows]


NM_PATTERNS = ("2:4", "4:8")


def satisfies_nm(w: np.ndarray, pattern: str) -> bool:
    """Whether every group of M consecutive inputs of every row holds at most N non-zeros."""
    n, m = _nm(pattern)
    rows, cols = w.shape
    nz = np.pad(np.asarray(w) != 0, ((0, 0), (0, (-cols) % m))).reshape(rows, -1, m)
    return bool((nz.sum(axis=-1) <= n).all())


def nm_pattern_of(w: np.ndarray) -> str | None:
    """The finest N:M pattern `w` satisfies ("2:4" before "4:8"), or None."""
    return next((p for p in NM_PATTERNS if satisfies_nm(w, p)), None)


def encode_nm(w: np.ndarray, values_key: str, pattern: str | None = None) -> dict[str, np.ndarray]:
    """Weight [out, in] with at most N non-zeros per M inputs -> N values per group (its non-zeros, then zeros,
    in input order) and their in-group indices bit-packed at log2(M) bits, little-endian, each row padded to
    whole bytes. The pattern (default: the finest one `w` satisfies) is stored in ".nm_shape"."""
    w = np.asarray(w)
    pattern = pattern or nm_pattern_of(w)
    if pattern is None or not satisfies_nm(w, pattern):
        raise ValueError(f"weight is not {pattern or '2:4 or 4:8'} sparse (too many non-zeros in a group)")
    n, m = _nm(pattern)
    rows, cols = w.shape
    a = np.pad(w, ((0, 0), (0, (-cols) % m))).reshape(rows, -1, m)
    # non-zeros first (stable: in input order), then the first zeros; the kept slots sorted by input
    slots = np.sort(np.argsort(a == 0, axis=-1, kind="stable")[..., :n], axis=-1)
    values = np.take_along_axis(a, slots, axis=-1).reshape(rows, -1)
    bits = 2 if m == 4 else 3
    idx = slots.reshape(rows, -1).astype(np.uint8)
    bit_planes = (idx[..., None] >> np.arange(bits, dtype=np.uint8)) & 1  # [rows, values, bits]
    packed = np.packbits(bit_planes.reshape(rows, -1), axis=1, bitorder="little")
    return {".nm_shape": np.array([rows, cols, n, m], np.int32), values_key: np.ascontiguousarray(values),
            ".nm_index": packed}


def decode_nm(t: dict[str, np.ndarray], values_key: str) -> np.ndarray:
    rows, cols, n, m = (int(x) for x in t[".nm_shape"])
    values = np.asarray(t[values_key])
    per_row = values.shape[1]
    bits = 2 if m == 4 else 3
    planes = np.unpackbits(np.asarray(t[".nm_index"], np.uint8), axis=1, bitorder="little")[:, : per_row * bits]
    idx = (planes.reshape(rows, per_row, bits).astype(np.int64) << np.arange(bits)).sum(axis=-1)
    col = (np.arange(per_row) // n) * m + idx
    out = np.zeros((rows, per_row // n * m), values.dtype)
    np.put_along_axis(out, col, values, axis=1)
    return out[:, :cols]


def encode_bitmask(w: np.ndarray, values_key: str) -> dict[str, np.ndarray]:
    """Bitmask layout: one bit per weight (rows padded to 64 inputs, little-endian 64-bit words) and each row's
    non-zeros packed in input order (row-major over the whole matrix)."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {w.shape}")
    rows, cols = w.shape
    padded = -(-cols // 64) * 64
    nz = np.zeros((rows, padded), bool)
    nz[:, :cols] = w != 0
    mask = np.packbits(nz, axis=1, bitorder="little")  # byte b bit i = input 8b + i: the words' little-endian bytes
    return {".bm_shape": np.array([rows, cols], np.int32), ".bm_mask": np.ascontiguousarray(mask),
            values_key: np.ascontiguousarray(w[w != 0])}


def decode_bitmask(t: dict[str, np.ndarray], values_key: str) -> np.ndarray:
    rows, cols = (int(v) for v in np.asarray(t[".bm_shape"]).ravel()[:2])
    nz = np.unpackbits(np.asarray(t[".bm_mask"], np.uint8), axis=1, bitorder="little")[:, :cols].astype(bool)
    vals = np.asarray(t[values_key])
    if vals.size != int(nz.sum()):
        raise ValueError("bitmask values do not match the mask's popcount")
    out = np.zeros((rows, cols), vals.dtype)
    out[nz] = vals  # boolean assignment fills row-major: each row's non-zeros in input order
    return out


def sparsity_stats(w: np.ndarray) -> dict[str, float | str | None]:
    """What the planner looks at: zero fraction, non-zero 4x4 / 1x4 / 4x1 block fractions, N:M pattern."""
    w = np.asarray(w)
    rows, cols = w.shape
    nz = np.pad(w != 0, ((0, (-rows) % 4), (0, 0)))
    return {"zeros": float(1.0 - (w != 0).mean()) if w.size else 0.0,
            "block_density": block_density(w, BLOCK_ROWS),
            "quad_density": block_density(w, 1),
            "block4x1_density": float(nz.reshape(-1, 4, cols).any(axis=1).mean()) if w.size else 1.0,
            "nm": nm_pattern_of(w)}
