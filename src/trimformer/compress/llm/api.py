"""quantize_llm / prune_llm: layer-wise compression of decoder LLMs into the compressed-LLM checkpoint."""

from __future__ import annotations

import copy
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...formats import kbit
from ...formats.sparsity import magnitude_mask
from ..obs import HessianAccumulator, KbitQuantizer, gptq_quantize, rtn_quantize, sparsegpt_prune
from .checkpoint import CompressionRecord, LinearRecord, install_activation_quant, write_checkpoint
from .e2e import E2EConfig, distill_e2e, e2e_config
from .model import (
    decoder_layers,
    get_linear_weight,
    in_features,
    iter_layer_linears,
    layer_linears,
    layerwise,
    load_llm,
    set_linear_weight,
)
from .tune import TuneConfig, as_config, tune_layer

__all__ = [
    "CompressionResult",
    "QUANT_METHODS",
    "PRUNE_METHODS",
    "layer_group_size",
    "parse_format",
    "parse_sparsity",
    "prune_llm",
    "quantize_llm",
]

QUANT_METHODS = ("rtn", "gptq", "smoothquant", "llm-int8")
PRUNE_METHODS = ("sparsegpt", "magnitude")
DEFAULT_SAMPLES = 64
DEFAULT_SEQLEN = 512


@dataclass(frozen=True)
class WeightSpec:
    type_name: str
    group_size: int | None  # None: per output channel
    w8a8: bool = False

    @property
    def label(self) -> str:
        base = "w8a8" if self.w8a8 else self.type_name
        return base if self.group_size is None else f"{base}-g{self.group_size}"


