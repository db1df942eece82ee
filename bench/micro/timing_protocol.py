"""What a parallel region per call adds to a single Linear's time: `LinearRunner.time` with the calls in one region
(each ending at the team's barrier, as a pass's ops do) against a region per call (a fork and a join around each),
dense INT8 and 90% block-sparse INT8 on the BERT-base shapes, cold weights. The four timings of a shape take
turns, each the best of a block of calls, so a slow phase of the host falls on all of them; the report gives their
medians over the cycles and each protocol's sparse / dense ratio.

    python bench/micro/timing_protocol.py --tokens 1,128 --cycles 30 --out bench/results/timing_protocol
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import command_line, report_head, write_report  # noqa: E402

from trimformer import _core  # noqa: E402
from trimformer.formats.registry import get_format  # noqa: E402
from trimformer.formats.sparsity import magnitude_mask  # noqa: E402

SHAPES = {"qkv": (2304, 768), "ffn1": (3072, 768), "ffn2": (768, 3072), "attn_out": (768, 768)}
FORMATS = ("int8", "block-int8")


def time_shape(n: int, k: int, tokens: int, cycles: int, block: int, threads: int, sparsity: float,
               rng: np.random.Generator) -> dict[str, list[float]]:
    """{"<format> <protocol>": seconds per cycle}: the best of `block` calls per cycle, the order reversing each
    cycle"""
    w = rng.standard_normal((n, k)).astype(np.float32)
    w *= magnitude_mask(w, sparsity, "block")
    runners = {f: _core.LinearRunner({"x" + s: t for s, t in get_format(f).encode(w).items()}, "x", "", threads)
               for f in FORMATS}
    keys = [(f, per_call) for f in FORMATS for per_call in (False, True)]
    out: dict[str, list[float]] = {f"{f} {'region per call' if p else 'one region'}": [] for f, p in keys}
    for c in range(cycles):
        for f, per_call in keys if c % 2 == 0 else keys[::-1]:
            out[f"{f} {'region per call' if per_call else 'one region'}"].append(
                runners[f].time(tokens, block, True, per_call))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="1,128")
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--block", type=int, default=20, help="calls per timing (best of)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cycles < 1 or args.block < 1:
        ap.error("--cycles and --block must be positive")
    rng = np.random.default_rng(0)
    rows = []
    for m in (int(t) for t in args.tokens.split(",")):
        for label, (n, k) in SHAPES.items():
            t = time_shape(n, k, m, args.cycles, args.block, args.threads, args.sparsity, rng)
            med = {key: float(np.median(v)) * 1e6 for key, v in t.items()}
            rows.append({"shape": label, "tokens": m, "us": med, "per_cycle_us": t})
            print(f"{label} m={m}: " + ", ".join(f"{key} {v:.2f} us" for key, v in med.items()), file=sys.stderr)
    lines = report_head(
        "A Linear's time with its calls in one parallel region and with a region per call", command_line(argv),
        f"{args.sparsity:.0%} block-sparse INT8 and dense INT8, {args.threads} threads, cold weights: medians over "
        f"{args.cycles} cycles of the best of {args.block} calls (us), and the sparse kernel's speed-up over dense "
        "under each protocol.", [])
    lines += ["| shape | tokens | dense, one region | dense, region per call | sparse, one region | "
              "sparse, region per call | sparse / dense speed-up, one region | same, region per call |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        u = r["us"]
        one = u["int8 one region"] / u["block-int8 one region"]
        per = u["int8 region per call"] / u["block-int8 region per call"]
        lines.append(f"| {r['shape']} | {r['tokens']} | {u['int8 one region']:.2f} | {u['int8 region per call']:.2f} "
                     f"| {u['block-int8 one region']:.2f} | {u['block-int8 region per call']:.2f} | {one:.2f}x | "
                     f"{per:.2f}x |")
    write_report(args.out, {"command": command_line(argv), "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
