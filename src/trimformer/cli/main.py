"""The `trimformer` command: compile, run, bench and inspect encoder models.

    trimformer compile path/to/hf-checkpoint --out model.tf --quantize int8-static
    trimformer info model.tf
    trimformer run model.tf --text "a sentence" --text "another"
    trimformer bench model.tf --seq 128 --batch 1 --iters 50

Errors print one line to stderr and exit with status 2 (--debug shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_ERROR = 2
ISA_CHOICES = ("auto", "avx512_vnni", "avx2", "scalar")
QUANTIZE_CHOICES = ("none", "bf16", "int8-dynamic", "int8-static")


class CLIError(Exception):
    """An expected failure: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------ helpers


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # pipes and captures: do not squeeze tables into 80 columns
    return console


def _isa(value: str | None) -> str | None:
    return None if value in (None, "", "auto") else value


def _quantize(value: str | None) -> str | None:
    return None if value in (None, "none") else value


def _dir_bytes(path: Path, pattern: str = "*.safetensors") -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _calibration(tokenizer_src: Any, n: int, progress: bool):
    """Deterministic calibration batches (real Wikipedia sentences), optionally behind a rich progress bar."""
    from ..pipelines import TokenizerNotFoundError, calibration_batches, load_tokenizer

    try:
        tok = load_tokenizer(tokenizer_src)
    except TokenizerNotFoundError as e:
        raise CLIError(f"int8-static calibration needs a tokenizer: {str(e).split(';')[0]}; pass --tokenizer") from None
    batches = calibration_batches(tok, n_samples=n)
    if not progress:
        return batches
    return _with_progress(batches, f"calibrating on {n} Wikipedia sentences")


def _with_progress(batches: list, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=len(batches))
        for b in batches:
            yield b
            bar.advance(task)


def load_model(path: str | Path, *, threads: int | None = None, isa: str | None = None,
               quantize: str | None = None, tokenizer: Any = None, calibration_samples: int = 128,
               progress: bool = False):
    """An Engine from a saved trimformer directory or (compiled now) a Hugging Face checkpoint directory."""
    from .. import load
    from ..runtime.engine import compile_encoder

    path = Path(path)
    if not path.exists():
        raise CLIError(f"{path}: no such model directory")
    if not path.is_dir():
        raise CLIError(f"{path}: not a directory (expected a trimformer model or a Hugging Face checkpoint)")
    if (path / "model.json").is_file():
        if quantize is not None:
            raise CLIError(f"{path} is already compiled; --quantize applies to Hugging Face checkpoints")
        return load(path, threads=threads, isa=isa)
    if not (path / "config.json").is_file():
        raise CLIError(f"{path}: neither a trimformer model (model.json) nor a Hugging Face checkpoint (config.json)")
    calib = None
    if quantize == "int8-static":
        calib = _calibration(tokenizer or path, calibration_samples, progress)
    return compile_encoder(path, quantize=quantize, calibration=calib, threads=threads, isa=isa)


def linear_rows(engine) -> list[dict[str, Any]]:
    """Per-Linear layer: name, shape, format, the kernel that runs it here, bits per weight, stored bytes, static
    activation qparams."""
    from ..formats.registry import get_format
    from ..runtime.engine import CSR_F32_WALK

    kernels = getattr(engine, "linear_kernels", None) or {}
    rows = []
    for name in engine.spec.linear_names():
        fmt = get_format(engine.formats[name])
        stored = {sfx: engine.tensors[name + sfx] for sfx in fmt.suffixes if name + sfx in engine.tensors}
        extra = {k: engine.tensors[name + k] for k in (".act_scale", ".act_zero_point") if name + k in engine.tensors}
        nbytes = sum(np.asarray(t).nbytes for t in (*stored.values(), *extra.values()))
        row = {"name": name, "shape": list(fmt.logical_shape(stored)), "format": fmt.name,
               "bits": fmt.bits_per_weight, "bytes": int(nbytes)}
        if name in kernels:
            row["kernel"] = kernels[name]
        timed = (engine.extra.get("dispatch") or {}).get(name)
        if timed and "ms" in timed:  # compile-time timings of the candidate formats on this layer's weight
            row["dispatch_ms"] = dict(timed["ms"])
            row["dispatch_tokens"] = timed.get("tokens")
            if "csr_f32_kernel" in timed:  # csr-f32 timed as generated code and as its plain walk
                row["dispatch_chosen"] = CSR_F32_WALK if timed["csr_f32_kernel"] == "walk" else "csr-f32"
        if extra:
            row["act_scale"] = float(np.asarray(extra[".act_scale"]).ravel()[0])
            row["act_zero_point"] = int(np.asarray(extra[".act_zero_point"]).ravel()[0])
        rows.append(row)
    return rows


