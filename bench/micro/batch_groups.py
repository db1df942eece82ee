"""Whole batches vs groups of sequences through the layer stack (runtime/engine.py chunk_rows_for, the executor's
team and side-by-side modes, docs/design.md): the same model compiled with TRIMFORMER_CHUNK_ROWS=0 (whole batch
per op), the default, and other group sizes, timed in alternating rounds in one process.

At batch 16 with 2 threads the executor runs side by side (one thread per group of chunk_rows / 3 tokens), so
chunk_rows 384 / 768 / 2304 mean side groups of 128 / 256 / 768 tokens.

    python bench/micro/batch_groups.py --out bench/results/batch_groups
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import peers  # noqa: E402
from harness import make_inputs, time_runner  # noqa: E402

# (model, sparsity, pattern, precision, seq, chunk_rows settings; "" = the default choice)
CONFIGS = [
    ("bert-base", 0.9, "block", "int8-static", 128, ["0", "384", "", "2304"]),
    ("bert-base", 0.9, "block", "int8-static", 384, ["0", ""]),
    ("distilbert", 0.9, "block", "int8-static", 128, ["0", ""]),
    ("bert-base", 0.9, "unstructured", "fp32", 128, ["0", ""]),
    ("bert-base", 0.0, "block", "int8-static", 128, ["0", "384", "", "2304"]),
    ("minilm-l6-h384", 0.0, "block", "fp32", 128, ["0", "384", "", "2304"]),
    ("bert-base", 0.0, "block", "fp32", 128, ["", "768"]),
]
# --set small-groups: groups of one 128-token sequence (chunk_rows 384) against 256 tokens (768) where weights are small
SMALL_GROUPS = [
    ("bert-base", 0.9, "block", "int8-static", 128, ["384", "768", ""]),
    ("bert-base", 0.8, "block", "int8-static", 128, ["384", "768", ""]),
    ("distilbert", 0.9, "block", "int8-static", 128, ["384", "768", ""]),
    ("minilm-l6-h384", 0.9, "block", "int8-static", 128, ["384", "768", ""]),
    ("bert-base", 0.9, "unstructured", "int8-static", 128, ["384", "768", ""]),
    ("bert-base", 0.9, "unstructured", "fp32", 128, ["384", "768", ""]),
    ("minilm-l6-h384", 0.0, "block", "int8-static", 128, ["384", "768", ""]),
]
# --set mid-weights: layers between the INT8 / sparse sizes (grouped) and dense FP32 BERT-base's 28 MB (whole batches)
MID_WEIGHTS = [
    ("bert-base", 0.5, "2:4", "fp32", 128, ["0", "768", ""]),
    ("bert-base", 0.0, "block", "bf16", 128, ["0", "768", ""]),
    ("bert-base", 0.0, "block", "fp32", 128, ["0", "768", ""]),
]
CONFIG_SETS = {"default": CONFIGS, "small-groups": SMALL_GROUPS, "mid-weights": MID_WEIGHTS}


def layer_bytes(engine) -> float:
    """Packed weight bytes per encoder layer, as chunk_rows_for counts them."""
    return sum(v.nbytes for k, v in engine.tensors.items() if k.startswith("layers.")) / max(engine.spec.layers, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--out", default="bench/results/batch_groups")
    ap.add_argument("--set", default="default", choices=sorted(CONFIG_SETS), help="which configurations")
    args = ap.parse_args(argv)
    from trimformer.runtime.engine import Engine, compile_encoder

    rows = []
    for model, sparsity, pattern, prec, seq, settings in CONFIG_SETS[args.set]:
        info = peers.prepare_model(model, sparsity=sparsity, pattern=pattern)
        inputs = make_inputs(args.batch, seq, info.vocab_size)
        calib = [{"input_ids": inputs[0][:1], "attention_mask": inputs[1][:1]}]
        # one compile (one plan: the planner's timed choices could differ between compiles), then an engine per
        # setting built from that plan with TRIMFORMER_CHUNK_ROWS set while it loads
        os.environ.pop("TRIMFORMER_CHUNK_ROWS", None)
        plan = compile_encoder(info.hf_dir, quantize=None if prec == "fp32" else prec,
                               calibration=calib if prec == "int8-static" else None, threads=args.threads,
                               sparse=True if sparsity else False)
        engines = {}
        for value in settings:
            if value:
                os.environ["TRIMFORMER_CHUNK_ROWS"] = value
            engines[value or "default"] = Engine(plan.spec, plan.tensors, plan.formats, quantize=plan.quantize,
                                                 threads=args.threads, attention=plan.attention)
            os.environ.pop("TRIMFORMER_CHUNK_ROWS", None)
        samples: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(args.rounds):
            for k, e in engines.items():
                t = time_runner(lambda i, m, tt, e=e: e.run(i, m, tt), inputs, args.iters, 1, max_time_s=20)
                samples[k] += t.samples_ms
        med = {k: float(np.median(v)) for k, v in samples.items()}
        whole = med.get("0", med.get("default"))
        row = {"model": model, "sparsity": sparsity, "pattern": pattern, "precision": prec, "seq": seq,
               "batch": args.batch, "default_chunk_rows": plan.chunk_rows, "layer_bytes": layer_bytes(plan),
               "formats": {f: list(plan.formats.values()).count(f) for f in sorted(set(plan.formats.values()))},
               "median_ms": med, "speedup_vs_whole_batch": {k: whole / v for k, v in med.items()} if "0" in med
               else None}
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threads": args.threads,
              "rounds": args.rounds, "rows": rows,
              "command": "python bench/micro/batch_groups.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = ["# Whole batches vs groups of sequences through the layer stack", "",
             f"- date (UTC): {report['date']}; batch {args.batch}, {args.threads} threads, {args.rounds} alternating "
             "rounds in one process, medians of pooled per-call latencies (ms); seeded random-weight models",
             f"- command: `{report['command']}`",
             "- chunk_rows 0 = whole batch per op; `default` = chunk_rows_for's choice (768 when a layer's weights "
             "are <= 8 MB, else 0); at this batch the executor runs side by side, one thread per group of "
             "chunk_rows / 3 tokens (384 / 768 / 2304 -> 128 / 256 / 768)", "",
             "| model | weights | seq | layer MB | default chunk_rows | ms by chunk_rows setting | default vs whole batch |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = ", ".join(f"{k}: {v:.1f}" for k, v in r["median_ms"].items())
        sp = r["speedup_vs_whole_batch"]
        ratio = f"{sp['default']:.2f}x" if sp else "—"
        weights = f"{int(r['sparsity'] * 100)}% {r['pattern']} {r['precision']}" if r["sparsity"] else \
            f"dense {r['precision']}"
        lines.append(f"| {r['model']} | {weights} | {r['seq']} | {r['layer_bytes'] / 2**20:.2f} | {r['default_chunk_rows']} "
                     f"| {cells} | {ratio} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json/.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