def parse_format(spec: str) -> WeightSpec:
    """``int4-g128``, ``int4-asym-g32``, ``nf4-g64``, ``fp4-g64``, ``int3-g128``, ``fp8-e4m3`` (per channel),
    ``int8`` (per channel), ``w8a8`` (INT8 per-channel weights + per-token INT8 activations)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"format must be a string like 'int4-g128', got {spec!r}")
    s = spec.strip().lower()
    m = re.fullmatch(r"(.+?)-g(\d+)", s)
    name, group = (m.group(1), int(m.group(2))) if m else (s, None)
    if group is not None and group <= 0:
        raise ValueError(f"format {spec!r}: group size must be positive")
    if name == "w8a8":
        return WeightSpec("int8", group, w8a8=True)
    try:
        kbit.get_kbit_type(name)
    except ValueError:
        raise ValueError(f"unknown weight format {spec!r}; use TYPE or TYPE-gGROUP with TYPE one of "
                         f"{', '.join(kbit.KBIT_TYPES)} or w8a8 (e.g. int4-g128, nf4-g64, fp8-e4m3)") from None
    return WeightSpec(name, group)


def parse_sparsity(sparsity: float | str, pattern: str | None = None) -> tuple[float, str]:
    """(fraction, pattern) from 0.5 / "0.5" (unstructured, or ``pattern="block"``) or "2:4" / "4:8"."""
    if isinstance(sparsity, str) and ":" in sparsity:
        if sparsity not in ("2:4", "4:8"):
            raise ValueError(f"unsupported N:M pattern {sparsity!r}; use 2:4 or 4:8")
        n, m = (int(v) for v in sparsity.split(":"))
        return 1.0 - n / m, sparsity
    try:
        frac = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a fraction in (0, 1) or 2:4 / 4:8, got {sparsity!r}") from None
    if not 0.0 < frac < 1.0:
        raise ValueError(f"sparsity must be in (0, 1), got {frac}")
    pattern = pattern or "unstructured"
    if pattern not in ("unstructured", "block"):
        raise ValueError(f"pattern must be 'unstructured' or 'block' with a fractional sparsity, got {pattern!r}")
    return frac, pattern


@dataclass
class CompressionResult:
    model: Any  # the compressed in-memory torch model (activation fake-quant hooks installed for W8A8)
    tokenizer: Any | None
    record: CompressionRecord
    out: Path | None
    seconds: float
    hooks: list = field(default_factory=list, repr=False)


class _AbsMax:
    """Per-input-feature running max |x| (SmoothQuant / LLM.int8() statistics)."""

    def __init__(self, k: int):
        self.value = torch.zeros(k)
        self.n_samples = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.value = torch.maximum(self.value, x.abs().amax(dim=0).cpu())
        self.n_samples += x.shape[0]


def _e2e_calibration(loaded, calibration, n_samples: int, seqlen: int, seed: int, cfg: E2EConfig,
                     solver: tuple[list, dict] | None):
    """The end-to-end pass's samples and calibration record. ``solver``: the (samples, record) the layer-wise
    solver used, or None (RTN, magnitude). Without ``cfg.samples`` the pass reuses the solver's samples (or draws
    ``n_samples``); with it, the first ``cfg.samples`` of a user-provided list, else that many windows of the
    calibration slice with the same seed (they begin with the solver's windows)."""
    if not cfg.samples and solver is not None:
        return solver
    if calibration is not None:
        given = list(calibration)
        if cfg.samples > len(given):
            raise ValueError(f"e2e samples={cfg.samples} but only {len(given)} calibration samples were given")
        samples, info = _calibration(loaded, given[:cfg.samples or None], n_samples, seqlen, seed)
    else:
        samples, info = _calibration(loaded, None, cfg.samples or n_samples, seqlen, seed)
    if solver is None:
        return samples, info
    return samples, {**solver[1], "e2e_samples": len(samples)}


def _calibration(loaded, calibration, n_samples: int, seqlen: int, seed: int):
    if calibration is not None:
        samples = [np.asarray(s, dtype=np.int64).ravel() for s in calibration]
        if not samples or any(s.size < 2 for s in samples):
            raise ValueError("calibration must be a non-empty list of token-id arrays (>= 2 tokens each)")
        vocab = getattr(loaded.model.config, "vocab_size", None)
        if vocab is not None and any(int(s.max()) >= vocab or int(s.min()) < 0 for s in samples):
            raise ValueError(f"calibration token ids must be in [0, {vocab})")
        return samples, {"source": "user-provided", "n_samples": len(samples),
                         "seqlen": int(max(s.size for s in samples))}
    if loaded.tokenizer is None:
        raise ValueError("calibration needs a tokenizer (or pass calibration=[token-id arrays])")
    from ...llm_data import calibration_samples

    samples = calibration_samples(loaded.tokenizer, n_samples, seqlen, seed)
    return samples, {"source": "wikipedia vital articles, calibration slice (trimformer.llm_data)",
                     "n_samples": n_samples, "seqlen": seqlen, "seed": seed}


def layer_group_size(in_features: int, group_size: int | None) -> int | None:
    """The group size used for a Linear with ``in_features`` inputs: the nominal one, with a shorter last group
    when it does not divide ``in_features`` (SmolLM2's 576 inputs at 128: 4 groups of 128 and one of 64, as the
    GPTQ reference and the runtime's k-bit kernels do); None (per channel) when the group covers every input."""
    if group_size is None or group_size >= in_features:
        return None
    return group_size


def _rtn_record(w: torch.Tensor, spec: WeightSpec, group: int | None,
                mse: bool = False) -> tuple[torch.Tensor, LinearRecord]:
    codes, scales, offsets = rtn_quantize(w, spec.type_name, group, mse=mse)
    deq = torch.from_numpy(kbit.dequantize(codes, scales, offsets, spec.type_name, group))
    return deq, LinearRecord(spec.type_name, group, None, None, codes, scales, offsets)


def _group_plan(model: Any, spec: WeightSpec | None, strict: bool) -> dict[str, int | None]:
    """Qualified Linear name -> group size actually used (see ``layer_group_size``)."""
    plan: dict[str, int | None] = {}
    for name, mod in iter_layer_linears(model):
        k = in_features(mod)
        if spec is None or spec.group_size is None:
            plan[name] = None
            continue
        if k % spec.group_size and strict:
            raise ValueError(f"{name}: in_features {k} is not a multiple of group size {spec.group_size} "
                             "(drop strict_groups / --strict-groups to allow a shorter last group)")
        plan[name] = layer_group_size(k, spec.group_size)
    return plan


def _group_summary(plan: dict[str, int | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for g in plan.values():
        key = "per-channel" if g is None else str(g)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _smooth_pairs(layer: torch.nn.Module) -> list[tuple[str, str, list[str]]]:
    """(kind, source module, [consumer Linears]) whose scales SmoothQuant migrates."""
    lins = layer_linears(layer)
    pairs = []
    if "self_attn.q_proj" in lins and hasattr(layer, "input_layernorm"):
        pairs.append(("norm", "input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]))
        pairs.append(("v_o", "self_attn.v_proj", ["self_attn.o_proj"]))
    if "mlp.gate_proj" in lins and hasattr(layer, "post_attention_layernorm"):
        pairs.append(("norm", "post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"]))
        pairs.append(("up_down", "mlp.up_proj", ["mlp.down_proj"]))
    if "attn.c_attn" in lins and hasattr(layer, "ln_1"):
        pairs.append(("norm", "ln_1", ["attn.c_attn"]))
    if "mlp.c_fc" in lins and hasattr(layer, "ln_2"):
        pairs.append(("norm", "ln_2", ["mlp.c_fc"]))
    return pairs


def _smooth_scales(act: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    w_max = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0)
    s = act.clamp_min(1e-5).pow(alpha) / w_max.clamp_min(1e-5).pow(1.0 - alpha)
    return s.clamp_min(1e-5)


@torch.no_grad()
def _smooth_layer(layer: torch.nn.Module, stats: dict[str, _AbsMax], alpha: float, config: Any) -> None:
    """Migrate activation outliers into the weights: X W^T = (X / s)(W * s)^T, with 1/s folded into the
    producer (norm weight, v_proj rows, up_proj rows)."""
    mods = dict(layer.named_modules())
    for kind, src, consumers in _smooth_pairs(layer):
        ws = [get_linear_weight(mods[c]) for c in consumers]
        act = stats[consumers[0]].value
        if kind == "v_o":
            # o_proj input channel (head h, dim d) comes from v channel (kv head h // group, d)
            heads = config.num_attention_heads
            kv = getattr(config, "num_key_value_heads", heads) or heads
            hd = ws[0].shape[1] // heads
            groups = heads // kv
            act_v = act.view(kv, groups, hd).amax(dim=1).reshape(-1)
            w_v = ws[0].abs().view(ws[0].shape[0], kv, groups, hd).amax(dim=(0, 2)).reshape(-1)
            s_v = act_v.clamp_min(1e-5).pow(alpha) / w_v.clamp_min(1e-5).pow(1.0 - alpha)
            s_v = s_v.clamp_min(1e-5)
            s = s_v.view(kv, 1, hd).expand(kv, groups, hd).reshape(-1)
            v = get_linear_weight(mods[src])
            set_linear_weight(mods[src], v / s_v[:, None])
            if getattr(mods[src], "bias", None) is not None:
                mods[src].bias.div_(s_v)
        else:
            s = _smooth_scales(act, ws, alpha)
            if kind == "norm":
                norm = mods[src]
                norm.weight.div_(s)
                if getattr(norm, "bias", None) is not None:
                    norm.bias.div_(s)
            else:  # up_down: down_proj input = act(gate) * up
                up = get_linear_weight(mods[src])
                set_linear_weight(mods[src], up / s[:, None])
                if getattr(mods[src], "bias", None) is not None:
                    mods[src].bias.div_(s)
        for c, w in zip(consumers, ws, strict=True):
            set_linear_weight(mods[c], w * s[None, :])


def _tune_config(tune: TuneConfig | dict | int | None) -> TuneConfig | None:
    return as_config(TuneConfig, tune, "tune")


def _tune_callback(cfg: TuneConfig | None, linears: dict[str, LinearRecord], stats: list[dict[str, float]],
                   residuals: dict[str, torch.Tensor] | None = None):
    if cfg is None:
        return None

    def tune_cb(idx: int, prefix: str, layer: torch.nn.Module, hidden: list, targets: list, rest: list) -> None:
        mods = {rel: mod for rel, mod in layer_linears(layer).items() if f"{prefix}.{rel}" in linears}
        records = {rel: linears[f"{prefix}.{rel}"] for rel in mods}
        init = {rel: residuals.pop(f"{prefix}.{rel}") for rel in mods if residuals and f"{prefix}.{rel}" in residuals}
        stats.append(tune_layer(layer, mods, records, hidden, targets, rest, cfg, init))

    return tune_cb


def _tune_summary(extra: dict[str, Any], cfg: TuneConfig | None, stats: list[dict[str, float]]) -> None:
    if cfg is None:
        return
    extra["tune"] = {**cfg.to_json(), "layers_kept": sum(bool(s["kept"]) for s in stats), "layers": len(stats),
                     "loss_before": [s["loss_before"] for s in stats],
                     "loss_after": [s["loss_after"] for s in stats]}


def _finish(loaded, record: CompressionRecord, out, overwrite: bool, t0: float, hooks: list) -> CompressionResult:
    path = None
    if out is not None:
        path = write_checkpoint(out, loaded.model, loaded.tokenizer, record, overwrite=overwrite)
    return CompressionResult(loaded.model, loaded.tokenizer, record, path, time.perf_counter() - t0, hooks)


def quantize_llm(
    model_or_path: Any,
    method: str = "gptq",
    format: str | None = None,
    group_size: int | None = None,
    out: str | os.PathLike | None = None,
    *,
    tokenizer: Any | None = None,
    calibration: list | None = None,
    n_samples: int = DEFAULT_SAMPLES,
    seqlen: int = DEFAULT_SEQLEN,
    seed: int = 0,
    act_order: bool = False,
    true_sequential: bool = True,
    mse: bool = False,
    percdamp: float = 0.01,
    alpha: float = 0.5,
    threshold: float = 6.0,
    strict_groups: bool = False,
    tune: TuneConfig | dict | int | None = None,
    e2e: E2EConfig | dict | int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> CompressionResult:
    """Quantize every Linear of the decoder layers (embeddings, final norm and LM head stay float32).

    method: "rtn" (round-to-nearest, no calibration), "gptq" (layer-wise OBS, calibrated), "smoothquant"
    (migration strength ``alpha``, then W8A8: INT8 per-channel weights, per-token INT8 activations),
    "llm-int8" (input features whose calibration |x| exceeds ``threshold`` stay float; the rest INT8 per-channel
    weights with per-token INT8 activations). format: see ``parse_format`` (default int4-g128; w8a8 for smoothquant
    and llm-int8); ``group_size`` overrides the format's group. A group size that does not divide a Linear's
    inputs gets a shorter last group (``layer_group_size``; recorded per Linear) unless ``strict_groups`` refuses. Writes the checkpoint directory to ``out`` when given.

    GPTQ options: ``act_order`` (columns by decreasing Hessian diagonal; groups stay contiguous, so no runtime
    cost), ``true_sequential`` (default: inside a layer, quantize q/k/v, then collect o_proj's inputs through
    the quantized attention, then gate/up, then down, as the GPTQ reference; False: every Linear's Hessian from
    the layer's unquantized forward), ``mse`` (RTN and GPTQ: each group's scale/offset from a search over
    shrunk ranges for the lowest squared error instead of min/max), ``percdamp`` (Hessian damping), ``tune``
    (a ``TuneConfig`` or a step count: after GPTQ, block-wise reconstruction of each layer's output, see tune.py).
    ``e2e`` (RTN / GPTQ to a k-bit format: an ``E2EConfig`` or a step count): last, the group scales/offsets and
    norm weights of the whole model distilled towards the uncompressed model's logits on the calibration samples
    (e2e.py).
    """
    if method not in QUANT_METHODS:
        raise ValueError(f"unknown quantization method {method!r}; known: {', '.join(QUANT_METHODS)}")
    if format is None:
        format = "w8a8" if method in ("smoothquant", "llm-int8") else "int4-g128"
    spec = parse_format(format)
    if group_size is not None:
        spec = WeightSpec(spec.type_name, None if group_size in (0, -1) else int(group_size), spec.w8a8)
    if method in ("smoothquant", "llm-int8"):
        if spec.type_name != "int8" or spec.group_size is not None:
            raise ValueError(f"{method} quantizes to INT8 per channel: use --format w8a8 or int8, not {format!r}")
        spec = WeightSpec("int8", None, True)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    tune_cfg = _tune_config(tune)
    if tune_cfg is not None and method != "gptq":
        raise ValueError(f"tune (block-wise reconstruction) follows GPTQ; not available with method {method!r}")
    e2e_cfg = e2e_config(e2e)
    if e2e_cfg is not None and (method not in ("rtn", "gptq") or spec.w8a8):
        raise ValueError(f"e2e (end-to-end distillation) trains k-bit group scales after RTN or GPTQ; not "
                         f"available with method {method!r} / format {spec.label!r}")
    t0 = time.perf_counter()
    loaded = load_llm(model_or_path, tokenizer)
    model = loaded.model
    decoder_layers(model)
    teacher = copy.deepcopy(model) if e2e_cfg is not None else None
    plan = _group_plan(model, spec, strict_groups)
    linears: dict[str, LinearRecord] = {}
    tune_stats: list[dict[str, float]] = []
    residuals: dict[str, torch.Tensor] = {}  # GPTQ's pre-rounding offsets, until the layer is tuned
    outliers: dict[str, list[int]] = {}
    calib_info = None
    extra: dict[str, Any] = {"format": spec.label, "group_sizes": _group_summary(plan)}
    hooks: list = []

    if method == "rtn":
        with torch.no_grad():
            for name, mod in iter_layer_linears(model):
                deq, rec = _rtn_record(get_linear_weight(mod), spec, plan[name], mse)
                set_linear_weight(mod, deq)
                linears[name] = rec
        if spec.w8a8:
            hooks = install_activation_quant(model, list(linears))
    else:
        samples, calib_info = _calibration(loaded, calibration, n_samples, seqlen, seed)
        config = model.config

        def process(idx: int, prefix: str, layer: torch.nn.Module, coll: dict[str, Any]) -> None:
            lins = layer_linears(layer)
            if method == "smoothquant":
                _smooth_layer(layer, coll, alpha, config)
            names = []
            for rel, mod in lins.items():
                if rel not in coll:  # true-sequential: another group of this layer
                    continue
                full = f"{prefix}.{rel}"
                w = get_linear_weight(mod)
                if method == "gptq":
                    res_t = torch.zeros(w.shape) if tune_cfg is not None and tune_cfg.init_residual else None
                    deq, codes, scales, offsets = gptq_quantize(w, coll[rel].hessian, spec.type_name,
                                                                plan[full], percdamp=percdamp,
                                                                act_order=act_order, mse=mse, residual=res_t)
                    if res_t is not None:
                        residuals[full] = res_t
                    rec = LinearRecord(spec.type_name, plan[full], None, None, codes, scales, offsets)
                elif method == "llm-int8":
                    cols = torch.nonzero(coll[rel].value > threshold).flatten().tolist()
                    w_rest = w.clone()
                    w_rest[:, cols] = 0.0
                    deq, rec = _rtn_record(w_rest, spec, plan[full])
                    deq[:, cols] = w[:, cols]  # outlier input features stay float
                    if cols:
                        outliers[full] = [int(c) for c in cols]
                else:  # smoothquant: per-channel RTN of the smoothed weights
                    deq, rec = _rtn_record(w, spec, plan[full], mse)
                set_linear_weight(mod, deq)
                linears[full] = rec
                names.append(full)
            if spec.w8a8:  # later layers calibrate on the W8A8 outputs of this one
                hooks.extend(install_activation_quant(model, names, outliers))

        def collect(name: str, mod: torch.nn.Module):
            return HessianAccumulator(in_features(mod)) if method == "gptq" else _AbsMax(in_features(mod))

        # SmoothQuant migrates scales across a whole layer and LLM.int8() keeps outliers from its statistics:
        # both calibrate on the layer as a whole
        sequential = true_sequential and method == "gptq"
        layerwise(model, samples, process, collect, progress=progress, desc=f"{method} {spec.label}",
                  sequential=sequential, tune=_tune_callback(tune_cfg, linears, tune_stats, residuals))
        if method == "gptq":
            extra.update(act_order=act_order, percdamp=percdamp, true_sequential=sequential)
        _tune_summary(extra, tune_cfg, tune_stats)
        if method == "smoothquant":
            extra["alpha"] = alpha
        if method == "llm-int8":
            extra["threshold"] = threshold
    if mse:
        extra["mse"] = True
    if e2e_cfg is not None:
        samples, calib_info = _e2e_calibration(loaded, calibration, n_samples, seqlen, seed, e2e_cfg,
                                               None if calib_info is None else (samples, calib_info))
        extra["e2e"] = distill_e2e(model, teacher, linears, samples, e2e_cfg, progress)
        del teacher
    record = CompressionRecord(method, loaded.source, calib_info, linears,
                               activations="w8a8-per-token" if spec.w8a8 else None, outliers=outliers,
                               extra=extra)
    return _finish(loaded, record, out, overwrite, t0, hooks)


def prune_llm(
    model_or_path: Any,
    method: str = "sparsegpt",
    sparsity: float | str = 0.5,
    out: str | os.PathLike | None = None,
    *,
    pattern: str | None = None,
    quantize: str | None = None,
    tokenizer: Any | None = None,
    calibration: list | None = None,
    n_samples: int = DEFAULT_SAMPLES,
    seqlen: int = DEFAULT_SEQLEN,
    seed: int = 0,
    percdamp: float = 0.01,
    true_sequential: bool = True,
    mse: bool = False,
    strict_groups: bool = False,
    tune: TuneConfig | dict | int | None = None,
    e2e: E2EConfig | dict | int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> CompressionResult:
    """Prune every Linear of the decoder layers to ``sparsity`` (0.5, or "2:4" / "4:8"; ``pattern="block"``
    for 4x4 tiles). method: "sparsegpt" (layer-wise OBS, calibrated) or "magnitude" (per-matrix smallest |w|).
    quantize: optionally a symmetric k-bit format (e.g. "int4-g128") applied jointly (SparseGPT: in the same
    pass; magnitude: RTN after pruning, zeros kept). true_sequential (SparseGPT, default): inside a layer, prune
    q/k/v, then collect o_proj's inputs through the pruned attention, then gate/up, then down; False: every
    Hessian from the layer's unpruned forward. mse: with ``quantize``, search each group's range for the lowest
    squared error. tune (SparseGPT): a ``TuneConfig`` or a step count: block-wise reconstruction of each
    layer's output with the masks fixed (tune.py). e2e: an ``E2EConfig`` or a step count: last, the kept weights
    (or, with ``quantize``, the group scales) and norm weights of the whole model distilled towards the
    unpruned model's logits on the calibration samples, masks fixed (e2e.py)."""
    if method not in PRUNE_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(PRUNE_METHODS)}")
    frac, pat = parse_sparsity(sparsity, pattern)
    spec = parse_format(quantize) if quantize else None
    if spec is not None and (spec.w8a8 or kbit.get_kbit_type(spec.type_name).affine):
        raise ValueError(f"joint pruning + quantization needs a symmetric weight type with an exact zero "
                         f"(e.g. int4-g128), got {quantize!r}")
    tune_cfg = _tune_config(tune)
    if tune_cfg is not None and method != "sparsegpt":
        raise ValueError(f"tune (block-wise reconstruction) follows SparseGPT; not available with method {method!r}")
    e2e_cfg = e2e_config(e2e)
    t0 = time.perf_counter()
    loaded = load_llm(model_or_path, tokenizer)
    model = loaded.model
    decoder_layers(model)
    teacher = copy.deepcopy(model) if e2e_cfg is not None else None
    plan = _group_plan(model, spec, strict_groups)
    tune_stats: list[dict[str, float]] = []
    if pat in ("2:4", "4:8"):
        m = int(pat.split(":")[1])
        for name, mod in iter_layer_linears(model):
            if in_features(mod) % m:
                raise ValueError(f"{name}: in_features {in_features(mod)} is not a multiple of {m} ({pat})")
    linears: dict[str, LinearRecord] = {}
    calib_info = None
    achieved_total = [0, 0]

    def finish_linear(full: str, mod, w: torch.Tensor, keep: torch.Tensor, quant: KbitQuantizer | None) -> None:
        rec = LinearRecord(None, None, float(1.0 - keep.float().mean()), pat)
        if spec is not None:
            if quant is None:  # magnitude + RTN: zeros map to the exact zero level
                codes, scales, offsets = rtn_quantize(w, spec.type_name, plan[full], mse=mse)
            else:
                codes, scales, offsets = quant.codes, quant.scales, quant.offsets
            w = torch.from_numpy(kbit.dequantize(codes, scales, offsets, spec.type_name, plan[full]))
            if not torch.all(w[~keep] == 0):
                raise AssertionError(f"{full}: quantization broke the sparsity mask")
            rec.format, rec.group_size = spec.type_name, plan[full]
            rec.codes, rec.scales, rec.offsets = codes, scales, offsets
        set_linear_weight(mod, w)
        linears[full] = rec
        achieved_total[0] += int((~keep).sum())
        achieved_total[1] += keep.numel()

    if method == "magnitude":
        with torch.no_grad():
            for name, mod in iter_layer_linears(model):
                w = get_linear_weight(mod)
                keep = torch.from_numpy(magnitude_mask(w.numpy(), frac, pat))
                finish_linear(name, mod, w * keep, keep, None)
    else:
        samples, calib_info = _calibration(loaded, calibration, n_samples, seqlen, seed)

        def process(idx: int, prefix: str, layer: torch.nn.Module, coll: dict[str, Any]) -> None:
            for rel, mod in layer_linears(layer).items():
                if rel not in coll:  # true-sequential: another group of this layer
                    continue
                full = f"{prefix}.{rel}"
                quant = KbitQuantizer(spec.type_name, plan[full], mse) if spec is not None else None
                w, keep = sparsegpt_prune(get_linear_weight(mod), coll[rel].hessian, frac, pat,
                                          percdamp=percdamp, quantizer=quant)
                finish_linear(full, mod, w, keep, quant)

        def collect(name: str, mod: torch.nn.Module):
            return HessianAccumulator(in_features(mod))

        label = pat if pat != "unstructured" else f"{frac:g}"
        layerwise(model, samples, process, collect, progress=progress, desc=f"{method} {label}",
                  sequential=true_sequential, tune=_tune_callback(tune_cfg, linears, tune_stats))
    extra: dict[str, Any] = {"sparsity": frac, "pattern": pat, "quantize": spec.label if spec else None,
                             "achieved_sparsity": achieved_total[0] / max(achieved_total[1], 1)}
    if spec is not None:
        extra["group_sizes"] = _group_summary(plan)
    if method == "sparsegpt":
        extra.update(percdamp=percdamp, true_sequential=bool(true_sequential))
    if mse and spec is not None:
        extra["mse"] = True
    _tune_summary(extra, tune_cfg, tune_stats)
    if e2e_cfg is not None:
        samples, calib_info = _e2e_calibration(loaded, calibration, n_samples, seqlen, seed, e2e_cfg,
                                               None if calib_info is None else (samples, calib_info))
        extra["e2e"] = distill_e2e(model, teacher, linears, samples, e2e_cfg, progress)
        del teacher
    record = CompressionRecord(method, loaded.source, calib_info, linears, extra=extra)
    if math.isnan(extra["achieved_sparsity"]):  # pragma: no cover - defensive
        raise AssertionError("no Linear was pruned")
    return _finish(loaded, record, out, overwrite, t0, [])
