"""A/B of an executor setting on single Linears, in one process: for each BERT-base shape two runners of the same
stored weight, one built with the environment variable set (the engine reads its A/B settings when it is built) and
one without, take turns cycle by cycle (the order reversing each cycle), each timing the best of a block of calls
(LinearRunner.time, cold weights, an untimed call first). A slow phase of a shared host then falls on both, and the
report gives each cycle's ratio (default / with the setting): its median and quartiles, and each runner's median.

    python bench/micro/ab_env_kernels.py --env TRIMFORMER_BSR_TRANSPOSE16=1 --format block-int8 --tokens 128 \
        --out bench/results/ab_env_kernels_example
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import (  # noqa: E402
    command_line,
    env_setting,
    report_head,
    setting_ratios,
    setting_table,
    settings,
    write_report,
)

from trimformer import _core  # noqa: E402
from trimformer.formats.sparsity import magnitude_mask  # noqa: E402
from trimformer.runtime.engine import ACTIVATION_MODES, timing_tensors  # noqa: E402

SHAPES = {"qkv": (2304, 768), "ffn1": (3072, 768), "ffn2": (768, 3072), "attn_out": (768, 768)}


def runner_with(stored: dict, threads: int, env: tuple[str, str] | None) -> _core.LinearRunner:
    """A runner built with the variable set (env) or unset (None); the process environment is restored after"""
    with settings(dict([env]) if env else {}):
        return _core.LinearRunner(stored, "x", "", threads)


def ab_shape(w: np.ndarray, fmt: str, env: tuple[str, str], tokens: int, cycles: int, block: int,
             threads: int, activations: str = "dynamic") -> dict[str, list[float]]:
    """{"default": [...], "set": [...]} seconds per cycle (best of block calls each); activations as
    time_formats' (INT8 formats: "dynamic", "static" or "u8")"""
    stored, u8 = timing_tensors(w, fmt, activations)
    runners = {"default": runner_with(stored, threads, None), "set": runner_with(stored, threads, env)}
    out: dict[str, list[float]] = {"default": [], "set": []}
    order = ["default", "set"]
    for c in range(cycles):
        for name in order if c % 2 == 0 else order[::-1]:
            runners[name].time(tokens, 1, True, False, u8)
            out[name].append(runners[name].time(tokens, block, True, False, u8))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", required=True, help="NAME=VALUE of the setting under test")
    ap.add_argument("--format", default="block-int8")
    ap.add_argument("--pattern", default="block")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--block", type=int, default=10, help="calls per timing (best of)")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--activations", choices=ACTIVATION_MODES, default="dynamic",
                    help="INT8 input as bench_sparse_kernels.py's --activations")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    name, value = env_setting(ap, args.env)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if args.cycles < 1 or args.block < 1 or args.tokens < 1:
        ap.error("--cycles, --block and --tokens must be positive")
    if any(s not in SHAPES for s in shapes):
        ap.error(f"shapes are among {', '.join(SHAPES)}")
    rng = np.random.default_rng(0)
    rows = []
    for label in shapes:
        n, k = SHAPES[label]
        w = rng.standard_normal((n, k)).astype(np.float32)
        w *= magnitude_mask(w, args.sparsity, args.pattern)
        t = ab_shape(w, args.format, (name, value), args.tokens, args.cycles, args.block, args.threads,
                     args.activations)
        rows.append({"shape": label, "per_cycle_s": t, **setting_ratios(t, label, args.env)})
    lines = report_head(
        f"A/B of {args.env} on single Linears, in one process", command_line(argv),
        f"{args.format} on {args.pattern} {args.sparsity:.0%} weights, {args.tokens} tokens per call, {args.threads} "
        f"thread(s), INT8 input {args.activations}, cold weights: per cycle each runner's best of {args.block} "
        f"calls, the two taking turns over {args.cycles} cycles. Ratio: the default's time over the time with {args.env}, per cycle (below 1: the "
        "default is faster).", args.note)
    lines += setting_table("shape", rows, "shape")
    write_report(args.out, {"command": command_line(argv), "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
