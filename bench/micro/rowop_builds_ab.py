"""A/B of native builds on the encoder's row ops (`_core.rowop`: layernorm, softmax, gelu, ...), every build loaded
into this one process as a module of its own (ab_builds.load_build) and timed in interleaved rounds (the order
reversing each round): per round and build, the best of `--calls` calls on the same rows. Each call goes through the
Python binding (argument checks, the output's allocation), which both builds pay alike, so the ratios understate the
kernels' own. Also checks that the builds' outputs are the same bits. (nanobind warns that the builds' classes are
already registered: only the row-op function is called, so run this in a process of its own, not beside other work.)

    python bench/micro/rowop_builds_ab.py --build before=/tmp/before.so --build after=/tmp/after.so \
        --op layernorm --out bench/results/rowop_ab_example
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import command_line, load_build, parse_builds, report_head, round_order, write_report  # noqa: E402

SHAPES = [(64, 768), (128, 768), (64, 384), (16, 1024), (7, 100)]  # rows x cols: a thread's share of BERT rows, ...


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", action="append", required=True, help="NAME=PATH of a saved _core module")
    ap.add_argument("--op", default="layernorm", help="_core.rowop's op")
    ap.add_argument("--shapes", default=",".join(f"{m}x{n}" for m, n in SHAPES), help="ROWSxCOLS,...")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    builds = parse_builds(args.build)
    if len(builds) < 2 or args.rounds < 1 or args.calls < 1:
        ap.error("two or more builds, positive --rounds and --calls")
    try:
        shapes = [tuple(int(v) for v in item.split("x")) for item in args.shapes.split(",") if item.strip()]
    except ValueError:
        ap.error("--shapes takes ROWSxCOLS,...")
    if not shapes or any(len(sh) != 2 or min(sh) < 1 for sh in shapes):
        ap.error("--shapes takes ROWSxCOLS,... with positive sizes")
    mods = {name: load_build(name, path) for name, path in builds.items()}
    rng = np.random.default_rng(0)
    rows = []
    for m, n in shapes:
        x = (rng.standard_normal((m, n)) * 2 + 0.5).astype(np.float32)
        kw = {"g": rng.standard_normal(n).astype(np.float32), "b": rng.standard_normal(n).astype(np.float32)}
        outs = {name: mod.rowop(x, args.op, **kw) for name, mod in mods.items()}
        first = next(iter(outs.values()))
        same = all(np.array_equal(o, first) for o in outs.values())
        best: dict[str, list[float]] = {name: [] for name in mods}
        for rnd in range(args.rounds):
            for name in round_order(builds, rnd):
                f = mods[name].rowop
                t = 1e30
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    f(x, args.op, **kw)
                    t = min(t, time.perf_counter() - t0)
                best[name].append(t)
        ref = list(mods)[0]
        row = {"rows": m, "cols": n, "same_bits": same, "best_us": {k: v for k, v in best.items()},
               "median_us": {k: float(np.median(v)) * 1e6 for k, v in best.items()},
               "ratio_vs_first": {k: float(np.median(np.array(v) / np.array(best[ref]))) for k, v in best.items()}}
        rows.append(row)
        print(f"{m} x {n}: " + ", ".join(f"{k} {row['median_us'][k]:.2f} us" for k in mods) + f", same bits {same}",
              file=sys.stderr)
    names = list(mods)
    lines = report_head(
        f"A/B of native builds on _core.rowop('{args.op}')", command_line(argv),
        f"Per round ({args.rounds}, the order reversing each round) and build: the best of {args.calls} calls through "
        f"the Python binding. Median over the rounds; ratio: the median of each round's time over {names[0]}'s "
        "(below 1: faster). 'same bits': the builds' outputs are equal.", args.note)
    lines += ["| rows x cols | " + " | ".join(f"{k} us" for k in names) + " | " +
              " | ".join(f"{k} / {names[0]}" for k in names[1:]) + " | same bits |",
              "|---|" + "---|" * (2 * len(names) - 1) + "---|"]
    for r in rows:
        lines.append(f"| {r['rows']} x {r['cols']} | " + " | ".join(f"{r['median_us'][k]:.2f}" for k in names) +
                     " | " + " | ".join(f"{r['ratio_vs_first'][k]:.3f}" for k in names[1:]) +
                     f" | {'yes' if r['same_bits'] else 'no'} |")
    write_report(args.out, {"command": command_line(argv), "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
