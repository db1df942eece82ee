"""End-to-end distillation of a compressed decoder LLM's storable parameters (in the spirit of EfficientQAT's
E2E-QP stage).

The layer-wise solvers (GPTQ / SparseGPT) and the block-wise pass (tune.py) each look at one layer. This pass
trains the whole compressed model at once against the uncompressed model's next-token distributions
(KL(teacher || student) over the vocabulary, averaged over the calibration tokens), so errors that only show up
several layers later or in the logits are corrected where they are cheapest to correct. Only what the checkpoint
can store exactly is trained:

- k-bit Linears: a log-multiplier per group scale and, for affine types, a shift per group offset (in units of
  the initial scale). The codes are frozen (no rounding offsets: the pass stays at a few seconds per sample).
- pruned float Linears: the kept weights (the mask is fixed).
- every norm weight of the model (the layers' and the final one).

Embeddings and the LM head are not trained. Adam with a linearly decaying rate over ``steps`` mini-batches.
The distillation loss on the calibration samples is measured with the exact stored weights before and after;
when it did not drop, the model and the records are restored exactly.

``samples`` draws the pass its own, larger calibration set (the solver's samples first, then more windows of
the same slice, same seed). Many steps over the solver's 32 windows fit them: on SmolLM2 GPTQ INT4, 128 steps
lowered their KL below 64 steps' while the held-out perplexity rose (bench/results/llm_quality_e2e3.md).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.utils import parametrize

from .checkpoint import LinearRecord
from .model import get_linear_weight, iter_layer_linears
from .tune import (
    _KbitWeight,
    _MaskedWeight,
    _norms,
    as_config,
    attach_storable,
    check_steps_and_rates,
    keep_if_better,
)

__all__ = ["E2EConfig", "distill_e2e"]


@dataclass(frozen=True)
class E2EConfig:
    steps: int = 0  # optimizer steps over the whole model (0: off)
    batch_samples: int = 2  # calibration samples per step
    samples: int = 0  # calibration samples of the pass (0: the layer-wise solver's)
    lr_scale: float = 1e-3  # log group-scale multipliers and offset shifts
    lr_weight: float = 3e-5  # kept weights of pruned float Linears (absolute)
    lr_norm: float = 1e-3  # norm weights (absolute)
    seed: int = 0

    def __post_init__(self) -> None:
        check_steps_and_rates(self, "e2e")
        if self.samples < 0:
            raise ValueError(f"e2e samples must be >= 0 (0: the solver's calibration samples), got {self.samples}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def e2e_config(e2e: E2EConfig | dict | int | None) -> E2EConfig | None:
    """An ``E2EConfig`` from itself, its fields as a dict or a step count; None when off."""
    return as_config(E2EConfig, e2e, "e2e")


def _batches(samples: list[np.ndarray], size: int) -> list[torch.Tensor]:
    """Consecutive samples of equal length stacked ``size`` at a time (no padding needed)."""
    out: list[torch.Tensor] = []
    group: list[np.ndarray] = []
    for s in samples:
        s = np.asarray(s, dtype=np.int64).ravel()
        if group and (len(group) >= size or group[0].size != s.size):
            out.append(torch.from_numpy(np.stack(group)))
            group = []
        group.append(s)
    if group:
        out.append(torch.from_numpy(np.stack(group)))
    return out


def _kl(student_logits: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(teacher || student)."""
    logp = torch.log_softmax(student_logits.float(), dim=-1)
    kl = torch.nn.functional.kl_div(logp, teacher_logp, log_target=True, reduction="sum")
    return kl / (logp.numel() // logp.shape[-1])


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits


@torch.no_grad()
def _teacher(teacher: Any, ids: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(_logits(teacher, ids).float(), dim=-1)


@torch.no_grad()
def _loss(model: Any, teacher: Any, batches: list[torch.Tensor]) -> float:
    total, tokens = 0.0, 0
    for ids in batches:
        total += float(_kl(_logits(model, ids), _teacher(teacher, ids))) * ids.numel()
        tokens += ids.numel()
    return total / max(tokens, 1)


def distill_e2e(model: Any, teacher: Any, records: dict[str, LinearRecord], samples: list[np.ndarray],
                cfg: E2EConfig, progress: bool = True) -> dict[str, Any]:
    """Distil the compressed ``model`` towards ``teacher`` (the uncompressed model) in place, updating
    ``records`` (qualified Linear name -> its record: k-bit codes, or a float record whose zeros are the mask).
    Returns the distillation loss before and after on ``samples`` and whether the result was kept."""
    from tqdm.auto import tqdm

    batches = _batches(samples, cfg.batch_samples)
    was_training = model.training
    model.eval()
    teacher.eval()
    before = _loss(model, teacher, batches)
    linears = {name: mod for name, mod in iter_layer_linears(model) if name in records}
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    norms = _norms(model)
    norm_init = [p.detach().clone() for p in norms]
    weights_init = {name: get_linear_weight(mod) for name, mod in linears.items()}
    param_mods: dict[str, torch.nn.Module] = {}
    for p in model.parameters():
        p.requires_grad_(False)
    losses: list[float] = []
    try:
        param_mods = attach_storable(linears, records, rounding=False)  # codes frozen: scales / offsets only
        scaling = [p for pm in param_mods.values() if isinstance(pm, _KbitWeight)
                   for p in (pm.log_s, pm.shift) if p is not None]
        kept = [pm.delta for pm in param_mods.values() if isinstance(pm, _MaskedWeight)]
        groups = [{"params": scaling, "lr": cfg.lr_scale}, {"params": kept, "lr": cfg.lr_weight},
                  {"params": norms, "lr": cfg.lr_norm}]
        groups = [g for g in groups if g["params"] and g["lr"] > 0]
        for g in groups:
            for p in g["params"]:
                p.requires_grad_(True)
        if groups:
            opt = torch.optim.Adam(groups)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / cfg.steps)
            rng = random.Random(cfg.seed)
            order: list[int] = []
            bar = tqdm(range(cfg.steps), desc="e2e distillation", disable=not progress, unit="step")
            with torch.enable_grad():
                for _ in bar:
                    if not order:
                        order = list(range(len(batches)))
                        rng.shuffle(order)
                    ids = batches[order.pop()]
                    loss = _kl(_logits(model, ids), _teacher(teacher, ids))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    bar.set_postfix(kl=f"{losses[-1]:.4f}")
        exported = {}
        for name, pm in param_mods.items():
            rec = dataclasses.replace(records[name])
            exported[name] = (rec, pm.export(rec))
    finally:
        for name in param_mods:  # back to the plain weights (the parametrizations never wrote them)
            parametrize.remove_parametrizations(linears[name], "weight", leave_parametrized=False)
        for p, flag in grad_flags:
            p.requires_grad_(flag)
    after, keep = keep_if_better(linears, records, exported, weights_init, norms, norm_init, before,
                                 lambda: _loss(model, teacher, batches))
    model.train(was_training)
    return {**cfg.to_json(), "loss_before": before, "loss_after": after, "kept": keep,
            "train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None}
