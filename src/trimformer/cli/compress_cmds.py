"""`trimformer finetune`, `trimformer eval` and `trimformer compress`: the compression toolkit's subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _progress_bar(description: str):
    """A (start, update, stop) triple driving a rich progress bar on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True))
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..compress.training import TrainConfig, finetune

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                      max_samples=args.max_samples, seed=args.seed, threads=args.threads, device=args.device,
                      freeze_embeddings=args.freeze_embeddings)
    summary = finetune(args.model, args.out, args.task, cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps({"out": args.out, "steps": summary["steps"], "seconds": round(summary["seconds"], 1)}))
    return 0


def add_finetune_parser(sub: Any, parents: list) -> argparse.ArgumentParser:
    f = sub.add_parser("finetune", parents=parents, help="fine-tune an encoder + classification head on a task",
                       description="Dense fine-tuning (AdamW, linear warmup/decay) on the task's train split; "
                                   "writes a Hugging Face checkpoint directory atomically.")
    f.add_argument("--task", required=True, choices=("wiki-topics",))
    f.add_argument("--model", required=True, metavar="DIR", help="Hugging Face encoder checkpoint directory")
    f.add_argument("--out", "-o", required=True, metavar="DIR")
    f.add_argument("--epochs", type=float, default=2.0)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--lr", type=float, default=5e-5)
    f.add_argument("--max-length", type=int, default=128)
    f.add_argument("--max-samples", type=int, default=None, help="train samples per epoch (default: all)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    f.add_argument("--device", default="cpu", help="torch training device: cpu (default), cuda, cuda:N")
    f.add_argument("--freeze-embeddings", action="store_true", help="keep the word-embedding matrix fixed")
    f.set_defaults(func=cmd_finetune)
    return f


def cmd_eval(args: argparse.Namespace) -> int:
    from ..eval import embedding_fidelity, evaluate_task

    isa = None if args.isa in (None, "auto") else args.isa
    if args.perplexity:
        from ..llm_eval import evaluate_perplexity

        res = evaluate_perplexity(args.model, weights=args.weights, threads=args.threads,
                                  n_tokens=args.perplexity_tokens, activations=args.activations,
                                  progress=not args.json)
        if args.json:
            print(json.dumps({"perplexity": res["perplexity"], "tokens": res["tokens"]}))
        else:
            print(f"perplexity {res['perplexity']:.4f} over {res['tokens']} predicted tokens (held-out Wikipedia "
                  f"slice, {res['window']}-token windows; {res['seconds']:.1f} s in the runtime, weights "
                  f"{res['weights']})")
        return 0
    if args.fidelity_to:
        fid = embedding_fidelity(args.model, args.fidelity_to, n=args.max_samples or 256,
                                 batch_size=args.batch_size, max_length=args.max_length)
        if args.json:
            print(json.dumps(fid))
        else:
            print(f"embedding fidelity vs {args.fidelity_to} (n={fid['n']} test sentences, mean-pooled): "
                  f"mean cosine {fid['mean_cosine']:.5f}, min {fid['min_cosine']:.5f}")
        return 0
    res = evaluate_task(args.model, args.task, split=args.split, max_samples=args.max_samples,
                        batch_size=args.batch_size, max_length=args.max_length, threads=args.threads, isa=isa)
    if args.json:
        print(json.dumps({"accuracy": res["accuracy"], "macro_f1": res["macro_f1"], "n": res["n"]}))
    else:
        print(f"{args.task} ({args.split}, n={res['n']}): accuracy {100 * res['accuracy']:.2f}%  "
              f"macro-F1 {100 * res['macro_f1']:.2f}%  ({res['seconds']:.1f} s in the runtime)")
    return 0


def add_eval_parser(sub: Any, parents: list) -> argparse.ArgumentParser:
    """The `eval` subcommand (one place to add metrics such as --perplexity)."""
    e = sub.add_parser("eval", parents=parents, help="evaluate a runtime model on a task",
                       description="Accuracy and macro-F1 of a trimformer model (or a Hugging Face checkpoint, "
                                   "compiled in float32) on the task's deterministic split, run by the runtime.")
    e.add_argument("model", metavar="MODEL_DIR", help="trimformer model or Hugging Face checkpoint directory")
    e.add_argument("--task", default="wiki-topics", choices=("wiki-topics",))
    e.add_argument("--split", default="test", choices=("train", "validation", "test"))
    e.add_argument("--max-samples", type=int, default=None)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--max-length", type=int, default=128)
    e.add_argument("--fidelity-to", metavar="DENSE_DIR", default=None,
                   help="feature extraction: cosine of MODEL's mean-pooled embeddings to DENSE_DIR's instead of "
                        "task accuracy (over --max-samples test sentences, default 256)")
    e.add_argument("--perplexity", action="store_true",
                   help="decoder LLMs: perplexity on the documented held-out slice (docs/llm.md), computed by the "
                        "runtime; MODEL is a trimformer decoder, a HF / compressed-LLM directory or a .gguf file")
    e.add_argument("--weights", default=None, help="--perplexity: weight format when compiling a checkpoint "
                   "(f32, w8a8, sparse, sparse-int8, int4-g128, gguf, ...; default f32 or the checkpoint's own codes)")
    e.add_argument("--activations", choices=("int8",), default=None,
                   help="--perplexity: int8 activations on 4-bit integer weights (W4A8)")
    e.add_argument("--perplexity-tokens", type=int, default=8192, help=argparse.SUPPRESS)
    e.add_argument("--json", action="store_true",
                   help='print {"accuracy", "macro_f1", "n"} (or {"perplexity", "tokens"})')
    e.set_defaults(func=cmd_eval)
    return e


def cmd_compress(args: argparse.Namespace) -> int:
    from ..compress.recipes import load_recipe, run_recipe

    recipe = load_recipe(args.recipe)  # validated completely before any work
    bars = []

    def progress(label: str):
        bar, update = _progress_bar(label)
        bar.start()
        bars.append(bar)

        def step(done: int, total: int) -> None:
            update(done, total)
            if done >= total:
                bar.stop()
        return step

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        summary = run_recipe(recipe, args.model, args.task, args.out, log=None if args.quiet else log,
                             progress=None if args.quiet else progress, evaluate=not args.no_eval,
                             threads=args.threads, device=args.device, stop_after=args.stop_after,
                             resume=args.resume)
    finally:
        for b in bars:
            b.stop()
    if "stopped_after" in summary:
        stopped = {"recipe": recipe.name, "stopped_after": summary["stopped_after"],
                   "checkpoint": summary["checkpoint"], "seconds": round(summary["compress_seconds"], 1)}
        print(json.dumps(stopped) if args.json else
              f"recipe {recipe.name}: stopped after stage {stopped['stopped_after']} -> {stopped['checkpoint']} "
              f"(continue with --resume)")
        return 0
    row = {"recipe": recipe.name, "out": args.out, "seconds": round(summary["compress_seconds"], 1),
           "linear_formats": summary["linear_formats"],
           "stages": [{"stage": s["stage"], "seconds": round(s["seconds"], 1)} for s in summary["stages"]]}
    if "eval" in summary:
        row.update({k: summary["eval"][k] for k in ("accuracy", "macro_f1", "n")})
    if args.json:
        print(json.dumps(row))
    else:
        print(f"recipe {recipe.name}: {len(summary['stages'])} stages in {row['seconds']:.0f} s -> {args.out}")
        for s in row["stages"]:
            print(f"  {s['stage']:<16} {s['seconds']:>8.1f} s")
        print(f"  formats: {row['linear_formats']}")
        if "accuracy" in row:
            print(f"  runtime {summary['eval']['split']} accuracy {100 * row['accuracy']:.2f}%  "
                  f"macro-F1 {100 * row['macro_f1']:.2f}%  (n={row['n']})")
    return 0


def add_compress_parser(sub: Any, parents: list) -> argparse.ArgumentParser:
    c = sub.add_parser("compress", parents=parents, help="run a compression recipe (YAML)",
                       description="Run the ordered stages of a recipe (finetune, prune, distill, quantize, "
                                   "mixed-precision) and write DIR/hf (compressed HF checkpoint), DIR/runtime "
                                   "(trimformer model) and DIR/summary.json.")
    c.add_argument("--recipe", required=True, metavar="FILE.yaml")
    c.add_argument("--model", required=True, metavar="DIR", help="Hugging Face checkpoint (e.g. from finetune)")
    c.add_argument("--task", default="wiki-topics", choices=("wiki-topics",))
    c.add_argument("--out", "-o", required=True, metavar="DIR")
    c.add_argument("--no-eval", action="store_true", help="skip the runtime evaluation on the test split")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress bars or stage logs")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.add_argument("--device", default=None,
                   help="training device of every stage that trains (cuda, cuda:N; default: the recipe's, cpu)")
    c.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after stage N (a training or pruning stage), keeping its checkpoint in DIR.stages")
    c.add_argument("--resume", action="store_true",
                   help="continue from the last stage checkpoint in DIR.stages made by the same recipe and model")
    c.set_defaults(func=cmd_compress)
    return c


def register(sub: Any, common: argparse.ArgumentParser, runtime: argparse.ArgumentParser) -> None:
    """Add the compression subcommands to the `trimformer` parser's subparsers."""
    add_finetune_parser(sub, [common])
    add_eval_parser(sub, [common, runtime])
    add_compress_parser(sub, [common, runtime])
