"""trimformer's sparse encoder against ONNX Runtime's dense INT8 and DeepSparse on the same weights, calls interleaved.

bench_dense.py times the runtimes one after another (in rounds), so a slow phase of a shared host that falls on one
runtime and not the other moves their ratio: five runs of its 90% block BERT-base batch-1 ratio to ORT's best INT8
read 0.167x-0.247x on one machine (docs/benchmarks.md, Noise). Here every runtime is built once, in this process,
and they take turns in short blocks of calls (the order rotating each cycle, a pause before each block so that the
previous runtime's spinning worker threads have parked, and an untimed call first: one runtime's call evicts the
others' weights from the caches, so calls alternating one by one would time every runtime cold, which a deployed
model is not); a slow phase of the host falls on all of them alike. Reported: each runtime's median over its
blocks' medians, trimformer's ratio to ORT's best INT8 runtime (the lowest median), and the median and quartiles
of the per-cycle ratios (trimformer's block over the fastest ORT block of the same cycle). DeepSparse needs a venv
of its own: `deepsparse-fp32` / `deepsparse-int8` run as a worker process (bench/deepsparse_worker.py, the graphs
bench_dense.py feeds it) that takes its turn like the others, its calls timed in the worker; trimformer's FP32
runtime is compared with DeepSparse FP32 and its INT8 runtimes with DeepSparse INT8, block against block in each
cycle, against issue 3's goals where the case has one.

    python bench/bench_interleaved.py --model bert-base --sparsity 0.9 --pattern block --cycles 20 \
        --out bench/results/interleaved_block_0.9
    python bench/bench_interleaved.py --sparsity 0.9 --pattern unstructured --batch 16 \
        --runtimes trimformer-fp32,deepsparse-fp32 --out bench/results/interleaved_unstructured_0.9_fp32_b16
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from bench_dense import build_runner, machine_info  # noqa: E402
from harness import compare_outputs, make_check_inputs, make_inputs  # noqa: E402

RUNTIMES = ("trimformer-int8-static", "trimformer-int8-dynamic", "ort-int8-dynamic", "ort-int8-dynamic-unfused",
            "ort-int8-static")
DEEPSPARSE = ("deepsparse-fp32", "deepsparse-int8")
# issue 3's batch-1 goal: sparse INT8 latency <= this x ORT's best dense INT8 (90% block) / (80% block)
GOAL = {0.9: 0.2, 0.8: 0.29}


def ds_peer(trim: str) -> str:
    """The DeepSparse runtime a trimformer runtime is compared with (same precision)"""
    return "deepsparse-fp32" if trim == "trimformer-fp32" else "deepsparse-int8"


def ds_goal(pattern: str, sparsity: float, batch: int, trim: str) -> float | None:
    """Issue 3's goal against DeepSparse on the same weights as a latency ratio bound (trimformer / DeepSparse, same
    batch: a throughput goal of x is a latency ratio of 1/x), or None where it states none"""
    sp = round(sparsity, 2)
    if pattern == "unstructured" and sp == 0.9:
        return 1.0  # FP32 and INT8 >= 1.0x DeepSparse
    if pattern == "block" and trim != "trimformer-fp32":
        if sp == 0.9 and batch in (1, 16):
            return 0.5  # batch 1: <= 0.5x its latency; batch 16: >= 2x its throughput
        if sp == 0.8 and batch == 1:
            return 1 / 1.5
    return None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bert-base", choices=list(peers.MODEL_CONFIGS))
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--pattern", default="block")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--cycles", type=int, default=20, help="blocks of calls per runtime, one per cycle")
    ap.add_argument("--block", type=int, default=5, help="timed calls per block (after one untimed call)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--gap-ms", type=float, default=20.0, help="pause before each block")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    bad = [r for r in args.runtimes
           if not (r.startswith(("trimformer-int8", "ort-int8")) or r in ("trimformer-fp32", *DEEPSPARSE))]
    trims = [r for r in args.runtimes if r.startswith("trimformer")]
    unpaired = [t for t in trims if ds_peer(t) not in args.runtimes
                and not (t != "trimformer-fp32" and any(r.startswith("ort") for r in args.runtimes))]
    if bad or not trims or unpaired or len(trims) == len(args.runtimes):
        ap.error("--runtimes takes trimformer-fp32 / trimformer-int8-* runtimes and their peers (ort-int8-*, "
                 "deepsparse-fp32, deepsparse-int8): each trimformer INT8 runtime with an ORT INT8 runtime or "
                 f"deepsparse-int8, trimformer-fp32 with deepsparse-fp32 (got {bad or unpaired or args.runtimes})")
    if args.cycles < 1 or args.block < 1 or args.warmup < 0 or args.gap_ms < 0:
        ap.error("--cycles and --block must be >= 1, --warmup and --gap-ms >= 0")
    return args


def interleave(runners: dict[str, Any], inputs: tuple, cycles: int, block: int, warmup: int,
               gap_s: float) -> dict[str, list]:
    """Per runner and cycle, the median ms of a block of `block` calls after one untimed call (the order of the
    runners rotating each cycle, a pause before each block). A runner is a callable on `inputs`, or a worker in a
    process of its own with `run_block(n)` (its own inputs and warm-up; it makes the untimed call and times the
    others itself: peers.DeepSparseWorker)."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            if not hasattr(runners[name], "run_block"):
                runners[name](*inputs)
    medians: dict[str, list[float]] = {name: [] for name in names}
    for c in range(cycles):
        for name in names[c % len(names):] + names[:c % len(names)]:
            time.sleep(gap_s)
            if hasattr(runners[name], "run_block"):
                medians[name].append(float(np.median(runners[name].run_block(block))))
                continue
            runners[name](*inputs)  # its weights back into the caches the other runtimes' calls took
            calls = []
            for _ in range(block):
                t0 = time.perf_counter()
                runners[name](*inputs)
                calls.append((time.perf_counter() - t0) * 1e3)
            medians[name].append(float(np.median(calls)))
    return medians


