"""Pruning of Hugging Face encoders (PyTorch side) in the patterns the runtime's kernels execute.

- `prune`: one-shot magnitude (layer-wise or global) or second-order OBS/SparseGPT (compress/obs.py) pruning of
  every encoder Linear, in the patterns of formats/sparsity.py;
- `GradualPruner`: magnitude pruning on a cubic schedule during fine-tuning (a training callback), masks fixed
  afterwards; `FixedMasks`: keeps a sparse model's zeros through fine-tuning ("sparse transfer");
- `prune_ffn_neurons`: structured removal of FFN neurons (a smaller dense model).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..formats.sparsity import BLOCK_ROWS, PATTERNS, magnitude_mask
from .training import TrainCallback

# Linear layers inside the encoder blocks (BERT/RoBERTa "encoder.layer", DistilBERT "transformer.layer"); heads,
# poolers and embeddings are left dense.
_ENCODER_SCOPES = ("encoder.layer.", "transformer.layer.")
METHODS = ("magnitude", "obs")
SCOPES = ("layer", "global")


def encoder_linears(model: Any) -> dict[str, Any]:
    """Qualified name -> nn.Linear for every Linear inside the encoder blocks of `model`."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a PyTorch (Hugging Face) encoder model, got {type(model).__name__}")
    return {name: mod for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and any(s in name for s in _ENCODER_SCOPES)}


def _check_pattern(pattern: str) -> None:
    if pattern not in PATTERNS:
        raise ValueError(f"unknown sparsity pattern {pattern!r}; known: {', '.join(PATTERNS)}")


def _check_sparsity(s: float, pattern: str) -> None:
    if pattern in ("2:4", "4:8"):
        return
    if not 0.0 <= float(s) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {s}")


def _targets(layers: Mapping[str, Any], sparsity: float, per_layer: Mapping[str, float] | None,
             pattern: str) -> dict[str, float]:
    targets = {name: float(sparsity) for name in layers}
    if per_layer:
        unknown = [k for k in per_layer if not any(n == k or n.endswith(k) for n in layers)]
        if unknown:
            raise ValueError(f"per_layer names match no encoder Linear: {unknown[:5]} "
                             f"(names look like {next(iter(layers))!r}; a suffix such as 'intermediate.dense' works)")
        for n in layers:
            for k, v in per_layer.items():  # later keys win; an exact name or a suffix
                if n == k or n.endswith(k):
                    targets[n] = float(v)
    for s in targets.values():
        _check_sparsity(s, pattern)
    return targets


@dataclass
class PruneReport:
    method: str
    pattern: str
    scope: str
    layers: dict[str, float] = field(default_factory=dict)  # achieved sparsity per layer

    @property
    def overall(self) -> float:
        return float(np.mean(list(self.layers.values()))) if self.layers else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "pattern": self.pattern, "scope": self.scope, "overall": self.overall,
                "layers": self.layers}


