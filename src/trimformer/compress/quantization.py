"""Quantization of encoders for the trimformer runtime: post-training static/dynamic INT8, SmoothQuant,
quantization-aware training (QAT) and mixed precision under an accuracy budget.

What the runtime executes natively: INT8 weights per output channel, symmetric (scale = absmax / 127, codes in
[-127, 127]) and u8 activations per tensor, asymmetric (static: one calibrated scale and zero point per Linear
input; dynamic: per-row ranges computed per call). Other schemes (per-tensor or asymmetric weights, symmetric or
per-channel activations) are rejected with `UnsupportedSchemeError`: nothing here simulates a format the runtime
cannot run, since every reported number comes from the runtime.

QAT fake-quantizes exactly as the runtime quantizes: activations as clamp(nearbyint(x * (1/scale)) + zp, 0, 255)
with the runtime's calibrated (scale, zp), weights per channel with the runtime's absmax/127 rule; the exported
(scale, zp) are passed to `compile_encoder(activation_params=...)` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..formats.registry import activation_qparams
from ..runtime.calibration import CALIBRATION_METHODS

OBSERVERS = CALIBRATION_METHODS  # minmax, percentile, mse, entropy (KL)
SCHEMES = ("int8-static", "int8-dynamic", "qat")
NATIVE_SCHEME = {"weights": "per-channel", "weight_symmetric": True, "activations": "per-tensor",
                 "activation_symmetric": False}


class UnsupportedSchemeError(ValueError):
    """A quantization scheme the trimformer runtime cannot execute."""


@dataclass(frozen=True)
class QuantScheme:
    """A quantization scheme; `check_native` says whether the runtime runs it."""

    mode: str = "int8-static"           # "int8-static" | "int8-dynamic" | "qat"
    observer: str = "minmax"            # static activation ranges: minmax, percentile, mse, entropy
    weights: str = "per-channel"        # "per-channel" | "per-tensor"
    weight_symmetric: bool = True
    activations: str = "per-tensor"     # "per-tensor" | "per-channel"
    activation_symmetric: bool = False

    def check_native(self) -> None:
        if self.mode not in SCHEMES:
            raise ValueError(f"quantization scheme must be one of {SCHEMES}, got {self.mode!r}")
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {OBSERVERS}, got {self.observer!r}")
        if self.weights not in ("per-channel", "per-tensor") or self.activations not in ("per-channel", "per-tensor"):
            raise ValueError(f"weights/activations granularity must be 'per-channel' or 'per-tensor', got "
                             f"{self.weights!r}/{self.activations!r}")
        bad = [f"{k}={getattr(self, k)!r}" for k, v in NATIVE_SCHEME.items() if getattr(self, k) != v]
        if bad:
            raise UnsupportedSchemeError(
                f"the trimformer runtime cannot run {', '.join(bad)}: it executes INT8 weights per-channel symmetric "
                "and u8 activations per-tensor asymmetric only (weights='per-channel', weight_symmetric=True, "
                "activations='per-tensor', activation_symmetric=False)")


# ------------------------------------------------------------------------------------------- names and batches


def runtime_linear_name(hf_name: str) -> str | None:
    """HF module name -> the runtime's Linear name ("layers.3.qkv"...); None for modules outside the encoder."""
    parts = hf_name.split(".")
    for scope in ("layer",):
        if scope in parts:
            i = parts.index(scope)
            if i + 1 < len(parts) and parts[i + 1].isdigit():
                rest = ".".join(parts[i + 2:])
                kind = {"attention.self.query": "qkv", "attention.self.key": "qkv", "attention.self.value": "qkv",
                        "attention.output.dense": "attn_out", "intermediate.dense": "ffn1", "output.dense": "ffn2",
                        "attention.q_lin": "qkv", "attention.k_lin": "qkv", "attention.v_lin": "qkv",
                        "attention.out_lin": "attn_out", "ffn.lin1": "ffn1", "ffn.lin2": "ffn2"}.get(rest)
                return f"layers.{parts[i + 1]}.{kind}" if kind else None
    return None