def _linear_table(engine):
    from rich.table import Table

    rows = linear_rows(engine)
    timed = any("dispatch_ms" in r for r in rows)
    t = Table(title="Linear layers")
    cols = ["layer", "shape", "format", "kernel here", "bits/w", "bytes", "act scale", "act zp"]
    if timed:
        tokens = next(r["dispatch_tokens"] for r in rows if "dispatch_ms" in r)
        cols.append(f"dispatch (ms at {tokens} tokens, * chosen)")
    # a layer's name and format are never cut (rich shortens the widest columns of a table wider than the
    # console, and it cut "layers.0.attn_out" to "layers.0.attn_o…"); the kernel and dispatch cells wrap instead
    whole = {"layer": max((len(r["name"]) for r in rows), default=5),
             "format": max((len(r["format"]) for r in rows), default=6)}
    for col in cols:
        t.add_column(col, justify="left" if col in ("layer", "format", "kernel here") or col.startswith("dispatch")
                     else "right", min_width=whole.get(col), no_wrap=col in whole)
    for r in rows:
        cells = [r["name"], "x".join(map(str, r["shape"])), r["format"], r.get("kernel", "-"), f"{r['bits']:g}",
                 _fmt_bytes(r["bytes"]),
                 f"{r['act_scale']:.4g}" if "act_scale" in r else "-", str(r.get("act_zero_point", "-"))]
        if timed:
            ms = r.get("dispatch_ms", {})
            chosen = r.get("dispatch_chosen", r["format"])
            cells.append(", ".join(f"{f} {v:.3g}{'*' if f == chosen else ''}" for f, v in ms.items()) or "-")
        t.add_row(*cells)
    return t


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ----------------------------------------------------------------------------------------------- commands


def cmd_compile(args: argparse.Namespace) -> int:
    """Compile a Hugging Face checkpoint into a trimformer model directory."""
    from .. import save

    src, out = Path(args.src), Path(args.out)
    from ..models.decoder import is_decoder_source

    if is_decoder_source(src):
        from .llm_cmds import compile_decoder_cmd

        return compile_decoder_cmd(args, _console())
    if (src / "model.json").is_file():
        raise CLIError(f"{src} is already a trimformer model (model.json); compile takes a Hugging Face checkpoint")
    if out.resolve() == src.resolve():
        raise CLIError("--out must differ from the source checkpoint directory")
    if args.calibration_samples < 1:
        raise CLIError("--calibration-samples must be >= 1")
    quantize = _quantize(args.quantize)
    console = _console()
    t0 = time.perf_counter()
    if args.keep_float or args.quantize_head or args.reduce_range:
        from ..runtime.engine import compile_encoder

        if not (src / "config.json").is_file():
            raise CLIError(f"{src}: no config.json (expected a Hugging Face checkpoint directory)")
        calib = (_calibration(args.tokenizer or src, args.calibration_samples, not args.quiet)
                 if quantize == "int8-static" else None)
        engine = compile_encoder(src, quantize=quantize, calibration=calib, threads=args.threads,
                                 isa=_isa(args.isa), quantize_head=args.quantize_head, keep_float=args.keep_float,
                                 reduce_range=args.reduce_range)
    else:
        engine = load_model(src, threads=args.threads, isa=_isa(args.isa), quantize=quantize,
                            tokenizer=args.tokenizer, calibration_samples=args.calibration_samples,
                            progress=not args.quiet)
    save(engine, out)
    elapsed = time.perf_counter() - t0
    src_bytes, out_bytes = _dir_bytes(src), _dir_bytes(out)
    if args.verbose:
        console.print(_linear_table(engine))
        order = engine.extra.get("feature_order") or {}
        if order:  # runtime/feature_order.py
            before, after = (sum(v[j] for v in order.values()) for j in (0, 1))
            console.print(f"FFN features reordered in {len(order)} layer(s) for csr-int8: FFN2 1x4 blocks "
                          f"{before} -> {after} ({after / before:.3f}x)")
    counts = Counter(engine.formats.values())
    s = engine.spec
    ratio = f" ({src_bytes / out_bytes:.2f}x smaller)" if out_bytes and src_bytes > out_bytes else ""
    console.print(f"compiled {src} -> {out} in {elapsed:.1f} s")
    console.print(f"  {s.arch}, task {s.task}, {s.layers} layers, hidden {s.hidden}; quantize {quantize or 'none'}; "
                  f"linear formats: " + ", ".join(f"{n} {f}" for f, n in sorted(counts.items())))
    console.print(f"  weights {_fmt_bytes(src_bytes)} -> {_fmt_bytes(out_bytes)}{ratio}; ISA {engine.isa}; "
                  f"tokenizer {'copied' if engine.tokenizer_path else 'none (pass tokenizer= when running)'}")
    return 0


