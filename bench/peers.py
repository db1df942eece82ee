"""Peer runtimes for the dense benchmark: model building, ONNX export, ORT / torch / DeepSparse / trimformer.

Every artifact (HF checkpoint, ONNX graphs) is cached under bench/.cache/<model>-seed<seed>/ and rebuilt
when the config, seed or a library version changes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import Inputs, Runner

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here; never let transformers try
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
# Same override as deepsparse_env.sh, so a venv kept elsewhere can be used.
DEEPSPARSE_VENV = Path(os.environ.get("DEEPSPARSE_VENV", BENCH_DIR / ".venv-deepsparse"))
ARTIFACT_VERSION = 1  # bump when the export/quantization recipe changes
OPSET = 17
CLASSIC_ATTN = "bench_classic"

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "bert-base": {
        "arch": "bert",
        "num_hidden_layers": 12,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "minilm-l6-h384": {
        "arch": "bert",
        "num_hidden_layers": 6,
        "hidden_size": 384,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
    "distilbert": {"arch": "distilbert", "n_layers": 6, "dim": 768, "n_heads": 12, "hidden_dim": 3072},
}


_HEXLINE = re.compile(r"^\s*(\[[0-9a-f]+\]|\d+# 0x[0-9a-f]+: ?)\s*$")


class Unavailable(RuntimeError):
    """The runtime cannot run here (not installed, API missing): reported, never faked."""


@dataclass
class ModelInfo:
    name: str
    arch: str
    layers: int
    hidden: int
    heads: int
    vocab_size: int
    seed: int
    dir: Path

    @property
    def hf_dir(self) -> Path:
        return self.dir / "hf"

    @property
    def uses_token_types(self) -> bool:
        return self.arch == "bert"

    @property
    def input_names(self) -> list[str]:
        names = ["input_ids", "attention_mask"]
        return [*names, "token_type_ids"] if self.uses_token_types else names

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "layers": self.layers,
            "hidden": self.hidden,
            "heads": self.heads,
            "vocab_size": self.vocab_size,
            "seed": self.seed,
            "hf_dir": str(self.hf_dir),
        }


# --------------------------------------------------------------------------------------------- models


def _hf_config(name: str) -> Any:
    from transformers import BertConfig, DistilBertConfig

    spec = dict(MODEL_CONFIGS[name])
    arch = spec.pop("arch")
    return BertConfig(**spec) if arch == "bert" else DistilBertConfig(**spec)


def _lib_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
    }


def prepare_model(name: str, seed: int = 0, cache: Path = CACHE_DIR, sparsity: float = 0.0,
                  pattern: str = "block") -> ModelInfo:
    """Random-weight model from a config (seeded), saved as an HF checkpoint dir (safetensors).

    With sparsity > 0 every encoder Linear is magnitude-pruned (trimformer.compress.prune_magnitude) before
    saving, so every runtime built from the checkpoint gets the same sparse weights.
    """
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODEL_CONFIGS)}")
    import torch
    from transformers import BertModel, DistilBertModel

    cfg = _hf_config(name)
    d = cache / (f"{name}-seed{seed}" + (f"-{pattern.replace(':', 'of')}{round(sparsity * 100)}" if sparsity else ""))
    stamp = {
        "config": MODEL_CONFIGS[name],
        "seed": seed,
        "sparsity": sparsity,
        "pattern": pattern,
        "artifact_version": ARTIFACT_VERSION,
        **_lib_versions(),
    }
    stamp_path = d / "stamp.json"
    if not (stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp):
        shutil.rmtree(d, ignore_errors=True)  # anything cached under another recipe is stale
        d.mkdir(parents=True)
        torch.manual_seed(seed)  # HF init draws from the global torch RNG: seeding makes weights reproducible
        cls = BertModel if MODEL_CONFIGS[name]["arch"] == "bert" else DistilBertModel
        model = cls(cfg).eval()
        if sparsity:
            from trimformer.compress import prune_magnitude

            prune_magnitude(model, sparsity, pattern)
        model.save_pretrained(d / "hf", safe_serialization=True)
        stamp_path.write_text(json.dumps(stamp, indent=1))
    arch = MODEL_CONFIGS[name]["arch"]
    return ModelInfo(
        name=name,
        arch=arch,
        layers=cfg.num_hidden_layers if arch == "bert" else cfg.n_layers,
        hidden=cfg.hidden_size if arch == "bert" else cfg.dim,
        heads=cfg.num_attention_heads if arch == "bert" else cfg.n_heads,
        vocab_size=cfg.vocab_size,
        seed=seed,
        dir=d,
    )


def load_torch_model(info: ModelInfo, attn_implementation: str | None = None) -> Any:
    from transformers import AutoModel

    kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModel.from_pretrained(info.hf_dir, **kw).eval()


# --------------------------------------------------------------------------------------------- ONNX export


def _classic_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """transformers-4 BERT attention: (q @ k^T) / sqrt(d) + additive mask.

    transformers 5's eager path multiplies by the scale *after* the matmul; with an additive mask
    (itself a Mul) the score Add then has two Mul parents and ORT's attention fusion picks the wrong
    one, so nothing fuses. The Div form is the pattern ORT and DeepSparse were built around.
    """
    import torch

    scores = torch.matmul(query, key.transpose(-1, -2)) / (query.size(-1) ** 0.5)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def _register_classic_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(CLASSIC_ATTN, _classic_attention)


def _export_wrapper(model: Any, arch: str) -> Any:
    import torch

    class ClassicMaskEncoder(torch.nn.Module):
        """Calls embeddings + encoder directly with a [b,1,1,s] additive mask ((1-m) * -10000).

        transformers 5's mask builder (create_bidirectional_mask) exports as Range/And/Where/Expand,
        which DeepSparse cannot compile and which hides the classic pattern from ORT's fusions.
        """

        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            ext = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
            if arch == "bert":
                emb = self.m.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
                return self.m.encoder(emb, attention_mask=ext).last_hidden_state
            emb = self.m.embeddings(input_ids)
            return self.m.transformer(emb, attention_mask=ext).last_hidden_state

    return ClassicMaskEncoder(model).eval()


def export_onnx(info: ModelInfo) -> Path:
    """fp32 ONNX (opset 17, dynamic batch/seq) with the classic additive mask; cached."""
    out = info.dir / "model.onnx"
    if out.exists():
        return out
    import torch

    _register_classic_attention()
    model = load_torch_model(info, attn_implementation=CLASSIC_ATTN)
    wrapper = _export_wrapper(model, info.arch)
    ids = torch.randint(1000, info.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    args = [ids, torch.ones_like(ids)]
    if info.uses_token_types:
        args.append(torch.zeros_like(ids))
    names = info.input_names
    axes = {n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]}
    tmp = out.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning
        # Legacy TorchScript exporter: deterministic, no onnxscript dependency, and it keeps
        # LayerNormalization/MatMul/Add patterns that ORT's BERT fusions match.
        torch.onnx.export(
            wrapper,
            tuple(args),
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    tmp.replace(out)
    return out


def op_histogram(path: Path) -> dict[str, int]:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    return dict(Counter(n.op_type for n in g.node if n.op_type != "Constant").most_common())


def ort_optimized(info: ModelInfo) -> tuple[Path, dict[str, int]]:
    """ORT transformer optimizer (model_type=bert): Attention/EmbedLayerNorm/SkipLayerNorm/BiasGelu fusions."""
    out = info.dir / "model.opt.onnx"
    stats_path = info.dir / "model.opt.fusions.json"
    if not (out.exists() and stats_path.exists()):
        from onnxruntime.transformers.optimizer import optimize_model

        opt = optimize_model(
            str(export_onnx(info)), model_type="bert", num_heads=info.heads, hidden_size=info.hidden
        )
        stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        opt.save_model_to_file(str(out))
        stats_path.write_text(json.dumps(stats))
    return out, json.loads(stats_path.read_text())


def ort_int8_dynamic(info: ModelInfo, fused: bool = True) -> Path:
    """quantize_dynamic (u8 activations, s8 weights). fused=True quantizes the optimized graph (QAttention)."""
    out = info.dir / ("model.int8-dyn.onnx" if fused else "model.int8-dyn-unfused.onnx")
    if out.exists():
        return out
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = ort_optimized(info)[0] if fused else export_onnx(info)
    # Fused contrib ops (SkipLayerNormalization, ...) have no ONNX shape inference: tell the
    # quantizer their outputs are float.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else {}
    with _quiet_logging():
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, extra_options=extra)
    return out


def calibration_batches(
    info: ModelInfo, n: int = 8, seq: int = 128, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Random token batches; speed does not depend on calibration quality. Shared by all static peers."""
    rng = np.random.default_rng(seed + 12345)
    batches = []
    for _ in range(n):
        ids = rng.integers(1000, info.vocab_size, size=(1, seq), dtype=np.int64)
        b = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if info.uses_token_types:
            b["token_type_ids"] = np.zeros_like(ids)
        batches.append(b)
    return batches


