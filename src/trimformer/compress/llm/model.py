"""Decoder LLM access for layer-wise compression: loading (GGUF, HF dirs, in-memory models), the decoder layers
and their Linears (nn.Linear and GPT-2's transposed Conv1D), and the layer-by-layer calibration driver."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "LoadedLLM",
    "decoder_layers",
    "get_linear_weight",
    "layer_linears",
    "layerwise",
    "load_llm",
    "set_linear_weight",
]

# Linears of a decoder layer in forward order (Llama family, then GPT-2); anything else that is a Linear
# inside a layer is also compressed, in module order.
_LLAMA_ORDER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass
class LoadedLLM:
    model: Any  # a transformers causal LM (float32, eval mode)
    tokenizer: Any | None
    source: str  # what it was loaded from (for the checkpoint's "base")


def load_llm(model_or_path: Any, tokenizer: Any | None = None) -> LoadedLLM:
    """A float32 causal LM from: an in-memory model, ``"smollm2"`` (the GGUF asset), a ``.gguf`` file or an HF
    directory. GGUF weights are dequantized by transformers: that fp32 model is the baseline."""
    if isinstance(model_or_path, torch.nn.Module):
        model = model_or_path
        if not hasattr(model, "config"):
            raise ValueError("expected a transformers causal LM (with .config and decoder layers)")
        decoder_layers(model)
        return LoadedLLM(_plain_float32(model).eval(), tokenizer, getattr(model.config, "_name_or_path", "") or "in-memory")
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(f"model must be a torch model or a path, got {type(model_or_path).__name__}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = str(model_or_path)
    if src == "smollm2":
        from ... import assets

        src = str(assets.ensure_assets(("smollm2",))["smollm2"])
    path = Path(src)
    if path.is_file() and path.suffix == ".gguf":
        kw = {"gguf_file": path.name}
        root = path.parent
    elif path.is_dir() and (path / "config.json").is_file():
        kw, root = {}, path
    else:
        raise FileNotFoundError(f"{src}: not a .gguf file or a directory with config.json (or 'smollm2')")
    model = _plain_float32(AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32, **kw).eval())
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(root, **kw)
        except Exception:  # a checkpoint without tokenizer files: calibration must then be given explicitly
            tokenizer = None
    return LoadedLLM(model, tokenizer, str(path.resolve()))


def _plain_float32(model: Any) -> Any:
    """Drop transformers' GGUF "quantizer" marker (the weights are already dequantized to float32 tensors) so
    the model saves as a plain float32 checkpoint, and cast any other float parameters to float32."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        if type(quantizer).__name__ != "GgufHfQuantizer":
            raise ValueError(f"cannot compress a model quantized by {type(quantizer).__name__}; load it in float")
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if any(p.dtype != torch.float32 for p in model.parameters()):
        model = model.float()
    return model


def decoder_layers(model: Any) -> tuple[str, torch.nn.ModuleList]:
    """(qualified prefix, ModuleList) of the decoder layers (Llama-family ``model.layers``, GPT-2 ``transformer.h``)."""
    for prefix in ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers"):
        obj = model
        for part in prefix.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return prefix, obj
    raise ValueError(f"unsupported model {type(model).__name__}: no decoder layers found "
                     "(supported: Llama family model.layers, GPT-2 transformer.h)")


def _is_conv1d(mod: Any) -> bool:
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf")