def model_info(path: Path, engine) -> dict[str, Any]:
    """Everything `info` reports, as a JSON-able dict."""
    from .. import __version__, _core

    saved = (path / "model.json").is_file()
    meta = json.loads((path / "model.json").read_text()) if saved else {}
    counts = Counter(engine.formats.values())
    rows = linear_rows(engine)
    return {
        "path": str(path),
        "kind": "trimformer" if saved else "huggingface-checkpoint",
        "spec": engine.spec.to_json(),
        "quantize": engine.quantize,
        "formats": dict(sorted(counts.items())),
        "linear_params": int(sum(int(np.prod(r["shape"])) for r in rows)),
        "linear_bytes": int(sum(r["bytes"] for r in rows)),
        "stored_bytes": int(sum(np.asarray(t).nbytes for t in engine.tensors.values())),
        "file_bytes": _dir_bytes(path),
        "packed_bytes": engine.packed_bytes,
        "isa": engine.isa,
        "cpu_isa": _core.detect_isa(),
        "threads": engine.threads,
        "tokenizer": str(engine.tokenizer_path) if engine.tokenizer_path else None,
        "schema_version": meta.get("schema_version"),
        "saved_by": meta.get("trimformer_version"),
        "trimformer_version": __version__,
    }


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a model: spec, weight formats, sizes, ISA."""
    from rich.table import Table

    path = Path(args.model)
    engine = load_model(path, threads=args.threads, isa=_isa(args.isa))
    info = model_info(path, engine)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    console = _console()
    s = info["spec"]
    t = Table(title=f"{path}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("kind", info["kind"] + ("" if info["kind"] == "trimformer" else " (compiled in memory, FP32)"))
    t.add_row("architecture", f"{s['arch']} ({s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, "
              f"ffn {s['intermediate']}, act {s['act']})")
    t.add_row("task", s["task"])
    if s.get("id2label"):
        labels = list(s["id2label"].values())
        t.add_row("labels", ", ".join(labels[:12]) + (f", … ({len(labels)})" if len(labels) > 12 else ""))
    t.add_row("vocab / positions", f"{s['vocab']} / {s['max_positions']}")
    t.add_row("quantize", str(info["quantize"] or "none"))
    t.add_row("linear formats", ", ".join(f"{n} {f}" for f, n in info["formats"].items()))
    t.add_row("linear weights", f"{info['linear_params'] / 1e6:.2f} M params, {_fmt_bytes(info['linear_bytes'])}")
    t.add_row("stored tensors", _fmt_bytes(info["stored_bytes"]))
    t.add_row("on disk (safetensors)", _fmt_bytes(info["file_bytes"]))
    t.add_row("packed in memory", _fmt_bytes(info["packed_bytes"]))
    t.add_row("ISA", f"{info['isa']} (CPU supports {info['cpu_isa']})")
    t.add_row("threads", str(info["threads"]))
    t.add_row("tokenizer", info["tokenizer"] or "none")
    if info["saved_by"]:
        t.add_row("saved by", f"trimformer {info['saved_by']} (schema {info['schema_version']})")
    console.print(t)
    if args.verbose:
        console.print(_linear_table(engine))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline matching the model's task on --text inputs and print the results."""
    from ..pipelines import DEFAULT_TASK_FOR_HEAD, normalize_task, pipeline
    from ..pipelines.base import jsonable

    if not args.text:
        raise CLIError("give at least one --text")
    engine = load_model(args.model, threads=args.threads, isa=_isa(args.isa))
    task = normalize_task(args.task) if args.task else DEFAULT_TASK_FOR_HEAD[engine.spec.task]
    opts: dict[str, Any] = {}
    if task == "text-classification" and args.top_k is not None:
        opts["top_k"] = args.top_k
    if task == "token-classification":
        opts["aggregation_strategy"] = args.aggregation
    if task == "question-answering" and args.top_k is not None:
        opts["top_k"] = args.top_k
    if task in ("feature-extraction", "sentence-embedding") and args.pooling is not None:
        opts["pooling"] = None if args.pooling == "none" else args.pooling
    pipe = pipeline(task, model=engine, tokenizer=args.tokenizer, batch_size=args.batch_size,
                    max_length=args.max_length)
    if task == "question-answering":
        if not args.question:
            raise CLIError("question-answering needs --question (each --text is a context)")
        results = pipe(question=args.question, context=list(args.text), **opts)
    elif task == "text-classification" and args.text_pair:
        if len(args.text_pair) != len(args.text):
            raise CLIError(f"{len(args.text_pair)} --text-pair for {len(args.text)} --text")
        results = pipe(list(zip(args.text, args.text_pair, strict=True)), **opts)
    else:
        results = pipe(list(args.text), **opts)
    if args.json:
        print(json.dumps({"task": task, "results": [{"text": t, "result": jsonable(r)}
                                                    for t, r in zip(args.text, results, strict=True)]}, indent=1))
        return 0
    _print_results(task, args, results)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the model's pipeline over HTTP until interrupted (trimformer.serve: endpoints and limits)."""
    import signal

    from ..models.decoder import is_decoder_source
    from ..pipelines import DEFAULT_TASK_FOR_HEAD, normalize_task, pipeline
    from ..serve import ModelServer

    src = Path(args.model)
    if is_decoder_source(src):
        from ..pipelines.text_generation import TextGenerationPipeline
        from .llm_cmds import load_decoder_engine

        if args.task not in (None, "text-generation"):
            raise CLIError(f"{src} is a decoder: it serves text-generation, not {args.task}")
        if args.quantize != "none":
            raise CLIError("--quantize applies to encoders; decoders take --weights")
        engine = load_decoder_engine(src, args.weights, args.threads, _isa(args.isa))
        pipe: Any = TextGenerationPipeline(engine)
    else:
        if args.weights is not None:
            raise CLIError("--weights applies to decoders")
        engine = load_model(src, threads=args.threads, isa=_isa(args.isa), quantize=_quantize(args.quantize),
                            tokenizer=args.tokenizer, progress=True)
        task = normalize_task(args.task) if args.task else DEFAULT_TASK_FOR_HEAD[engine.spec.task]
        pipe = pipeline(task, model=engine, tokenizer=args.tokenizer, batch_size=args.batch_size,
                        max_length=args.max_length)
    try:
        server = ModelServer(pipe, host=args.host, port=args.port, max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms, max_inputs=args.max_inputs,
                             max_body_bytes=args.max_body_bytes, model_name=str(src), access_log=args.access_log)
    except OSError as e:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    endpoint = "/generate" if pipe.task == "text-generation" else "/predict"
    _console().print(f"serving {src} ({pipe.task}) on {server.url}: POST {endpoint}, GET /info, GET /health "
                     "(Ctrl-C stops)")

    def stop(_signum: int, _frame: Any) -> None:  # SIGTERM (service managers, containers): stop as on Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    _console().print("stopped")
    return 0


