"""Validation-split accuracy of one trained sparse checkpoint under each static INT8 variant the runtime runs
(activation observer x SmoothQuant fold), to choose the 80% row's quantize stage without reading the test split.

    python bench/block80_candidates/quant_variants.py /work/runs/bench/block80-obs-steps-kd-int8/hf

Calibration is the recipe default (256 calibration-slice texts, batches of 32, 128 tokens). The FP32 row is the
checkpoint itself in the runtime.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from val_report import write_report  # this folder (the script's directory is on sys.path)

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="HF checkpoint of the trained sparse model (before quantization)")
    p.add_argument("--observers", default="minmax,percentile,mse,entropy")
    p.add_argument("--smoothquant", default="none,0.5", help="comma list of alphas; 'none' = no fold")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "block80_quant_variants_val")
    a = p.parse_args(argv)
    import trimformer as tf
    from trimformer.compress import quantization
    from trimformer.compress.tasks import calibration_batches
    from trimformer.compress.training import load_classifier
    from trimformer.eval import evaluate_task

    if not (a.checkpoint / "config.json").is_file():
        raise SystemExit(f"{a.checkpoint}: not an HF checkpoint (no config.json)")
    fp32 = evaluate_task(tf.compile(str(a.checkpoint), threads=a.threads), split="validation")
    print(f"FP32 validation {100 * fp32['accuracy']:.2f}%", file=sys.stderr, flush=True)
    rows = []
    alphas = [None if s.strip() == "none" else float(s) for s in a.smoothquant.split(",")]
    for observer, alpha in itertools.product(a.observers.split(","), alphas):
        model, tok = load_classifier(a.checkpoint, "wiki-topics")  # fresh: the SmoothQuant fold edits weights
        batches = calibration_batches(tok, 256, 32, 128, return_tensors="np")
        eng = quantization.quantize(model, "int8-static", batches, observer=observer, smoothquant=alpha,
                                    threads=a.threads)
        r = evaluate_task(eng, split="validation")
        rows.append({"observer": observer, "smoothquant": alpha, "accuracy": r["accuracy"],
                     "macro_f1": r["macro_f1"], "n": r["n"]})
        print(f"{observer} sq={alpha}: validation {100 * r['accuracy']:.2f}%", file=sys.stderr, flush=True)
    lines = [f"# Static INT8 variants of `{a.checkpoint}` on the validation split (n={fp32['n']})", "",
             f"FP32 (runtime): {100 * fp32['accuracy']:.2f}%", "",
             "| observer | SmoothQuant alpha | INT8 accuracy | INT8 − FP32 (points) | macro-F1 |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['observer']} | {r['smoothquant'] if r['smoothquant'] is not None else '—'} "
              f"| {100 * r['accuracy']:.2f}% | {100 * (r['accuracy'] - fp32['accuracy']):+.2f} "
              f"| {100 * r['macro_f1']:.2f}% |" for r in rows]
    write_report(a.out, "quant_variants.py", argv,
                 {"checkpoint": str(a.checkpoint), "fp32": fp32["accuracy"], "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
