"""Two questions of how a single Linear is timed, dense INT8 and 90% block-sparse INT8 on the BERT-base shapes, cold
weights. The timings of a shape take turns, each the best of a block of timings, so a slow phase of the host falls
on all of them; the report gives their medians over the cycles and each protocol's sparse / dense ratio.

--compare region: `LinearRunner.time` with the calls in one parallel region (each ending at the team's barrier, as
a pass's ops do) against a region per call (a fork and a join around each); each timing the best of --block calls.
--compare warm: a region's first call against a call after an untimed one in the same region (`warm_call`). The
kernel benchmark times one call per region; the input LinearRunner makes for it (u8 rows, re-layout) is written by
the master thread alone, where a pass's thread reads what it wrote itself. Each timing is one call, the best of
--block timings; --activations as bench_sparse_kernels.py's.

    python bench/micro/timing_protocol.py --tokens 1,128 --cycles 30 --out bench/results/timing_protocol
    python bench/micro/timing_protocol.py --compare warm --tokens 384,2048 --activations u8 --out ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import command_line, report_head, write_report  # noqa: E402

from trimformer import _core  # noqa: E402
from trimformer.formats.sparsity import magnitude_mask  # noqa: E402
from trimformer.runtime.engine import ACTIVATION_MODES, timing_tensors  # noqa: E402

SHAPES = {"qkv": (2304, 768), "ffn1": (3072, 768), "ffn2": (768, 3072), "attn_out": (768, 768)}
FORMATS = ("int8", "block-int8")
# --compare: its two protocols' labels, each a function (runner, tokens, block, u8) -> seconds
PROTOCOLS = {
    "region": {"one region": lambda r, m, b, u8: r.time(m, b, True, False, u8),
               "region per call": lambda r, m, b, u8: r.time(m, b, True, True, u8)},
    "warm": {"first call": lambda r, m, b, u8: min(r.time(m, 1, True, False, u8, False) for _ in range(b)),
             "after a warm call": lambda r, m, b, u8: min(r.time(m, 1, True, False, u8, True) for _ in range(b))},
}


def time_shape(n: int, k: int, tokens: int, cycles: int, block: int, threads: int, sparsity: float,
               rng: np.random.Generator, compare: str, activations: str) -> dict[str, list[float]]:
    """{"<format> <protocol>": seconds per cycle}: each protocol's timing of a block, the order reversing each
    cycle"""
    w = rng.standard_normal((n, k)).astype(np.float32)
    w *= magnitude_mask(w, sparsity, "block")
    runners = {}
    for f in FORMATS:
        stored, u8 = timing_tensors(w, f, activations)
        runners[f] = (_core.LinearRunner(stored, "x", "", threads), u8)
    keys = [(f, p) for f in FORMATS for p in PROTOCOLS[compare]]
    out: dict[str, list[float]] = {f"{f} {p}": [] for f, p in keys}
    for c in range(cycles):
        for f, p in keys if c % 2 == 0 else keys[::-1]:
            runner, u8 = runners[f]
            out[f"{f} {p}"].append(PROTOCOLS[compare][p](runner, tokens, block, u8))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="1,128")
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--block", type=int, default=20, help="calls (--compare warm: timings) per timing, best of")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--compare", choices=tuple(PROTOCOLS), default="region")
    ap.add_argument("--activations", choices=ACTIVATION_MODES, default="dynamic")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cycles < 1 or args.block < 1:
        ap.error("--cycles and --block must be positive")
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if unknown := [s for s in shapes if s not in SHAPES]:
        ap.error(f"unknown shapes {unknown}; known: {', '.join(SHAPES)}")
    a, b = PROTOCOLS[args.compare]
    rng = np.random.default_rng(0)
    rows = []
    for m in (int(t) for t in args.tokens.split(",")):
        for label in shapes:
            n, k = SHAPES[label]
            t = time_shape(n, k, m, args.cycles, args.block, args.threads, args.sparsity, rng, args.compare,
                           args.activations)
            med = {key: float(np.median(v)) * 1e6 for key, v in t.items()}
            rows.append({"shape": label, "tokens": m, "us": med, "per_cycle_us": t})
            print(f"{label} m={m}: " + ", ".join(f"{key} {v:.2f} us" for key, v in med.items()), file=sys.stderr)
    what = (f"the best of {args.block} calls" if args.compare == "region" else
            f"the best of {args.block} timings of one call")
    lines = report_head(
        f"A Linear's time: {a} against {b}", command_line(argv),
        f"{args.sparsity:.0%} block-sparse INT8 and dense INT8, {args.threads} threads, cold weights, "
        f"{args.activations} INT8 input: medians over {args.cycles} cycles of {what} (us), and the sparse kernel's "
        "speed-up over dense under each protocol.", [])
    lines += [f"| shape | tokens | dense, {a} | dense, {b} | sparse, {a} | sparse, {b} | sparse / dense speed-up, {a} "
              f"| same, {b} |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        u = r["us"]
        lines.append(f"| {r['shape']} | {r['tokens']} | {u[f'int8 {a}']:.2f} | {u[f'int8 {b}']:.2f} "
                     f"| {u[f'block-int8 {a}']:.2f} | {u[f'block-int8 {b}']:.2f} | "
                     f"{u[f'int8 {a}'] / u[f'block-int8 {a}']:.2f}x | {u[f'int8 {b}'] / u[f'block-int8 {b}']:.2f}x |")
    write_report(args.out, {"command": command_line(argv), "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
