"""The planner and the Engine: compile a model once into a plan (spec + stored tensors in registry formats) and
hand it to the native executor, which packs the weights for this CPU and runs the whole forward pass per call."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import _core
from ..formats.registry import activation_qparams, get_format
from ..formats.sparsity import sparsity_stats
from ..models.encoder import EncoderSpec, load_hf_dir, load_hf_model
from .feature_order import order_ffn_features

QUANTIZE_MODES = (None, "bf16", "int8-dynamic", "int8-static")
ATTENTION_MODES = ("f32", "int8", "bf16", "auto")  # index = the native attention_mode
# "auto" attention: BF16 for sequences of up to this many tokens, INT8 for longer ones (default_attention)
BF16_ATTENTION_MAX_SEQ = 128
# Sparse candidates per Linear (then timed on the layer's own weight with sparse="tune"): block formats when at
# most this fraction of their blocks hold a non-zero (bench_sparse_kernels.py: at 50% sparsity the 4x4 INT8 kernel
# is already 1.3-1.8x our dense INT8), CSR when at least this fraction of the weights is zero, N:M whenever the
# weight satisfies 2:4 or 4:8.
SPARSE_MAX_BLOCK_DENSITY = 0.5
SPARSE_MIN_ZEROS = 0.5
# Pair records (levels that multiply input pairs, `_core.bsr_pair_kernel`) are offered while at most this fraction
# of a weight's input pairs hold a non-zero: a record costs one pair's products, so they pay well past the block
# formats' bound (at avx2: csr-int8 on 50%-unstructured weights, about 0.75 of the pairs, 1.27-1.36x our dense INT8,
# bench/results/sparse_kernels_avx2.md; nm-int8 on 4:8 weights, about 0.79, 1.15-1.21x,
# bench/results/sparse_kernels_nm_avx2.md)
SPARSE_MAX_PAIR_DENSITY = 0.8
# Where 1x4 INT8 rows run as gathered quads (`_core.gathered_quads_kernel`: avx512, any four non-zeros of a row in
# one VNNI quad), csr-int8 costs about one quad per four non-zeros whatever their positions, so it is offered from
# this fraction of zeros on even when most 1x4 quads hold a non-zero: on Zen 4 at 128 tokens it took 0.65-0.92x
# our dense INT8's time on BERT-base and MiniLM shapes at 70% unstructured, 0.48-0.54x at 80%, and 1.03-2.17x at 50%
# (bench/results/sparse_kernels_unstructured_50_80_zen4.md)
SPARSE_MIN_ZEROS_GATHERED = 0.7
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "merges.txt", "vocab.json", "sentencepiece.bpe.model")


def bf16_available(isa: str | None = None) -> bool:
    """Whether the BF16 kernels can run at the ISA level `isa` resolves to on this CPU."""
    return _core.resolve_isa(isa or "") == "avx512_vnni" and _core.has_avx512_bf16()


def default_attention(quantize: str | None, head_dim: int, isa: str | None = None) -> str:
    """Attention matmul precision for a plan, from development profiles (Engine profiler, not a committed
    benchmark) on Zen 5 (2 threads, seq 128, batch 16): at head
    size 64 (BERT-base) INT8 attention took 50 ms, BF16 57 ms, float32 72 ms; at head size 32 (MiniLM) float32
    and BF16 tied (24 ms) and INT8 lost (29 ms): per-row scales, softmax and packing dominate there.
    Where the BF16 matmuls run on AMX tiles, INT8 plans at head size 64 take BF16 attention instead: no per-row
    scales to compute, and faster or level with INT8 at every size measured
    (bench/results/attention_bf16_amx.md). Without VNNI (the avx2 level: exact INT8 products by vpmaddwd, two
    per 32-bit lane) INT8 attention loses to float32 at head size 64 too: with float32 attention the whole pass
    takes 0.89x-0.93x the time on Zen 3 (bench/results/attention_modes_avx2.md). On AMD Zen 4 (VNNI and
    AVX512-BF16 issued in 256-bit halves, no AMX) BF16 attention took 0.95-0.97x INT8's pass time at seq 128 but
    1.21x at seq 384 (bench/results/attention_modes_zen4.md); in three later runs 0.96-0.98x at seq 128 (batch 1
    and 16), 0.94-1.09x at 256 and 1.00-1.04x at 384-512 (attention_modes_zen4_by_length_1-3.md). There INT8
    plans take "auto": BF16 for sequences of up to BF16_ATTENTION_MAX_SEQ tokens, INT8 for longer ones, chosen per
    pass."""
    if quantize is None or head_dim < 64:
        return "f32"
    if quantize.startswith("int8"):
        if _core.resolve_isa(isa or "") != "avx512_vnni":
            return "f32"
        if bf16_available(isa) and _core.gemm_bf16_kernel() == "amx":
            return "bf16"
        return "auto" if bf16_available(isa) and _core.halves_512bit_fma() else "int8"
    return "bf16" if quantize == "bf16" and bf16_available(isa) else "f32"


CHUNK_ROWS = 768  # tokens per group of sequences through the layer stack (see chunk_rows_for)
CHUNK_ROWS_SMALL_L2 = 384  # the same where a core's L2 is small (SMALL_L2_BYTES)
SMALL_L2_BYTES = 1536 << 10
CHUNK_MAX_LAYER_BYTES = 8 << 20


def l2_bytes_per_core(cache_dir: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The size of a core's level-2 cache from Linux's sysfs (cpu0's), or None where it cannot be read."""
    try:
        for index in sorted(cache_dir.glob("index*")):
            if (index / "level").read_text().strip() != "2":
                continue
            if (index / "type").read_text().strip() not in ("Unified", "Data"):
                continue
            text = (index / "size").read_text().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            return int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        return None
    return None


