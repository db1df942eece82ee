"""Accuracy cost of reduce_range (compile_encoder(..., reduce_range=True): block-sparse INT8 weights quantized to
[-64, 64], the block-int7 format, which AVX2 CPUs without VNNI multiply 8-bit) on the real task, from the runtime:
the same fine-tuned checkpoint compiled to static INT8 with every encoder Linear as block-int8 (8-bit codes) and as
block-int7 (7-bit codes), all blocks kept (sparse=True forces the block format on dense weights), same calibration,
accuracy and macro-F1 on the deterministic wiki-topics test split. Also dense FP32 and dense INT8 for reference,
and each layer's weight quantization error at both ranges.

    python bench/bench_reduce_range.py --model runs/minilm-topics --out bench/results/reduce_range_minilm_topics
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_model  # noqa: E402
from trimformer import _core  # noqa: E402
from trimformer.eval import evaluate_task  # noqa: E402
from trimformer.formats.registry import NARROW_QMAX, quantize_int8_per_channel  # noqa: E402
from trimformer.models.encoder import load_hf_dir  # noqa: E402
from trimformer.pipelines import calibration_batches, load_tokenizer  # noqa: E402
from trimformer.runtime.engine import compile_encoder  # noqa: E402


def weight_errors(model_dir: Path) -> dict[str, dict[str, float]]:
    """Per encoder Linear: ||W - dequant(quant(W))|| / ||W|| at qmax 127 and at NARROW_QMAX."""
    spec, dense = load_hf_dir(model_dir)
    out = {}
    for name in spec.linear_names():
        if name.startswith("head."):
            continue
        w = dense[name + ".weight"].astype(np.float64)
        errs = {}
        for qmax in (127, NARROW_QMAX):
            q, s = quantize_int8_per_channel(w.astype(np.float32), qmax)
            errs[f"q{qmax}"] = float(np.linalg.norm(w - q.astype(np.float64) * s[:, None]) / np.linalg.norm(w))
        out[name] = errs
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="fine-tuned sequence-classification checkpoint (trimformer finetune)")
    ap.add_argument("--task", default="wiki-topics")
    ap.add_argument("--calibration-samples", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isa", default="", help="ISA level (default: this CPU's); block-int7 needs one with the 8-bit "
                    "kernel for the planner to offer it (avx2)")
    ap.add_argument("--out", default="bench/results/reduce_range_minilm_topics")
    args = ap.parse_args(argv)
    model = Path(args.model)
    isa = args.isa or None
    if not _core.bsr_narrow_kernel(args.isa):
        raise SystemExit(f"ISA level {_core.resolve_isa(args.isa)} has no 8-bit block kernel: the planner would not "
                         "offer block-int7 (pass --isa avx2)")
    calib = calibration_batches(load_tokenizer(model), n_samples=args.calibration_samples)
    variants = {
        "fp32": dict(quantize=None, sparse=False),
        "int8 dense (8-bit weights)": dict(quantize="int8-static", calibration=calib, sparse=False),
        "int8 block-int8, all blocks (8-bit weights)": dict(quantize="int8-static", calibration=calib, sparse=True),
        "int8 block-int7, all blocks (reduce_range, 7-bit weights)": dict(quantize="int8-static", calibration=calib,
                                                                        sparse=True, reduce_range=True),
    }
    rows = []
    for label, kw in variants.items():
        eng = compile_encoder(model, threads=args.threads, isa=isa, **kw)
        res = evaluate_task(eng, args.task, tokenizer=model, threads=args.threads)
        formats = sorted(set(f for n, f in eng.formats.items() if not n.startswith("head.")))
        rows.append({"variant": label, "formats": formats, **res})
        print(f"{label}: accuracy {100 * res['accuracy']:.2f}% macro-F1 {100 * res['macro_f1']:.2f}% {formats}",
              file=sys.stderr)
    errs = weight_errors(model)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": git,
            "command": "python " + " ".join(sys.argv), "cpu": cpu_model(), "isa": _core.resolve_isa(args.isa),
            "model": str(model), "task": args.task, "calibration_samples": args.calibration_samples}
    made = model / "trimformer_finetune.json"  # how `trimformer finetune` made the checkpoint, where it did
    if made.is_file():
        meta["finetune"] = json.loads(made.read_text())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "weight_errors": errs}, indent=2))
    base = rows[2]["accuracy"]
    lines = [f"# reduce_range accuracy: {model.name} on {args.task} (test split, n={rows[0]['n']})", "",
             f"Command: `{meta['command']}`  ", f"Date: {meta['date']}; git {git}; CPU: {meta['cpu']}; "
             f"ISA {meta['isa']}; static INT8 calibrated on {args.calibration_samples} Wikipedia sentences.", ""]
    if "finetune" in meta:
        c = meta["finetune"]["config"]
        lines += [f"Checkpoint: `trimformer finetune --task {meta['finetune']['task']} --model <MiniLM-L6 asset> "
                  f"--epochs {c['epochs']:g} --lr {c['lr']:g}` ({meta['finetune']['device']}, "
                  f"{meta['finetune']['seconds']:.0f} s, seed {c['seed']}).", ""]
    lines += ["| variant | encoder formats | accuracy | macro-F1 | vs block-int8 (points) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {', '.join(r['formats'])} | {100 * r['accuracy']:.2f}% | "
                     f"{100 * r['macro_f1']:.2f}% | {100 * (r['accuracy'] - base):+.2f} |")
    e127 = np.array([e["q127"] for e in errs.values()])
    e64 = np.array([e[f"q{NARROW_QMAX}"] for e in errs.values()])
    lines += ["", f"Weight quantization error ||W - Q(W)|| / ||W|| over the {len(errs)} encoder Linears: 8-bit "
              f"median {np.median(e127):.4f} (max {e127.max():.4f}), 7-bit median {np.median(e64):.4f} "
              f"(max {e64.max():.4f}).", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
