"""Validation-split accuracy of each block80 candidate in the runtime, FP32 (the trained sparse checkpoint) and
static INT8 (the recipe's output), to see where each loses accuracy without reading the test split.

    python bench/block80_candidates/val_report.py --work /work/runs/cands NAME...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", help="candidate rows (WORK/NAME/hf and WORK/NAME/runtime)")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "block80_candidates_val")
    a = p.parse_args(argv)
    import trimformer as tf
    from trimformer.eval import evaluate_task

    rows = []
    for name in a.names:
        hf = a.work / name / "hf"  # the trained sparse weights before quantization (PTQ leaves them as they are)
        if not hf.is_dir() or not (a.work / name / "runtime").is_dir():
            raise SystemExit(f"{name}: no {hf} or runtime model (run bench_compress.py for it first)")
        fp32 = evaluate_task(tf.compile(str(hf), threads=a.threads), split="validation")
        int8 = evaluate_task(tf.load(a.work / name / "runtime", threads=a.threads), split="validation")
        rows.append({"name": name, "checkpoint": str(hf), "fp32": fp32["accuracy"], "int8": int8["accuracy"],
                     "n": int8["n"]})
        print(f"{name}: validation FP32 {100 * fp32['accuracy']:.2f}%  INT8 {100 * int8['accuracy']:.2f}%",
              file=sys.stderr, flush=True)
    lines = ["# block80 candidates: runtime accuracy on the validation split", "",
             "| candidate | FP32 | static INT8 | INT8 − FP32 (points) | n |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {100 * r['fp32']:.2f}% | {100 * r['int8']:.2f}% | {100 * (r['int8'] - r['fp32']):+.2f} "
              f"| {r['n']} |" for r in rows]
    write_report(a.out, "val_report.py", argv, {"rows": rows}, lines)
    return 0


def write_report(out: Path, script: str, argv: list[str] | None, doc: dict, lines: list[str]) -> None:
    """OUT.json (doc + the command and commit) and OUT.md (lines + the same) for a script in this folder: the
    commit matters, as a runtime change (e.g. GELU's rounding) can move a validation text across the line."""
    cmd = f"python bench/block80_candidates/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    commit = git.stdout.strip() or "unknown"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**doc, "command": cmd, "git": commit}, indent=1))
    out.with_suffix(".md").write_text("\n".join([*lines, "", f"Command: `{cmd}` (git {commit})", ""]))


if __name__ == "__main__":
    raise SystemExit(main())
