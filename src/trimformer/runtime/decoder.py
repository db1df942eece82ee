"""The decoder planner and DecoderEngine: causal LMs (Llama family, GPT-2) compiled into a plan of stored tensors
in registry formats, executed by the native decoder (`_core.DecoderEngine`: one call per prefill / decode step,
KV cache in native memory).

Weight formats per Linear (`weights=`): "f32", "bf16", "w8a8" (INT8 per-channel weights, u8 activations quantized
per token, VNNI GEMM), "llm-int8" (w8a8 with outlier input features in float32), and the weight-only k-bit family
"TYPE[-gGROUP]" of formats/kbit.py ("int4-g128", "int4-asym-g32", "nf4-g64", "fp4-g64", "int3-g128", "fp8-e4m3",
"int8-wo", ...). A compressed checkpoint (trimformer_compression.json + quantized.safetensors, written by
`trimformer quantize-llm` / `prune-llm`) brings its exact codes; `weights="gguf"` keeps a GGUF's Q4_0 / Q4_1 /
Q8_0 blocks exactly (as int4 / int4-asym / int8 with group 32) instead of re-quantizing them.
Sparse weights (SparseGPT / magnitude pruning outputs): "bitmask-f32" / "bitmask-int8" (W8A8) store a bit per
weight + the non-zeros; "sparse" / "sparse-int8" pick them per Linear where at least SPARSE_MIN_ZEROS of the
weights are zero (else f32 / w8a8).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import _core
from ..formats.registry import (
    get_format,
    pack_kbit,
    parse_kbit_format,
    quantize_int8_per_channel,
    to_bf16_bits,
)
from ..models.decoder import DecoderSpec, load_decoder
from .engine import NativeEngine, resolve_threads

DECODER_WEIGHTS = ("f32", "bf16", "w8a8", "llm-int8", "gguf", "sparse", "sparse-int8", "bitmask-f32", "bitmask-int8")
BITMASK_FORMATS = ("bitmask-f32", "bitmask-int8")
# weights="sparse" / "sparse-int8": a Linear with at least this fraction of zeros is stored as a bitmask (decode
# then streams a bit per weight + the non-zeros: fewer bytes than dense from ~3% zeros on; 25% leaves margin for
# the expand-load work); denser ones stay dense (f32 / w8a8)
SPARSE_MIN_ZEROS = 0.25
LLM_INT8_THRESHOLD = 6.0
_FUSED = {"qkv": ("q_proj", "k_proj", "v_proj"), "gate_up": ("gate_proj", "up_proj"), "o": ("o_proj",),
          "down": ("down_proj",), "up": ("up_proj",)}


class GenerationError(ValueError):
    """A generation request the engine cannot serve (empty prompt, too long for the model, bad sampling args)."""


def _format_name(weights: str) -> str:
    """User-facing weight names -> registry format names."""
    if weights == "w8a8":
        return "int8"
    if weights == "int8-wo":
        return "int8-g0"
    return weights


def encode_linear(w: np.ndarray, fmt: str, outliers: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Stored tensors (by suffix) of a dense float32 Linear weight [out, in] in decoder format `fmt`."""
    if fmt == "f32":
        return {".weight": np.ascontiguousarray(w, np.float32)}
    if fmt == "bf16":
        return {".bweight": to_bf16_bits(w)}
    if fmt in ("int8", "llm-int8"):
        w = np.asarray(w, np.float32)
        out: dict[str, np.ndarray] = {}
        if fmt == "llm-int8":
            idx = np.unique(np.asarray(outliers if outliers is not None else [], np.int64)).astype(np.int32)
            if idx.size and (idx[0] < 0 or idx[-1] >= w.shape[1]):
                raise ValueError("outlier feature index out of range")
            out[".outlier_idx"] = idx
            out[".outlier_weight"] = np.ascontiguousarray(w[:, idx])
            w = w.copy()
            w[:, idx] = 0.0
        q, scale = quantize_int8_per_channel(w)
        return {**out, ".qweight": q, ".wscale": scale}
    if fmt in BITMASK_FORMATS:
        return get_format(fmt).encode(w)
    if fmt.endswith("-g0"):  # weight-only per output channel
        from ..formats.kbit import quantize_rtn

        type_name = fmt[:-3]
        codes, scales, offsets = quantize_rtn(w, type_name, w.shape[1])
        return pack_kbit(codes, scales, offsets, type_name, w.shape[1])
    if parse_kbit_format(fmt) is None:
        raise ValueError(f"unknown decoder weight format {fmt!r}; use one of {DECODER_WEIGHTS}, 'int8-wo' or a "
                         "k-bit TYPE[-gGROUP] (e.g. int4-g128, nf4-g64, fp8-e4m3)")
    return get_format(fmt).encode(w)