def summarize(samples: dict[str, list[float]]) -> dict[str, Any]:
    stats = {name: {"median_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
                    "p90_ms": float(np.percentile(v, 90)), "blocks": len(v)} for name, v in samples.items()}
    ort = [n for n in samples if n.startswith("ort")]
    best_ort = min(ort, key=lambda n: stats[n]["median_ms"]) if ort else None
    ratios, ds_ratios = {}, {}
    for name in (n for n in samples if n.startswith("trimformer")):
        if ort and name != "trimformer-fp32":
            fastest_ort_per_cycle = np.min(np.array([samples[n] for n in ort]), axis=0)
            per_cycle = np.asarray(samples[name]) / fastest_ort_per_cycle
            ratios[name] = {"vs_best_ort_median": stats[name]["median_ms"] / stats[best_ort]["median_ms"],
                            **_quartiles(per_cycle)}
        peer = ds_peer(name)
        if peer in samples:
            per_cycle = np.asarray(samples[name]) / np.asarray(samples[peer])
            ds_ratios[name] = {"peer": peer, "vs_peer_median": stats[name]["median_ms"] / stats[peer]["median_ms"],
                               **_quartiles(per_cycle)}
    return {"stats": stats, "best_ort": best_ort, "ratios": ratios, "ds_ratios": ds_ratios}


def _quartiles(per_cycle: np.ndarray) -> dict[str, float]:
    return {"per_cycle_median": float(np.median(per_cycle)), "per_cycle_q1": float(np.percentile(per_cycle, 25)),
            "per_cycle_q3": float(np.percentile(per_cycle, 75))}