def _print_results(task: str, args: argparse.Namespace, results: Any) -> None:
    from rich.table import Table

    console = _console()
    t = Table(title=task)
    if task == "text-classification":
        for c in ("text", "label", "score"):
            t.add_column(c)
        for text, r in zip(args.text, results, strict=True):
            for i, d in enumerate(r if isinstance(r, list) else [r]):
                t.add_row(_short(text) if i == 0 else "", d["label"], f"{d['score']:.4f}")
    elif task == "token-classification":
        for c in ("text", "entity", "word", "span", "score"):
            t.add_column(c)
        for text, ents in zip(args.text, results, strict=True):
            if not ents:
                t.add_row(_short(text), "-", "", "", "")
            for i, e in enumerate(ents):
                t.add_row(_short(text) if i == 0 else "", e.get("entity_group", e.get("entity")), e["word"],
                          f"{e['start']}:{e['end']}", f"{e['score']:.4f}")
    elif task == "question-answering":
        for c in ("context", "answer", "span", "score"):
            t.add_column(c)
        for text, r in zip(args.text, results, strict=True):
            for i, a in enumerate(r if isinstance(r, list) else [r]):
                t.add_row(_short(text) if i == 0 else "", repr(a["answer"]), f"{a['start']}:{a['end']}",
                          f"{a['score']:.4f}")
        console.print(f"question: {args.question}")
    else:
        for c in ("text", "shape", "norm", "values"):
            t.add_column(c)
        for text, r in zip(args.text, results, strict=True):
            v = np.asarray(r, dtype=np.float32)
            head = ", ".join(f"{x:+.4f}" for x in v.ravel()[:4])
            t.add_row(_short(text), "x".join(map(str, v.shape)), f"{np.linalg.norm(v.ravel()):.4f}", head + ", …")
    console.print(t)


