"""Second-order (Optimal Brain Surgeon) layer-wise solvers: SparseGPT pruning and GPTQ quantization.

Both minimise the layer reconstruction error ||W X - W' X||^2 column by column, using the Hessian
H = 2/N * sum x x^T of the layer inputs: removing (or rounding) weight j costs e_j^2 / [H^-1]_jj and the
optimal compensation of the not-yet-processed columns is -e_j / [H^-1]_jj * [H^-1]_{j, later}. The upper
Cholesky factor of H^-1 gives those rows for the sequential elimination order directly, and updates are
applied lazily in blocks of columns (the GPTQ / SparseGPT algorithms).

Grids come from ``trimformer.formats.kbit``; codes/scales/offsets are returned in its layout and the returned
weights are exactly ``kbit.dequantize(codes, scales, offsets)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..formats import kbit
from ..formats.sparsity import BLOCK_ROWS

__all__ = [
    "SPARSE_PATTERNS",
    "HessianAccumulator",
    "KbitQuantizer",
    "gptq_quantize",
    "rtn_quantize",
    "sparsegpt_prune",
]

SPARSE_PATTERNS = ("unstructured", "2:4", "4:8", "block")
BLOCK_COLS = 4  # the runtime's block-sparse layout: BLOCK_ROWS consecutive output rows x 4 consecutive inputs


class HessianAccumulator:
    """Running ``H = 2/N * sum x x^T`` over the calibration inputs of one Linear (N = number of input rows)."""

    def __init__(self, in_features: int, device: torch.device | str | None = None):
        if in_features <= 0:
            raise ValueError(f"in_features must be positive, got {in_features}")
        self.in_features = int(in_features)
        self._h = torch.zeros(self.in_features, self.in_features, dtype=torch.float32, device=device)
        self.n_samples = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        """Accumulate inputs ``x [..., in_features]`` (each row one input vector)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected inputs with last dimension {self.in_features}, got shape {tuple(x.shape)}")
        x = x.detach().reshape(-1, self.in_features).to(device=self._h.device, dtype=torch.float32)
        m = x.shape[0]
        if m == 0:
            return
        total = self.n_samples + m
        # keep H an average (not a sum) so that the scale does not grow with the calibration size
        self._h.mul_(self.n_samples / total)
        x = x * math.sqrt(2.0 / total)
        self._h.addmm_(x.t(), x)
        self.n_samples = total

    @property
    def hessian(self) -> torch.Tensor:
        """[in, in] float32 (a copy-free view: do not modify)."""
        return self._h


@dataclass
class KbitQuantizer:
    """Joint quantizer for ``sparsegpt_prune``: a kbit type and group size; records the group parameters.

    Called by the solver with the current (error-updated) weights of a group when its first column is reached.
    After the solve, ``scales`` / ``offsets`` hold the parameters (kbit layout) and ``codes`` the codes.
    """

    type_name: str
    group_size: int | None = None
    mse: bool = False  # search each group's range for the lowest squared error (see _Grid)
    scales: np.ndarray | None = field(default=None, init=False, repr=False)
    offsets: np.ndarray | None = field(default=None, init=False, repr=False)
    codes: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        kbit.get_kbit_type(self.type_name)

    def __call__(self, *args, **kwargs):  # pragma: no cover - the object is used through _Grid, not called
        raise TypeError("KbitQuantizer is passed to sparsegpt_prune(quantizer=...), not called directly")


MSE_COARSE = tuple(round(1.0 - 0.04 * i, 2) for i in range(1, 21))  # scale search: shrink factors 0.96 .. 0.20,
MSE_FINE = (-0.03, -0.02, -0.01, 0.01, 0.02, 0.03)  # then steps of 0.01 around each row's best (p <= 1)
_MSE_ELEMENTS = 1 << 22  # candidates evaluated at once: about this many values


