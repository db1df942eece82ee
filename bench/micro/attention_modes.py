"""Attention matmul precision side by side: the same compiled encoder (random weights, Linear layers pruned and
static INT8 as in bench_dense) with its attention in INT8, BF16 and float32, timed in alternating rounds in one
process. It backs runtime.engine.default_attention's choice.

    python bench/micro/attention_modes.py --out bench/results/attention_bf16_amx
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import peers  # noqa: E402
from harness import alternate_by_time, cpu_model  # noqa: E402
from trimformer import _core  # noqa: E402
from trimformer.runtime.engine import compile_encoder  # noqa: E402


def measure(model: str, seq: int, batch: int, modes: list[str], sparsity: float, rounds: int, seconds: float,
            threads: int) -> dict[str, float]:
    info = peers.prepare_model(model, sparsity=sparsity, pattern="block")
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, info.vocab_size - 1, size=(batch, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    calib = [{"input_ids": ids[:1], "attention_mask": mask[:1]}]
    engines = {m: compile_encoder(info.hf_dir, quantize="int8-static", calibration=calib, threads=threads,
                                  attention=m) for m in modes}
    return alternate_by_time({m: functools.partial(eng.run, ids, mask) for m, eng in engines.items()}, rounds, seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="bert-base:128:1,bert-base:384:1,bert-base:128:16,distilbert:128:1",
                    help="model:seq:batch, comma separated")
    ap.add_argument("--modes", default="int8,bf16,f32")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="per mode and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/attention_modes")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    rows = []
    for cfg in args.configs.split(","):
        model, seq, batch = cfg.split(":")
        ms = measure(model, int(seq), int(batch), modes, args.sparsity, args.rounds, args.seconds, args.threads)
        rows.append({"model": model, "seq": int(seq), "batch": int(batch), "ms": ms})
        print(cfg, {m: round(v, 2) for m, v in ms.items()}, file=sys.stderr)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": git,
            "command": "python " + " ".join(sys.argv), "cpu": cpu_model(), "isa": _core.detect_isa(),
            "gemm_bf16": _core.gemm_bf16_kernel(), "gemm_s8": _core.gemm_s8_kernel(""), "threads": args.threads,
            "sparsity": args.sparsity, "rounds": args.rounds}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Attention precision side by side ({meta['date']}, git {git})", "",
             f"Command: `{meta['command']}`", "",
             f"{args.sparsity:.0%} block-sparse static INT8 Linears (random weights, as bench_dense), {args.threads} "
             f"threads, {args.rounds} alternating rounds of {args.seconds} s per mode, median ms per pass. "
             f"Kernels: BF16 matmuls on {meta['gemm_bf16']}, INT8 on {meta['gemm_s8']}. CPU: {meta['cpu']}.", ""]
    others = [m for m in modes if m != "int8"] if "int8" in modes else []  # each against INT8 attention
    lines += ["| model | seq | batch | " + " | ".join(modes) + "".join(f" | {m} / int8" for m in others) + " |",
              "|---|---|---|" + "---|" * (len(modes) + len(others))]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seq']} | {r['batch']} | " +
                     " | ".join(f"{r['ms'][m]:.2f}" for m in modes) +
                     "".join(f" | {r['ms'][m] / r['ms']['int8']:.2f}x" for m in others) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json/.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