def cmd_bench(args: argparse.Namespace) -> int:
    """Time Engine.run on random token ids (trimformer alone)."""
    from ..pipelines.base import usable_positions

    if args.seq < 1 or args.batch < 1 or args.iters < 1 or args.warmup < 0:
        raise CLIError("--seq, --batch and --iters must be >= 1 and --warmup >= 0")
    engine = load_model(args.model, threads=args.threads, isa=_isa(args.isa), quantize=_quantize(args.quantize),
                        tokenizer=args.tokenizer, progress=not args.json)
    limit = usable_positions(engine)
    if args.seq > limit:
        raise CLIError(f"--seq {args.seq} exceeds the model's {limit} positions")
    spec = engine.spec
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, spec.vocab, size=(args.batch, args.seq), dtype=np.int64)
    ids[ids == spec.pad_token_id] = (spec.pad_token_id + 1) % spec.vocab
    mask = np.ones_like(ids)
    for _ in range(args.warmup):
        engine.run(ids, mask)
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        engine.run(ids, mask)
        times.append((time.perf_counter() - t0) * 1e3)
    median = statistics.median(times)
    p90 = float(np.percentile(times, 90))
    res = {
        "model": str(args.model), "arch": spec.arch, "task": spec.task, "quantize": engine.quantize,
        "isa": engine.isa, "threads": engine.threads, "seq": args.seq, "batch": args.batch, "iters": args.iters,
        "warmup": args.warmup, "median_ms": median, "p90_ms": p90, "mean_ms": statistics.fmean(times),
        "min_ms": min(times), "sequences_per_s": args.batch / (median / 1e3),
        "tokens_per_s": args.batch * args.seq / (median / 1e3),
        "note": "trimformer alone; side-by-side peers (PyTorch, ONNX Runtime, DeepSparse) live in bench/bench_dense.py",
    }
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    from rich.table import Table

    t = Table(title=f"trimformer bench: {args.model}")
    for c in ("seq", "batch", "threads", "ISA", "quantize", "median ms", "p90 ms", "seq/s", "tokens/s"):
        t.add_column(c, justify="right")
    t.add_row(str(args.seq), str(args.batch), str(engine.threads), engine.isa, engine.quantize or "none",
              f"{median:.2f}", f"{p90:.2f}", f"{res['sequences_per_s']:.1f}", f"{res['tokens_per_s']:.0f}")
    console = _console()
    console.print(t)
    console.print(f"{args.iters} timed runs after {args.warmup} warm-up runs of Engine.run on random token ids. "
                  "This measures trimformer alone; side-by-side comparisons with peers live in bench/bench_dense.py.")
    return 0