def write_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(report, indent=1))  # (--out names often hold a dot)
    m, a, s = report["meta"], report["args"], report["summary"]
    goal = GOAL.get(round(a["sparsity"], 2)) if a["pattern"] == "block" and a["batch"] == 1 else None
    peers_named = " and ".join(p for p, on in (("ONNX Runtime dense INT8", s["ratios"]),
                                                ("DeepSparse", s["ds_ratios"])) if on)
    lines = [f"# Interleaved calls: trimformer sparse vs {peers_named} ({a['model']}, "
             f"{a['sparsity']:.0%} {a['pattern']}, seq {a['seq']} batch {a['batch']})", "",
             f"- date (UTC): {m['date_utc']}; git: {m['git_commit']}",
             f"- command: `{m['command']}`",
             f"- CPU: {m['cpu_model']} ({m['logical_cpus']} logical CPUs); threads: {a['threads']}",
             f"- load average at start / end: {'/'.join(f'{x:.2f}' for x in m['loadavg_start'])} / "
             f"{'/'.join(f'{x:.2f}' for x in report['loadavg_end'])}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
             f"- protocol: every runtime built once in this process; {a['warmup']} warm-up calls each, then "
             f"{a['cycles']} cycles of one block per runtime (order rotating each cycle, {a['gap_ms']:g} ms pause "
             f"before each block): an untimed call, then {a['block']} timed calls, the block's median kept; seeded "
             "random token ids, full attention mask, random-weight model, the same sparse weights for every "
             "runtime (ORT runs them dense); DeepSparse in a worker process of its own (bench/deepsparse_worker.py: "
             "the same inputs, its block's calls timed there, around the engine call)", "",
             "Median, p10 and p90 over the blocks' medians.", "",
             "| runtime | median ms | p10 ms | p90 ms | output check (cosine to torch FP32) |", "|---|---|---|---|---|"]
    for name, st in s["stats"].items():
        ck = report["checks"][name]
        lines.append(f"| {name} | {st['median_ms']:.2f} | {st['p10_ms']:.2f} | {st['p90_ms']:.2f} | "
                     f"{ck['cosine']:.5f} (worst token {ck['min_token_cosine']:.4f}) |")
    if s["ratios"]:
        lines += ["", f"ORT's best INT8 runtime (lowest median): {s['best_ort']}.", "",
                  "| trimformer runtime | median / ORT best median | per-cycle ratio to the fastest ORT block, "
                  "median (quartiles) | goal |", "|---|---|---|---|"]
        for name, r in s["ratios"].items():
            status = "-" if goal is None else f"<= {goal}x: **{'met' if r['vs_best_ort_median'] <= goal else 'not met'}**"
            lines.append(f"| {name} | {r['vs_best_ort_median']:.3f}x | {r['per_cycle_median']:.3f}x "
                         f"({r['per_cycle_q1']:.3f}-{r['per_cycle_q3']:.3f}x) | {status} |")
    if s["ds_ratios"]:
        lines += ["", "Against DeepSparse on the same weights, same precision (a latency ratio, < 1: trimformer "
                  "faster; at batch 16 the throughput ratio is its inverse).", "",
                  "| trimformer runtime | DeepSparse runtime | median / its median | per-cycle ratio to its block, "
                  "median (quartiles) | goal |", "|---|---|---|---|---|"]
        for name, r in s["ds_ratios"].items():
            g = ds_goal(a["pattern"], a["sparsity"], a["batch"], name)
            status = "-" if g is None else f"<= {g:.3g}x: **{'met' if r['vs_peer_median'] <= g else 'not met'}**"
            lines.append(f"| {name} | {r['peer']} | {r['vs_peer_median']:.3f}x | {r['per_cycle_median']:.3f}x "
                         f"({r['per_cycle_q1']:.3f}-{r['per_cycle_q3']:.3f}x) | {status} |")
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    meta = machine_info(argparse.Namespace(threads=args.threads, iters=None, warmup=None, rounds=None,
                                           max_time_s=None))
    meta["protocol"] = {  # this benchmark's, in place of bench_dense.py's rounds
        "warmup": args.warmup, "cycles": args.cycles, "block": args.block, "gap_ms": args.gap_ms,
        "latency": "per runtime and cycle, the median of `block` timed calls after one untimed call; median / "
                   "p10 / p90 over the cycles",
        "inputs": "seeded random ids in [1000, vocab), full attention mask, token types 0"}
    info = peers.prepare_model(args.model, seed=args.seed, sparsity=args.sparsity, pattern=args.pattern)
    calib = peers.calibration_batches(info, n=args.calib_batches, seed=args.seed)
    check = make_check_inputs(args.seq, info.vocab_size, args.seed)
    ref_runner, _ = peers.torch_runner(info, args.threads, int8=False)
    ref = ref_runner(*check)
    del ref_runner
    gc.collect()
    runners, notes, checks = {}, {}, {}
    try:
        for rt in args.runtimes:
            if rt in DEEPSPARSE:
                # fp32: the raw classic-mask export; int8: the QOperator graph ort-int8-static runs (bench_dense.py)
                path = peers.export_onnx(info) if rt == "deepsparse-fp32" else peers.ort_int8_static(info, calib)
                worker = peers.DeepSparseWorker(path, args.batch, args.seq, args.threads, info.vocab_size,
                                                args.seed, warmup=args.warmup, check=check)
                runners[rt] = worker
                notes[rt] = {"onnx": path.name, **{k: worker.info.get(k) for k in
                                                   ("deepsparse_version", "numpy", "onnx", "compile_s")}}
                checks[rt] = compare_outputs(worker.check_output, ref, check[1])
            else:
                runners[rt], notes[rt] = build_runner(rt, info, args.threads, calib)
                checks[rt] = compare_outputs(runners[rt](*check), ref, check[1])
            print(f"{rt}: built, check {checks[rt]}", file=sys.stderr)
        inputs = make_inputs(args.batch, args.seq, info.vocab_size, args.seed)
        samples = interleave(runners, inputs, args.cycles, args.block, args.warmup, args.gap_ms / 1e3)
    finally:
        for r in runners.values():
            if hasattr(r, "close"):
                r.close()
    report = {"meta": meta, "args": {k: v for k, v in vars(args).items() if k != "out"}, "notes": notes,
              "checks": checks, "samples_ms": samples, "summary": summarize(samples),
              "loadavg_end": list(os.getloadavg())}
    write_report(report, Path(args.out))
    for name, r in report["summary"]["ratios"].items():
        print(f"{name}: {r['vs_best_ort_median']:.3f}x ORT best ({report['summary']['best_ort']}), per-cycle "
              f"median {r['per_cycle_median']:.3f}x", file=sys.stderr)
    for name, r in report["summary"]["ds_ratios"].items():
        print(f"{name}: {r['vs_peer_median']:.3f}x {r['peer']}, per-cycle median {r['per_cycle_median']:.3f}x",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