class DecoderEngine(NativeEngine):
    """A compiled causal LM. `generate` runs prefill + decode with the native KV cache; `log_probs` /
    `perplexity` score text without keeping logits."""

    kind = "decoder"

    def __init__(self, spec: DecoderSpec, tensors: Mapping[str, np.ndarray], formats: Mapping[str, str], *,
                 threads: int | None = None, isa: str | None = None, tokenizer_json: str | None = None,
                 extra: dict[str, Any] | None = None):
        self.spec = spec
        self.tensors = dict(tensors)
        self.formats = dict(formats)
        self.tokenizer_json = tokenizer_json
        self.extra = dict(extra or {})
        self._lock = threading.Lock()
        native = {k: np.ascontiguousarray(v) for k, v in self.tensors.items()}
        config = {**spec.native_config(), "embed_from_head": "emb.tok" not in self.tensors}
        self._native = _core.DecoderEngine(config, native, isa or "", resolve_threads(threads))
        self._tokenizer = None

    # ------------------------------------------------------------------ properties
    @property
    def weight_bytes(self) -> int:
        return int(self._native.weight_bytes)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if self.tokenizer_json is None:
                raise ValueError("this model has no tokenizer; pass token ids")
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
        return self._tokenizer

    def __repr__(self) -> str:
        s = self.spec
        fmts = sorted(set(self.formats.values()))
        return (f"DecoderEngine({s.arch}, layers={s.layers}, hidden={s.hidden}, heads={s.heads}/{s.kv_heads}, "
                f"weights={','.join(fmts)}, isa={self.isa}, threads={self.threads})")

    # ------------------------------------------------------------------ scoring
    def logits(self, input_ids: Any) -> np.ndarray:
        """Logits of every position [batch, seq, vocab] (no cache kept between calls)."""
        ids = _as_batch(input_ids)
        with self._lock:
            self._native.begin(ids.shape[0], ids.shape[1])
            return self._native.forward(ids, None, 1, None)

    def log_probs(self, input_ids: Any) -> np.ndarray:
        """log p(token t+1 | tokens <= t) for t < seq - 1, [batch, seq - 1], computed natively chunk by chunk."""
        ids = _as_batch(input_ids)
        if ids.shape[1] < 2:
            raise ValueError("log_probs needs at least 2 tokens per row")
        targets = np.concatenate([ids[:, 1:], np.full((ids.shape[0], 1), -1, np.int64)], axis=1)
        with self._lock:
            self._native.begin(ids.shape[0], ids.shape[1])
            lp = self._native.forward(ids, None, 2, np.ascontiguousarray(targets))
        return lp[:, :-1]

    def perplexity(self, tokens: Sequence[int] | np.ndarray, window: int = 1024,
                   progress: bool = False) -> dict[str, float]:
        """Perplexity over consecutive non-overlapping windows of `window` tokens (each scored from its own
        start, as in the ASSETS.md protocol): exp(mean negative log-likelihood of every predicted token)."""
        toks = np.asarray(tokens, np.int64).ravel()
        if toks.size < 2:
            raise ValueError("perplexity needs at least 2 tokens")
        if window < 2:
            raise ValueError("window must be >= 2")
        starts = list(range(0, toks.size - 1, window))
        nll, count = 0.0, 0
        it: Iterable[int] = starts
        if progress:
            from tqdm import tqdm

            it = tqdm(starts, desc="perplexity", unit="window")
        for s in it:
            chunk = toks[s:s + window]
            if chunk.size < 2:
                continue
            lp = self.log_probs(chunk[None, :])
            nll -= float(lp.sum(dtype=np.float64))
            count += lp.size
        return {"perplexity": float(np.exp(nll / count)), "tokens": int(count), "nll": nll / count}

    # ------------------------------------------------------------------ generation
    def generate(self, prompt_ids: Any, max_new_tokens: int = 32, *, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 stop_tokens: Iterable[int] | None = None, stream: Callable[[int, int], None] | None = None,
                 use_cache: bool = True) -> list[list[int]]:
        """Generate up to `max_new_tokens` per prompt. prompt_ids: one list of ids or a list of lists (shorter
        prompts are left-padded and masked). Returns the new tokens of each row (stopping at a stop token,
        which is included). stream(row, token) is called as each token is chosen. use_cache=False re-runs the
        whole sequence every step (the reference the cache is tested against)."""
        prompts = _as_prompts(prompt_ids)
        if max_new_tokens < 0:
            raise GenerationError("max_new_tokens must be >= 0")
        if do_sample and not temperature > 0:
            raise GenerationError("temperature must be > 0 when sampling")
        if not 0 < top_p <= 1:
            raise GenerationError("top_p must be in (0, 1]")
        if top_k < 0:
            raise GenerationError("top_k must be >= 0")
        stops = set(self.spec.eos_token_ids if stop_tokens is None else stop_tokens)
        B, L = len(prompts), max(len(p) for p in prompts)
        total = L + max_new_tokens
        limit = self.spec.max_positions
        if total > limit:
            raise GenerationError(f"prompt ({L}) + max_new_tokens ({max_new_tokens}) exceeds the model's {limit} "
                                  "positions")
        ids = np.full((B, L), self.spec.pad_token_id or 0, np.int64)
        mask = np.zeros((B, L), np.int64)
        for b, p in enumerate(prompts):
            ids[b, L - len(p):] = p
            mask[b, L - len(p):] = 1
        rng = np.random.default_rng(seed)
        out: list[list[int]] = [[] for _ in range(B)]
        done = np.zeros(B, bool)
        if max_new_tokens == 0:
            return out
        with self._lock:
            self._native.begin(B, total)
            logits = self._native.forward(ids, mask, 0, None)
            seq_ids, seq_mask = ids, mask
            for step in range(max_new_tokens):
                nxt = np.array([_choose(logits[b], do_sample, temperature, top_k, top_p, rng) for b in range(B)],
                               np.int64)
                for b in range(B):
                    if done[b]:
                        continue
                    tok = int(nxt[b])
                    out[b].append(tok)
                    if stream is not None:
                        stream(b, tok)
                    if tok in stops:
                        done[b] = True
                if done.all() or step == max_new_tokens - 1:
                    break
                col = np.where(done, self.spec.pad_token_id or 0, nxt)[:, None]
                live = (~done).astype(np.int64)[:, None]
                if use_cache:
                    logits = self._native.forward(np.ascontiguousarray(col), np.ascontiguousarray(live), 0, None)
                else:
                    seq_ids = np.concatenate([seq_ids, col], axis=1)
                    seq_mask = np.concatenate([seq_mask, live], axis=1)
                    self._native.begin(B, seq_ids.shape[1])
                    logits = self._native.forward(seq_ids, seq_mask, 0, None)
        return out

    def generate_text(self, prompt: str, max_new_tokens: int = 64, stream: Callable[[str], None] | None = None,
                      **kw: Any) -> str:
        """Tokenize, generate and detokenize one prompt; stream(text_piece) gets the decoded text as it grows."""
        tok = self.tokenizer
        ids = tok.encode(prompt).ids
        if self.spec.bos_token_id is not None and self.extra.get("add_bos", False):
            ids = [self.spec.bos_token_id, *ids]
        new: list[int] = []
        shown = ""

        def on_token(_row: int, t: int) -> None:
            nonlocal shown
            new.append(t)
            if stream is not None:
                text = tok.decode(new)
                if len(text) > len(shown) and not text.endswith("\ufffd"):
                    stream(text[len(shown):])
                    shown = text

        self.generate([ids], max_new_tokens, stream=on_token, **kw)
        return tok.decode(new)


