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
                      max_samples=args.max_samples, seed=args.seed, threads=args.threads)
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
    f.set_defaults(func=cmd_finetune)
    return f


def cmd_eval(args: argparse.Namespace) -> int:
    from ..eval import evaluate_task

    res = evaluate_task(args.model, args.task, split=args.split, max_samples=args.max_samples,
                        batch_size=args.batch_size, max_length=args.max_length, threads=args.threads)
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
    e.add_argument("--json", action="store_true", help='print {"accuracy", "macro_f1", "n"}')
    e.set_defaults(func=cmd_eval)
    return e


def register(sub: Any, common: argparse.ArgumentParser, runtime: argparse.ArgumentParser) -> None:
    """Add the compression subcommands to the `trimformer` parser's subparsers."""
    add_finetune_parser(sub, [common])
    add_eval_parser(sub, [common, runtime])
