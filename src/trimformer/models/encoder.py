"""Encoder architectures (BERT, MiniLM, DistilBERT, RoBERTa/XLM-R): one spec and one weight-name map each.

A Hugging Face checkpoint is turned into an `EncoderSpec` and a dict of float32 tensors under trimformer's
canonical names (`emb.word`, `layers.{i}.qkv.weight` with Q, K, V fused, `head.{j}.weight`, ...). Nothing here
needs torch: checkpoints are read from safetensors; an in-memory `transformers` model is read via state_dict().
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..formats.safetensors_io import SafetensorsError, SafetensorsFile

SUPPORTED_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta")
TASKS = ("feature-extraction", "sequence-classification", "token-classification", "question-answering")
ACTIVATIONS = {"none": 0, "gelu": 1, "gelu_tanh": 2, "relu": 3, "tanh": 4}
_HF_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
           "relu": "relu"}


T = TypeVar("T")


class UnsupportedModelError(ValueError):
    """The checkpoint's architecture is not one trimformer runs."""


class CheckpointError(ValueError):
    """The checkpoint directory is missing files or has tensors that do not match its config."""


def config_int(cfg: dict[str, Any], key: str, *, minimum: int = 1, default: int | None = None) -> int:
    """cfg[key] as an integer >= minimum (a missing or null key: `default`), else a CheckpointError naming the key:
    a config with a size of "768", 0 or 12.5 must not reach the packer or the C++ core."""
    value = cfg.get(key)
    if value is None:
        if default is not None:
            return default
        raise CheckpointError(f"config.json lacks {key!r} (needed for model_type {cfg.get('model_type')!r})")
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if isinstance(value, bool) or not finite or value != int(value) or value < minimum:
        raise CheckpointError(f"config.json: {key!r} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass
class EncoderSpec:
    arch: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    pad_token_id: int
    position_mode: int  # 0: positions 0..S-1; 1: RoBERTa (pad + 1 + running count of non-pad tokens)
    ln_eps: float
    act: str
    task: str = "feature-extraction"
    head_pool: str = "token"  # "cls" (first token) or "token" (every token)
    head_acts: list[str] = field(default_factory=list)
    id2label: dict[int, str] | None = None
    head_dim: int = 0  # 0: hidden // heads; set when attention heads were pruned (heads * head_dim < hidden)

    @property
    def attention_width(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.id2label is not None:
            d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EncoderSpec:
        d = dict(d)
        if d.get("id2label") is not None:
            d["id2label"] = {int(k): v for k, v in d["id2label"].items()}
        names = set(cls.__dataclass_fields__)
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown encoder spec fields: {sorted(unknown)}")
        check_spec_fields(cls, d)
        return cls(**d)

    def native_config(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden, "heads": self.heads, "layers": self.layers, "intermediate": self.intermediate,
            "vocab": self.vocab, "max_positions": self.max_positions, "type_vocab": self.type_vocab,
            "pad_token_id": self.pad_token_id, "position_mode": self.position_mode, "ln_eps": float(self.ln_eps),
            "act": ACTIVATIONS[self.act], "head_pool": 1 if self.head_pool == "cls" else 0,
            "head_acts": [ACTIVATIONS[a] for a in self.head_acts], "head_dim": int(self.head_dim),
        }

    def linear_names(self) -> list[str]:
        names = [f"layers.{i}.{p}" for i in range(self.layers) for p in ("qkv", "attn_out", "ffn1", "ffn2")]
        return names + [f"head.{j}" for j in range(len(self.head_acts))]


def _task_of(architecture: str) -> str:
    if architecture.endswith("ForSequenceClassification"):
        return "sequence-classification"
    if architecture.endswith("ForTokenClassification"):
        return "token-classification"
    if architecture.endswith("ForQuestionAnswering"):
        return "question-answering"
    return "feature-extraction"


def config_errors_as_checkpoint_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """A config reader whose malformed values (a string where a number goes, a list where a mapping does) raise
    a CheckpointError naming the file, not whatever Python error reading them hit first."""

    @functools.wraps(fn)
    def read(cfg: dict[str, Any], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(cfg, *args, **kwargs)
        except (CheckpointError, UnsupportedModelError):
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"config.json has a malformed value ({type(e).__name__}: {e})") from None

    return read


_SPEC_FIELD_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "int | None": (int, type(None))}


def check_spec_fields(cls: type, d: dict[str, Any]) -> None:
    """A saved spec's scalar fields have their declared types (ValueError otherwise): a model.json edited to say
    "hidden": "384" must fail as malformed, not as a C++ std::bad_cast."""
    for name, f in cls.__dataclass_fields__.items():
        allowed = _SPEC_FIELD_TYPES.get(str(f.type))
        value = d.get(name)
        if name in d and allowed and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
            raise ValueError(f"spec field {name!r} should be {f.type}, got {value!r}")


@config_errors_as_checkpoint_errors
def spec_from_config(cfg: dict[str, Any], architecture: str | None = None) -> EncoderSpec:
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"model_type '{model_type}' is not supported by the encoder runtime; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (BERT, MiniLM, DistilBERT, RoBERTa); decoders: llama, mistral, "
            "gpt2 (and .gguf files)"
        )
    if architecture is None:
        archs = cfg.get("architectures") or []
        architecture = archs[0] if archs else ""
    task = _task_of(architecture)
    id2label = None
    if task != "feature-extraction":
        raw = cfg.get("id2label") or {}
        id2label = {int(k): str(v) for k, v in raw.items()} or None
    if model_type == "distilbert":
        act = _HF_ACT.get(cfg.get("activation", "gelu"))
        spec = EncoderSpec(
            arch="distilbert", hidden=config_int(cfg, "dim"), layers=config_int(cfg, "n_layers"),
            heads=config_int(cfg, "n_heads"), intermediate=config_int(cfg, "hidden_dim"),
            vocab=config_int(cfg, "vocab_size"), max_positions=config_int(cfg, "max_position_embeddings"),
            type_vocab=0, pad_token_id=int(cfg.get("pad_token_id") or 0), position_mode=0, ln_eps=1e-12,
            act=act or "", task=task, id2label=id2label,
        )
        raw_act = cfg.get("activation", "gelu")
    else:
        pos_type = cfg.get("position_embedding_type") or "absolute"
        if pos_type != "absolute":
            raise UnsupportedModelError(f"position_embedding_type '{pos_type}' is not supported (only absolute)")
        roberta = model_type in ("roberta", "xlm-roberta")
        raw_act = cfg.get("hidden_act", "gelu")
        spec = EncoderSpec(
            arch="roberta" if roberta else "bert", hidden=config_int(cfg, "hidden_size"),
            layers=config_int(cfg, "num_hidden_layers"), heads=config_int(cfg, "num_attention_heads"),
            intermediate=config_int(cfg, "intermediate_size"), vocab=config_int(cfg, "vocab_size"),
            max_positions=config_int(cfg, "max_position_embeddings"),
            type_vocab=config_int(cfg, "type_vocab_size", minimum=0, default=2),
            pad_token_id=int(cfg.get("pad_token_id") if cfg.get("pad_token_id") is not None else (1 if roberta else 0)),
            position_mode=1 if roberta else 0, ln_eps=float(cfg.get("layer_norm_eps", 1e-12)),
            act=_HF_ACT.get(raw_act, ""), task=task, id2label=id2label,
        )
    if not spec.act:
        raise UnsupportedModelError(f"activation '{raw_act}' is not supported (gelu, gelu_new, relu)")
    if spec.hidden % spec.heads:
        raise CheckpointError(f"hidden size {spec.hidden} is not divisible by {spec.heads} heads")
    pruned = cfg.get("pruned_heads") or {}
    if pruned:  # attention heads removed (Hugging Face's `pruned_heads`): the runtime needs the same count per layer
        counts = {len(set(pruned.get(str(i), pruned.get(i, [])))) for i in range(spec.layers)}
        if len(counts) != 1:
            raise UnsupportedModelError(f"attention heads pruned unevenly across layers ({sorted(counts)} removed); "
                                        "the runtime needs the same number of heads in every layer")
        removed = counts.pop()
        if not 0 <= removed < spec.heads:
            raise CheckpointError(f"pruned_heads removes {removed} of {spec.heads} heads per layer")
        spec.head_dim = spec.hidden // spec.heads
        spec.heads -= removed
    # heads: pooling + activation of each dense layer
    if task == "sequence-classification":
        spec.head_pool = "cls"
        spec.head_acts = {"bert": ["tanh", "none"], "roberta": ["tanh", "none"], "distilbert": ["relu", "none"]}[
            spec.arch
        ]
    elif task in ("token-classification", "question-answering"):
        spec.head_pool, spec.head_acts = "token", ["none"]
    return spec