def _as_batch(x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"token ids must be a non-empty [batch, seq] array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _as_prompts(x: Any) -> list[list[int]]:
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if not isinstance(x, (list, tuple)) or len(x) == 0:
        raise GenerationError("prompt_ids must be a non-empty list of token ids (or a list of such lists)")
    rows = [list(r) for r in x] if isinstance(x[0], (list, tuple, np.ndarray)) else [list(x)]
    if any(len(r) == 0 for r in rows):
        raise GenerationError("every prompt needs at least one token")
    return [[int(t) for t in r] for r in rows]


def _choose(logits: np.ndarray, do_sample: bool, temperature: float, top_k: int, top_p: float,
            rng: np.random.Generator) -> int:
    if not do_sample:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if top_k and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        csum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(csum, top_p) + 1)]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(p.size, p=p))


# ---------------------------------------------------------------------------------------------- planner
def _fuse_rows(parts: list[dict[str, np.ndarray]], name: str) -> dict[str, np.ndarray]:
    """Stack stored tensors of row blocks (q, k, v / gate, up) of one fused Linear (same format each)."""
    keys = set(parts[0])
    if any(set(p) != keys for p in parts):
        raise ValueError(f"{name}: fused projections are stored in different formats")
    out = {}
    for k in keys:
        if k in (".kmeta", ".klut"):
            if any(not np.array_equal(p[k], parts[0][k]) for p in parts):
                raise ValueError(f"{name}: fused projections use different k-bit types or group sizes")
            out[k] = parts[0][k]
        elif k == ".outlier_idx":
            raise ValueError(f"{name}: LLM.int8 outliers are added after fusion")
        else:
            out[k] = np.concatenate([p[k] for p in parts], axis=0)
    return out