def _np_batches(calibration: Iterable[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
    out = []
    for b in calibration:
        out.append({k: np.asarray(v.cpu() if hasattr(v, "cpu") else v) for k, v in b.items()
                    if k in ("input_ids", "attention_mask", "token_type_ids")})
    if not out:
        raise ValueError("calibration produced no batches")
    return out


def runtime_activation_params(model: Any, calibration: Iterable[Mapping[str, Any]], observer: str = "minmax",
                              *, threads: int | None = None) -> dict[str, tuple[float, int]]:
    """{runtime Linear name: (scale, zero_point)} exactly as `compile(quantize="int8-static")` would calibrate
    them: the float runtime observes every Linear input, `observer` clips the ranges."""
    from ..runtime.calibration import calibrate_ranges
    from ..runtime.engine import compile_encoder

    if observer not in OBSERVERS:
        raise ValueError(f"observer must be one of {OBSERVERS}, got {observer!r}")
    # every Linear dense, as compile's own calibration engine: the default tuned dispatch may run a pruned layer on
    # a sparse kernel picked by timing, whose sums differ in the last bits from one compile to the next
    float_engine = compile_encoder(model, threads=threads, sparse=False)
    ranges = calibrate_ranges(float_engine, _np_batches(calibration), observer)
    return {name: activation_qparams(lo, hi) for name, (lo, hi) in ranges.items()}


# ------------------------------------------------------------------------------------------------- SmoothQuant


def smooth_attention_output(model: Any, calibration: Iterable[Mapping[str, Any]], alpha: float = 0.5) -> dict:
    """SmoothQuant's migration on the one fold that is exact in a post-LayerNorm encoder: the attention output
    projection's input channels (the attention context) are divided by s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha)
    through the value projection (rows and bias of V; attention is linear in V) and its weight columns multiplied
    by s_j. The float model's function is unchanged; the context's outlier channels shrink before u8 quantization.

    The QKV and FFN1 inputs of BERT/RoBERTa/DistilBERT are LayerNorm outputs that also feed the residual, so a
    per-channel fold into LayerNorm gamma/beta would change the model: see `smooth_layernorm_inputs`."""
    import torch

    from .pruning import _encoder_blocks, calibrate_with_hooks

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    blocks = _encoder_blocks(model)
    pairs = []
    for b in blocks:
        a = b.attention
        pairs.append((a.self.value, a.output.dense) if hasattr(a, "self") else (a.v_lin, a.out_lin))
    amax = [None] * len(pairs)
    hooks = []
    for i, (_, out) in enumerate(pairs):
        def hook(mod, inputs, _i=i):
            m = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
            amax[_i] = m if amax[_i] is None else torch.maximum(amax[_i], m)
        hooks.append(out.register_forward_pre_hook(hook))
    calibrate_with_hooks(model, calibration, hooks)
    if amax[0] is None:
        raise ValueError("SmoothQuant needs calibration batches")
    scales = {}
    with torch.no_grad():
        for i, (v, out) in enumerate(pairs):
            wmax = out.weight.detach().abs().amax(0).clamp(min=1e-5)
            s = (amax[i].clamp(min=1e-5) ** alpha / wmax ** (1 - alpha)).clamp(min=1e-5)
            v.weight.div_(s[:, None])
            if v.bias is not None:
                v.bias.div_(s)
            out.weight.mul_(s[None, :])
            scales[f"layers.{i}.attn_out"] = s.cpu().numpy()
    return scales


def smooth_layernorm_inputs(model: Any, *args: Any, **kwargs: Any) -> None:
    """SmoothQuant's LayerNorm fold (QKV / FFN1 inputs). Exact only where the LayerNorm output feeds nothing but
    the Linear (pre-LN blocks); in the post-LN encoders the runtime supports (BERT, RoBERTa, DistilBERT) the same
    output is also the residual, so folding 1/s into gamma/beta would change the model. Refused."""
    arch = getattr(getattr(model, "config", None), "model_type", "?")
    raise UnsupportedSchemeError(
        f"SmoothQuant LayerNorm folding is not exact for {arch!r}: its LayerNorm outputs also feed the residual "
        "(post-LN), so dividing gamma/beta by the smoothing scales changes the model; only the exact "
        "value -> attention-output fold (smooth_attention_output) is applied")


# --------------------------------------------------------------------------------------------------------- QAT


class _ActQuant:
    """A u8 activation quantizer with the runtime's (scale, zp); shared by Q, K and V (one fused input)."""

    def __init__(self, scale: float, zero_point: int):
        self.scale, self.zero_point = float(scale), int(zero_point)

    def __call__(self, x: Any) -> Any:
        import torch

        scale = torch.tensor(self.scale, dtype=torch.float32, device=x.device)
        inv = torch.tensor(1.0, dtype=torch.float32, device=x.device) / scale  # the runtime's 1.0f / a_scale
        zp = float(self.zero_point)
        lo, hi = (0.0 - zp) * scale, (255.0 - zp) * scale
        xc = torch.maximum(torch.minimum(x, hi), lo)  # clipped straight-through: no gradient outside the range
        q = torch.clamp(torch.round(x * inv) + zp, 0.0, 255.0)
        return xc + ((q - zp) * scale - xc).detach()


def fake_quant_weight(w: Any) -> Any:
    """Per-output-channel symmetric INT8 (the runtime's quantize_int8_per_channel) with a straight-through grad."""
    import torch

    amax = w.detach().abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.clamp(torch.round(w / scale), -127, 127) * scale
    return w + (q - w).detach()


def _qat_forward(self: Any, x: Any) -> Any:
    import torch.nn.functional as F

    aq = self._trimformer_act
    return F.linear(aq(x) if aq is not None else x, fake_quant_weight(self.weight), self.bias)


def prepare_qat(model: Any, calibration: Iterable[Mapping[str, Any]], observer: str = "minmax",
                keep_float: Sequence[str] = (), activation_params: Mapping[str, tuple[float, int]] | None = None,
                *, threads: int | None = None) -> dict[str, tuple[float, int]]:
    """Make every encoder Linear fake-quantize its input (u8, the runtime's calibrated static params) and its
    weight (INT8 per channel) in forward, in place; parameter names and the state dict are unchanged, so pruning
    masks and the optimizer work as before. Returns the activation params the runtime will use."""
    import types

    from .pruning import encoder_linears

    params = dict(activation_params) if activation_params is not None else \
        runtime_activation_params(model, calibration, observer, threads=threads)
    shared: dict[str, _ActQuant] = {}
    for hf_name, lin in encoder_linears(model).items():
        rt = runtime_linear_name(hf_name)
        if rt is None or any(rt == k or rt.endswith(k) or rt.startswith(k) for k in keep_float):
            continue
        if rt not in params:
            raise ValueError(f"no activation params for {rt} ({hf_name})")
        if rt not in shared:
            shared[rt] = _ActQuant(*params[rt])
        lin._trimformer_act = shared[rt]
        lin.forward = types.MethodType(_qat_forward, lin)
    model._trimformer_qat = {"observer": observer, "keep_float": list(keep_float)}
    return {k: (q.scale, q.zero_point) for k, q in shared.items()}


def qat_activation_params(model: Any) -> dict[str, tuple[float, int]]:
    """The (scale, zero_point) each fake-quantized Linear input uses, under runtime Linear names."""
    from .pruning import encoder_linears

    out = {}
    for hf_name, lin in encoder_linears(model).items():
        aq = getattr(lin, "_trimformer_act", None)
        if aq is not None:
            out[runtime_linear_name(hf_name)] = (aq.scale, aq.zero_point)
    if not out:
        raise ValueError("the model is not prepared for QAT (call prepare_qat first)")
    return out


def remove_qat(model: Any) -> None:
    """Back to plain float Linears (the weights stay the float master weights the runtime re-quantizes)."""
    from .pruning import encoder_linears

    for lin in encoder_linears(model).values():
        if "forward" in vars(lin):
            del lin.forward
        lin.__dict__.pop("_trimformer_act", None)
    if hasattr(model, "_trimformer_qat"):
        del model._trimformer_qat


# ------------------------------------------------------------------------------------------------- the entry


def quantize(model: Any, scheme: str | QuantScheme = "int8-static", calibration: Iterable[Mapping] | None = None,
             *, observer: str = "minmax", smoothquant: float | None = None, keep_float: Sequence[str] = (),
             threads: int | None = None, isa: str | None = None, sparse: bool | str | None = "tune",
             **scheme_options: Any) -> Any:
    """Quantize an HF encoder (in-memory model) and compile it: returns the runtime Engine.

    scheme: "int8-static" (calibrated u8 activations, `observer` minmax/percentile/mse/entropy), "int8-dynamic"
    (per-row activation ranges at run time), "qat" (a `prepare_qat` model: its fake-quant params are used exactly),
    or a QuantScheme; scheme_options (weights=, weight_symmetric=, activations=, activation_symmetric=) are checked
    against what the runtime runs. smoothquant: alpha of the exact V -> attention-output SmoothQuant fold, applied
    to `model` in place before calibration. keep_float: runtime Linear names/suffixes left in float32.
    """
    from ..runtime.engine import compile_encoder

    sch = scheme if isinstance(scheme, QuantScheme) else QuantScheme(mode=scheme, observer=observer, **scheme_options)
    sch.check_native()
    if sch.mode == "int8-dynamic":
        if smoothquant is not None:
            raise ValueError("smoothquant needs static calibration (scheme='int8-static')")
        return compile_encoder(model, quantize="int8-dynamic", keep_float=keep_float, threads=threads, isa=isa,
                               sparse=sparse)
    if sch.mode == "qat":
        params = qat_activation_params(model)
        keep = tuple(keep_float) or tuple(getattr(model, "_trimformer_qat", {}).get("keep_float", ()))
        return compile_encoder(model, quantize="int8-static", activation_params=params, keep_float=keep,
                               threads=threads, isa=isa, sparse=sparse)
    if calibration is None:
        raise ValueError("scheme 'int8-static' needs calibration batches")
    batches = _np_batches(calibration)
    if smoothquant is not None:
        smooth_attention_output(model, batches, smoothquant)
    return compile_encoder(model, quantize="int8-static", calibration=batches, calibration_method=sch.observer,
                           keep_float=keep_float, threads=threads, isa=isa, sparse=sparse)


# ------------------------------------------------------------------------------------ sensitivity and budget


def sensitivity_report(model: Any, calibration: Iterable[Mapping[str, Any]], evaluate: Callable[[Any], float], *,
                       observer: str = "minmax", threads: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Per-Linear sensitivity: the metric with only that Linear in INT8 (static, the runtime's params) and every
    other in float, against the float model. evaluate(engine) -> metric (higher is better)."""
    from ..runtime.engine import compile_encoder

    params = runtime_activation_params(model, calibration, observer, threads=threads)
    float_metric = evaluate(compile_encoder(model, threads=threads))
    names = sorted((n for n in params if n.startswith("layers.")), key=lambda n: (int(n.split(".")[1]), n))
    rows = []
    for i, name in enumerate(names):
        others = tuple(n for n in names if n != name) + ("head.",)
        eng = compile_encoder(model, quantize="int8-static", activation_params=params, keep_float=others,
                              threads=threads, sparse=None)
        m = evaluate(eng)
        rows.append({"linear": name, "metric": m, "drop": float_metric - m})
        if progress:
            progress(i + 1, len(names))
    rows.sort(key=lambda r: -r["drop"])
    return {"float_metric": float_metric, "observer": observer, "layers": rows, "activation_params": params}


def mixed_precision(model: Any, calibration: Iterable[Mapping[str, Any]], evaluate: Callable[[Any], float],
                    budget: float, *, observer: str = "minmax", report: Mapping[str, Any] | None = None,
                    max_float: int | None = None, threads: int | None = None,
                    sparse: bool | str | None = "tune") -> tuple[Any, dict[str, Any]]:
    """SAMP-style mixed precision: start all-INT8; while metric < float_metric - budget keep the next most
    sensitive Linear (from the sensitivity report) in float32. Returns (engine, summary). Raises ValueError when
    even `max_float` float layers cannot meet the budget."""
    from ..runtime.engine import compile_encoder

    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    report = report or sensitivity_report(model, calibration, evaluate, observer=observer, threads=threads)
    params, float_metric = report["activation_params"], report["float_metric"]
    order = [r["linear"] for r in report["layers"]]
    limit = len(order) if max_float is None else min(max_float, len(order))
    keep: list[str] = []
    history = []
    while True:
        eng = compile_encoder(model, quantize="int8-static", activation_params=params, keep_float=tuple(keep),
                              threads=threads, sparse=None)
        m = evaluate(eng)
        history.append({"float_layers": list(keep), "metric": m})
        if m >= float_metric - budget:
            break
        if len(keep) >= limit:
            raise ValueError(f"accuracy budget {budget} not met: {m:.4f} with {len(keep)} float Linears vs "
                             f"float {float_metric:.4f}")
        keep.append(order[len(keep)])
    if sparse != None:  # noqa: E711  (re-plan with the sparse dispatch of the final choice)
        eng = compile_encoder(model, quantize="int8-static", activation_params=params, keep_float=tuple(keep),
                              threads=threads, sparse=sparse)
    return eng, {"float_metric": float_metric, "metric": m, "keep_float": keep, "history": history,
                 "budget": budget}
