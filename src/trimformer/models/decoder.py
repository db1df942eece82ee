"""Decoder (causal LM) architectures: Llama family (Llama, SmolLM2, Mistral-style GQA) and GPT-2.

A checkpoint becomes a `DecoderSpec` and float32 tensors under trimformer's canonical names:

    emb.tok [V, H]            emb.pos [P, H] (GPT-2 only)
    layers.{i}.ln1.g / .b     layers.{i}.qkv.weight [(Hq + 2 Hkv) d, H] (Q, K, V rows fused) / .bias
    layers.{i}.o.weight       layers.{i}.ln2.g / .b
    layers.{i}.gate_up.weight [2 I, H] (Llama: gate rows then up rows)   layers.{i}.up.weight [I, H] (GPT-2)
    layers.{i}.down.weight    final_ln.g / .b       lm_head.weight [V, H] (a copy of emb.tok when tied)

Sources: a Hugging Face directory (config.json + safetensors), an in-memory transformers model, or a GGUF file
(read with the `gguf` package; every stored type is dequantized by gguf's reference code, and Llama Q/K rows are
un-permuted from llama.cpp's rotary layout back to Hugging Face's). Nothing here needs torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..formats.safetensors_io import SafetensorsError, SafetensorsFile
from .encoder import (
    CheckpointError,
    UnsupportedModelError,
    check_spec_fields,
    config_errors_as_checkpoint_errors,
    config_int,
)

SUPPORTED_DECODER_TYPES = ("llama", "mistral", "gpt2")
_ACTS = {"silu": 0, "gelu_tanh": 1, "gelu": 2}


@dataclass
class DecoderSpec:
    arch: str  # "llama" or "gpt2"
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int
    norm_eps: float
    rope_theta: float = 10000.0
    act: str = "silu"
    tied_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    @property
    def qkv_rows(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DecoderSpec:
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown decoder spec fields: {sorted(unknown)}")
        check_spec_fields(cls, d)
        d["eos_token_ids"] = tuple(d.get("eos_token_ids", ()))
        return cls(**d)

    def native_config(self) -> dict[str, Any]:
        return {"arch": 0 if self.arch == "llama" else 1, "hidden": self.hidden, "layers": self.layers,
                "heads": self.heads, "kv_heads": self.kv_heads, "head_dim": self.head_dim,
                "intermediate": self.intermediate, "vocab": self.vocab, "max_positions": self.max_positions,
                "norm_eps": float(self.norm_eps), "rope_theta": float(self.rope_theta), "act": _ACTS[self.act]}

    def linear_names(self) -> list[str]:
        ffn = ("gate_up", "down") if self.arch == "llama" else ("up", "down")
        return [f"layers.{i}.{p}" for i in range(self.layers) for p in ("qkv", "o", *ffn)] + ["lm_head"]


def _eos_list(v: Any) -> tuple[int, ...]:
    if v is None:
        return ()
    return tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))


@config_errors_as_checkpoint_errors
def spec_from_config(cfg: dict[str, Any]) -> DecoderSpec:
    mt = cfg.get("model_type")
    if mt not in SUPPORTED_DECODER_TYPES:
        raise UnsupportedModelError(f"model_type {mt!r} is not a supported decoder; supported: "
                                    f"{', '.join(SUPPORTED_DECODER_TYPES)}")
    if mt == "gpt2":
        h, heads = config_int(cfg, "n_embd"), config_int(cfg, "n_head")
        if h % heads:
            raise CheckpointError(f"config.json: n_embd {h} is not divisible by n_head {heads}")
        act = cfg.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise UnsupportedModelError(f"GPT-2 activation {act!r} is not supported")
        return DecoderSpec("gpt2", h, config_int(cfg, "n_layer"), heads, heads, h // heads,
                           config_int(cfg, "n_inner", default=4 * h), config_int(cfg, "vocab_size"),
                           config_int(cfg, "n_positions"),
                           float(cfg.get("layer_norm_epsilon", 1e-5)), act="gelu" if act == "gelu" else "gelu_tanh",
                           tied_embeddings=bool(cfg.get("tie_word_embeddings", True)),
                           bos_token_id=cfg.get("bos_token_id"), eos_token_ids=_eos_list(cfg.get("eos_token_id")),
                           pad_token_id=cfg.get("pad_token_id"))
    scaling = cfg.get("rope_scaling")
    if scaling and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default"):
        raise UnsupportedModelError(f"rope_scaling {scaling!r} is not supported (only default rotary)")
    if cfg.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"Llama hidden_act {cfg.get('hidden_act')!r} is not supported (silu only)")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise UnsupportedModelError("Llama checkpoints with attention/MLP biases are not supported")
    h, heads = config_int(cfg, "hidden_size"), config_int(cfg, "num_attention_heads")
    kv_heads = config_int(cfg, "num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise CheckpointError(f"config.json: {heads} attention heads do not share {kv_heads} key/value heads evenly")
    if cfg.get("head_dim") is None and h % heads:
        raise CheckpointError(f"config.json: hidden_size {h} is not divisible by {heads} heads (and no head_dim)")
    head_dim = config_int(cfg, "head_dim", default=h // heads)
    theta = cfg.get("rope_theta")
    if theta is None:
        theta = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    return DecoderSpec("llama", h, config_int(cfg, "num_hidden_layers"), heads, kv_heads, head_dim,
                       config_int(cfg, "intermediate_size"), config_int(cfg, "vocab_size"),
                       config_int(cfg, "max_position_embeddings", default=2048),
                       float(cfg.get("rms_norm_eps", 1e-6)), rope_theta=float(theta), act="silu",
                       tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                       bos_token_id=cfg.get("bos_token_id"), eos_token_ids=_eos_list(cfg.get("eos_token_id")),
                       pad_token_id=cfg.get("pad_token_id"))


def canonical_from_hf(spec: DecoderSpec, get, skip: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """Canonical tensors from a getter `get(hf_name) -> float32 array or None`. Canonical names in `skip` are not
    read at all (a caller that takes those Linears from elsewhere, e.g. a GGUF's exact blocks, never holds their
    float32 copies)."""
    t: dict[str, np.ndarray] = {}

    def need(name: str) -> np.ndarray:
        a = get(name)
        if a is None:
            raise CheckpointError(f"missing tensor '{name}'")
        return np.ascontiguousarray(a, dtype=np.float32)

    if spec.arch == "llama":
        if "emb.tok" not in skip:
            t["emb.tok"] = need("model.embed_tokens.weight")
        for i in range(spec.layers):
            p, q = f"model.layers.{i}.", f"layers.{i}."
            parts = {"qkv.weight": [f"self_attn.{x}_proj.weight" for x in "qkv"],
                     "o.weight": ["self_attn.o_proj.weight"],
                     "gate_up.weight": ["mlp.gate_proj.weight", "mlp.up_proj.weight"],
                     "down.weight": ["mlp.down_proj.weight"]}
            t[q + "ln1.g"] = need(p + "input_layernorm.weight")
            t[q + "ln2.g"] = need(p + "post_attention_layernorm.weight")
            for name, hf_names in parts.items():
                if q + name not in skip:
                    t[q + name] = np.concatenate([need(p + h) for h in hf_names])
        t["final_ln.g"] = need("model.norm.weight")
        head = None if "lm_head.weight" in skip else get("lm_head.weight")
    else:
        def g2(name: str) -> np.ndarray:  # GPT-2 names with or without the "transformer." prefix
            a = get("transformer." + name)
            return need(name) if a is None else np.ascontiguousarray(a, dtype=np.float32)

        t["emb.tok"], t["emb.pos"] = g2("wte.weight"), g2("wpe.weight")
        for i in range(spec.layers):
            p, q = f"h.{i}.", f"layers.{i}."
            t[q + "ln1.g"], t[q + "ln1.b"] = g2(p + "ln_1.weight"), g2(p + "ln_1.bias")
            # GPT-2's Conv1D stores [in, out]: transpose to the Linear layout [out, in]
            t[q + "qkv.weight"] = np.ascontiguousarray(g2(p + "attn.c_attn.weight").T)
            t[q + "qkv.bias"] = g2(p + "attn.c_attn.bias")
            t[q + "o.weight"] = np.ascontiguousarray(g2(p + "attn.c_proj.weight").T)
            t[q + "o.bias"] = g2(p + "attn.c_proj.bias")
            t[q + "ln2.g"], t[q + "ln2.b"] = g2(p + "ln_2.weight"), g2(p + "ln_2.bias")
            t[q + "up.weight"] = np.ascontiguousarray(g2(p + "mlp.c_fc.weight").T)
            t[q + "up.bias"] = g2(p + "mlp.c_fc.bias")
            t[q + "down.weight"] = np.ascontiguousarray(g2(p + "mlp.c_proj.weight").T)
            t[q + "down.bias"] = g2(p + "mlp.c_proj.bias")
        t["final_ln.g"], t["final_ln.b"] = g2("ln_f.weight"), g2("ln_f.bias")
        head = get("lm_head.weight")
    if "lm_head.weight" not in skip:
        if head is None or spec.tied_embeddings:
            head = t["emb.tok"]
        t["lm_head.weight"] = np.ascontiguousarray(head, dtype=np.float32)
    check_shapes(spec, t)
    return t


def check_shapes(spec: DecoderSpec, t: dict[str, np.ndarray]) -> None:
    H, d = spec.hidden, spec.head_dim
    want = {"emb.tok": (spec.vocab, H), "final_ln.g": (H,), "lm_head.weight": (spec.vocab, H)}
    if spec.arch == "gpt2":
        want["emb.pos"] = (spec.max_positions, H)
    for i in range(spec.layers):
        q = f"layers.{i}."
        want[q + "qkv.weight"] = (spec.qkv_rows, H)
        want[q + "o.weight"] = (H, spec.heads * d)
        want[q + ("gate_up.weight" if spec.arch == "llama" else "up.weight")] = (
            (2 if spec.arch == "llama" else 1) * spec.intermediate, H)
        want[q + "down.weight"] = (H, spec.intermediate)
    for name, shape in want.items():
        if name in t and tuple(t[name].shape) != shape:
            raise CheckpointError(f"tensor '{name}' has shape {tuple(t[name].shape)}, expected {shape}")


def load_hf_dir(path: str | Path) -> tuple[DecoderSpec, dict[str, np.ndarray]]:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path}: no config.json")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    spec = spec_from_config(cfg)
    files = sorted(path.glob("*.safetensors"))
    files = [f for f in files if f.name != "quantized.safetensors"]
    if not files:
        raise CheckpointError(f"{path}: no .safetensors weights")
    try:
        readers = [SafetensorsFile(f) for f in files]
    except SafetensorsError as e:
        raise CheckpointError(str(e)) from None
    index = {k: r for r in readers for k in r.keys()}
    return spec, canonical_from_hf(spec, lambda n: index[n].as_float32(n) if n in index else None)


def load_hf_model(model: Any) -> tuple[DecoderSpec, dict[str, np.ndarray]]:
    cfg = model.config.to_dict()
    spec = spec_from_config(cfg)
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    return spec, canonical_from_hf(spec, sd.get)


# ---------------------------------------------------------------------------------------------- GGUF
class GGUFError(CheckpointError):
    """A GGUF file that cannot be read as a supported decoder."""


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None or not f.data:
        return default
    part = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(part).decode("utf-8")
    return part.tolist()[0] if len(part) == 1 else part.tolist()


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp stores Q/K rows interleaved per rotary pair; Hugging Face keeps the two halves apart
    return np.ascontiguousarray(w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2)
                                .reshape(w.shape))


def open_gguf(path: str | Path) -> Any:
    try:
        import gguf
    except ImportError:
        raise ImportError("reading GGUF files needs the `gguf` package: pip install 'trimformer[llm]'") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError / struct errors / IndexError on damaged files
        raise GGUFError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None


def gguf_spec(reader: Any) -> DecoderSpec:
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "gpt2"):
        raise UnsupportedModelError(f"GGUF architecture {arch!r} is not supported; supported: llama, gpt2")
    g = lambda k, d=None: _field(reader, f"{arch}.{k}", d)  # noqa: E731
    h, heads = int(g("embedding_length")), int(g("attention.head_count"))
    names = {t.name for t in reader.tensors}
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else None
    tok = next(t for t in reader.tensors if t.name == "token_embd.weight")
    vocab = int(tok.shape[1]) if vocab is None else vocab
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    common = dict(bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"), eos_token_ids=_eos_list(eos),
                  pad_token_id=_field(reader, "tokenizer.ggml.padding_token_id"))
    if arch == "gpt2":
        return DecoderSpec("gpt2", h, int(g("block_count")), heads, heads, h // heads, int(g("feed_forward_length")),
                           vocab, int(g("context_length")), float(g("attention.layer_norm_epsilon", 1e-5)),
                           act="gelu_tanh", tied_embeddings="output.weight" not in names, **common)
    head_dim = int(g("attention.key_length", 0) or h // heads)
    return DecoderSpec("llama", h, int(g("block_count")), heads, int(g("attention.head_count_kv", heads)), head_dim,
                       int(g("feed_forward_length")), vocab, int(g("context_length")),
                       float(g("attention.layer_norm_rms_epsilon", 1e-6)), rope_theta=float(g("rope.freq_base", 1e4)),
                       tied_embeddings="output.weight" not in names, **common)


def gguf_tensor_f32(t: Any) -> np.ndarray:
    """A GGUF tensor dequantized to float32 by gguf's reference code, in [rows, cols] = [ne1, ne0] order."""
    from gguf import quants

    shape = tuple(int(x) for x in reversed(t.shape))  # GGUF lists ne0 (innermost) first
    try:
        a = quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError:
        raise GGUFError(f"tensor '{t.name}': GGUF type {t.tensor_type.name} cannot be dequantized") from None
    return np.ascontiguousarray(a.reshape(shape), dtype=np.float32)