def _hf_linear_parts(spec: DecoderSpec, canon: str) -> list[str]:
    """HF Linear names (Llama) making up a canonical fused Linear, e.g. layers.3.qkv -> q/k/v_proj of layer 3."""
    if canon == "lm_head":
        return ["lm_head"]
    _, i, kind = canon.split(".")
    prefix = f"model.layers.{i}." + ("self_attn." if kind in ("qkv", "o") else "mlp.")
    return [prefix + p for p in _FUSED[kind]]


def _compressed_linears(path: Path, spec: DecoderSpec, dense: Mapping[str, np.ndarray]
                        ) -> tuple[dict, dict[str, Any], dict[str, str]]:
    """Stored tensors from a compressed-LLM checkpoint: {canonical Linear name: {suffix: array}} and its metadata."""
    from ..formats.safetensors_io import SafetensorsError, SafetensorsFile

    meta = json.loads((path / "trimformer_compression.json").read_text())
    if meta.get("version") != 1:
        raise ValueError(f"{path}: unsupported trimformer_compression.json version {meta.get('version')!r}")
    linears = meta.get("linears", {})
    try:
        qf = SafetensorsFile(path / "quantized.safetensors") if (path / "quantized.safetensors").exists() else None
    except SafetensorsError as e:
        raise ValueError(str(e)) from None
    if spec.arch != "llama":
        raise ValueError("compressed checkpoints are supported for Llama-family models")
    stored: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, str] = {}
    for canon in spec.linear_names():
        parts = _hf_linear_parts(spec, canon)
        infos = [linears.get(p) for p in parts]
        if all(i is None for i in infos):
            continue
        if any(i is None for i in infos):
            raise ValueError(f"{path}: {canon} is only partly compressed ({parts})")
        fmts = {(i["format"], i.get("group_size")) for i in infos}
        if len(fmts) != 1:
            raise ValueError(f"{path}: {canon}'s projections use different formats {sorted(fmts)}")
        fmt, group = fmts.pop()
        if fmt is None:
            continue  # pruned only: the dense (zero-holding) weights are compiled in the requested format
        w8a8 = meta.get("activations") == "w8a8-per-token"
        if w8a8 and (fmt != "int8" or group):
            raise ValueError(f"{path}: W8A8 checkpoints need INT8 per-channel weights, {canon} is {fmt} g{group}")
        if qf is None:
            raise ValueError(f"{path}: {canon} is {fmt} but quantized.safetensors is missing")
        if w8a8:
            # INT8 per-channel codes run by the W8A8 GEMM (u8 activations per token); LLM.int8() outlier input
            # features (the checkpoint keeps their float weights in model.safetensors) run in float32
            q = np.concatenate([(qf.get(p + ".codes").astype(np.int16) - 128).astype(np.int8) for p in parts])
            ws = np.concatenate([qf.get(p + ".scales").reshape(-1) for p in parts]).astype(np.float32)
            cols = sorted({int(c) for p in parts for c in (meta.get("outliers") or {}).get(p, [])})
            st: dict[str, np.ndarray] = {".qweight": q, ".wscale": ws}
            if cols:
                idx = np.asarray(cols, np.int32)
                st[".outlier_idx"] = idx
                st[".outlier_weight"] = np.ascontiguousarray(dense[canon + ".weight"][:, idx])
                q[:, idx] = 0
            stored[canon] = st
            labels[canon] = "llm-int8" if cols else "w8a8"
            continue
        blocks = []
        for p in parts:
            codes = qf.get(p + ".codes")
            scales = qf.get(p + ".scales")
            offsets = qf.get(p + ".offsets") if p + ".offsets" in qf else None
            g = int(group) if group else codes.shape[1]
            blocks.append(pack_kbit(codes, scales, offsets, fmt, g))
        stored[canon] = _fuse_rows(blocks, canon)
        labels[canon] = f"{fmt}-g{group}" if group else fmt
    return stored, meta, labels


