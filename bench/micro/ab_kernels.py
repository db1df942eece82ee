"""A/B of native builds on single Linears: the kernel timings of `trimformer.runtime.engine.time_formats` (the
executor's own loader and kernels, activation preparation included, cold weights, best of interleaved calls) on
BERT-base layer shapes, run
with two or more saved builds of the `trimformer._core` extension, interleaved round by round as ab_builds.py does
for whole passes.

    python bench/micro/ab_kernels.py --build before=/tmp/before.so --build after=/tmp/after.so \
        --format csr-int8 --pattern unstructured --sparsity 0.9 --tokens 128 --threads 1 --rounds 3 \
        --out bench/results/ab_kernels_example
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import (  # noqa: E402
    command_line,
    install,
    parse_builds,
    report_head,
    round_order,
    swapping_builds,
    write_report,
)

SHAPES = {"qkv": (2304, 768), "ffn1": (3072, 768), "ffn2": (768, 3072), "attn_out": (768, 768)}

# one timing run in a fresh process (the build under test is the installed module): prints {shape: ms}
# (builds from before LinearRunner.time's region_per_call open a region per call: --region-per-call compares them
# with newer builds on that protocol)
CHILD = """
import json, sys
import numpy as np
from trimformer import _core
from trimformer.formats.sparsity import magnitude_mask
from trimformer.runtime.engine import time_formats
fmt, pattern, sparsity, tokens, threads, iters, shapes, region_per_call, activations = json.loads(sys.argv[1])
older = "region_per_call" not in (_core.LinearRunner.time.__doc__ or "")  # a region per call, its only protocol
if older and not region_per_call:
    raise SystemExit("this build opens a region per call: compare with --region-per-call")
rng = np.random.default_rng(0)
out = {}
for label, (n, k) in shapes.items():
    w = rng.standard_normal((n, k)).astype(np.float32)
    w = w * magnitude_mask(w, sparsity, pattern)
    out[label] = time_formats(w, [fmt], tokens=tokens, iters=iters, threads=threads,
                              region_per_call=region_per_call and not older, activations=activations)[fmt] * 1e3
print(json.dumps(out))
"""


def time_build(args: argparse.Namespace) -> dict[str, float]:
    spec = json.dumps([args.format, args.pattern, args.sparsity, args.tokens, args.threads, args.iters, SHAPES,
                       args.region_per_call, args.activations])
    done = subprocess.run([sys.executable, "-c", CHILD, spec], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"timing run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", action="append", required=True, help="NAME=PATH of a saved _core module")
    ap.add_argument("--format", required=True, help="weight format timed (e.g. csr-int8, csr-f32, block-int8)")
    ap.add_argument("--pattern", default="unstructured")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=40, help="calls per timing (best of)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--region-per-call", action="store_true",
                    help="each call in a parallel region of its own (the only protocol of older builds)")
    # (engine.ACTIVATION_MODES, spelled out: this process imports no trimformer module, since it swaps the installed
    # extension between rounds)
    ap.add_argument("--activations", choices=("dynamic", "static", "u8"), default="dynamic",
                    help="how INT8 formats get their input (time_formats; u8 needs a build with LinearRunner u8_input)")
    ap.add_argument("--note", action="append", default=[], help="a line for the Markdown notes")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    builds = parse_builds(args.build)
    runs: list[dict] = []
    with swapping_builds() as module:
        for rnd in range(args.rounds):
            for name in round_order(builds, rnd):
                install(builds[name], module)
                ms = time_build(args)
                runs.append({"build": name, "round": rnd, "ms": ms})
                print(f"round {rnd} {name}: " + " ".join(f"{k} {v:.3f}" for k, v in ms.items()), file=sys.stderr)
    command = command_line(argv)
    first = next(iter(builds))
    lines = report_head("A/B of native builds on single Linears", command,
                        f"{args.format} on {args.pattern} {args.sparsity:.0%} weights, {args.tokens} tokens per call, "
                        f"{args.threads} thread(s), {args.activations} INT8 input: ms per call (best of {args.iters}, "
                        f"cold weights; "
                        f"{'a parallel region per call' if args.region_per_call else 'the calls in one parallel region'}"
                        f") per round; the median over the rounds, and the sum over the shapes against `{first}`.",
                        args.note)
    lines += table_lines(builds, runs)
    write_report(args.out, {"command": command, "builds": {k: str(v) for k, v in builds.items()}, "shapes": SHAPES,
                            "runs": runs}, lines)
    return 0


def table_lines(builds: dict, runs: list[dict]) -> list[str]:
    """The report's table: per build and shape the median over the rounds (its ratio to the first build's) and
    every round's time, 4 significant digits (calls of a few tokens take microseconds)"""
    first = next(iter(builds))
    lines = ["| build | " + " | ".join(SHAPES) + " | sum | vs " + first + " |", "|---|" + "---|" * (len(SHAPES) + 2)]
    medians = {name: {s: float(np.median([r["ms"][s] for r in runs if r["build"] == name])) for s in SHAPES}
               for name in builds}
    for name in builds:
        med, base = medians[name], medians[first]
        rounds = [r["ms"] for r in runs if r["build"] == name]
        cells = [f"{med[s]:.4g} ({med[s] / base[s]:.3f}x; {', '.join(f'{r[s]:.4g}' for r in rounds)})" for s in SHAPES]
        total = sum(med.values())
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {total:.4g} | {total / sum(base.values()):.3f} |")
    return lines + [""]


if __name__ == "__main__":
    sys.exit(main())