def _hf_names(spec: EncoderSpec, i: int | None = None) -> dict[str, Any]:
    """Canonical name -> HF name(s) (without the model prefix). Lists are fused along the output dimension."""
    if spec.arch == "distilbert":
        emb = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
               "emb.ln.g": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}
        if i is None:
            return emb
        p = f"transformer.layer.{i}."
        return {
            "qkv.weight": [p + "attention.q_lin.weight", p + "attention.k_lin.weight", p + "attention.v_lin.weight"],
            "qkv.bias": [p + "attention.q_lin.bias", p + "attention.k_lin.bias", p + "attention.v_lin.bias"],
            "attn_out.weight": p + "attention.out_lin.weight", "attn_out.bias": p + "attention.out_lin.bias",
            "ln1.g": p + "sa_layer_norm.weight", "ln1.b": p + "sa_layer_norm.bias",
            "ffn1.weight": p + "ffn.lin1.weight", "ffn1.bias": p + "ffn.lin1.bias",
            "ffn2.weight": p + "ffn.lin2.weight", "ffn2.bias": p + "ffn.lin2.bias",
            "ln2.g": p + "output_layer_norm.weight", "ln2.b": p + "output_layer_norm.bias",
        }
    emb = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
           "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.g": "embeddings.LayerNorm.weight",
           "emb.ln.b": "embeddings.LayerNorm.bias"}
    if i is None:
        return emb
    p = f"encoder.layer.{i}."
    a = p + "attention.self."
    return {
        "qkv.weight": [a + "query.weight", a + "key.weight", a + "value.weight"],
        "qkv.bias": [a + "query.bias", a + "key.bias", a + "value.bias"],
        "attn_out.weight": p + "attention.output.dense.weight", "attn_out.bias": p + "attention.output.dense.bias",
        "ln1.g": p + "attention.output.LayerNorm.weight", "ln1.b": p + "attention.output.LayerNorm.bias",
        "ffn1.weight": p + "intermediate.dense.weight", "ffn1.bias": p + "intermediate.dense.bias",
        "ffn2.weight": p + "output.dense.weight", "ffn2.bias": p + "output.dense.bias",
        "ln2.g": p + "output.LayerNorm.weight", "ln2.b": p + "output.LayerNorm.bias",
    }


