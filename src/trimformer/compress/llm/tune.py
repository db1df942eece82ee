"""Block-wise output reconstruction after GPTQ / SparseGPT (in the spirit of AutoRound and OmniQuant).

The one-shot solvers minimise each Linear's own error on its inputs. This pass then fine-tunes a whole decoder
layer so that its output, fed the *compressed* model's hidden states, matches the *uncompressed* layer's output
on the uncompressed hidden states (so a layer can also undo what earlier layers got wrong). What is trained
depends on what the checkpoint can store, so the result is exactly representable:

- k-bit Linears: a rounding offset per weight in normalised level units (``v``, bounded to +-1 so a code moves at most one
  level from the solver's; rounded with a straight-through estimator), a log-multiplier per group scale and, for
  affine types, a shift per group offset (in units of the initial scale). Codes stay on the type's grid.
- pruned float Linears: the kept weights (the mask is fixed, zeros stay zeros).
- the layer's norm weights (float in every checkpoint).

Adam with a linearly decaying rate over ``steps`` mini-batches of the calibration samples. The layer's loss on
all calibration samples is measured before and after; when tuning did not lower it, the layer is restored
exactly (so the pass can only help on the calibration set).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.utils import parametrize

from ...formats import kbit
from ..obs import _Grid
from .checkpoint import LinearRecord
from .model import _is_conv1d, _layer_output, _run, get_linear_weight, set_linear_weight

__all__ = ["TuneConfig", "as_config", "attach_storable", "keep_if_better", "tune_layer"]


def check_steps_and_rates(cfg: Any, label: str) -> None:
    """Shared validation of TuneConfig / E2EConfig: steps >= 0, batch >= 1, non-negative rates."""
    if cfg.steps < 0 or cfg.batch_samples < 1:
        raise ValueError(f"{label} steps must be >= 0 and batch_samples >= 1, got {cfg.steps}, {cfg.batch_samples}")
    for name in ("lr_scale", "lr_weight", "lr_norm"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{label} {name} must be >= 0")


def as_config(cls: type, value: Any, label: str) -> Any:
    """``cls`` (TuneConfig / E2EConfig) from itself, its fields as a dict or a step count; None when off."""
    if value is None or value is False:
        return None
    if isinstance(value, dict):
        value = cls(**value)
    if isinstance(value, cls):
        return value if value.steps > 0 else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{label} must be a {cls.__name__}, its fields as a dict or a step count, got {value!r}")
    return cls(steps=value) if value > 0 else None


@dataclass(frozen=True)
class TuneConfig:
    steps: int = 100  # optimizer steps per decoder layer (0: off)
    batch_samples: int = 4  # calibration samples per step
    lr_round: float | None = None  # rounding offsets (normalised level units); None: 0.5 / steps
    lr_scale: float = 1e-3  # log group-scale multipliers and offset shifts
    lr_weight: float = 3e-4  # kept weights of pruned float Linears (absolute)
    lr_norm: float = 1e-3  # norm weights (absolute)
    seed: int = 0
    # GPTQ: start each rounding offset at the weight's pre-rounding distance from its level (|v| < 0.5, so the
    # codes start as GPTQ's), so near-ties flip first, as AutoRound's offsets start at the fractional part
    init_residual: bool = True

    def __post_init__(self) -> None:
        check_steps_and_rates(self, "tune")
        if self.lr_round is not None and self.lr_round < 0:
            raise ValueError("tune lr_round must be >= 0")

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "batch_samples": self.batch_samples,
                "lr_round": self.lr_round if self.lr_round is not None else 0.5 / max(self.steps, 1),
                "lr_scale": self.lr_scale, "lr_weight": self.lr_weight, "lr_norm": self.lr_norm, "seed": self.seed,
                "init_residual": self.init_residual}


class _KbitWeight(torch.nn.Module):
    """W = mask * (round(LUT[codes0] + v) * scale0 * exp(log_s) + offset0 + shift * scale0), per group."""

    def __init__(self, rec: LinearRecord, mask: torch.Tensor | None, conv1d: bool,
                 v0: torch.Tensor | None = None, rounding: bool = True):
        super().__init__()
        self.t = kbit.get_kbit_type(rec.format)
        codes = np.asarray(rec.codes)
        n, k = codes.shape
        g = kbit.resolve_group_size(k, rec.group_size)
        cols = torch.arange(k) // g
        self.register_buffer("q0", torch.from_numpy(self.t.lut[codes.astype(np.intp)]).float())
        self.register_buffer("s0", torch.from_numpy(np.asarray(rec.scales, np.float32)))
        self.register_buffer("o0", torch.from_numpy(np.asarray(rec.offsets, np.float32)))
        self.register_buffer("cols", cols)
        self.grid = _Grid(rec.format, torch.device("cpu"))
        self.register_buffer("mask", mask.float() if mask is not None else None)
        # a start strictly inside the level's rounding interval, so the initial codes are the stored ones
        v = torch.zeros(n, k) if v0 is None else v0.float().clamp(-0.499, 0.499)
        # rounding=False (end-to-end tuning, e2e.py): the codes stay the stored ones, only scales/offsets move
        self.v = torch.nn.Parameter(v.clone()) if rounding else None
        self.register_buffer("codes0", None if rounding else torch.from_numpy(codes.astype(np.int64)))
        self.log_s = torch.nn.Parameter(torch.zeros_like(self.s0))
        self.shift = torch.nn.Parameter(torch.zeros_like(self.s0)) if self.t.affine else None
        self.conv1d = conv1d

    def _parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.v is None:
            q, codes = self.q0, self.codes0
        else:
            v = self.v if self.mask is None else self.v * self.mask
            x = self.q0 + v
            with torch.no_grad():
                level, codes = self.grid.nearest(x.detach())
            q = x + (level - x).detach()  # straight-through: the level forward, x's gradient backward
        scales = self.s0 * torch.exp(self.log_s)
        offsets = self.o0 + self.shift * self.s0 if self.shift is not None else self.o0
        return q, codes, scales, offsets

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        q, _, scales, offsets = self._parts()
        w = q * scales[:, self.cols] + offsets[:, self.cols]
        if self.mask is not None:
            w = w * self.mask
        return w.t() if self.conv1d else w

    @torch.no_grad()
    def clamp_(self) -> None:
        if self.v is not None:
            self.v.clamp_(-1.0, 1.0)

    @torch.no_grad()
    def export(self, rec: LinearRecord) -> torch.Tensor:
        """Store the tuned codes/scales/offsets in ``rec``; return the dequantized [out, in] weight."""
        _, codes, scales, offsets = self._parts()
        rec.codes = codes.numpy().astype(np.uint8)
        rec.scales = scales.float().numpy().copy()
        rec.offsets = offsets.float().numpy().copy()
        w = torch.from_numpy(kbit.dequantize(rec.codes, rec.scales, rec.offsets, rec.format, rec.group_size))
        if self.mask is not None and not torch.all(w[self.mask == 0] == 0):
            raise AssertionError("tuning broke the sparsity mask")
        return w


class _MaskedWeight(torch.nn.Module):
    """W = (W0 + delta) * mask: the kept weights of a pruned float Linear."""

    def __init__(self, w0: torch.Tensor, mask: torch.Tensor, conv1d: bool):
        super().__init__()
        self.register_buffer("w0", w0)
        self.register_buffer("mask", mask.float())
        self.delta = torch.nn.Parameter(torch.zeros_like(w0))
        self.conv1d = conv1d

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        w = (self.w0 + self.delta) * self.mask
        return w.t() if self.conv1d else w

    def clamp_(self) -> None:
        pass

    @torch.no_grad()
    def export(self, rec: LinearRecord) -> torch.Tensor:
        return ((self.w0 + self.delta) * self.mask).clone()


def _norms(layer: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = []
    for mod in layer.modules():
        if "norm" in type(mod).__name__.lower() or isinstance(mod, torch.nn.LayerNorm):
            params.extend(p for p in mod.parameters(recurse=False))
    return params


def _chunks(hidden: list[torch.Tensor], targets: list[torch.Tensor], rest: list, size: int) -> list[tuple]:
    out = []
    for x, y, r in zip(hidden, targets, rest, strict=True):
        for s in range(0, x.shape[0], size):
            out.append((x[s:s + size], y[s:s + size], r))
    return out


def _loss(layer: torch.nn.Module, chunks: list[tuple]) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y, r in chunks:
            total += float(torch.nn.functional.mse_loss(_layer_output(_run(layer, x, r)), y, reduction="sum"))
            count += y.numel()
    return total / max(count, 1)


def tune_layer(layer: torch.nn.Module, linears: dict[str, torch.nn.Module], records: dict[str, LinearRecord],
               hidden: list[torch.Tensor], targets: list[torch.Tensor], rest: list,
               cfg: TuneConfig, init: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Tune one compressed decoder layer in place (see the module docstring) and update ``records`` (relative
    Linear name -> its record: k-bit codes, or a float record whose zeros are the mask; ``init``: relative name ->
    the rounding offsets to start from, see ``TuneConfig.init_residual``). Returns the layer's
    calibration loss before and after (``kept``: whether the tuned parameters were kept)."""
    chunks = _chunks(hidden, targets, rest, cfg.batch_samples)
    before = _loss(layer, chunks)
    if cfg.steps == 0 or not chunks:
        return {"loss_before": before, "loss_after": before, "kept": False}
    grad_flags = [(p, p.requires_grad) for p in layer.parameters()]
    norms = _norms(layer)
    norm_init = [p.detach().clone() for p in norms]
    weights_init = {name: get_linear_weight(mod) for name, mod in linears.items()}
    param_mods = attach_storable(linears, records, init)
    for p in layer.parameters():
        p.requires_grad_(False)
    rounding = [pm.v for pm in param_mods.values() if isinstance(pm, _KbitWeight)]
    scaling = [p for pm in param_mods.values() if isinstance(pm, _KbitWeight)
               for p in (pm.log_s, pm.shift) if p is not None]
    kept = [pm.delta for pm in param_mods.values() if isinstance(pm, _MaskedWeight)]
    groups = [{"params": rounding, "lr": cfg.lr_round if cfg.lr_round is not None else 0.5 / cfg.steps},
              {"params": scaling, "lr": cfg.lr_scale}, {"params": kept, "lr": cfg.lr_weight},
              {"params": norms, "lr": cfg.lr_norm}]
    groups = [g for g in groups if g["params"] and g["lr"] > 0]
    trainable = [p for g in groups for p in g["params"]]
    for p in trainable:
        p.requires_grad_(True)
    try:
        if groups:
            opt = torch.optim.Adam(groups)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / cfg.steps)
            rng = random.Random(cfg.seed)
            order: list[int] = []
            with torch.enable_grad():
                for _ in range(cfg.steps):
                    if not order:
                        order = list(range(len(chunks)))
                        rng.shuffle(order)
                    x, y, r = chunks[order.pop()]
                    loss = torch.nn.functional.mse_loss(_layer_output(_run(layer, x, r)), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    for pm in param_mods.values():
                        pm.clamp_()
        # what the checkpoint would store, in new records until the loss on it decides
        exported = {}
        for name, pm in param_mods.items():
            rec = dataclasses.replace(records[name])
            exported[name] = (rec, pm.export(rec))
    finally:
        for p in trainable:
            p.requires_grad_(False)
        for name in param_mods:  # back to the solver's weights (the parametrizations never wrote them)
            parametrize.remove_parametrizations(linears[name], "weight", leave_parametrized=False)
        for p, flag in grad_flags:
            p.requires_grad_(flag)
    after, keep = keep_if_better(linears, records, exported, weights_init, norms, norm_init, before,
                                 lambda: _loss(layer, chunks))
    return {"loss_before": before, "loss_after": after, "kept": keep}


def attach_storable(linears: dict[str, torch.nn.Module], records: dict[str, LinearRecord],
                    init: dict[str, torch.Tensor] | None = None, rounding: bool = True) -> dict[str, torch.nn.Module]:
    """Parametrize each Linear's weight by what its record can store (k-bit: ``_KbitWeight``; pruned float:
    ``_MaskedWeight``; a float, unpruned Linear is skipped). Returns name -> parametrization."""
    param_mods: dict[str, torch.nn.Module] = {}
    for name, mod in linears.items():
        rec = records[name]
        conv1d = _is_conv1d(mod)
        w = get_linear_weight(mod)
        mask = (w != 0) if rec.sparsity is not None else None
        if rec.codes is not None:
            pm = _KbitWeight(rec, mask, conv1d, (init or {}).get(name), rounding=rounding)
        elif mask is not None:
            pm = _MaskedWeight(w, mask, conv1d)
        else:
            continue  # nothing this pass could store
        parametrize.register_parametrization(mod, "weight", pm, unsafe=True)
        param_mods[name] = pm
    return param_mods


@torch.no_grad()
def keep_if_better(linears: dict[str, torch.nn.Module], records: dict[str, LinearRecord],
                   exported: dict[str, tuple[LinearRecord, torch.Tensor]], weights_init: dict[str, torch.Tensor],
                   norms: list[torch.nn.Parameter], norm_init: list[torch.Tensor], before: float,
                   loss: Any) -> tuple[float, bool]:
    """Install the exported (exactly stored) weights and measure ``loss()``: below ``before``, the exported
    codes / scales / offsets go into ``records``; otherwise the weights and norms are restored exactly.
    Returns (loss after, kept)."""
    for name, (_, w) in exported.items():
        set_linear_weight(linears[name], w)
    after = loss()
    if after < before:
        for name, (rec, _) in exported.items():
            records[name].codes, records[name].scales, records[name].offsets = rec.codes, rec.scales, rec.offsets
        return after, True
    for name, w in weights_init.items():
        set_linear_weight(linears[name], w)
    for p, p0 in zip(norms, norm_init, strict=True):
        p.copy_(p0)
    return before, False