def _global_masks(layers: Mapping[str, Any], sparsity: float, pattern: str) -> dict[str, np.ndarray]:
    """One threshold over every layer's |w| (or 4x4 block L1 score): layers lose different fractions."""
    if pattern in ("2:4", "4:8"):
        raise ValueError(f"scope='global' has no meaning for the {pattern} pattern (its sparsity is per group)")
    scores = {}
    for name, lin in layers.items():
        w = np.abs(lin.weight.detach().float().cpu().numpy())
        if pattern == "block":
            rows, cols = w.shape
            a = np.pad(w, ((0, (-rows) % BLOCK_ROWS), (0, (-cols) % 4)))
            scores[name] = a.reshape(a.shape[0] // BLOCK_ROWS, BLOCK_ROWS, a.shape[1] // 4, 4).sum(axis=(1, 3))
        else:
            scores[name] = w
    flat = np.concatenate([s.ravel() for s in scores.values()])
    count = int(round(sparsity * flat.size))
    if count == 0:
        return {n: np.ones(layers[n].weight.shape, bool) for n in layers}
    threshold = np.partition(flat, count - 1)[count - 1]
    masks = {}
    for name, s in scores.items():
        keep = s > threshold
        if pattern == "block":
            rows, cols = layers[name].weight.shape
            keep = np.repeat(np.repeat(keep, BLOCK_ROWS, axis=0), 4, axis=1)[:rows, :cols]
        masks[name] = keep
    return masks


def magnitude_masks(model: Any, sparsity: float, pattern: str = "unstructured", scope: str = "layer",
                    per_layer: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """Keep-masks of every encoder Linear from the current weights' magnitudes (nothing is changed)."""
    _check_pattern(pattern)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    layers = encoder_linears(model)
    if not layers:
        raise ValueError("no encoder Linear layers found (supported: BERT, MiniLM, DistilBERT, RoBERTa)")
    if scope == "global":
        if per_layer:
            raise ValueError("per_layer targets and scope='global' exclude each other")
        _check_sparsity(sparsity, pattern)
        return _global_masks(layers, float(sparsity), pattern)
    targets = _targets(layers, sparsity, per_layer, pattern)
    return {n: magnitude_mask(layers[n].weight.detach().float().cpu().numpy(), t, pattern)
            for n, t in targets.items()}


def apply_masks(model: Any, masks: Mapping[str, np.ndarray], cache: MaskCache | None = None) -> None:
    """Zero every masked-out weight in place (masks: qualified Linear name -> bool keep-mask). With a `cache`,
    the masks become tensors on the weights' device once, not at every call (training re-applies them each step,
    on a GPU too)."""
    import torch

    layers = encoder_linears(model)
    cache = cache if cache is not None else MaskCache()
    with torch.no_grad():
        for name in masks:
            w = layers[name].weight
            w.masked_fill_(cache.drop(masks, name, w.device), 0.0)


class MaskCache:
    """The complement of each keep-mask as a bool tensor on a device, rebuilt when the mask set changes."""

    def __init__(self) -> None:
        self._source: Any = None
        self._drops: dict[str, Any] = {}

    def drop(self, masks: Mapping[str, np.ndarray], name: str, device: Any) -> Any:
        import torch

        if masks is not self._source:
            self._source, self._drops = masks, {}
        t = self._drops.get(name)
        if t is None or t.device != device:
            t = self._drops[name] = torch.as_tensor(~np.asarray(masks[name], dtype=bool), device=device)
        return t


def current_masks(model: Any) -> dict[str, np.ndarray]:
    """The non-zero pattern of every encoder Linear (what fine-tuning must preserve)."""
    return {n: lin.weight.detach().cpu().numpy() != 0 for n, lin in encoder_linears(model).items()}


def sparsity_report(model: Any) -> dict[str, float]:
    return {n: float((lin.weight.detach() == 0).float().mean()) for n, lin in encoder_linears(model).items()}


def _as_torch_batch(batch: Mapping[str, Any], device: Any) -> dict[str, Any]:
    import torch

    return {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).to(device)
            for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def calibrate_with_hooks(model: Any, calibration: Iterable[Mapping[str, Any]], hooks: list) -> None:
    """Run `calibration` batches through `model` (no grad) for the forward hooks in `hooks`, then remove them."""
    import torch

    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for batch in calibration:
                model(**_as_torch_batch(batch, device))
    finally:
        for h in hooks:
            h.remove()


class _StopForward(Exception):
    pass


def _encoder_blocks(model: Any) -> list[Any]:
    for path in ("bert.encoder.layer", "roberta.encoder.layer", "distilbert.transformer.layer", "encoder.layer",
                 "transformer.layer"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return list(obj)
    raise ValueError("no encoder blocks found (supported: BERT, MiniLM, DistilBERT, RoBERTa)")


def _capture_block_inputs(model: Any, block: Any, batches: list, device: Any) -> list[tuple[tuple, dict, Any]]:
    """(args, kwargs, token mask) that `block` receives for each batch; the forward stops at the block."""
    import torch

    cached: list[tuple[tuple, dict, Any]] = []
    current: list[Any] = [None]

    def pre(mod, args, kwargs):
        cached.append((tuple(args), dict(kwargs), current[0]))
        raise _StopForward

    h = block.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            for b in batches:
                tb = _as_torch_batch(b, device)
                current[0] = tb["attention_mask"].bool() if "attention_mask" in tb else None
                try:
                    model(**tb)
                except _StopForward:
                    pass
    finally:
        h.remove()
    return cached


def _run_block(block: Any, cached: list[tuple[tuple, dict, Any]]) -> list[Any]:
    import torch

    outs = []
    with torch.no_grad():
        for args, kwargs, _ in cached:
            out = block(*args, **kwargs)
            outs.append(out[0] if isinstance(out, (tuple, list)) else out)
    return outs


def _input_groups(block: Any, names: Mapping[str, Any], cached: list) -> list[list[str]]:
    """The block's Linears in call order, grouped by shared input (Q, K, V read the same hidden states)."""
    order: list[tuple[str, int]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp, _n=n: order.append((_n, inp[0].data_ptr())))
             for n, m in names.items()]
    try:
        _run_block(block, cached[:1])
    finally:
        for h in hooks:
            h.remove()
    groups: list[list[str]] = []
    last_ptr = None
    for n, ptr in order:
        if groups and ptr == last_ptr:
            groups[-1].append(n)
        else:
            groups.append([n])
        last_ptr = ptr
    return groups


def obs_prune(model: Any, calibration: Iterable[Mapping[str, Any]], targets: Mapping[str, float],
              pattern: str = "unstructured", percdamp: float = 0.01, block_size: int = 128,
              progress: Any = None) -> dict[str, np.ndarray]:
    """One-shot OBS/SparseGPT pruning, fully sequential: the inputs of block 0 are captured once; inside each block
    the Linears are pruned group by group in call order (Q/K/V, attention output, FFN1, FFN2), each group's
    Hessian H = 2/N sum x x^T taken over non-padding tokens with the earlier groups already pruned; the pruned
    block's outputs are the next block's inputs. compress/obs.py does the row-wise OBS reconstruction."""
    try:
        from .obs import HessianAccumulator, sparsegpt_prune
    except ImportError as e:  # provided by the shared second-order solver module
        raise ImportError("method='obs' needs trimformer.compress.obs (the shared SparseGPT/GPTQ solvers)") from e
    import torch

    batches = list(calibration)
    if not batches:
        raise ValueError("method='obs' needs calibration batches (an iterable of tokenized dicts)")
    layers = encoder_linears(model)
    blocks = _encoder_blocks(model)
    device = next(model.parameters()).device
    masks: dict[str, np.ndarray] = {}
    was_training = model.training
    model.eval()
    cached = _capture_block_inputs(model, blocks[0], batches, device)
    for bi, block in enumerate(blocks):
        in_block = {id(m) for m in block.modules()}
        names = {n: m for n, m in layers.items() if id(m) in in_block and n in targets}
        for group in (_input_groups(block, names, cached) if names else []):
            accs = {n: HessianAccumulator(names[n].in_features, device=device) for n in group}
            token_mask: list[Any] = [None]

            def hook(mod, inputs, _n=None, _accs=accs, _tm=token_mask):
                x = inputs[0].detach()
                keep = _tm[0]
                _accs[_n].add(x[keep] if keep is not None and x.shape[:2] == keep.shape else x.reshape(-1, x.shape[-1]))

            hooks = [names[n].register_forward_pre_hook(functools.partial(hook, _n=n)) for n in group]
            try:
                with torch.no_grad():
                    for args, kwargs, mask in cached:
                        token_mask[0] = mask
                        block(*args, **kwargs)
            finally:
                for h in hooks:
                    h.remove()
            with torch.no_grad():
                for n in group:
                    m = names[n]
                    w_new, keep = sparsegpt_prune(m.weight.detach().float(), accs[n].hessian, targets[n], pattern,
                                                  block_size=block_size, percdamp=percdamp)
                    m.weight.copy_(w_new.to(m.weight.dtype) * keep.to(m.weight.dtype))
                    masks[n] = keep.cpu().numpy().astype(bool)
        if bi + 1 < len(blocks):
            outs = _run_block(block, cached)
            cached = [((o, *args[1:]), kwargs, mask) if args else ((), {**kwargs, "hidden_states": o}, mask)
                      for o, (args, kwargs, mask) in zip(outs, cached, strict=True)]
        if progress:
            progress(bi + 1, len(blocks))
    model.train(was_training)
    return masks


def prune(model: Any, sparsity: float = 0.5, pattern: str = "unstructured", method: str = "magnitude", *,
          calibration: Iterable[Mapping[str, Any]] | None = None, scope: str = "layer",
          per_layer: Mapping[str, float] | None = None, progress: Any = None) -> PruneReport:
    """Prune every encoder Linear of `model` in place, one shot.

    sparsity: fraction of zeros per layer (ignored for "2:4"/"4:8", whose sparsity is fixed by the pattern);
    pattern: "unstructured", "block" (4x4, the runtime's block-sparse INT8 layout), "2:4", "4:8";
    method: "magnitude" (no data) or "obs" (SparseGPT-style, needs `calibration`: tokenized batches);
    scope: "layer" (each layer to its target) or "global" (one magnitude threshold over all layers; magnitude only);
    per_layer: {qualified name or suffix: sparsity} overriding `sparsity` for those layers.
    """
    _check_pattern(pattern)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if method == "obs":
        if scope != "layer":
            raise ValueError("method='obs' prunes layer by layer (scope='layer'); global OBS is not implemented")
        if calibration is None:
            raise ValueError("method='obs' needs calibration batches")
        targets = _targets(encoder_linears(model), sparsity, per_layer, pattern)
        obs_prune(model, calibration, targets, pattern, progress=progress)
    else:
        apply_masks(model, magnitude_masks(model, sparsity, pattern, scope, per_layer))
    return PruneReport(method, pattern, scope, sparsity_report(model))


def prune_magnitude(model: Any, sparsity: float | dict[str, float], pattern: str = "unstructured") -> dict[str, float]:
    """Layer-wise magnitude pruning (kept for the earlier API): sparsity per layer or {name: target}."""
    if isinstance(sparsity, dict):
        layers = encoder_linears(model)
        unknown = set(sparsity) - set(layers)
        if unknown:
            raise ValueError(f"no such encoder Linear layers: {sorted(unknown)[:5]}")
        masks = {n: magnitude_mask(layers[n].weight.detach().float().cpu().numpy(), t, pattern)
                 for n, t in sparsity.items()}
        _check_pattern(pattern)
        apply_masks(model, masks)
        return {n: float(1.0 - m.mean()) for n, m in masks.items()}
    report = prune(model, sparsity, pattern)
    return report.layers


# ----------------------------------------------------------------------------------------------------- training


class FixedMasks(TrainCallback):
    """Keeps the given zeros exactly zero through fine-tuning (re-applied after every optimizer step, so neither
    the gradient nor AdamW's moments or weight decay can revive a pruned weight)."""

    def __init__(self, masks: Mapping[str, np.ndarray] | None = None):
        self.masks = dict(masks) if masks is not None else None
        self._cache = MaskCache()

    def on_train_begin(self, model: Any, total_steps: int) -> None:
        if self.masks is None:
            self.masks = current_masks(model)
        apply_masks(model, self.masks, self._cache)

    def on_step_end(self, model: Any, step: int, total_steps: int) -> None:
        apply_masks(model, self.masks or {}, self._cache)


def cubic_sparsity(step: int, total: int, final: float, initial: float = 0.0, start: float = 0.0,
                   end: float = 0.7) -> float:
    """Zhu & Gupta's cubic schedule: s_t = s_f + (s_i - s_f) (1 - progress)^3 between fractions `start` and
    `end` of training; constant before and after."""
    t0, t1 = start * total, end * total
    if step <= t0:
        return initial
    if step >= t1:
        return final
    p = (step - t0) / max(t1 - t0, 1e-9)
    return final + (initial - final) * (1.0 - p) ** 3


class GradualPruner(TrainCallback):
    """Magnitude pruning on a cubic schedule during training: every `every` steps the masks are recomputed from
    the current weights at the scheduled sparsity (pruned weights stay pruned: they are the smallest), then applied
    after each optimizer step; after `end` the masks are fixed."""

    def __init__(self, sparsity: float, pattern: str = "unstructured", *, initial: float = 0.0,
                 start: float = 0.0, end: float = 0.7, every: int = 10, scope: str = "layer",
                 per_layer: Mapping[str, float] | None = None):
        _check_pattern(pattern)
        _check_sparsity(sparsity, pattern)
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"need 0 <= start < end <= 1, got start={start}, end={end}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.sparsity, self.pattern, self.initial = float(sparsity), pattern, float(initial)
        self.start, self.end, self.every, self.scope, self.per_layer = start, end, every, scope, per_layer
        self.masks: dict[str, np.ndarray] = {}
        self.history: list[tuple[int, float]] = []
        self._cache = MaskCache()

    def _update(self, model: Any, step: int, total: int) -> None:
        s = cubic_sparsity(step, total, self.sparsity, self.initial, self.start, self.end)
        if self.pattern in ("2:4", "4:8"):
            s = self.sparsity  # N:M has no intermediate sparsity: pruned in one step at `start`
        per = {k: v * s / self.sparsity for k, v in self.per_layer.items()} if self.per_layer and self.sparsity else None
        self.masks = magnitude_masks(model, s, self.pattern, self.scope, per)
        apply_masks(model, self.masks, self._cache)
        self.history.append((step, s))

    def on_train_begin(self, model: Any, total_steps: int) -> None:
        self.total, self.done = total_steps, False
        self.masks = current_masks(model)
        if self.start == 0.0 and (self.initial > 0 or self.pattern in ("2:4", "4:8")):
            self._step(model, 0)

    def _step(self, model: Any, step: int) -> None:
        self._update(model, step, self.total)
        self.done = self.history[-1][1] >= self.sparsity

    def on_step_end(self, model: Any, step: int, total_steps: int) -> None:
        if not self.done and step > self.start * total_steps and \
                (step % self.every == 0 or step >= self.end * total_steps):
            self._step(model, step)
        else:
            apply_masks(model, self.masks, self._cache)

    def on_train_end(self, model: Any) -> None:
        if not self.done:  # a run shorter than the schedule still ends at the target
            self._step(model, self.total)
        apply_masks(model, self.masks, self._cache)


# ---------------------------------------------------------------------------------------------------- structured


def prune_ffn_neurons(model: Any, keep: float | int, calibration: Iterable[Mapping[str, Any]] | None = None) -> dict:
    """Remove FFN neurons physically (the same number in every layer, so the config's intermediate_size stays one
    number and the runtime runs the smaller dense model as is). Importance of neuron j: ||W2[:, j]|| times the mean
    |activation| over `calibration` when given, else ||W1[j]|| ||W2[:, j]||. keep: fraction or count kept."""
    import torch

    blocks = _encoder_blocks(model)
    first = blocks[0]
    inter = first.intermediate.dense if hasattr(first, "intermediate") else first.ffn.lin1
    n_inter = inter.out_features
    n_keep = int(round(keep * n_inter)) if isinstance(keep, float) else int(keep)
    if not 1 <= n_keep <= n_inter:
        raise ValueError(f"keep must leave between 1 and {n_inter} neurons, got {keep}")
    pairs = []
    for b in blocks:
        if hasattr(b, "intermediate"):
            pairs.append((b.intermediate.dense, b.output.dense))
        else:
            pairs.append((b.ffn.lin1, b.ffn.lin2))
    act_mean = [torch.zeros(n_inter) for _ in pairs]
    if calibration is not None:
        hooks = []
        for i, (_, w2) in enumerate(pairs):
            def hook(mod, inputs, _i=i):
                x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).float()
                act_mean[_i] += x.mean(0).cpu()
            hooks.append(w2.register_forward_pre_hook(hook))
        calibrate_with_hooks(model, calibration, hooks)
    kept = []
    with torch.no_grad():
        for i, (w1, w2) in enumerate(pairs):
            col = w2.weight.detach().float().norm(dim=0).cpu()
            score = col * act_mean[i] if calibration is not None else col * w1.weight.detach().float().norm(dim=1).cpu()
            idx = torch.sort(torch.topk(score, n_keep).indices).values
            kept.append(idx.tolist())
            new1 = torch.nn.Linear(w1.in_features, n_keep, bias=w1.bias is not None).to(w1.weight)
            new1.weight.copy_(w1.weight[idx])
            if w1.bias is not None:
                new1.bias.copy_(w1.bias[idx])
            new2 = torch.nn.Linear(n_keep, w2.out_features, bias=w2.bias is not None).to(w2.weight)
            new2.weight.copy_(w2.weight[:, idx])
            if w2.bias is not None:
                new2.bias.copy_(w2.bias)
            b = blocks[i]
            if hasattr(b, "intermediate"):
                b.intermediate.dense, b.output.dense = new1, new2
            else:
                b.ffn.lin1, b.ffn.lin2 = new1, new2
    if hasattr(model.config, "intermediate_size"):
        model.config.intermediate_size = n_keep
    else:
        model.config.hidden_dim = n_keep
    return {"intermediate_before": n_inter, "intermediate_after": n_keep, "kept": kept}


def _attention_parts(block: Any) -> tuple[Any, Any, Any, Any, Any]:
    """(module holding the head count, q, k, v, output projection) of one encoder block."""
    if hasattr(block, "attention") and hasattr(block.attention, "self"):  # BERT / RoBERTa
        a = block.attention.self
        return a, a.query, a.key, a.value, block.attention.output.dense
    a = block.attention  # DistilBERT
    return a, a.q_lin, a.k_lin, a.v_lin, a.out_lin


def _head_config(model: Any) -> tuple[int, int]:
    """(original head count, head size) from the model's config."""
    cfg = model.config
    n = getattr(cfg, "num_attention_heads", None) or cfg.n_heads
    hidden = getattr(cfg, "hidden_size", None) or cfg.dim
    return int(n), int(hidden) // int(n)


def _remaining_heads(model: Any, layer: int, n_heads: int) -> list[int]:
    removed = {int(h) for h in (getattr(model.config, "pruned_heads", None) or {}).get(str(layer), [])}
    return [h for h in range(n_heads) if h not in removed]


def _shrink_attention(block: Any, keep_local: list[int], d: int) -> None:
    """Keep heads `keep_local` (indices among the block's current heads) of q, k, v and the output projection."""
    import torch

    owner, q, k, v, o = _attention_parts(block)
    cols = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep_local]).to(q.weight.device)

    def rows(lin: Any) -> Any:
        new = torch.nn.Linear(lin.in_features, cols.numel(), bias=lin.bias is not None).to(lin.weight)
        new.weight.copy_(lin.weight[cols])
        if lin.bias is not None:
            new.bias.copy_(lin.bias[cols])
        return new

    with torch.no_grad():
        nq, nk, nv = rows(q), rows(k), rows(v)
        no = torch.nn.Linear(cols.numel(), o.out_features, bias=o.bias is not None).to(o.weight)
        no.weight.copy_(o.weight[:, cols])
        if o.bias is not None:
            no.bias.copy_(o.bias)
    if hasattr(owner, "query"):
        owner.query, owner.key, owner.value = nq, nk, nv
        block.attention.output.dense = no
        owner.num_attention_heads = len(keep_local)
        owner.all_head_size = len(keep_local) * d
    else:
        owner.q_lin, owner.k_lin, owner.v_lin, owner.out_lin = nq, nk, nv, no
        owner.n_heads = len(keep_local)


