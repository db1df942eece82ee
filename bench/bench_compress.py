"""Compression report: accuracy (from the trimformer runtime, on the deterministic wiki-topics test split) against
latency (the runtime, same machine) for each recipe under recipes/, starting from a checkpoint fine-tuned by
`trimformer finetune` (the dense baseline A).

    python bench/bench_compress.py --model runs/minilm-topics --work runs/bench
    python bench/bench_compress.py --model ... --work ... --rows int8-ptq,obs50-int8 --reuse

Each row runs its recipe through `trimformer.compress.run_recipe` (outputs under --work/ROW: hf/, runtime/,
summary.json); --reuse takes a row's existing summary.json when the same recipe made it (e.g. a long gradual-pruning
run made with `trimformer compress`) instead of recomputing it, and otherwise resumes from what that run left (see
run_recipe's resume); the latency of every row is measured here. Writes
--out.json, --out.md and --out.png (accuracy vs latency, Pareto front marked).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import make_inputs, time_runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
# row -> (recipe file stem, accuracy target in points below A or None, description)
ROWS: dict[str, tuple[str, float | None, str]] = {
    "dense-fp32": ("dense-fp32", None, "dense FP32 (A)"),
    "int8-ptq": ("int8-ptq", 0.5, "static INT8 PTQ"),
    "int8-ptq-smoothquant": ("int8-ptq-smoothquant", 0.5, "static INT8 PTQ + SmoothQuant (V->out), MSE observer"),
    "obs50-fp32": ("obs50-fp32", None, "one-shot 50% OBS, FP32"),
    "obs50-int8": ("obs50-int8", 1.5, "one-shot 50% OBS + INT8"),
    "magnitude50-int8": ("magnitude50-int8", None, "one-shot 50% magnitude + INT8"),
    "nm24-int8": ("nm24-int8", None, "one-shot 2:4 OBS + INT8"),
    "ffn50-int8": ("ffn50-int8", None, "FFN neurons 50% removed + KD + INT8"),
    "heads50-int8": ("heads50-int8", None, "attention heads 50% removed + KD + INT8"),
    "block80-gradual-kd-int8": ("block80-gradual-kd-int8", None, "80% 4x4-block, gradual magnitude + KD, INT8"),
    "block80-obs-steps-kd-fp32": ("block80-obs-steps-kd-fp32", None,
                                  "80% 4x4-block, OBS in 3 steps (50/70/80%) + KD + crops, FP32"),
    "block80-obs-steps-kd-int8": ("block80-obs-steps-kd-int8", 1.0,
                                  "80% 4x4-block, OBS in 3 steps (50/70/80%) + KD + crops, INT8"),
    "block90-obs-steps-kd-fp32": ("block90-obs-steps-kd-fp32", None,
                                  "90% 4x4-block, the 80% row + OBS to 90% + 3 epochs KD + crops, FP32"),
    "block90-obs-steps-kd-int8": ("block90-obs-steps-kd-int8", None,
                                  "90% 4x4-block, the 80% row + OBS to 90% + 3 epochs KD + crops, INT8"),
}
DEFAULT_ROWS = "dense-fp32,int8-ptq,obs50-int8,magnitude50-int8,nm24-int8"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="fine-tuned HF checkpoint (the dense baseline A)")
    p.add_argument("--work", required=True, help="directory for each row's outputs")
    p.add_argument("--rows", default=DEFAULT_ROWS, help=f"comma-separated rows (known: {', '.join(ROWS)})")
    p.add_argument("--reuse", action="store_true", help="use an existing WORK/ROW/summary.json instead of rerunning")
    p.add_argument("--recipe", action="append", default=[], metavar="ROW=FILE",
                   help="run ROW with another recipe file (e.g. a shorter schedule), or add a row ROW (no target) "
                        "running FILE, such as a candidate recipe; recorded in the report")
    p.add_argument("--seed", action="append", default=[], metavar="ROW=FROM",
                   help="start ROW from a copy of WORK/FROM when WORK/ROW has no output yet: run_recipe resumes from "
                        "a finished output whose recipe begins with the same stages (e.g. an FP32 row from its INT8 "
                        "row's trained weights, or a further pruning step from an earlier row's)")
    p.add_argument("--eval-samples", type=int, default=None, help="test samples (default: all 858)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batches", default="1,16", help="latency batch sizes")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--note", action="append", default=[], help="a note for the report (repeatable)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "compress"), help="output path stem")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[bench_compress {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def latency(engine: Any, seq: int, batches: list[int], iters: int, warmup: int) -> dict[str, Any]:
    vocab = engine.spec.vocab
    out = {}
    for b in batches:
        ids, mask, tt = make_inputs(b, seq, vocab)
        t = time_runner(lambda i, m, t_: engine.run(i, m, t_), (ids, mask, tt), iters, warmup, max_time_s=20)
        out[f"b{b}"] = t.to_dict(with_samples=False)
    return out


def run_row(row: str, recipe_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    import trimformer as tf
    from trimformer.compress.recipes import load_recipe, run_recipe

    out = Path(args.work) / row
    summary_file = out / "summary.json"
    rec = load_recipe(recipe_file)
    if args.eval_samples:
        rec.eval["max_samples"] = args.eval_samples
    old = json.loads(summary_file.read_text()) if args.reuse and summary_file.is_file() else None
    if old is not None and json.loads(json.dumps(old.get("recipe"))) == json.loads(json.dumps(rec.to_dict())):
        log(f"{row}: reusing {summary_file}")
        summary = old
    else:
        log(f"{row}: running {recipe_file.name}")
        # resume: a training stage run elsewhere (bench/remote_train_topics.py on a lent GPU) left its checkpoint
        # in WORK/ROW.stages, or an earlier run of a recipe that differs only in later weight-preserving stages
        # (another quantize stage) left WORK/ROW; either is used only when made by the same recipe stages from the
        # same base weights
        summary = run_recipe(rec, args.model, "wiki-topics", out, log=log, threads=args.threads, resume=True)
        summary = {k: v for k, v in summary.items() if k not in ("engine", "sparsity")}
    engine = tf.load(out / "runtime", threads=args.threads)
    lat = latency(engine, args.seq, [int(b) for b in args.batches.split(",")], args.iters, args.warmup)
    stages = summary.get("stages", [])
    return {"row": row, "recipe": str(recipe_file.relative_to(ROOT)) if recipe_file.is_relative_to(ROOT)
            else str(recipe_file), "recipe_doc": summary.get("recipe"),
            "accuracy": summary["eval"]["accuracy"], "macro_f1": summary["eval"]["macro_f1"],
            "n": summary["eval"]["n"], "compress_seconds": summary.get("compress_seconds"),
            "stage_seconds": {f"{i + 1}:{s['stage']}": round(s["seconds"], 1) for i, s in enumerate(stages)},
            "stages": stages, "linear_formats": summary.get("linear_formats"), "latency": lat,
            "packed_bytes": engine.packed_bytes, "quantize": engine.quantize,
            "trained_on": sorted({s["options"]["train"].get("device", "cpu") for s in stages
                                  if isinstance(s.get("options", {}).get("train"), dict)})}


def pareto(rows: list[dict[str, Any]], key: str) -> set[str]:
    front = set()
    for r in rows:
        dominated = any(o["accuracy"] >= r["accuracy"] and o["latency"][key]["median_ms"] <= r["latency"][key]["median_ms"]
                        and (o["accuracy"] > r["accuracy"] or o["latency"][key]["median_ms"] < r["latency"][key]["median_ms"])
                        for o in rows)
        if not dominated:
            front.add(r["row"])
    return front


def write_markdown(report: dict[str, Any], path: Path) -> None:
    rows = report["rows"]
    key = report["latency_key"]
    a = report["dense_accuracy"]
    lines = [f"# Compression report: MiniLM-L6 on wiki-topics (11 classes, test split n={rows[0]['n']})", "",
             f"Baseline A: `{report['model']}` (runtime FP32 accuracy {100 * a:.2f}%). Accuracy and latency are "
             "both from the trimformer runtime. Latency: median of Engine.run at "
             f"seq {report['seq']}, {report['threads']} threads.", ""]
    if report.get("noisy_machine", True):
        lines += ["> Latencies here were taken on a shared, saturated development machine and are indicative only; "
                  "rerun on a quiet machine for timing conclusions. Accuracies do not depend on load.", ""]
    bkeys = list(rows[0]["latency"])
    head = "| row | accuracy | Δ vs A (points) | target | macro-F1 | " + " | ".join(
        f"latency {k} (ms)" for k in bkeys) + " | compress wall time | trained on | Pareto |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    front = pareto(rows, key)
    for r in rows:
        d = 100 * (r["accuracy"] - a)
        tgt = r.get("target")
        tcell = "—" if tgt is None else (f"≥ A−{tgt}: " + ("met" if d >= -tgt - 1e-9 else "**missed**"))
        lat = " | ".join(f"{r['latency'][k]['median_ms']:.1f}" for k in bkeys)
        wall = "—" if r.get("compress_seconds") is None else f"{r['compress_seconds']:.0f} s"
        where = ", ".join(r.get("trained_on") or []) or "—"
        lines.append(f"| {r['description']} | {100 * r['accuracy']:.2f}% | {d:+.2f} | {tcell} | "
                     f"{100 * r['macro_f1']:.2f}% | {lat} | {wall} | {where} | {'★' if r['row'] in front else ''} |")
    lines += ["", "Per-stage wall times (seconds; a stage whose training ran on a GPU counts that machine's time, "
              "every other stage these 2 cores):", ""]
    for r in rows:
        lines.append(f"- {r['row']} (`{r['recipe']}`): " + (", ".join(f"{k} {v}" for k, v in r["stage_seconds"].items())
                                                         or "no stage"))
    if report.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    lines += ["", f"Command: `{report['command']}`", ""]
    path.write_text("\n".join(lines))


def write_png(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, key = report["rows"], report["latency_key"]
    front = pareto(rows, key)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    # points numbered in order of accuracy, the numbers' rows listed beside the plot: short labels do not
    # overprint each other where rows cluster
    order = sorted(rows, key=lambda r: -r["accuracy"])
    for i, r in enumerate(order, 1):
        x, y = r["latency"][key]["median_ms"], 100 * r["accuracy"]
        ax.scatter(x, y, c="tab:red" if r["row"] in front else "tab:blue", s=40)
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    legend = "\n".join(f"{i:2d}  {r['row']}" for i, r in enumerate(order, 1))
    fig.text(0.70, 0.5, legend, fontsize=7.5, family="monospace", va="center")
    fig.subplots_adjust(right=0.68)
    pts = sorted((r["latency"][key]["median_ms"], 100 * r["accuracy"]) for r in rows if r["row"] in front)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "r--", lw=1)
    ax.axhline(100 * report["dense_accuracy"], color="gray", lw=0.8, ls=":")
    ax.set_xlabel(f"runtime latency {key}, seq {report['seq']} (ms, median)")
    ax.set_ylabel("test accuracy (%) from the runtime")
    ax.set_title("MiniLM-L6 wiki-topics: accuracy vs latency")
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    overrides = dict(s.split("=", 1) for s in args.recipe)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS and r not in overrides]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {list(ROWS)} (or name a recipe: --recipe ROW=FILE)")
    seeds = dict(s.split("=", 1) for s in args.seed)
    results = []
    for row in rows:
        if row in seeds and not (Path(args.work) / row / "summary.json").is_file():
            src = Path(args.work) / seeds[row]
            if not (src / "summary.json").is_file():
                raise SystemExit(f"--seed {row}={seeds[row]}: no finished output in {src} (list that row first)")
            log(f"{row}: seeded from a copy of {src}")
            shutil.copytree(src, Path(args.work) / row, dirs_exist_ok=True)
        stem, target, desc = ROWS.get(row, (row, None, f"candidate {row}"))
        recipe_file = Path(overrides.get(row, RECIPES / f"{stem}.yaml")).resolve()
        r = run_row(row, recipe_file, args)
        r.update({"target": target, "description": desc + (f" ({recipe_file.name})" if row in overrides else "")})
        results.append(r)
        log(f"{row}: accuracy {100 * r['accuracy']:.2f}%  latency b1 {r['latency'][next(iter(r['latency']))]['median_ms']:.1f} ms")
    dense = next((r for r in results if r["row"] == "dense-fp32"), None)
    a = dense["accuracy"] if dense else None
    if a is None:
        from trimformer.eval import evaluate_task

        a = evaluate_task(args.model, "wiki-topics", max_samples=args.eval_samples)["accuracy"]
    report = {"model": args.model, "dense_accuracy": a, "seq": args.seq, "threads": args.threads,
              "latency_key": f"b{args.batches.split(',')[0]}", "rows": results, "notes": [],
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "python": platform.python_version(), "load_average_1min": os.getloadavg()[0]},
              # more runnable jobs than cores while timing: the latencies are indicative only
              "noisy_machine": os.getloadavg()[0] > 0.75 * (os.cpu_count() or 1) + 1,
              "command": "python bench/bench_compress.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prev = out.with_suffix(".json")
    if prev.is_file():  # merge: rows not rerun now keep their earlier results
        old = json.loads(prev.read_text())
        if old.get("model") == args.model:
            have = {r["row"] for r in results}
            merged = [r for r in old.get("rows", []) if r["row"] not in have] + results
            order = list(ROWS)
            report["rows"] = sorted(merged, key=lambda r: order.index(r["row"]) if r["row"] in order else 99)
    rows_now = report["rows"]
    mag = next((r for r in rows_now if r["row"] == "magnitude50-int8"), None)
    obs = next((r for r in rows_now if r["row"] == "obs50-int8"), None)
    notes = list(args.note)
    if mag and obs:
        notes.append(f"OBS 50% + INT8 vs magnitude 50% + INT8: {100 * obs['accuracy']:.2f}% vs "
                     f"{100 * mag['accuracy']:.2f}% ({100 * (obs['accuracy'] - mag['accuracy']):+.2f} points)")
    report["notes"] = notes
    prev.write_text(json.dumps(report, indent=1, default=str))
    write_markdown(report, out.with_suffix(".md"))
    write_png(report, out.with_suffix(".png"))
    log(f"wrote {out}.json/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