def _head_names(spec: EncoderSpec, prefix: str) -> list[str]:
    """HF names of the head's dense layers in order (the BERT pooler lives under the model prefix)."""
    if spec.task == "sequence-classification":
        return {"bert": [prefix + "pooler.dense", "classifier"],
                "roberta": ["classifier.dense", "classifier.out_proj"],
                "distilbert": ["pre_classifier", "classifier"]}[spec.arch]
    if spec.task == "token-classification":
        return ["classifier"]
    if spec.task == "question-answering":
        return ["qa_outputs"]
    return []


def _legacy(name: str) -> list[str]:
    # very old BERT checkpoints store LayerNorm as gamma/beta
    return [name, name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")]


class _TensorSource:
    def __init__(self, getter, names: list[str]):
        self._get = getter
        self.names = set(names)

    def find(self, name: str, prefixes: list[str]) -> str | None:
        for cand in _legacy(name):
            for pre in prefixes:
                if pre + cand in self.names:
                    return pre + cand
        return None

    def get(self, full: str) -> np.ndarray:
        return np.ascontiguousarray(self._get(full), dtype=np.float32)


def _collect(spec: EncoderSpec, src: _TensorSource) -> dict[str, np.ndarray]:
    model_prefix = {"bert": "bert.", "roberta": "roberta.", "distilbert": "distilbert."}[spec.arch]
    prefixes = [model_prefix, ""]
    out: dict[str, np.ndarray] = {}

    def fetch(hf: str) -> np.ndarray:
        full = src.find(hf, prefixes)
        if full is None:
            raise CheckpointError(f"checkpoint has no tensor '{hf}' (looked under prefixes {prefixes})")
        return src.get(full)

    for canon, hf in _hf_names(spec).items():
        if canon == "emb.type" and spec.type_vocab == 0:
            continue
        out[canon] = fetch(hf)
    for i in range(spec.layers):
        for canon, hf in _hf_names(spec, i).items():
            out[f"layers.{i}.{canon}"] = np.concatenate([fetch(h) for h in hf]) if isinstance(hf, list) else fetch(hf)
    for j, hf in enumerate(_head_names(spec, model_prefix)):
        full_w = src.find(hf + ".weight", [""])
        if full_w is None:
            raise CheckpointError(f"checkpoint for {spec.task} has no head tensor '{hf}.weight'")
        out[f"head.{j}.weight"] = src.get(full_w)
        full_b = src.find(hf + ".bias", [""])
        n_out = out[f"head.{j}.weight"].shape[0]
        out[f"head.{j}.bias"] = src.get(full_b) if full_b else np.zeros(n_out, np.float32)
    _check_shapes(spec, out)
    if spec.task in ("sequence-classification", "token-classification"):
        n = out[f"head.{len(spec.head_acts) - 1}.weight"].shape[0]
        if not spec.id2label or len(spec.id2label) != n:
            spec.id2label = {i: f"LABEL_{i}" for i in range(n)}
    return out


def _check_shapes(spec: EncoderSpec, t: dict[str, np.ndarray]) -> None:
    H, inter = spec.hidden, spec.intermediate
    want = {"emb.word": (spec.vocab, H), "emb.pos": (spec.max_positions, H), "emb.ln.g": (H,), "emb.ln.b": (H,)}
    if spec.type_vocab:
        want["emb.type"] = (spec.type_vocab, H)
    for i in range(spec.layers):
        p = f"layers.{i}."
        A = spec.attention_width
        want.update({p + "qkv.weight": (3 * A, H), p + "qkv.bias": (3 * A,), p + "attn_out.weight": (H, A),
                     p + "attn_out.bias": (H,), p + "ffn1.weight": (inter, H), p + "ffn1.bias": (inter,),
                     p + "ffn2.weight": (H, inter), p + "ffn2.bias": (H,), p + "ln1.g": (H,), p + "ln1.b": (H,),
                     p + "ln2.g": (H,), p + "ln2.b": (H,)})
    for name, shape in want.items():
        if tuple(t[name].shape) != shape:
            raise CheckpointError(f"tensor {name} has shape {list(t[name].shape)}, config implies {list(shape)}")


def load_hf_dir(path: str | Path) -> tuple[EncoderSpec, dict[str, np.ndarray]]:
    """Read a Hugging Face encoder checkpoint directory (config.json + model.safetensors or sharded index)."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        if (path / "model.json").is_file():
            raise CheckpointError(f"{path}: a saved trimformer model, already compiled: open it with trimformer.load")
        raise CheckpointError(f"{path}: no config.json (expected a Hugging Face checkpoint directory)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
    spec = spec_from_config(cfg)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        extra = " (pytorch_model.bin is not read: it is a pickle)" if (path / "pytorch_model.bin").exists() else ""
        raise CheckpointError(f"{path}: no model.safetensors{extra}")
    try:
        shards = [SafetensorsFile(path / f) for f in files]
        where = {name: s for s in shards for name in s.keys()}
        src = _TensorSource(lambda n: where[n].as_float32(n), list(where))
        tensors = _collect(spec, src)
    except SafetensorsError as e:
        raise CheckpointError(str(e)) from None
    return spec, tensors


def load_hf_model(model: Any) -> tuple[EncoderSpec, dict[str, np.ndarray]]:
    """Read an in-memory `transformers` model (needs torch, which the caller already has)."""
    if not hasattr(getattr(model, "config", None), "to_dict") or not hasattr(model, "state_dict"):
        raise TypeError("model must be a checkpoint directory, a .gguf file or an in-memory transformers model, "
                        f"not {type(model).__name__}")
    cfg = model.config.to_dict()
    spec = spec_from_config(cfg, architecture=type(model).__name__)
    state = {k: v for k, v in model.state_dict().items()}
    src = _TensorSource(lambda n: state[n].detach().float().cpu().numpy(), list(state))
    return spec, _collect(spec, src)