def layer_linears(layer: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Relative name -> Linear (or GPT-2 Conv1D) inside one decoder layer, in forward order."""
    found = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear) or _is_conv1d(m)}
    ordered = {n: found[n] for n in _LLAMA_ORDER if n in found}
    ordered.update({n: m for n, m in found.items() if n not in ordered})
    return ordered


def get_linear_weight(mod: torch.nn.Module) -> torch.Tensor:
    """float32 [out, in] copy of the weight (Conv1D stores [in, out])."""
    w = mod.weight.detach()
    return (w.t() if _is_conv1d(mod) else w).float().clone()


def set_linear_weight(mod: torch.nn.Module, w: torch.Tensor) -> None:
    with torch.no_grad():
        mod.weight.copy_((w.t() if _is_conv1d(mod) else w).to(mod.weight.dtype))


def in_features(mod: torch.nn.Module) -> int:
    return mod.weight.shape[0] if _is_conv1d(mod) else mod.weight.shape[1]


class _Captured(Exception):
    pass


class _Catcher(torch.nn.Module):
    """Stands in for layer 0: records its inputs and stops the forward pass."""

    def __init__(self, layer: torch.nn.Module, store: list):
        super().__init__()
        self.layer = layer
        self.store = store

    def forward(self, *args, **kwargs):
        self.store.append((args, kwargs))
        raise _Captured

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("layer"), name)


def _layer_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def capture_layer0_inputs(model: Any, samples: list[np.ndarray]) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) layer 0 receives for each calibration sample (batch 1, no padding, no KV cache)."""
    _, layers = decoder_layers(model)
    store: list = []
    first = layers[0]
    layers[0] = _Catcher(first, store)
    device = next(model.parameters()).device
    try:
        for ids in samples:
            t = torch.as_tensor(np.asarray(ids, dtype=np.int64)).reshape(1, -1).to(device)
            try:
                model(input_ids=t, use_cache=False)
            except _Captured:
                pass
    finally:
        layers[0] = first
    if len(store) != len(samples):
        raise RuntimeError("could not capture the decoder layer inputs (unexpected model structure)")
    return store


LayerFn = Callable[[int, str, torch.nn.Module, dict[str, Any]], None]


def _same(a: Any, b: Any) -> bool:
    """Structural equality of captured layer arguments (tensors by value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool(torch.equal(a, b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a is b or a == b


def _batch_inputs(captured: list[tuple[tuple, dict]], batch_size: int) -> tuple[list[torch.Tensor], list]:
    """Stack consecutive samples whose other layer arguments are identical (same length, no padding: same
    positions, rotary tables and mask) into batches of up to ``batch_size``; batch-1 arguments broadcast."""
    hidden: list[torch.Tensor] = []
    rest: list[tuple[tuple, dict]] = []
    group: list[torch.Tensor] = []
    for args, kwargs in captured:
        r = (args[1:], kwargs)
        if group and (len(group) >= batch_size or group[0].shape != args[0].shape or not _same(rest[-1], r)):
            hidden.append(torch.cat(group))
            group = []
        if not group:
            rest.append(r)
        group.append(args[0])
    if group:
        hidden.append(torch.cat(group))
    return hidden, rest


def _run(layer: torch.nn.Module, x: torch.Tensor, rest: tuple[tuple, dict]) -> Any:
    return layer(x, *rest[0], **rest[1])


def _groups_by_input(linears: dict[str, torch.nn.Module], seen: dict[str, torch.Tensor], order: list[str],
                     idx: int) -> list[list[str]]:
    """Linears reading the same tensor, grouped, in the order their group was first called."""
    by_tensor: dict[tuple, list[str]] = {}
    for name in linears:
        if name not in seen:
            raise RuntimeError(f"Linear {name} of layer {idx} was not called in the forward pass")
    for name in order:
        if name in linears and not any(name in g for g in by_tensor.values()):
            t = seen[name]
            by_tensor.setdefault((t.data_ptr(), tuple(t.shape), t.stride()), []).append(name)
    return list(by_tensor.values())


@torch.no_grad()
def layerwise(
    model: Any,
    samples: list[np.ndarray],
    process: LayerFn,
    collect: Callable[[str, torch.nn.Module], Any],
    progress: bool = True,
    desc: str = "layers",
    batch_size: int = 8,
    sequential: bool = False,
    tune: Callable[[int, str, torch.nn.Module, list, list, list], None] | None = None,
) -> None:
    """Sequential layer-by-layer calibration with memory ~ one layer's activations for all samples.

    For each decoder layer: run the (current) inputs through it with forward-pre-hooks feeding every Linear's
    input to a collector from ``collect(name, module)`` (Linears reading the same tensor share one collector),
    call ``process(index, prefix, layer, {name: collector})`` which compresses those Linears in place, then
    recompute the layer outputs with the compressed weights as the next layer's inputs (not after the last
    layer). Samples of equal length run ``batch_size`` at a time (several times faster on CPU than one by one).

    sequential=True ("true-sequential", as in the GPTQ reference): the Linears are compressed in groups of those
    sharing one input tensor, in forward order (Llama: q/k/v, then o, then gate/up, then down); each group's
    inputs are collected with the groups before it already compressed, and ``process`` is called once per group
    with only that group's collectors. Each collection forward stops at the group's first Linear.

    tune: called as ``tune(index, prefix, layer, inputs, targets, rest)`` after the layer is compressed, with
    its inputs from the compressed model and ``targets``, the uncompressed layer's outputs on the uncompressed
    model's hidden states (a second stream kept alongside; block-wise reconstruction, see tune.py).
    """
    from tqdm.auto import tqdm

    prefix, layers = decoder_layers(model)
    hidden, rest = _batch_inputs(capture_layer0_inputs(model, samples), max(1, int(batch_size)))
    fp_hidden = [h.clone() for h in hidden] if tune is not None else None
    for idx in tqdm(range(len(layers)), desc=desc, disable=not progress, unit="layer"):
        layer = layers[idx]
        targets = None
        if fp_hidden is not None:  # the uncompressed layer's outputs, before anything in it changes
            targets = [_layer_output(_run(layer, x, rest[i])) for i, x in enumerate(fp_hidden)]
        linears = layer_linears(layer)
        seen: dict[str, torch.Tensor] = {}
        order: list[str] = []

        def record(m, a, n, seen=seen, order=order):
            seen[n] = a[0]
            order.append(n)

        hooks = [mod.register_forward_pre_hook(lambda m, a, n=name: record(m, a, n)) for name, mod in linears.items()]
        try:
            # batch 0 with every Linear hooked: finds the groups of Linears sharing an input (and their order)
            _run(layer, hidden[0], rest[0])
        finally:
            for h in hooks:
                h.remove()
        groups = _groups_by_input(linears, seen, order, idx)
        stages = groups if sequential else [[n for g in groups for n in g]]
        for si, stage in enumerate(stages):
            owners = {name: g[0] for g in groups for name in g if name in stage}
            collectors = {o: collect(o, linears[o]) for o in dict.fromkeys(owners.values())}
            if si == 0:  # batch 0's inputs from the discovery pass (nothing compressed yet in this layer)
                for o, coll in collectors.items():
                    coll.add(seen[o])
                seen.clear()
            for i in range(0 if si else 1, len(hidden)):
                _collect_batch(layer, hidden[i], rest[i], {o: linears[o] for o in collectors}, collectors)
            process(idx, f"{prefix}.{idx}", layer, {name: collectors[owners[name]] for name in stage})
            collectors.clear()
        if tune is not None:
            tune(idx, f"{prefix}.{idx}", layer, hidden, targets, rest)
            fp_hidden = targets
        if idx + 1 < len(layers):  # the next layer's inputs, through the compressed layer
            for i, x in enumerate(hidden):
                hidden[i] = _layer_output(_run(layer, x, rest[i]))


def _collect_batch(layer: torch.nn.Module, x: torch.Tensor, rest: tuple[tuple, dict],
                   owners: dict[str, torch.nn.Module], collectors: dict[str, Any]) -> None:
    """One forward of ``layer`` feeding the inputs of ``owners`` to their collectors; stops (by exception) once
    every owner has been seen, so later parts of the layer are not computed."""
    pending = set(owners)

    def hook(m, a, n):
        collectors[n].add(a[0])
        pending.discard(n)
        if not pending:
            raise _Captured

    hooks = [mod.register_forward_pre_hook(lambda m, a, n=name: hook(m, a, n)) for name, mod in owners.items()]
    try:
        _run(layer, x, rest)
    except _Captured:
        pass
    finally:
        for h in hooks:
            h.remove()
    if pending:
        raise RuntimeError(f"Linears {sorted(pending)} were not called in the forward pass")


def iter_layer_linears(model: Any) -> Iterator[tuple[str, torch.nn.Module]]:
    """(qualified name, module) of every Linear inside the decoder layers."""
    prefix, layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        for name, mod in layer_linears(layer).items():
            yield f"{prefix}.{i}.{name}", mod