def _gguf_exact(path: Path, spec: DecoderSpec) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Q4_0 / Q4_1 / Q8_0 GGUF tensors as k-bit codes (group 32) without re-quantization."""
    from ..models.decoder import _unpermute, open_gguf

    reader = open_gguf(path)
    by = {t.name: t for t in reader.tensors}
    names = {"qkv": ("attn_q", "attn_k", "attn_v"), "o": ("attn_output",), "gate_up": ("ffn_gate", "ffn_up"),
             "down": ("ffn_down",)}
    out, labels = {}, {}
    for canon in spec.linear_names():
        if canon == "lm_head":
            src = ["output.weight" if "output.weight" in by else "token_embd.weight"]
        else:
            _, i, kind = canon.split(".")
            src = [f"blk.{i}.{n}.weight" for n in names[kind]]
        blocks = []
        for j, s in enumerate(src):
            t = by[s]
            enc = _gguf_block_codes(t)
            if enc is None:
                blocks = None
                break
            codes, scales, offsets, type_name = enc
            if canon.endswith("qkv") and j < 2:  # un-permute Q and K rows like the float loader does
                heads = spec.heads if j == 0 else spec.kv_heads
                codes, scales = _unpermute(codes, heads), _unpermute(scales, heads)
                offsets = None if offsets is None else _unpermute(offsets, heads)
            blocks.append(pack_kbit(codes, scales, offsets, type_name, 32))
            labels[canon] = f"gguf:{t.tensor_type.name}"
        if blocks:
            out[canon] = _fuse_rows(blocks, canon)
    return out, labels


def _gguf_block_codes(t: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str] | None:
    """(codes, scales, offsets, kbit type) of a Q4_0 / Q4_1 / Q8_0 tensor; None for other types."""
    kind = t.tensor_type.name
    rows = int(t.shape[1]) if len(t.shape) > 1 else 1
    raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(rows, -1)
    if kind == "Q4_1":  # block: d (f16), m (f16), 16 bytes: q[j] low nibble, q[j + 16] high nibble
        blk = raw.reshape(rows, -1, 20)
        d = blk[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = blk[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = blk[:, :, 4:]
        codes = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(rows, -1)
        return codes, d, m, "int4-asym"
    if kind == "Q4_0":  # d (f16), 16 bytes; value = (q - 8) d: our symmetric int4 code q has LUT value q - 8
        blk = raw.reshape(rows, -1, 18)
        d = blk[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = blk[:, :, 2:]
        codes = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(rows, -1)
        return codes, d, None, "int4"
    if kind == "Q8_0":  # d (f16), 32 int8; our symmetric int8 code c has value c - 128
        blk = raw.reshape(rows, -1, 34)
        d = blk[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        q = blk[:, :, 2:].copy().view(np.int8).reshape(rows, -1)
        return (q.astype(np.int16) + 128).astype(np.uint8), d, None, "int8"
    return None


def compile_decoder(model: Any, *, weights: str = "f32", threads: int | None = None, isa: str | None = None,
                    head_weights: str | None = None, keep_float: Iterable[str] = (),
                    outliers: Mapping[str, Sequence[int]] | None = None, tokenizer_json: str | None = None,
                    activations: str | None = None) -> DecoderEngine:
    """Plan and build a DecoderEngine from a HF checkpoint dir, a compressed-LLM dir, a .gguf file or an in-memory
    transformers model.

    weights: the format of every decoder Linear ("f32", "bf16", "w8a8", "llm-int8", "int8-wo", a k-bit
    TYPE[-gGROUP], or "gguf" to keep a GGUF's Q4_0/Q4_1/Q8_0 blocks exactly). A compressed checkpoint's own
    codes take precedence for the Linears it lists. head_weights: the lm_head's format (default: as `weights`
    for k-bit / gguf, else f32... see below). keep_float: Linear names (or suffixes like ".down") left in f32.
    outliers: for "llm-int8", input-feature indices per canonical Linear (default: from the checkpoint's
    metadata, else none).
    activations: None (k-bit Linears compute with float32 activations: weight-only) or "int8": the 4-bit integer
    k-bit Linears (int2/3/4, sym or asym, incl. the GGUF's Q4_0/Q4_1) quantize their input per token to int8
    and use integer dot products (W4A8, VNNI) in prefill and decode alike; labelled "+a8" in `formats`.
    """
    path = Path(model) if isinstance(model, (str, Path)) else None
    stored_lin: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, str] = {}
    extra: dict[str, Any] = {"weights": weights}
    if weights == "gguf":
        if path is None or path.suffix != ".gguf":
            raise ValueError("weights='gguf' needs a .gguf file")
        from ..models.decoder import gguf_spec, load_gguf, open_gguf

        spec = gguf_spec(open_gguf(path))
        stored_lin, labels = _gguf_exact(path, spec)
        # the Linears kept exactly are never dequantized (nor the tied embedding the lm_head's blocks replace):
        # compile then holds only the blocks, not a float32 copy of the model
        skip = {n + ".weight" for n in stored_lin}
        if spec.tied_embeddings and ".kcodes" in stored_lin.get("lm_head", {}):
            skip.add("emb.tok")
        spec, dense = load_gguf(path, frozenset(skip))
    else:
        spec, dense = load_decoder(model)
        if path is not None and path.is_dir() and (path / "trimformer_compression.json").exists():
            stored_lin, meta, labels = _compressed_linears(path, spec, dense)
            extra["compression"] = {k: v for k, v in meta.items() if k not in ("linears", "outliers")}
    fmt = _format_name("int8" if weights == "gguf" else weights)
    if weights not in DECODER_WEIGHTS and weights != "int8-wo" and parse_kbit_format(weights) is None:
        raise ValueError(f"unknown decoder weights {weights!r}; use one of {DECODER_WEIGHTS}, 'int8-wo' or a k-bit "
                         "TYPE[-gGROUP] (e.g. int4-g128, nf4-g64, fp8-e4m3)")
    keep = tuple(keep_float)
    tensors: dict[str, np.ndarray] = {}
    formats: dict[str, str] = {}
    for name in spec.linear_names():
        w = dense.pop(name + ".weight", None)
        if name in stored_lin:
            st = stored_lin[name]
            formats[name] = labels[name]
        else:
            f = fmt
            if fmt in ("sparse", "sparse-int8"):
                zeros = 1.0 - np.count_nonzero(w) / max(w.size, 1)
                f = ("bitmask-f32" if fmt == "sparse" else "bitmask-int8") if zeros >= SPARSE_MIN_ZEROS else (
                    "f32" if fmt == "sparse" else "int8")
            if name == "lm_head":
                f = _format_name(head_weights) if head_weights else (
                    "int8" if weights in ("gguf", "sparse-int8", "bitmask-int8") else
                    ("f32" if fmt in ("llm-int8", "sparse", "bitmask-f32") else fmt))
            if any(name == k or name.endswith(k) for k in keep):
                f = "f32"
            st = encode_linear(w, f, (outliers or {}).get(name))
            formats[name] = f
        for sfx, arr in st.items():
            tensors[name + sfx] = arr
    if activations not in (None, "int8"):
        raise ValueError(f"activations must be None or 'int8', got {activations!r}")
    if activations == "int8":
        n_a8 = 0
        for name in spec.linear_names():
            meta = tensors.get(name + ".kmeta")
            lut = tensors.get(name + ".klut")
            if meta is None or int(meta[0]) != 0 or not np.array_equal(lut[1:4] - lut[0], [1, 2, 3]):
                continue  # not a 4-bit integer k-bit Linear
            k, g = int(meta[1]), int(meta[2])
            if k % 64 or not (g == 32 or g % 64 == 0):
                raise ValueError(f"{name}: int8 activations need in_features % 64 == 0 and group 32 or a multiple "
                                 f"of 64 (got {k} inputs, group {g})")
            tensors[name + ".kact8"] = np.ones(1, np.int32)
            formats[name] += "+a8"
            n_a8 += 1
        if n_a8 == 0:
            raise ValueError("activations='int8' applies to 4-bit integer k-bit weights (int2/3/4, gguf Q4_0/Q4_1); "
                             f"none in this plan ({sorted(set(formats.values()))})")
        extra["activations"] = "int8-per-token"
    tensors.update(dense)  # embeddings, norms, biases
    if weights == "gguf" and spec.tied_embeddings and ".kcodes" in stored_lin.get("lm_head", {}):
        # the GGUF stores the tied embedding once (Q8_0 here); so do we: lookups dequantize lm_head rows, exactly
        tensors.pop("emb.tok", None)
        extra["embed_from_head"] = True
    if tokenizer_json is None and path is not None:
        tokenizer_json = _find_tokenizer(path)
    return DecoderEngine(spec, tensors, formats, threads=threads, isa=isa, tokenizer_json=tokenizer_json, extra=extra)


def _find_tokenizer(path: Path) -> str | None:
    if path.suffix == ".gguf":
        from ..models.decoder import gguf_tokenizer_json

        return gguf_tokenizer_json(path)
    f = path / "tokenizer.json"
    return f.read_text() if f.is_file() else None
