"""Perplexity of compressed SmolLM2-135M variants computed by the trimformer RUNTIME (not PyTorch), on the
documented slice (docs/llm.md: last 400 Wikipedia articles by sorted title, first 8,192 tokens, 1,024-token
windows), as ratios to the runtime's dense FP32 model on the same slice.

Inputs: the compressed checkpoint directories written by bench/bench_llm_quality.py (`--out-dir`, default
artifacts/llm/<name>), plus formats the runtime quantizes itself (RTN at compile time) and the shipped GGUF run
exactly. Targets (issue #5) are checked where they apply.

    python bench/bench_llm_ppl.py --dirs artifacts/llm --out bench/results/llm_ppl_runtime
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (target ratio, what it is compared with); the goals
TARGETS = {
    "int8-rtn": 1.02, "w8a8-smoothquant": 1.02, "int4-g128-gptq": 1.06, "sparsegpt-50": 1.5, "sparsegpt-2_4": 2.2,
}
# later variants of the same method (bench_llm_quality.py names: NAME-SETTINGS, e.g. int4-g128-gptq-act-seq-mse-128)
TARGET_PREFIXES = {"int4-g128-gptq-": 1.06, "int4-asym-g128-gptq": 1.06, "sparsegpt-50-": 1.5, "sparsegpt-2_4-": 2.2}
COMPILE_TIME = ["int8-wo", "w8a8", "int4-g128", "int4-g128+a8", "int4-g64", "nf4-g64", "fp4-g64", "fp8-e4m3"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dirs", default="artifacts/llm", help="folder of compressed checkpoint directories")
    ap.add_argument("--only", default="", help="comma-separated names (default: every directory found)")
    ap.add_argument("--skip-baselines", action="store_true", help="only the checkpoint directories (fp32 still runs)")
    ap.add_argument("--compile-time", default=",".join(COMPILE_TIME),
                    help="runtime RTN formats to add (quantized at compile time from the fp32 baseline)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--out", default="bench/results/llm_ppl_runtime")
    ap.add_argument("--resume", action="store_true", help="keep the rows of an existing --out JSON")
    args = ap.parse_args()

    from trimformer import assets
    from trimformer.llm_eval import evaluate_perplexity

    gguf = assets.smollm2_gguf_path()
    out = Path(args.out)
    rows: list[dict] = []
    if args.resume and out.with_suffix(".json").is_file():  # keep finished rows, run only the missing ones
        rows = [r for r in json.loads(out.with_suffix(".json").read_text())["rows"] if "error" not in r]
    done = {r["name"] for r in rows}

    def run(name: str, source, weights: str | None, kind: str) -> None:
        if name in done:
            return
        t0 = time.perf_counter()
        act = None
        if weights and weights.endswith("+a8"):
            weights, act = weights[:-3], "int8"
        try:
            r = evaluate_perplexity(source, weights=weights, threads=args.threads, n_tokens=args.tokens,
                                    activations=act)
        except Exception as e:  # report, keep going
            rows.append({"name": name, "kind": kind, "error": f"{type(e).__name__}: {e}"})
            print(f"{name}: error {e}", flush=True)
            return
        r.update(name=name, kind=kind, wall_s=time.perf_counter() - t0)
        rows.append(r)
        print(f"{name}: perplexity {r['perplexity']:.3f} ({r['wall_s']:.0f} s)", flush=True)
        write(rows, args, out)  # after every row: a long run can be resumed (--resume)

    run("fp32", gguf, "f32", "baseline (GGUF dequantized to fp32)")
    base = Path(args.dirs)
    only = {x for x in args.only.split(",") if x}
    if not args.skip_baselines:
        run("gguf-q4_1-exact", gguf, "gguf", "shipped Q4_1 blocks run exactly")
        run("gguf-q4_1-exact+a8", gguf, "gguf+a8", "shipped Q4_1 blocks, int8 activations (W4A8)")
    for d in sorted(p for p in base.glob("*") if (p / "trimformer_compression.json").is_file()):
        if only and d.name not in only:
            continue
        run(d.name, d, None, "compressed checkpoint (bench_llm_quality.py)")
        if "int4" in d.name and "sparse" not in d.name and "asym" not in d.name:
            run(d.name + "+a8", d, "f32+a8", "compressed checkpoint, int8 activations (W4A8)")
    if not args.skip_baselines:
        for w in [x for x in args.compile_time.split(",") if x]:
            run(f"{w}-runtime-rtn", gguf, w, "runtime RTN at compile time")
    print(markdown(write(rows, args, out)))


def _target(name: str) -> float | None:
    if name in TARGETS:
        return TARGETS[name]
    if "+" in name:  # W4A8 rows and joint sparse + int4 are not what the targets are about
        return None
    return next((t for pre, t in TARGET_PREFIXES.items() if name.startswith(pre)), None)


def write(rows: list[dict], args: argparse.Namespace, out: Path) -> dict:
    fp32 = next((r["perplexity"] for r in rows if r["name"] == "fp32" and "perplexity" in r), None)
    for r in rows:
        if "perplexity" in r and fp32:
            r["ratio"] = r["perplexity"] / fp32
            t = _target(r["name"])
            if t is not None:
                r["target"] = t
                r["met"] = r["ratio"] <= t
    mag = next((r for r in rows if r["name"] == "magnitude-50" and "perplexity" in r), None)
    sgpt = next((r for r in rows if r["name"] == "sparsegpt-50" and "perplexity" in r), None)
    extra = {}
    if mag and sgpt:
        extra["sparsegpt50_over_magnitude50"] = sgpt["perplexity"] / mag["perplexity"]
    doc = {"command": " ".join(sys.argv), "tokens": args.tokens, "fp32_perplexity": fp32, "rows": rows, **extra}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".md").write_text(markdown(doc))
    return doc


def markdown(doc: dict) -> str:
    lines = ["# SmolLM2-135M perplexity computed by the trimformer runtime", "",
             f"Command (last invocation; rows accumulate over `--resume` runs of this script): `{doc['command']}`  ",
             f"Slice: last 400 Wikipedia articles by sorted title, first {doc['tokens']} tokens, 1024-token windows; "
             f"runtime dense FP32 perplexity **{doc['fp32_perplexity']:.3f}**.", "",
             "| name | what | runtime formats | perplexity | ratio to fp32 | target | met |", "|---|---|---|---:|---:|---|---|"]
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['kind']} | error: {r['error']} | | | | |")
            continue
        fmts = r["weights"] if isinstance(r["weights"], str) else ", ".join(r["weights"])
        t = f"<= {r['target']}" if "target" in r else ""
        met = ("yes" if r["met"] else "no") if "met" in r else ""
        lines.append(f"| {r['name']} | {r['kind']} | {fmts} | {r['perplexity']:.3f} | {r.get('ratio', 0):.4f} | "
                     f"{t} | {met} |")
    if "sparsegpt50_over_magnitude50" in doc:
        v = doc["sparsegpt50_over_magnitude50"]
        lines += ["", f"SparseGPT 50% / magnitude 50% perplexity: {v:.4f} (target <= 0.1: {'met' if v <= 0.1 else 'not met'})"]
    lines += ["", "Rows `*-runtime-rtn` are quantized by the runtime's planner at compile time (round to nearest, "
              "symmetric, nominal group with a shorter last group where 576 inputs meet group 128). Checkpoint rows "
              "run their own codes (GPTQ / SparseGPT / SmoothQuant / LLM.int8()); W8A8 rows quantize activations "
              "per token (asymmetric u8) in the runtime.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