def ort_int8_static(info: ModelInfo, calibration: Sequence[dict[str, np.ndarray]]) -> Path:
    """quantize_static, QOperator format, MatMul only (u8 activations / s8 weights, per-tensor, MinMax).

    Quantized from the unfused export: ORT cannot static-quantize its fused contrib ops. Restricting
    to MatMul was faster in ORT than quantizing every op (QLinearAdd etc.), and the all-ops graph makes
    DeepSparse 1.8 abort at compile (planner.hpp:70), so one graph serves both static INT8 peers.
    """
    out = info.dir / "model.int8-static.onnx"
    if out.exists():
        return out
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(list(calibration))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with _quiet_logging():
        quantize_static(
            str(export_onnx(info)),
            str(out),
            Reader(),
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=["MatMul"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=False,
        )
    return out


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "please run pre-processing" warnings on every call
    try:
        yield
    finally:
        root.setLevel(level)


# --------------------------------------------------------------------------------------------- runners


class OrtRunner:
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.path = path

    def __call__(self, ids: np.ndarray, mask: np.ndarray, tt: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
        return self.session.run(["last_hidden_state"], {n: feed[n] for n in self.names})[0]


class TorchRunner:
    def __init__(self, model: Any, uses_token_types: bool) -> None:
        self.model = model
        self.uses_token_types = uses_token_types

    def __call__(self, ids: np.ndarray, mask: np.ndarray, tt: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            kw = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
            if self.uses_token_types:
                kw["token_type_ids"] = torch.from_numpy(tt)
            return self.model(**kw).last_hidden_state.numpy()


def torch_runner(info: ModelInfo, threads: int, int8: bool) -> tuple[Runner, dict[str, Any]]:
    """HF model as users run it (default sdpa attention, inference_mode); int8 = dynamic nn.Linear quant."""
    import torch

    torch.set_num_threads(threads)
    model = load_torch_model(info)
    notes: dict[str, Any] = {"attn_implementation": model.config._attn_implementation}
    if int8:
        qd = getattr(getattr(torch, "ao", None), "quantization", None)
        fn = getattr(qd, "quantize_dynamic", None) if qd is not None else None
        if fn is None:
            raise Unavailable("torch.ao.quantization.quantize_dynamic is missing in this torch")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = fn(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
            except Exception as e:  # removed/broken backends surface here
                raise Unavailable(f"quantize_dynamic failed: {e!r}") from e
        dep = sorted(
            {str(w.message).splitlines()[0][:90] for w in caught if "deprecat" in str(w.message).lower()}
        )
        notes.update(quantized_engine=torch.backends.quantized.engine, deprecation=dep)
    return TorchRunner(model, info.uses_token_types), notes


def trimformer_runner(
    info: ModelInfo, threads: int, quantize: str | None, calibration: Sequence[dict[str, np.ndarray]] | None,
    **options: Any,
) -> tuple[Runner, dict[str, Any]]:
    """trimformer.compile(hf_dir, ..., **options) per docs/contract.md; unavailable if the package does not
    import."""
    try:
        import trimformer
    except Exception as e:
        raise Unavailable(f"import trimformer failed: {e!r}") from e
    if not hasattr(trimformer, "compile"):
        raise Unavailable(f"trimformer ({getattr(trimformer, '__file__', '?')}) has no compile() yet")
    try:
        engine = trimformer.compile(
            str(info.hf_dir),
            quantize=quantize,
            threads=threads,
            calibration=list(calibration) if calibration is not None else None,
            **options,
        )
    except (ImportError, NotImplementedError) as e:  # native core not built / mode not implemented
        raise Unavailable(f"trimformer.compile failed: {e!r}") from e
    notes: dict[str, Any] = {k: str(getattr(engine, k)) for k in ("isa", "threads", "quantize", "attention")
                             if hasattr(engine, k)}
    notes.update({k: str(v) for k, v in options.items()})
    if quantize and "isa" in notes:  # which INT8 GEMM the level runs (amx / vnni at avx512)
        from trimformer import _core

        notes["int8_gemm"] = _core.gemm_s8_kernel(notes["isa"])
    with contextlib.suppress(Exception):  # storage notes are best effort: never fail a timing run
        notes.update(trimformer_storage(engine))
    uses_tt = info.uses_token_types

    def run(ids: np.ndarray, mask: np.ndarray, tt: np.ndarray) -> np.ndarray:
        return engine.run(ids, mask, tt if uses_tt else None)["last_hidden_state"]

    return run, notes


def trimformer_storage(engine: Any) -> dict[str, Any]:
    """What the compiled model stores: formats chosen per encoder Linear, the encoder Linear bytes against their
    FP32 bytes (out x in x 4), and the saved model directory's size on disk."""
    import trimformer
    from trimformer.cli.main import linear_rows

    rows = [r for r in linear_rows(engine) if r["name"].startswith("layers.")]
    stored = sum(r["bytes"] for r in rows)
    fp32 = sum(4 * r["shape"][0] * r["shape"][1] for r in rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = trimformer.save(engine, Path(tmp) / "model")
        on_disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"formats": dict(Counter(r["format"] for r in rows)), "linear_bytes": int(stored),
            "fp32_linear_bytes": int(fp32), "linear_vs_fp32": stored / fp32 if fp32 else None,
            "saved_bytes": int(on_disk)}


# --------------------------------------------------------------------------------------------- DeepSparse


def deepsparse_python() -> Path | None:
    py = DEEPSPARSE_VENV / "bin" / "python"
    return py if py.exists() else None


def _deepsparse_launch() -> tuple[Path, dict[str, str]]:
    """The DeepSparse venv's python and the environment its scripts run in (no analytics, nothing of this venv's)"""
    py = deepsparse_python()
    if py is None:
        raise Unavailable(f"not installed (run bench/deepsparse_env.sh to create {DEEPSPARSE_VENV})")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["NM_DISABLE_ANALYTICS"] = "1"
    return py, env


def _check_args(check: Inputs | None, tmp: Path) -> list[str]:
    """The check inputs saved under tmp for a DeepSparse script, and its arguments to read them and save its output"""
    if check is None:
        return []
    np.savez(tmp / "check.npz", input_ids=check[0], attention_mask=check[1], token_type_ids=check[2])
    return ["--check-in", str(tmp / "check.npz"), "--check-out", str(tmp / "check_out.npy")]


def _readable_tail(text: str, lines: int = 12) -> str:
    """The last lines of a DeepSparse script's output without the hex backtrace its aborts print (the readable lines
    say what failed, e.g. "Assertion at ...")"""
    return "\n".join([ln for ln in text.splitlines() if ln.strip() and not _HEXLINE.match(ln)][-lines:])


def run_deepsparse(
    onnx_path: Path,
    seqs: Sequence[int],
    batches: Sequence[int],
    threads: int,
    iters: int,
    warmup: int,
    max_time_s: float | None,
    vocab_size: int,
    seed: int,
    budget_ms: float | None,
    budget_batches: Sequence[int],
    check: Inputs | None,
    timeout_s: float = 3600.0,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run bench/deepsparse_runner.py in the DeepSparse venv; returns its JSON and the check output."""
    py, env = _deepsparse_launch()
    with tempfile.TemporaryDirectory(prefix="ds-bench-") as tmp:
        t = Path(tmp)
        cmd = [
            str(py),
            str(BENCH_DIR / "deepsparse_runner.py"),
            "--onnx",
            str(onnx_path),
            "--seqs",
            ",".join(map(str, seqs)),
            "--batches",
            ",".join(map(str, batches)),
            "--threads",
            str(threads),
            "--iters",
            str(iters),
            "--warmup",
            str(warmup),
            "--vocab-size",
            str(vocab_size),
            "--seed",
            str(seed),
            "--json-out",
            str(t / "out.json"),
        ]
        if max_time_s is not None:
            cmd += ["--max-time-s", str(max_time_s)]
        if budget_ms is not None:
            cmd += ["--budget-ms", str(budget_ms), "--budget-batches", ",".join(map(str, budget_batches))]
        cmd += _check_args(check, t)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        if proc.returncode != 0 or not (t / "out.json").exists():
            raise RuntimeError(f"deepsparse_runner exited {proc.returncode}: "
                               f"{_readable_tail(proc.stderr or proc.stdout)}")
        res = json.loads((t / "out.json").read_text())
        out = np.load(t / "check_out.npy") if (t / "check_out.npy").exists() else None
    return res, out


class DeepSparseWorker:
    """A DeepSparse engine in a process of its own (bench/deepsparse_worker.py in the DeepSparse venv) that times
    blocks of calls on request, so that a benchmark can interleave it with runtimes in its own process.
    `run_block(n)`: one untimed call, then n calls timed in the worker (around the engine call alone); returns
    their ms. `check_output`: its output on the check inputs given at start (None without them)."""

    def __init__(self, onnx_path: Path, batch: int, seq: int, threads: int, vocab_size: int, seed: int,
                 warmup: int = 3, check: Inputs | None = None, timeout_s: float = 1800.0):
        py, env = _deepsparse_launch()
        self._tmp = tempfile.TemporaryDirectory(prefix="ds-worker-")
        t = Path(self._tmp.name)
        cmd = [str(py), str(BENCH_DIR / "deepsparse_worker.py"), "--onnx", str(onnx_path), "--batch", str(batch),
               "--seq", str(seq), "--threads", str(threads), "--vocab-size", str(vocab_size), "--seed", str(seed),
               "--warmup", str(warmup), *_check_args(check, t)]
        self._log = open(t / "stderr.txt", "w")  # noqa: SIM115  (closed in close())
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                      text=True, env=env, bufsize=1)
        self._timeout_s = timeout_s
        self.info = self._reply()
        if not self.info.get("ready"):
            raise RuntimeError(f"deepsparse_worker did not start: {self.info}")
        out = t / "check_out.npy"
        self.check_output = np.load(out) if out.exists() else None

    def _reply(self) -> dict[str, Any]:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            self._proc.wait(timeout=self._timeout_s)
            self._log.flush()
            raise RuntimeError(f"deepsparse_worker exited {self._proc.returncode}: "
                               f"{_readable_tail(Path(self._log.name).read_text())}")
        return json.loads(line)

    def run_block(self, n: int) -> list[float]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"block {int(n)}\n")
        self._proc.stdin.flush()
        r = self._reply()
        if "ms" not in r:
            raise RuntimeError(f"deepsparse_worker: {r}")
        return [float(x) for x in r["ms"]]

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self._proc.stdin is not None
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        self._tmp.cleanup()
