"""A/B of native builds on single Linears: the kernel timings of `trimformer.runtime.engine.time_formats` (the
executor's own loader and kernels, activation preparation included, cold weights) on BERT-base layer shapes, run
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
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import install, parse_builds, round_order, swapping_builds  # noqa: E402

from harness import env_prefix  # noqa: E402

SHAPES = {"qkv": (2304, 768), "ffn1": (3072, 768), "ffn2": (768, 3072), "attn_out": (768, 768)}

# one timing run in a fresh process (the build under test is the installed module): prints {shape: ms}
CHILD = """
import json, sys
import numpy as np
from trimformer.formats.sparsity import magnitude_mask
from trimformer.runtime.engine import time_formats
fmt, pattern, sparsity, tokens, threads, iters, shapes = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
out = {}
for label, (n, k) in shapes.items():
    w = rng.standard_normal((n, k)).astype(np.float32)
    w = w * magnitude_mask(w, sparsity, pattern)
    out[label] = time_formats(w, [fmt], tokens=tokens, iters=iters, threads=threads)[fmt] * 1e3
print(json.dumps(out))
"""


def time_build(args: argparse.Namespace) -> dict[str, float]:
    spec = json.dumps([args.format, args.pattern, args.sparsity, args.tokens, args.threads, args.iters, SHAPES])
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
    command = env_prefix() + "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "builds": {k: str(v) for k, v in
                                                    builds.items()}, "shapes": SHAPES, "runs": runs}, indent=1))
    first = next(iter(builds))
    lines = [f"# A/B of native builds on single Linears ({time.strftime('%Y-%m-%d', time.gmtime())})", "",
             f"Command: `{command}`", "",
             f"{args.format} on {args.pattern} {args.sparsity:.0%} weights, {args.tokens} tokens per call, "
             f"{args.threads} thread(s): ms per call (best of {args.iters}, cold weights) per round; the median over "
             f"the rounds, and the sum over the shapes against `{first}`.", ""]
    lines += [f"- {n}" for n in args.note]
    if args.note:
        lines.append("")
    lines += ["| build | " + " | ".join(SHAPES) + " | sum | vs " + first + " |", "|---|" + "---|" * (len(SHAPES) + 2)]
    base = None
    for name in builds:
        mine = [r["ms"] for r in runs if r["build"] == name]
        med = {s: float(np.median([r[s] for r in mine])) for s in SHAPES}
        total = sum(med.values())
        base = total if base is None else base
        cells = [f"{med[s]:.3f} ({', '.join(f'{r[s]:.3f}' for r in mine)})" for s in SHAPES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {total:.3f} | {total / base:.3f} |")
    lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