def chunk_rows_for(tensors: Mapping[str, np.ndarray], layers: int) -> int:
    """Tokens per group in which a batch's sequences go through the layer stack (0: the whole batch per op).
    Grouping keeps a group's activations in cache between ops but re-reads every weight once per group, so it
    pays where a layer's weights are small (INT8, sparse) and not with float BERT-base (28 MB per layer): see
    bench/results/batch_groups.md (`python bench/micro/batch_groups.py`). Where a core's L2 is under 1.5 MiB
    (1 MiB on AMD Zen 4, against 2 MiB on the Intel Xeon the 768 was chosen on), groups are half as long: on a
    Zen 4, 0.88-0.97x the time at batch 16 for 80% / 90% block-sparse INT8 BERT-base, DistilBERT and MiniLM and
    90% unstructured INT8 / FP32 BERT-base, the same for dense INT8 (bench/results/chunk_rows_zen4_ab*.md).
    TRIMFORMER_CHUNK_ROWS overrides."""
    env = os.environ.get("TRIMFORMER_CHUNK_ROWS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"TRIMFORMER_CHUNK_ROWS must be an integer >= 0, got {env!r}") from None
        if value < 0:
            raise ValueError(f"TRIMFORMER_CHUNK_ROWS must be an integer >= 0, got {env!r}")
        return value
    layer_bytes = sum(v.nbytes for k, v in tensors.items() if k.startswith("layers.")) / max(layers, 1)
    if layer_bytes > CHUNK_MAX_LAYER_BYTES:
        return 0
    l2 = l2_bytes_per_core()
    return CHUNK_ROWS_SMALL_L2 if l2 is not None and l2 < SMALL_L2_BYTES else CHUNK_ROWS


def default_threads() -> int:
    env = os.environ.get("TRIMFORMER_THREADS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


MAX_THREADS = 256  # the native engines' cap (EncoderEngine::set_threads)


def resolve_threads(threads: int | None) -> int:
    """An engine's thread count: None or 0 -> default_threads(), else an integer 1 .. MAX_THREADS (ValueError)."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 0 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be an integer from 1 to {MAX_THREADS} (or None for the default), got {threads!r}")
    return int(threads) or default_threads()


class NativeEngine:
    """What every compiled engine exposes of its native core (`self._native`): ISA level and thread count."""

    _native: Any

    @property
    def isa(self) -> str:
        return self._native.isa

    @property
    def threads(self) -> int:
        return self._native.threads

    @threads.setter
    def threads(self, n: int) -> None:
        self._native.threads = resolve_threads(n)



class Engine(NativeEngine):
    """A compiled encoder. `run` executes the whole forward pass in one native call."""

    def __init__(self, spec: EncoderSpec, tensors: Mapping[str, np.ndarray], formats: Mapping[str, str], *,
                 quantize: str | None = None, threads: int | None = None, isa: str | None = None,
                 tokenizer_path: str | Path | None = None, extra: dict[str, Any] | None = None,
                 attention: str = "f32"):
        self.spec = spec
        self.tensors = dict(tensors)  # the stored (logical) tensors: what `save` writes
        self.formats = dict(formats)  # linear name -> registry format name
        self.quantize = quantize
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else None
        self.extra = dict(extra or {})
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        if attention == "bf16" and not bf16_available(isa):
            warnings.warn("this CPU/ISA level has no AVX512_BF16: attention runs in float32 instead of bf16",
                          stacklevel=2)
            attention = "f32"
        if attention == "auto" and not bf16_available(isa):
            attention = "int8"  # auto picks between BF16 and INT8: without BF16 kernels, INT8 at every length
        self.attention = attention
        self._lock = threading.Lock()
        native = {k: np.ascontiguousarray(v) for k, v in self.tensors.items()}
        self.chunk_rows = chunk_rows_for(native, spec.layers)
        config = {**spec.native_config(), "attention_mode": ATTENTION_MODES.index(attention),
                  "bf16_attention_max_seq": BF16_ATTENTION_MAX_SEQ, "chunk_rows": self.chunk_rows,
                  "csr_f32_walk": [str(n) for n in self.extra.get("csr_f32_walk", [])]}
        self._native = _core.EncoderEngine(config, native, isa or "", resolve_threads(threads))

    def run(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None, *,
            pooling: str | None = None, normalize: bool = False) -> dict[str, np.ndarray]:
        """Forward pass. pooling="mean" (over unmasked tokens) or "cls" adds `pooled` [batch, hidden], L2-normalized
        with normalize=True (sentence-transformers' embedding for MiniLM is mean + normalize)."""
        if pooling not in (None, "mean", "cls"):
            raise ValueError(f"pooling must be None, 'mean' or 'cls', got {pooling!r}")
        if normalize and pooling is None:
            raise ValueError("normalize=True needs pooling='mean' or 'cls'")
        ids = _as_ids(input_ids, "input_ids")
        mask = None if attention_mask is None else _as_mask(attention_mask)
        types = None if token_type_ids is None else _as_ids(token_type_ids, "token_type_ids")
        for name, arr in (("attention_mask", mask), ("token_type_ids", types)):
            if arr is not None and arr.shape != ids.shape:
                raise ValueError(f"{name} has shape {arr.shape}, input_ids has {ids.shape}")
        with self._lock:
            try:
                hidden, head, pooled = self._native.run(ids, mask, types, pooling or "", normalize)
            except MemoryError:
                raise MemoryError(f"a batch of {ids.shape[0]} x {ids.shape[1]} tokens needs more memory than this "
                                  "machine can give the engine; run it in smaller batches") from None
        out = {"last_hidden_state": hidden}
        if pooled is not None:
            out["pooled"] = pooled
        if head is not None:
            if self.spec.task == "question-answering":
                out["start_logits"] = np.ascontiguousarray(head[..., 0])
                out["end_logits"] = np.ascontiguousarray(head[..., 1])
            else:
                out["logits"] = head
        return out

    __call__ = run

    def observe(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
        """Run calibration batches with observers on and return each Linear input's (min, max)."""
        self._native.reset_observers()
        self._native.set_observe(True)
        try:
            for b in batches:
                self.run(b["input_ids"], b.get("attention_mask"), b.get("token_type_ids"))
        finally:
            self._native.set_observe(False)
        return dict(self._native.observed_ranges())

    @property
    def packed_bytes(self) -> int:
        return int(self._native.packed_bytes)

    @property
    def linear_kernels(self) -> dict[str, str]:
        """What runs each Linear at this load, in words: the kernel family and the load-time form of a sparse
        weight (e.g. "sparse-f32, generated code 2.2 MiB", "bsr-s8, gathered quads", "perm-s8"); it depends on the
        ISA level and CPU, not on the saved model."""
        return dict(self._native.linear_kernels)

    def __repr__(self) -> str:
        s = self.spec
        return (f"Engine({s.arch}, task={s.task}, layers={s.layers}, hidden={s.hidden}, quantize={self.quantize}, "
                f"isa={self.isa}, threads={self.threads})")


def _as_ids(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be [batch, seq], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _as_mask(x: Any) -> np.ndarray:
    """An attention mask of 0 / 1 (or booleans): other values (a 7, a -1) are refused, not read as "attend"."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    arr = _as_ids(arr, "attention_mask")
    if ((arr != 0) & (arr != 1)).any():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    return arr


def _encode_linears(spec: EncoderSpec, dense: Mapping[str, np.ndarray], fmt_of: Mapping[str, str]) -> dict:
    stored: dict[str, np.ndarray] = {}
    linear = set(spec.linear_names())
    for name, arr in dense.items():
        base, _, suffix = name.rpartition(".")
        if base in linear and suffix == "weight":
            for sfx, t in get_format(fmt_of[base]).encode(arr).items():
                stored[base + sfx] = t
        else:
            stored[name] = arr
    return stored


def compile_encoder(model: Any, *, quantize: str | None = None, calibration: Iterable[Mapping] | None = None,
                    threads: int | None = None, isa: str | None = None, quantize_head: bool = False,
                    keep_float: Iterable[str] = (), attention: str | None = None,
                    calibration_method: str = "minmax", sparse: bool | str | None = "tune",
                    activation_params: Mapping[str, tuple[float, int]] | None = None,
                    reduce_range: bool = False) -> Engine:
    """Plan and build an Engine from an HF checkpoint directory or an in-memory transformers model.

    keep_float: Linear names (e.g. "layers.3.ffn2") or name suffixes (".ffn2") left in float32 when quantizing.
    attention: precision of the attention matmuls, "f32", "int8", "bf16" or "auto" (BF16 for sequences of up to
        BF16_ATTENTION_MAX_SEQ tokens, INT8 beyond, chosen per pass; INT8 where the CPU has no BF16 kernels)
        (default: `default_attention`).
    calibration_method: how static ranges are set from the calibration batches: "minmax", "percentile", "mse" or
    "entropy" (KL; see runtime/calibration.py).
    sparse: how Linear layers with zeros are dispatched (INT8, float32 and bf16; see `sparse_candidates` for which
    sparse formats a layer's actual pattern admits): "tune" (default) times the dense format and every candidate
    on the layer's own weight at compile time and keeps the fastest (timings are recorded in
    `engine.extra["dispatch"]` and saved with the model; a csr-f32 layer is timed both as generated code and as its
    plain row walk where the level has the code, and the layers whose walk was faster are listed in
    `engine.extra["csr_f32_walk"]`; where the ISA level multiplies input pairs, avx2, every
    INT8 layer also times the 4x4 block format, whose kernel beats the dense INT8 GEMM there even on dense
    weights); None takes the first candidate without timing; True does the same and also forces block-int8 on
    INT8 layers no pattern fits; False keeps every layer dense. Unless False, an INT8 FFN2 with unstructured zeros
    may get the FFN's features in another order, one that leaves csr-int8 fewer blocks to multiply, with the same
    results (runtime/feature_order.py; the layers reordered are in `engine.extra["feature_order"]`).
    activation_params: with "int8-static", {Linear name: (scale, zero_point)} of each INT8 Linear's u8 input used
    as given instead of calibrating (e.g. exported by quantization-aware training, trimformer.compress.qat); every
    INT8 Linear must have an entry; x is quantized as clamp(nearbyint(x / scale) + zero_point, 0, 255).
    reduce_range: also offer block-int7 (4x4 block-sparse weights quantized to [-64, 64], about 7 bits) to INT8
    layers the block kernels fit, where the ISA level multiplies such weights 8-bit (`_core.bsr_narrow_kernel`:
    avx2, whose exact products of 8-bit weights are otherwise 16-bit vpmaddwd ones; ONNX Runtime's reduce_range
    makes the same trade for the same reason). One bit of weight precision for speed: the measured accuracy is in
    docs/kernels.md; the formats chosen show it (`trimformer compile --verbose`, engine.formats).
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if sparse not in (True, False, None, "tune"):
        raise ValueError(f"sparse must be True, False, None or 'tune', got {sparse!r}")
    if reduce_range and not (quantize or "").startswith("int8"):
        raise ValueError(f"reduce_range applies to INT8 quantization, not quantize={quantize!r}")
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such model directory")
        spec, dense = load_hf_dir(path)
        tok = path if any((path / f).exists() for f in _TOKENIZER_FILES) else None
    else:
        spec, dense = load_hf_model(model)
        tok = None
        name = getattr(getattr(model, "config", None), "_name_or_path", "")
        if name and Path(name).is_dir():
            tok = Path(name)
    keep = tuple(keep_float)
    pair_level = _core.bsr_pair_kernel(isa or "")
    fmt_of = {}
    candidates: dict[str, list[str]] = {}
    for name in spec.linear_names():
        quantized = quantize is not None and (quantize_head or not name.startswith("head."))
        quantized = quantized and not any(name == k or name.endswith(k) or name.startswith(k) for k in keep)
        fmt_of[name] = ("bf16" if quantize == "bf16" else "int8") if quantized else "f32"
    # FFN features in the order that leaves csr-int8 the fewest 1x4 blocks (runtime/feature_order.py); the float
    # model as given still sets the static INT8 ranges, so a reordered model quantizes its activations alike
    weights, reordered = dense, {}
    if sparse is not False and not pair_level:
        weights, reordered = order_ffn_features(dense, spec.layers,
                                                lambda i: fmt_of.get(f"layers.{i}.ffn2") == "int8",
                                                SPARSE_MAX_BLOCK_DENSITY)
    for name in spec.linear_names():
        if sparse is not False:
            cands = sparse_candidates(weights[name + ".weight"], fmt_of[name], isa, reduce_range=reduce_range)
            if sparse is True and not cands and fmt_of[name] in _FORCED_SPARSE:
                cands = [_block_int8_formats(reduce_range, isa)[0] if fmt_of[name] == "int8"
                         else _FORCED_SPARSE[fmt_of[name]]]
            if sparse == "tune" and fmt_of[name] == "int8" and pair_level:
                # at levels whose INT8 products take input pairs (avx2) the 4x4 block kernel beats the dense INT8
                # GEMM even with every block kept (1.00-1.38x at 16-512 tokens on BERT-base shapes,
                # bench/results/sparse_kernels_block_dense_avx2.md): time it on every INT8 layer
                cands += [f for f in _block_int8_formats(reduce_range, isa) if f not in cands]
            if cands:
                candidates[name] = cands
    if sparse == "tune":
        dispatch = _tune_formats(weights, fmt_of, candidates, threads, isa)
    else:
        dispatch = {}
        for name, cands in candidates.items():
            fmt_of[name] = cands[0]
    stored = _encode_linears(spec, weights, fmt_of)
    if activation_params is not None:
        if quantize != "int8-static":
            raise ValueError("activation_params apply to quantize='int8-static' only")
        int8 = [n for n, f in fmt_of.items() if get_format(f).int8_activations]
        missing = [n for n in int8 if n not in activation_params]
        if missing:
            raise ValueError(f"activation_params has no (scale, zero_point) for INT8 Linears {missing[:5]}")
        unknown = sorted(set(activation_params) - set(fmt_of))
        if unknown:
            raise ValueError(f"activation_params names unknown Linears {unknown[:5]}")
        for name in int8:
            scale, zp = activation_params[name]
            if not (float(scale) > 0 and 0 <= int(zp) <= 255 and float(zp) == int(zp)):
                raise ValueError(f"activation_params[{name!r}] = {(scale, zp)}: need scale > 0, integer zp in [0, 255]")
            stored[name + ".act_scale"] = np.array([scale], np.float32)
            stored[name + ".act_zero_point"] = np.array([zp], np.int32)
    elif quantize == "int8-static":
        if calibration is None:
            raise ValueError("quantize='int8-static' needs calibration batches (an iterable of tokenized dicts)")
        from .calibration import calibrate_ranges

        float_engine = Engine(spec, dense, {n: "f32" for n in fmt_of}, threads=threads, isa=isa)
        ranges = calibrate_ranges(float_engine, calibration, calibration_method)
        if not ranges:
            raise ValueError("calibration produced no batches")
        for name, fmt in fmt_of.items():
            if get_format(fmt).int8_activations:
                scale, zp = activation_qparams(*ranges[name])
                stored[name + ".act_scale"] = np.array([scale], np.float32)
                stored[name + ".act_zero_point"] = np.array([zp], np.int32)
    if attention is None:
        attention = default_attention(quantize, spec.head_dim or spec.hidden // spec.heads, isa)
    extra: dict[str, Any] = {}
    if dispatch:
        extra["dispatch"] = dispatch
        walked = [n for n, d in dispatch.items() if d.get("csr_f32_kernel") == "walk"]
        if walked:  # csr-f32 layers whose plain walk timed faster than their generated code
            extra["csr_f32_walk"] = walked
    if reordered:  # {layer: [FFN2 1x4 blocks in the model's order, in the order chosen]}
        extra["feature_order"] = {str(i): list(b) for i, b in reordered.items()}
    return Engine(spec, stored, fmt_of, quantize=quantize, threads=threads, isa=isa, tokenizer_path=tok,
                  attention=attention, extra=extra or None)


_FORCED_SPARSE = {"int8": "block-int8"}  # sparse=True on an INT8 layer no pattern fits


def _block_int8_formats(reduce_range: bool, isa: str | None) -> list[str]:
    """The 4x4 block-sparse INT8 formats to offer, first first: block-int7 with reduce_range where the ISA level
    multiplies its [-64, 64] weights 8-bit (`_core.bsr_narrow_kernel`), then block-int8."""
    return ["block-int7", "block-int8"] if reduce_range and _core.bsr_narrow_kernel(isa or "") else ["block-int8"]


def _pair_density(w: np.ndarray) -> float:
    """Fraction of the input pairs (2i, 2i + 1) of each row that hold a non-zero (k padded to even with zeros)."""
    nz = np.asarray(w) != 0
    if nz.shape[1] % 2:
        nz = np.concatenate([nz, np.zeros((nz.shape[0], 1), bool)], axis=1)
    return float(nz.reshape(nz.shape[0], -1, 2).any(axis=2).mean()) if nz.size else 1.0


def sparse_candidates(w: np.ndarray, dense_format: str, isa: str | None = None, *,
                      reduce_range: bool = False) -> list[str]:
    """The sparse formats worth trying for weight `w` [out, in] instead of `dense_format` ("int8", "f32", "bf16"),
    least stored work first (the fraction of the dense weight each one stores and multiplies; ties keep the
    pattern's own layout first): the order used without timing. For "bf16" the candidates are nm-bf16 and
    block-bf16 (bf16 storage, the float32 kernels). INT8 candidates depend on the ISA level `isa` resolves to
    (`_core.bsr_pair_kernel`); with reduce_range, block-int7 joins block-int8 where the level has its 8-bit kernel
    (`_core.bsr_narrow_kernel`), first: the same blocks at half the multiply instructions."""
    if dense_format not in ("int8", "f32", "bf16"):
        return []
    st = sparsity_stats(w)
    nm_work = {"2:4": 0.5, "4:8": 0.5}.get(st["nm"] or "", 1.0)
    work: dict[str, float] = {}
    if dense_format == "bf16":
        if st["nm"]:
            work["nm-bf16"] = nm_work
        if st["block4x1_density"] <= SPARSE_MAX_BLOCK_DENSITY:
            work["block-bf16"] = st["block4x1_density"]
        return sorted(work, key=work.get)
    if dense_format == "int8":
        if st["block_density"] <= SPARSE_MAX_BLOCK_DENSITY:
            work.update(dict.fromkeys(_block_int8_formats(reduce_range, isa), st["block_density"]))
        if _core.bsr_pair_kernel(isa or ""):
            # the level multiplies input pairs (vpmaddwd): csr-int8 runs one record per half-quad holding a
            # non-zero, a 2:4 nm-int8 one per quad holding one (any two inputs of a quad form a pair), a 4:8 nm-int8
            # the same records as csr-int8 (CSR first on that tie: it stores only the non-zeros of a weight that is
            # sparser than its pattern)
            pair_density = _pair_density(w)
            if st["zeros"] >= SPARSE_MIN_ZEROS and pair_density <= SPARSE_MAX_PAIR_DENSITY:
                work["csr-int8"] = pair_density
            if st["nm"] == "2:4":
                work["nm-int8"] = st["quad_density"] / 2
            elif st["nm"] == "4:8" and pair_density <= SPARSE_MAX_PAIR_DENSITY:
                work["nm-int8"] = pair_density
            return sorted(work, key=work.get)
        # csr-int8 and nm-int8 both run on the 1x4 input quads that hold a non-zero (VNNI multiplies 4 consecutive
        # inputs at once): a plain 2:4 / 4:8 weight has a non-zero in (nearly) every quad, so it stays dense INT8
        # unless it is sparser than its pattern; where both fit, CSR stores less. Where N:M rows run as permuted
        # quads (`_core.perm_s8_kernel`: AVX512-VBMI), every 8 inputs of such a row cost one vpdpbusd and one
        # vpermb against the dense kernel's two vpdpbusd, so nm-int8 is a candidate whenever the pattern fits
        if st["quad_density"] <= SPARSE_MAX_BLOCK_DENSITY:
            if st["zeros"] >= SPARSE_MIN_ZEROS:
                work["csr-int8"] = st["quad_density"]
            if st["nm"]:
                work["nm-int8"] = st["quad_density"]
        elif st["zeros"] >= SPARSE_MIN_ZEROS_GATHERED and _core.gathered_quads_kernel(isa or ""):
            work["csr-int8"] = 1.0 - st["zeros"]  # a quad per four non-zeros: the stored fraction
        if st["nm"] and _core.perm_s8_kernel(isa or ""):
            work["nm-int8"] = min(work.get("nm-int8", 1.0), nm_work)
    else:
        if st["nm"]:
            work["nm-f32"] = nm_work
        if st["block4x1_density"] <= SPARSE_MAX_BLOCK_DENSITY:
            work["block-f32"] = st["block4x1_density"]
        if st["zeros"] >= SPARSE_MIN_ZEROS:
            work["csr-f32"] = 1.0 - st["zeros"]
    return sorted(work, key=work.get)  # stable: ties keep the insertion order


# The planner times again the formats whose first timings lie within PLANNER_CONFIRM of the fastest one,
# PLANNER_CONFIRM_ITERS more interleaved rounds, before it picks: on a shared host a slow phase during one format's
# few calls decides the choice: an 80% block BERT-base's plans on an Ice Lake server kept 6-7 of 48 Linears
# csr-int8, which also cost those FFN1 -> FFN2 pairs their direct re-layout, and 45-48 block-int8 with this
# (bench/results/sparse_e2e_block_0.8_icelake.md, _r2.md; docs/design.md)
PLANNER_CONFIRM = 1.5
PLANNER_CONFIRM_ITERS = 10


def best_times(timers: Mapping[str, Callable[[], float]], iters: int, confirm: float | None = None,
               confirm_iters: int = PLANNER_CONFIRM_ITERS) -> dict[str, float]:
    """Each timer's best of `iters` calls, the timers interleaved; with `confirm`, the ones within that factor of
    the fastest then run `confirm_iters` more interleaved rounds (their best over all calls)."""
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(iters):
        for name, timer in timers.items():
            best[name] = min(best[name], timer())
    if confirm is not None:
        fastest = min(best.values())
        close = [name for name, t in best.items() if t <= fastest * confirm]
        if len(close) > 1:
            for _ in range(confirm_iters):
                for name in close:
                    best[name] = min(best[name], timers[name]())
    return best


def time_formats(w: np.ndarray, formats: Iterable[str], *, tokens: int = 128, iters: int = 5,
                 threads: int | None = None, isa: str | None = None, cold: bool = True,
                 confirm: float | None = None, region_per_call: bool = False,
                 walk: bool = False, activations: str = "dynamic") -> dict[str, float]:
    """Seconds per call of one Linear with weight `w` stored in each of `formats`, run by the executor's own
    loader and kernels (dynamic INT8 activations for INT8 formats) on `tokens` synthetic rows: best of `iters`,
    interleaved across formats so that a noisy neighbour hurts them alike (with `confirm`, the close ones timed
    again: best_times). cold (default): the weight is flushed from the caches before each call, as in a forward
    pass, where each layer's weights come from beyond L2 (planned from hot timings, an 80%-block BERT-base kept 44
    of 48 Linears dense and its pass took 13.82 ms against 8.88 ms planned cold, 1 x 128:
    bench/results/planner_cold_timing.md). The calls of one timing share a parallel region, each ending at the
    team's barrier, as a pass's ops do; region_per_call: each opens its own (a fork and a join per call).
    walk: where csr-f32 runs as generated code at this level, also time its plain row walk, as CSR_F32_WALK.
    activations (INT8 formats; float formats read float rows in every mode): "dynamic" (each row's range found and
    quantized in the call), "static" (calibrated parameters: quantized in the call, no range pass, as a static INT8
    pass's QKV, attn_out and FFN1 run) or "u8" (the input arrives quantized, and re-laid for block-sparse quads, as
    FFN2's does from FFN1's epilogue in a static INT8 pass: the GEMM and its epilogue alone)."""
    if activations not in ACTIVATION_MODES:
        raise ValueError(f"activations must be one of {', '.join(ACTIVATION_MODES)}, not {activations!r}")
    timers = {}

    def add(key: str, runner: Any, u8: bool) -> None:
        # (the default protocol passes no flag: an extension built before the flag existed then still runs, its
        # calls each in a region of their own, for A/B runs of old builds)
        if u8:
            timers[key] = lambda: runner.time(tokens, 1, cold, region_per_call, True)
        elif region_per_call:
            timers[key] = lambda: runner.time(tokens, 1, cold, True)
        else:
            timers[key] = lambda: runner.time(tokens, 1, cold)

    for fmt in formats:
        stored, u8 = timing_tensors(w, fmt, activations)
        runner = _core.LinearRunner(stored, "x", isa or "", resolve_threads(threads))
        add(fmt, runner, u8)
        if walk and fmt == "csr-f32" and runner.jit_code_bytes > 0:
            add(CSR_F32_WALK, _core.LinearRunner(stored, "x", isa or "", resolve_threads(threads),
                                                 csr_f32_code=False), False)
    return best_times(timers, iters, confirm)


# time_formats' activation modes for INT8 formats (see there)
ACTIVATION_MODES = ("dynamic", "static", "u8")


def timing_tensors(w: np.ndarray, fmt: str, activations: str = "dynamic") -> tuple[dict[str, np.ndarray], bool]:
    """A LinearRunner's tensors (named "x") for weight `w` stored in `fmt`, and whether its timing takes u8 input:
    in time_formats' static and u8 modes an INT8 format gets static activation parameters for the synthetic input's
    range (_core.timing_input_range, which an extension built before the modes lacks: dynamic only)"""
    spec = get_format(fmt)
    stored = {"x" + sfx: t for sfx, t in spec.encode(w).items()}
    quantized = spec.int8_activations and activations != "dynamic"
    if quantized:
        scale, zp = activation_qparams(*_core.timing_input_range)
        stored["x.act_scale"] = np.array([scale], np.float32)
        stored["x.act_zero_point"] = np.array([zp], np.int32)
    return stored, quantized and activations == "u8"


# time_formats' key for csr-f32 run by its plain row walk where the level would run it as generated code. Which is
# faster depends on the core (90% unstructured BERT-base FP32 passes: the code 0.82-0.86x the walk's time on Zen 4,
# the walk 0.88-0.93x the code's on Ice Lake; docs/kernels.md, "Code or walk"), so the planner times both and keeps
# the faster per layer (engine.extra["csr_f32_walk"]).
CSR_F32_WALK = "csr-f32/walk"


# The dense format must beat the fastest sparse one by more than this to be kept. It was 0.10 while the timing ran
# with hot caches, to make up for the weights streaming from further out in a pass (a sparse layer's are several
# times smaller); cold timing (time_formats) measures that instead, so there is nothing left to make up for. With 0,
# a 50%-block BERT-base stays dense, the faster plan there (bench/results/planner_cold_timing.md)
SPARSE_TIE_MARGIN = 0.0


def choose_format(times: Mapping[str, float], dense: str) -> str:
    """The format kept for a layer from its timings: the fastest, except that a sparse one within
    SPARSE_TIE_MARGIN of the dense format wins over it."""
    fastest = min(times, key=times.get)
    sparse = {f: v for f, v in times.items() if f != dense}
    if fastest == dense and sparse and min(sparse.values()) <= times[dense] * (1 + SPARSE_TIE_MARGIN):
        return min(sparse, key=sparse.get)
    return fastest


def _tune_formats(dense: Mapping[str, np.ndarray], fmt_of: dict[str, str], candidates: Mapping[str, list[str]],
                  threads: int | None, isa: str | None, tokens: int = 128) -> dict[str, dict[str, Any]]:
    """Per layer with sparse candidates: time the dense format and every candidate on the layer's own weight, keep
    the one choose_format picks (fmt_of is updated) and return {layer: {"chosen", "tokens", "ms": {format: ms}}}."""
    dispatch = {}
    for name, cands in candidates.items():
        t = time_formats(dense[name + ".weight"], [fmt_of[name], *cands], tokens=tokens, threads=threads, isa=isa,
                         confirm=PLANNER_CONFIRM, walk=True)
        by_format = {f: v for f, v in t.items() if f != CSR_F32_WALK}
        walk = CSR_F32_WALK in t and t[CSR_F32_WALK] < t["csr-f32"]
        if walk:  # csr-f32 competes with its faster kernel
            by_format["csr-f32"] = t[CSR_F32_WALK]
        chosen = choose_format(by_format, fmt_of[name])
        dispatch[name] = {"chosen": chosen, "tokens": tokens, "ms": {f: v * 1e3 for f, v in t.items()}}
        if chosen == "csr-f32" and CSR_F32_WALK in t:
            dispatch[name]["csr_f32_kernel"] = "walk" if walk else "code"
        fmt_of[name] = chosen
    return dispatch