def apply_pruned_heads(model: Any) -> None:
    """Shrink a freshly built (full-size) model to the heads its config's `pruned_heads` keeps, so that a
    head-pruned checkpoint's state dict loads into it (transformers 5 no longer does this itself)."""
    pruned = getattr(model.config, "pruned_heads", None) or {}
    if not pruned:
        return
    n_heads, d = _head_config(model)
    for i, block in enumerate(_encoder_blocks(model)):
        removed = {int(h) for h in pruned.get(str(i), pruned.get(i, []))}
        _shrink_attention(block, [h for h in range(n_heads) if h not in removed], d)


def prune_heads(model: Any, keep: float | int, calibration: Iterable[Mapping[str, Any]] | None = None) -> dict:
    """Remove attention heads physically, the same number in every layer (the runtime runs one head count; the
    attention width becomes heads x head_size < hidden). Importance of a head: the mean norm of its contribution
    to the attention output (its context slice times its columns of the output projection) over `calibration`
    when given, else ||W_v,h|| ||W_o[:, h]||. keep: fraction of the original heads or a count. The removed
    (original) head indices are recorded in `config.pruned_heads`, as Hugging Face checkpoints do."""
    import torch

    blocks = _encoder_blocks(model)
    n_heads, d = _head_config(model)
    current = [_remaining_heads(model, i, n_heads) for i in range(len(blocks))]
    n_cur = {len(c) for c in current}
    if len(n_cur) != 1:
        raise ValueError("heads were already pruned unevenly across layers")
    n_cur_heads = n_cur.pop()
    n_keep = int(round(keep * n_heads)) if isinstance(keep, float) else int(keep)
    if not 1 <= n_keep <= n_cur_heads:
        raise ValueError(f"keep must leave between 1 and {n_cur_heads} heads per layer, got {keep}")
    scores = [torch.zeros(n_cur_heads) for _ in blocks]
    if calibration is not None:
        hooks = []
        for i, b in enumerate(blocks):
            o = _attention_parts(b)[4]

            def hook(mod, inputs, _i=i):
                ctx = inputs[0].detach().float().reshape(-1, n_cur_heads, d)  # [tokens, heads, d]
                w = mod.weight.detach().float().reshape(mod.out_features, n_cur_heads, d)
                contrib = torch.einsum("thd,ohd->tho", ctx, w)  # each head's share of the output
                scores[_i] += contrib.norm(dim=-1).mean(0).cpu()
            hooks.append(o.register_forward_pre_hook(hook))
        calibrate_with_hooks(model, calibration, hooks)
    else:
        for i, b in enumerate(blocks):
            _, _, _, v, o = _attention_parts(b)
            vn = v.weight.detach().float().reshape(n_cur_heads, d, -1).norm(dim=(1, 2))
            on = o.weight.detach().float().reshape(o.out_features, n_cur_heads, d).norm(dim=(0, 2))
            scores[i] = (vn * on).cpu()
    kept_original, pruned = [], {}
    for i, b in enumerate(blocks):
        keep_local = sorted(torch.topk(scores[i], n_keep).indices.tolist())
        _shrink_attention(b, keep_local, d)
        kept = [current[i][h] for h in keep_local]
        kept_original.append(kept)
        pruned[str(i)] = [h for h in range(n_heads) if h not in kept]
    model.config.pruned_heads = pruned
    return {"heads_before": n_cur_heads, "heads_after": n_keep, "kept": kept_original}