def load_gguf(path: str | Path, skip: frozenset[str] = frozenset()) -> tuple[DecoderSpec, dict[str, np.ndarray]]:
    """Spec + canonical float32 tensors of a GGUF (names in `skip` not dequantized; see canonical_from_hf)."""
    reader = open_gguf(path)
    spec = gguf_spec(reader)
    by_name = {t.name: t for t in reader.tensors}
    try:
        if spec.arch == "llama":
            hf = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                  "lm_head.weight": "output.weight"}
            per = {"input_layernorm.weight": "attn_norm", "self_attn.q_proj.weight": "attn_q",
                   "self_attn.k_proj.weight": "attn_k", "self_attn.v_proj.weight": "attn_v",
                   "self_attn.o_proj.weight": "attn_output", "post_attention_layernorm.weight": "ffn_norm",
                   "mlp.gate_proj.weight": "ffn_gate", "mlp.up_proj.weight": "ffn_up",
                   "mlp.down_proj.weight": "ffn_down"}
            for i in range(spec.layers):
                for k, v in per.items():
                    hf[f"model.layers.{i}.{k}"] = f"blk.{i}.{v}.weight"
        else:
            hf = {"wte.weight": "token_embd.weight", "wpe.weight": "position_embd.weight",
                  "ln_f.weight": "output_norm.weight", "ln_f.bias": "output_norm.bias", "lm_head.weight": "output.weight"}
            per = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
                   "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
            for i in range(spec.layers):
                for k, v in per.items():
                    hf[f"h.{i}.{k}.weight"] = f"blk.{i}.{v}.weight"
                    hf[f"h.{i}.{k}.bias"] = f"blk.{i}.{v}.bias"

        def get(name: str) -> np.ndarray | None:
            g = hf.get(name)
            if g is None or g not in by_name:
                return None
            a = gguf_tensor_f32(by_name[g])
            if spec.arch == "llama" and name.endswith("q_proj.weight"):
                a = _unpermute(a, spec.heads)
            elif spec.arch == "llama" and name.endswith("k_proj.weight"):
                a = _unpermute(a, spec.kv_heads)
            elif spec.arch == "gpt2" and name.endswith(".weight") and a.ndim == 2 and "wte" not in name \
                    and "wpe" not in name and "lm_head" not in name:
                a = a.T  # canonical_from_hf transposes GPT-2 Conv1D weights; GGUF already stores [out, in]
            return a

        return spec, canonical_from_hf(spec, get, skip)
    except (ValueError, IndexError, KeyError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise GGUFError(f"{path}: {type(e).__name__}: {e}") from None


def _field_strings(reader: Any, key: str) -> list[str]:
    f = reader.fields.get(key)
    if f is None:
        return []
    return [bytes(f.parts[i]).decode("utf-8", errors="replace") for i in f.data]


def gguf_tokenizer_json(path: str | Path) -> str | None:
    """The GGUF's byte-level BPE tokenizer ("gpt2" tokenizer model: Llama-3 / SmolLM / GPT-2 style) as a
    Hugging Face tokenizer.json string, built with `tokenizers` (no torch, no transformers); None if the file
    has no such tokenizer (e.g. a SentencePiece "llama" vocabulary)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reader = open_gguf(path)
    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        return None
    tokens = _field_strings(reader, "tokenizer.ggml.tokens")
    merges = _field_strings(reader, "tokenizer.ggml.merges")
    types_field = reader.fields.get("tokenizer.ggml.token_type")
    types = [int(types_field.parts[i][0]) for i in types_field.data] if types_field is not None else []
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3]
    if special:
        tok.add_special_tokens(special)
    return tok.to_str()


def load_decoder(source: Any) -> tuple[DecoderSpec, dict[str, np.ndarray]]:
    """Spec + canonical float32 tensors from a HF dir, a .gguf file or an in-memory transformers model."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.suffix == ".gguf":
            return load_gguf(p)
        if p.is_dir():
            return load_hf_dir(p)
        raise FileNotFoundError(f"{p}: neither a checkpoint directory nor a .gguf file")
    return load_hf_model(source)


def is_decoder_source(source: Any) -> bool:
    """Whether `source` (path or in-memory model) is a decoder this module loads."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.suffix == ".gguf":
            return True
        cfg = p / "config.json"
        if cfg.is_file():
            try:
                return json.loads(cfg.read_text()).get("model_type") in SUPPORTED_DECODER_TYPES
            except json.JSONDecodeError:
                return False
        return False
    cfg = getattr(source, "config", None)
    return getattr(cfg, "model_type", None) in SUPPORTED_DECODER_TYPES