class _Grid:
    """Torch-side nearest-level rounding on a kbit grid (same rule as kbit.quantize_with_params).

    mse=True: each group's parameters come from a search over shrunk ranges (symmetric: absmax * p; affine:
    [min * p, max * p]), keeping per row the p with the lowest squared error of the group's rounded values:
    p = 1 (the plain min/max rule, so never worse than it), 0.96, 0.92, ..., 0.20, then p* +- 0.01 .. 0.03 around
    the best p* (a coarse-to-fine version of the GPTQ reference's 1, 0.99, ..., 0.21 grid; ties keep the larger p).
    """

    def __init__(self, type_name: str, device: torch.device, mse: bool = False):
        self.t = kbit.get_kbit_type(type_name)
        self.levels = torch.tensor(self.t.levels, dtype=torch.float64, device=device)
        self.mids = (self.levels[1:] + self.levels[:-1]) / 2
        self.level_codes = torch.tensor(self.t.level_codes.astype(np.int64), device=device)
        self.lo, self.hi = float(self.t.levels[0]), float(self.t.levels[-1])
        self.mse = bool(mse)

    def _base(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lo, hi, absmax) of each row of w [..., g]."""
        if self.t.affine:
            lo, hi = w.min(dim=-1).values, w.max(dim=-1).values
            return lo, hi, hi
        amax = w.abs().max(dim=-1).values
        return amax, amax, amax

    def _from_range(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.t.affine:
            return ((hi - lo) / self.t.qmax).float().double(), lo.float().double()
        scale = (hi / self.t.qmax).float().double()
        return scale, torch.zeros_like(scale)

    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w [n, g] (float64; or [..., g]) -> scales, offsets [n] rounded to float32 (stored precision)."""
        lo, hi, _ = self._base(w)
        scale, offset = self._from_range(lo, hi)
        if not self.mse:
            return scale, offset
        # the search runs in float32 (it only ranks candidates); the chosen parameters are the exact stored ones
        w32 = w.float()
        best_err = self._sq_err(w32, scale.float().unsqueeze(-1), offset.float().unsqueeze(-1))
        best_p = torch.ones_like(lo)
        chunk = max(1, _MSE_ELEMENTS // max(w.numel(), 1))
        for stage in (MSE_COARSE, MSE_FINE):
            base = best_p.clone()
            for c in range(0, len(stage), chunk):
                step = torch.tensor(stage[c:c + chunk], dtype=w.dtype, device=w.device).view(-1, *([1] * lo.ndim))
                p = base + step if stage is MSE_FINE else step.expand(-1, *lo.shape)
                p = p.clamp(0.01, 1.0)
                s_c, o_c = self._from_range(lo * p, hi * p)  # [P, ...]
                err = self._sq_err(w32, s_c.float().unsqueeze(-1), o_c.float().unsqueeze(-1))
                for j in range(err.shape[0]):  # strict improvement: ties keep the earlier (larger) p
                    better = err[j] < best_err
                    best_err = torch.where(better, err[j], best_err)
                    best_p = torch.where(better, p[j], best_p)
                    scale = torch.where(better, s_c[j], scale)
                    offset = torch.where(better, o_c[j], offset)
        return scale, offset

    def _sq_err(self, w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Sum over the last axis of (rounded w - w)^2 for parameters broadcast against w [..., g] (ranking only:
        exact halves may round either way)."""
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        x = (w - offset) / safe if self.t.affine else w / safe
        if self.t.uniform:
            q = x.round_().clamp_(self.lo, self.hi)
        else:
            q = self.levels.float()[torch.searchsorted(self.mids.float(), x.contiguous(), right=False)]
        v = q.mul_(scale)
        if self.t.affine:
            v.add_(offset)
        return v.sub_(w).square_().sum(dim=-1)

    def nearest(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(nearest level, its code int64) of normalised values x, ties to the lower level (kbit's rule); levels
        in x's dtype. Shared with the block-wise tuning's rounding (compress/llm/tune.py)."""
        if self.t.uniform:
            q = torch.clamp(torch.ceil(x - 0.5), self.lo, self.hi)
            return q, (q - self.lo).long()
        mids, levels = self.mids.to(x.dtype), self.levels.to(x.dtype)
        idx = torch.searchsorted(mids, x.contiguous(), right=False)
        return levels[idx], self.level_codes[idx]

    def quantize(self, col: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                 pre: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """col [n] -> (codes int64 [n], dequantized values float64 [n], residual: the normalised distance of each
        value from its level before rounding). pre: ``prepare(scale)`` (reused)."""
        pos, safe, zeros = pre if pre is not None else self.prepare(scale)
        x = torch.where(pos, (col - offset) / safe, zeros)
        level, codes = self.nearest(x)
        return codes, level * scale + offset, x - level

    @staticmethod
    def prepare(scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scale > 0, the scale with 1 where it is 0, zeros): what ``quantize`` needs of one group's scales."""
        pos = scale > 0
        return pos, torch.where(pos, scale, torch.ones_like(scale)), torch.zeros_like(scale)


def rtn_quantize(w: torch.Tensor | np.ndarray, type_name: str, group_size: int | None = None,
                 mse: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-to-nearest grouped quantization in kbit layout (codes, scales, offsets); mse=False is exactly
    ``kbit.quantize_rtn``; mse=True searches each group's range (see ``_Grid``)."""
    wn = np.asarray(w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else w, dtype=np.float32)
    if not mse:
        return kbit.quantize_rtn(wn, type_name, group_size)
    if wn.ndim != 2 or not np.all(np.isfinite(wn)):
        raise ValueError("expected a finite 2-D weight [out, in]")
    n, k = wn.shape
    g = kbit.resolve_group_size(k, group_size)
    grid = _Grid(type_name, torch.device("cpu"), mse=True)
    wd = torch.from_numpy(wn).double()
    full = k // g * g
    s, o = grid.params(wd[:, :full].reshape(n, k // g, g))
    if full < k:
        s_last, o_last = grid.params(wd[:, full:])
        s, o = torch.cat([s, s_last[:, None]], dim=1), torch.cat([o, o_last[:, None]], dim=1)
    scales, offsets = s.float().numpy(), o.float().numpy()
    return kbit.quantize_with_params(wn, scales, offsets, type_name, g), scales, offsets


def _inverse_hessian_factor(h: torch.Tensor, w: torch.Tensor, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Damp H, zero the weights of dead inputs (diag 0) and return (upper Cholesky factor of H^-1, W)."""
    if not 0.0 <= percdamp:
        raise ValueError(f"percdamp must be >= 0, got {percdamp}")
    h = h.detach().to(device=w.device, dtype=torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    damp = percdamp * torch.mean(torch.diag(h))
    idx = torch.arange(h.shape[0], device=h.device)
    for attempt in range(6):  # more damping if H is numerically singular
        try:
            hd = h.clone()
            hd[idx, idx] += damp * (10.0**attempt) + (1e-12 if damp == 0 else 0.0)
            chol = torch.linalg.cholesky(hd)
            hinv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(hinv, upper=True), w
        except torch.linalg.LinAlgError:
            continue
    raise ValueError("Hessian is not positive definite even after damping (are the calibration inputs finite?)")


def _check(w: torch.Tensor, h: torch.Tensor) -> None:
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight [out, in], got shape {tuple(w.shape)}")
    if h.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"Hessian shape {tuple(h.shape)} does not match weight in_features {w.shape[1]}")
    if not torch.isfinite(w).all() or not torch.isfinite(h).all():
        raise ValueError("weight or Hessian contains NaN or inf")


def _nm(pattern: str) -> tuple[int, int]:
    n, m = (int(p) for p in pattern.split(":"))
    return n, m


def _obs_sweep(
    w: torch.Tensor,
    hinv: torch.Tensor,
    block_size: int,
    *,
    prune: tuple[str, float] | None = None,
    grid: _Grid | None = None,
    group_size: int | None = None,
    keep: torch.Tensor | None = None,
    perm: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """One left-to-right OBS pass over the (already permuted) columns of w (float64, modified in place).

    prune: (pattern, sparsity) chooses the pruned weights on the fly; keep: a fixed keep-mask instead.
    grid: round every kept weight to the grid; group parameters are computed, when a group's first column is
    reached, from that group's current weights (pending lazy updates included). perm[p] = original column of
    processed position p (groups and returned codes refer to original columns).
    residual: with grid, a float32 [n, k] tensor filled (original column order) with each weight's distance
    from its chosen level at the moment it was rounded, in normalised units ((w - offset) / scale - LUT[code]).
    Returns (w, keep, codes, scales, offsets) in processing order for w/keep, original order for the rest.
    """
    n, k = w.shape
    dev = w.device
    if keep is None:
        keep = torch.ones(n, k, dtype=torch.bool, device=dev)
    else:
        keep = keep.clone()
        w[~keep] = 0.0
    orig = perm if perm is not None else torch.arange(k, device=dev)
    pos_of = torch.empty_like(orig)
    pos_of[orig] = torch.arange(k, device=dev)
    orig_l = orig.tolist()  # Python ints: no tensor indexing per column
    masked = prune is not None or not bool(keep.all())
    codes = scales = offsets = None
    if grid is not None:
        g = kbit.resolve_group_size(k, group_size)
        codes = torch.zeros(n, k, dtype=torch.int64, device=dev)
        ng = kbit.num_groups(k, g)  # the last group may be shorter
        scales = torch.zeros(n, ng, dtype=torch.float64, device=dev)
        offsets = torch.zeros(n, ng, dtype=torch.float64, device=dev)
        pre: list = [None] * ng  # per group, once its parameters are set: Grid.prepare(scales)
        zero_code = None
        if prune is not None or not bool(keep.all()):
            if grid.t.affine:
                raise ValueError(f"joint sparsity + quantization needs a type with an exact zero; {grid.t.name} "
                                 "is affine (use a symmetric type such as int4)")
            zero_code = int(grid.t.level_codes[int(np.flatnonzero(grid.t.levels == 0)[0])])
    pattern, sparsity = prune if prune is not None else (None, 0.0)
    nm = _nm(pattern) if pattern in ("2:4", "4:8") else None

    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1 = w[:, i1:i2].clone()
        keep1 = keep[:, i1:i2]
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        d1 = torch.diag(h1)
        d1_l = d1.tolist()
        if pattern in ("unstructured", "block"):
            sal = w1.pow(2) / d1.pow(2).unsqueeze(0)
            keep1 &= _select(sal, sparsity, pattern)
        for i in range(i2 - i1):
            col = i1 + i
            if nm is not None and i % nm[1] == 0:
                sal = w1[:, i:i + nm[1]].pow(2) / d1[i:i + nm[1]].pow(2).unsqueeze(0)
                drop = torch.topk(sal, nm[1] - nm[0], dim=1, largest=False).indices
                keep1[:, i:i + nm[1]].scatter_(1, drop, False)
            wc = w1[:, i]
            d = d1_l[i]
            q = torch.where(keep1[:, i], wc, torch.zeros_like(wc)) if masked else wc
            if grid is not None:
                gi = orig_l[col] // g
                if pre[gi] is None:
                    # the group's current weights: this block's from w1, later blocks' plus pending updates
                    members = pos_of[gi * g:(gi + 1) * g]
                    cur = torch.empty(n, members.numel(), dtype=w.dtype, device=dev)
                    inb = (members >= i1) & (members < i2)
                    cur[:, inb] = w1[:, members[inb] - i1]
                    out = ~inb
                    if bool(out.any()):
                        later = members[out]
                        cur[:, out] = w[:, later] - err1[:, :i] @ hinv[i1:col, later]
                    cur = cur * keep[:, members].to(cur.dtype)  # pruned so far (later: still True)
                    scales[:, gi], offsets[:, gi] = grid.params(cur)
                    pre[gi] = (offsets[:, gi].clone(), grid.prepare(scales[:, gi].clone()))
                c, qv, r = grid.quantize(q, scales[:, gi], pre[gi][0], pre[gi][1])
                if residual is not None:
                    residual[:, orig_l[col]] = r.float()
                if zero_code is not None:
                    c = torch.where(keep1[:, i], c, torch.full_like(c, zero_code))
                    qv = torch.where(keep1[:, i], qv, torch.zeros_like(qv))
                codes[:, orig_l[col]] = c
                q = qv
            e = (wc - q) / d
            w1[:, i:] -= e.unsqueeze(1) * h1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    if grid is None:
        return w, keep, None, None, None
    return (w, keep, codes.cpu().numpy().astype(np.uint8), scales.float().cpu().numpy(),
            offsets.float().cpu().numpy())


def _select(sal: torch.Tensor, sparsity: float, pattern: str) -> torch.Tensor:
    """Keep-mask of one column block: prune exactly round(sparsity * count) weights (or 4x4 tiles)."""
    n, b = sal.shape
    if pattern == "unstructured":
        count = int(round(sparsity * sal.numel()))
        keep = torch.ones(sal.numel(), dtype=torch.bool, device=sal.device)
        if count:
            keep[torch.argsort(sal.flatten(), stable=True)[:count]] = False
        return keep.view(n, b)
    pr, pc = (-n) % BLOCK_ROWS, (-b) % BLOCK_COLS
    padded = torch.nn.functional.pad(sal, (0, pc, 0, pr))
    br, bc = padded.shape[0] // BLOCK_ROWS, padded.shape[1] // BLOCK_COLS
    score = padded.view(br, BLOCK_ROWS, bc, BLOCK_COLS).sum(dim=(1, 3)).flatten()
    count = int(round(sparsity * score.numel()))
    tiles = torch.ones(score.numel(), dtype=torch.bool, device=sal.device)
    if count:
        tiles[torch.argsort(score, stable=True)[:count]] = False
    keep = tiles.view(br, bc).repeat_interleave(BLOCK_ROWS, 0).repeat_interleave(BLOCK_COLS, 1)
    return keep[:n, :b]


@torch.no_grad()
def sparsegpt_prune(
    w: torch.Tensor,
    h: torch.Tensor,
    sparsity: float,
    pattern: str = "unstructured",
    block_size: int = 128,
    percdamp: float = 0.01,
    quantizer: KbitQuantizer | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT: prune ``w [out, in]`` to ``sparsity`` in ``pattern`` with OBS compensation.

    pattern: "unstructured" (exactly round(sparsity * size) per column block), "2:4" / "4:8" (N kept of every M
    consecutive inputs; ``sparsity`` is ignored), "block" (BLOCK_ROWS x 4 tiles, chosen by saliency summed over
    the tile, exactly round(sparsity * tiles) per column block). quantizer: a ``KbitQuantizer`` to quantize the
    kept weights in the same pass (its codes/scales/offsets are filled in). Returns (weight float32, keep-mask).
    """
    _check(w, h)
    if pattern not in SPARSE_PATTERNS:
        raise ValueError(f"unknown sparsity pattern {pattern!r}; known: {', '.join(SPARSE_PATTERNS)}")
    if pattern in ("unstructured", "block") and not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    k = w.shape[1]
    if pattern in ("2:4", "4:8"):
        m = _nm(pattern)[1]
        if k % m:
            raise ValueError(f"pattern {pattern} needs in_features divisible by {m}, got {k}")
        block_size = max(m, block_size // m * m)
    if pattern == "block":
        block_size = max(BLOCK_COLS, block_size // BLOCK_COLS * BLOCK_COLS)
    if quantizer is not None and not isinstance(quantizer, KbitQuantizer):
        raise TypeError("quantizer must be a trimformer.compress.obs.KbitQuantizer")
    wd = w.detach().to(torch.float64).clone()
    hinv, wd = _inverse_hessian_factor(h, wd, percdamp)
    grid = _Grid(quantizer.type_name, wd.device, quantizer.mse) if quantizer is not None else None
    out, keep, codes, scales, offsets = _obs_sweep(
        wd, hinv, block_size, prune=(pattern, float(sparsity)), grid=grid,
        group_size=quantizer.group_size if quantizer is not None else None)
    if quantizer is not None:
        quantizer.codes, quantizer.scales, quantizer.offsets = codes, scales, offsets
        deq = kbit.dequantize(codes, scales, offsets, quantizer.type_name,
                              kbit.resolve_group_size(wd.shape[1], quantizer.group_size))
        result = torch.from_numpy(deq).to(w.device)
        return result * keep.to(result.dtype), keep
    return (out * keep).to(torch.float32), keep


@torch.no_grad()
def gptq_quantize(
    w: torch.Tensor,
    h: torch.Tensor,
    type_name: str,
    group_size: int | None,
    block_size: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
    mask: torch.Tensor | None = None,
    mse: bool = False,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """GPTQ: quantize ``w [out, in]`` to the kbit grid ``type_name`` with OBS error compensation.

    group_size: input features per scale (None / -1: per output channel). A group's scale/offset is computed
    from its current, error-updated weights when its first column is processed. act_order: process columns by
    decreasing Hessian diagonal (groups stay contiguous in the original column order; returned codes, scales,
    offsets are in the original order). mask: bool keep-mask; masked weights stay exactly zero (joint
    sparse + quantized; needs a type with an exact zero). mse: choose each group's scale/offset by a search over
    shrunk ranges for the lowest squared error of its current weights (``_Grid``). residual: an optional float32
    [out, in] tensor that receives each weight's pre-rounding distance from its level (``_obs_sweep``; used to
    start block-wise rounding tuning). Returns (dequantized float32 weight, codes, scales, offsets) with the weight
    equal to ``kbit.dequantize(codes, scales, offsets, type_name)`` (times mask).
    """
    _check(w, h)
    kbit.get_kbit_type(type_name)
    n, k = w.shape
    g = kbit.resolve_group_size(k, group_size)
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if mask is not None:
        if mask.shape != w.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(w.shape)}")
        mask = mask.to(device=w.device, dtype=torch.bool)
    wd = w.detach().to(torch.float64).clone()
    hd = h.detach().to(device=w.device, dtype=torch.float64)
    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(hd), descending=True, stable=True)
        wd, hd = wd[:, perm], hd[perm][:, perm]
        mask = mask[:, perm] if mask is not None else None
    hinv, wd = _inverse_hessian_factor(hd, wd, percdamp)
    if residual is not None and tuple(residual.shape) != (n, k):
        raise ValueError(f"residual must have the weight's shape {(n, k)}, got {tuple(residual.shape)}")
    _, _, codes, scales, offsets = _obs_sweep(wd, hinv, block_size, grid=_Grid(type_name, wd.device, mse),
                                              group_size=g, keep=mask, perm=perm, residual=residual)
    deq = torch.from_numpy(kbit.dequantize(codes, scales, offsets, type_name, g)).to(w.device)
    if mask is not None:
        keep = mask if perm is None else mask[:, torch.argsort(perm)]
        deq = deq * keep.to(deq.dtype)
    return deq, codes, scales, offsets
