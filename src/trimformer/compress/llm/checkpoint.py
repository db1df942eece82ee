"""The compressed-LLM checkpoint directory (docs/llm.md, notes contract): write atomically, read back for
PyTorch evaluation (the runtime reads the same files natively).

    config.json, tokenizer files, generation_config.json   HF-style (model.save_pretrained)
    model.safetensors          dense float32 weights under HF names (quantized Linears: dequantized values;
                               GPT-2 Conv1D weights keep HF's [in, out] layout)
    trimformer_compression.json  method, base, calibration, per-Linear format/group/sparsity/pattern,
                               activations ("w8a8-per-token" | null), outliers {linear: [input features]}
    quantized.safetensors      NAME.codes uint8 [out, in], NAME.scales / NAME.offsets float32 [out, in // g]
                               (formats/kbit.py layout, always out x in)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...formats import kbit

__all__ = [
    "COMPRESSION_FILE",
    "CompressionRecord",
    "LinearRecord",
    "install_activation_quant",
    "load_compressed_llm",
    "read_compression",
    "write_checkpoint",
]

COMPRESSION_FILE = "trimformer_compression.json"
QUANTIZED_FILE = "quantized.safetensors"
FORMAT_VERSION = 1
ACTIVATION_MODES = ("w8a8-per-token",)


@dataclass
class LinearRecord:
    format: str | None = None  # kbit type name, None = float32
    group_size: int | None = None  # None = per output channel (g = in_features)
    sparsity: float | None = None
    pattern: str | None = None
    codes: np.ndarray | None = field(default=None, repr=False)
    scales: np.ndarray | None = field(default=None, repr=False)
    offsets: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "group_size": self.group_size, "sparsity": self.sparsity,
                "pattern": self.pattern}


@dataclass
class CompressionRecord:
    method: str
    base: str
    calibration: dict[str, Any] | None
    linears: dict[str, LinearRecord]
    activations: str | None = None
    outliers: dict[str, list[int]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # method parameters (alpha, threshold, ...)

    def to_json(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "method": self.method, "base": self.base,
                "calibration": self.calibration, "parameters": self.extra,
                "linears": {n: r.to_json() for n, r in self.linears.items()},
                "activations": self.activations, "outliers": self.outliers}


def write_checkpoint(out: str | os.PathLike, model: Any, tokenizer: Any | None, record: CompressionRecord,
                     overwrite: bool = False) -> Path:
    """Write the checkpoint directory atomically (trimformer.io.replacing_directory)."""
    from safetensors.numpy import save_file

    from ...io import replacing_directory

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True / --force to replace it)")
    with replacing_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(tmp)
        tensors: dict[str, np.ndarray] = {}
        for name, rec in record.linears.items():
            if rec.codes is None:
                continue
            tensors[f"{name}.codes"] = np.ascontiguousarray(rec.codes, dtype=np.uint8)
            tensors[f"{name}.scales"] = np.ascontiguousarray(rec.scales, dtype=np.float32)
            tensors[f"{name}.offsets"] = np.ascontiguousarray(rec.offsets, dtype=np.float32)
        if tensors:
            save_file(tensors, str(tmp / QUANTIZED_FILE), metadata={"format": "trimformer-kbit-v1"})
        (tmp / COMPRESSION_FILE).write_text(json.dumps(record.to_json(), indent=1) + "\n")
    return out


def read_compression(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``trimformer_compression.json`` of a checkpoint directory (validated)."""
    f = Path(path) / COMPRESSION_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no {COMPRESSION_FILE} (not a trimformer compressed-LLM checkpoint)")
    meta = json.loads(f.read_text())
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{f}: unsupported version {meta.get('version')!r} (expected {FORMAT_VERSION})")
    for key in ("method", "linears"):
        if key not in meta:
            raise ValueError(f"{f}: missing {key!r}")
    if meta.get("activations") not in (None, *ACTIVATION_MODES):
        raise ValueError(f"{f}: unknown activations mode {meta.get('activations')!r}")
    for rec in meta["linears"].values():
        if rec.get("format") is not None:
            kbit.get_kbit_type(rec["format"])
    return meta


def _fake_quant_per_token(x: torch.Tensor, keep_float: torch.Tensor | None) -> torch.Tensor:
    """Symmetric INT8 per-token (last dim) fake quantization; ``keep_float`` input features stay exact."""
    xf = x.float()
    part = xf if keep_float is None else xf.masked_fill(keep_float, 0.0)
    scale = part.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0
    q = torch.clamp(torch.round(part / scale), -127, 127) * scale
    if keep_float is not None:
        q = torch.where(keep_float, xf, q)
    return q.to(x.dtype)


def install_activation_quant(model: Any, names: list[str], outliers: dict[str, list[int]] | None = None) -> list:
    """Forward-pre-hooks that fake-quantize the inputs of the named Linears (W8A8 per-token evaluation)."""
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        mod = modules.get(name)
        if mod is None:
            raise ValueError(f"no module {name!r} in the model")
        idx = (outliers or {}).get(name)
        mask = None
        if idx:
            k = mod.weight.shape[0] if type(mod).__name__ == "Conv1D" else mod.weight.shape[1]
            mask = torch.zeros(k, dtype=torch.bool, device=mod.weight.device)
            mask[torch.as_tensor(idx, dtype=torch.long)] = True

        def hook(m, args, mask=mask):
            return (_fake_quant_per_token(args[0], mask), *args[1:])

        handles.append(mod.register_forward_pre_hook(hook))
    return handles


def load_compressed_llm(path: str | os.PathLike, verify: bool = True) -> tuple[Any, dict[str, Any]]:
    """(float32 torch model, compression metadata) from a checkpoint directory, with W8A8 activation
    fake-quantization installed when the checkpoint asks for it. ``verify``: check that every quantized
    Linear's dense weight equals its dequantized codes (outlier features and pruned weights aside)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    meta = read_compression(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    qfile = Path(path) / QUANTIZED_FILE
    if verify and qfile.is_file():
        from .model import get_linear_weight

        q = load_file(str(qfile))
        modules = dict(model.named_modules())
        for name, rec in meta["linears"].items():
            if rec.get("format") is None or f"{name}.codes" not in q:
                continue
            deq = kbit.dequantize(q[f"{name}.codes"], q[f"{name}.scales"], q[f"{name}.offsets"], rec["format"],
                                  rec.get("group_size"))
            w = get_linear_weight(modules[name]).numpy()
            cols = meta.get("outliers", {}).get(name) or []
            if cols:
                deq[:, cols] = w[:, cols]
            if not np.array_equal(deq, w):
                raise ValueError(f"{path}: {name} weights differ from their dequantized codes")
    if meta.get("activations") == "w8a8-per-token":
        install_activation_quant(model, [n for n, r in meta["linears"].items() if r.get("format")],
                                 meta.get("outliers"))
    return model, meta