# ------------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the `trimformer` command."""
    from .. import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line errors")
    runtime = argparse.ArgumentParser(add_help=False)
    runtime.add_argument("--threads", type=int, default=None, help="threads (default: TRIMFORMER_THREADS or all cores)")
    runtime.add_argument("--isa", choices=ISA_CHOICES, default="auto", help="force a lower ISA level")

    p = argparse.ArgumentParser(prog="trimformer", description="Compress Transformer encoders and run them fast on CPUs.")
    p.add_argument("--version", action="version", version=f"trimformer {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("compile", parents=[common, runtime], help="compile a Hugging Face checkpoint",
                       description="Compile a Hugging Face encoder checkpoint directory into a trimformer model.")
    c.add_argument("src", metavar="SRC", help="Hugging Face checkpoint directory (config.json + *.safetensors), "
                   "or a decoder LLM: HF / compressed directory or .gguf file")
    c.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory (written atomically)")
    c.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none")
    c.add_argument("--weights", default=None, help="decoders: f32, bf16, w8a8, llm-int8, int8-wo, gguf, sparse, "
                   "sparse-int8 or a k-bit TYPE[-gGROUP] (int4-g128, nf4-g64, fp8-e4m3, ...)")
    c.add_argument("--calibration-samples", type=int, default=128, metavar="N",
                   help="int8-static: Wikipedia calibration sentences (default 128)")
    c.add_argument("--tokenizer", default=None, help="tokenizer.json or directory for calibration (default: SRC)")
    c.add_argument("--keep-float", action="append", default=[], metavar="NAME",
                   help="Linear name or suffix kept in float32 when quantizing (repeatable, e.g. .ffn2)")
    c.add_argument("--quantize-head", action="store_true", help="also quantize the task head")
    c.add_argument("--reduce-range", action="store_true",
                   help="INT8: block-sparse weights in [-64, 64] (block-int7) where the CPU multiplies them faster "
                   "(AVX2 without VNNI); one bit of weight precision for speed")
    c.add_argument("--verbose", "-v", action="store_true", help="print the per-Linear format table")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_compile)

    r = sub.add_parser("run", parents=[common, runtime], help="run the model's pipeline on texts",
                       description="Run the pipeline that matches the model's task and print the results.")
    r.add_argument("model", metavar="MODEL", help="trimformer model or Hugging Face checkpoint directory")
    r.add_argument("--text", "-t", action="append", default=[], help="input text (repeatable); the context for QA")
    r.add_argument("--text-pair", action="append", default=[], help="second text per --text (text-classification)")
    r.add_argument("--question", help="question-answering: the question")
    r.add_argument("--task", help="pipeline task (default: the model's head)")
    r.add_argument("--top-k", type=int, default=None, help="labels/answers per input")
    r.add_argument("--aggregation", default="simple", choices=("none", "simple", "first", "average", "max"),
                   help="token-classification aggregation (default simple)")
    r.add_argument("--pooling", choices=("mean", "cls", "max", "none"), default=None,
                   help="feature-extraction pooling (sentence-embedding default: mean)")
    r.add_argument("--tokenizer", default=None, help="tokenizer.json or directory (default: the model's)")
    r.add_argument("--max-length", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", parents=[common, runtime], help="time Engine.run (trimformer alone)",
                       description="Time Engine.run on random token ids: median/p90 latency and throughput. "
                                   "Side-by-side peers (PyTorch, ONNX Runtime, ...) live in bench/bench_dense.py.")
    b.add_argument("model", metavar="MODEL", help="trimformer model or Hugging Face checkpoint directory")
    b.add_argument("--seq", type=int, default=128)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--iters", type=int, default=50)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                   help="quantize a Hugging Face checkpoint before timing")
    b.add_argument("--tokenizer", default=None, help="int8-static calibration tokenizer (default: MODEL)")
    b.add_argument("--json", action="store_true", help="print JSON")
    b.set_defaults(func=cmd_bench)

    i = sub.add_parser("info", parents=[common, runtime], help="describe a model",
                       description="Show a model's spec, weight formats, sizes and ISA.")
    i.add_argument("model", metavar="MODEL", help="trimformer model or Hugging Face checkpoint directory")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--verbose", "-v", action="store_true", help="also print the per-Linear format table")
    i.set_defaults(func=cmd_info)

    sv = sub.add_parser("serve", parents=[common, runtime], help="serve the model's pipeline over HTTP (JSON)",
                        description="Serve a model over HTTP: POST /predict (encoders) or /generate (decoders), "
                                    "GET /info and /health; with --max-batch > 1, requests that arrive together share "
                                    "a pipeline call (dynamic batching). Endpoints and errors: trimformer.serve's "
                                    "docstring.")
    sv.add_argument("model", metavar="MODEL", help="trimformer model, Hugging Face checkpoint directory, or a "
                    "decoder (.gguf file, checkpoint)")
    sv.add_argument("--task", help="pipeline task (default: the model's head; decoders: text-generation)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    sv.add_argument("--max-batch", type=int, default=1,
                    help="dynamic batching: inputs of queued requests joined into one pipeline call (default 1: off)")
    sv.add_argument("--max-wait-ms", type=float, default=0.0,
                    help="dynamic batching: how long a queued request waits for others to join its call (default 0)")
    sv.add_argument("--batch-size", type=int, default=32, help="the pipeline's batch size (default 32)")
    sv.add_argument("--max-inputs", type=int, default=256, help="inputs per request (default 256)")
    sv.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body limit (default 1 MiB)")
    sv.add_argument("--tokenizer", default=None, help="tokenizer.json or directory (default: the model's)")
    sv.add_argument("--max-length", type=int, default=None, help="tokens per input (default: the model's limit)")
    sv.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                    help="encoder checkpoints compiled now: INT8 (int8-static calibrates on Wikipedia sentences)")
    sv.add_argument("--weights", default=None, help="decoders compiled now: their weight format (as compile)")
    sv.add_argument("--access-log", action="store_true", help="log each request to stderr")
    sv.set_defaults(func=cmd_serve)

    from .compress_cmds import register as register_compress
    from .llm_cmds import register as register_llm
    from .llm_compress import register as register_llm_compress  # quantize-llm, prune-llm

    register_compress(sub, common, runtime)
    register_llm(sub, common, runtime)
    register_llm_compress(sub)
    return p


def _limit_blas_threads() -> None:
    """numpy's OpenBLAS leaves its worker threads spinning after each BLAS call, and on a machine with few cores
    they take a core from the engine's threads (a MiniLM-L6 batch-1 pass: about 6.2 ms in two benchmark runs, 2.26 ms
    with BLAS on one thread; bench/harness.py). The commands that run engines own their process: there BLAS runs on
    one thread (threadpoolctl, where installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    global _BLAS_LIMIT
    _BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")


_BLAS_LIMIT = None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `trimformer` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) in ("run", "bench", "serve", "eval"):
        _limit_blas_threads()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("trimformer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not isinstance(e, (CLIError, OSError, ValueError, TypeError, KeyError)):
            msg = f"{type(e).__name__}: {msg} (run with --debug for the traceback)"
        print(f"trimformer: error: {msg}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
