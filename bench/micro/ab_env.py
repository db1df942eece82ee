"""A/B of engine settings read from the environment at construction (TRIMFORMER_REGION_PER_OP, TRIMFORMER_CHUNK_ROWS,
...), in one process: one engine per variant, compiled with its settings, then their passes interleaved in short
blocks, so that a shared machine's drift (which moves whole runs by 10-30% on the development hosts) hits every
variant alike. Finer than ab_builds.py, which needs a process per build and compares run medians.

    python bench/micro/ab_env.py --variant per_op=TRIMFORMER_REGION_PER_OP=1 \
        --variant one_region=TRIMFORMER_REGION_PER_OP=0 --case "b1:batch=1,seq=128" --out /tmp/ab

--core-distance NS also bounces a cache line between the two CPUs before and after each block's passes
(harness.core_roundtrip_ns) and reports the blocks with both round trips under NS ("near": on a VM, the host has
the two vCPUs on one CCD) apart from those with both at or over it ("apart"), where the host moves them during a run.

Reported per variant: the median and the minimum pass, and the median over blocks of the block's median against the
first variant's in the same block (its spread: the blocks' 25th-75th percentiles).

--same-plan compiles each case once (no variant's settings), saves it and loads it once per variant with that
variant's settings: every variant then runs the same formats, where compiling per variant lets the planner's
timings pick different ones (a difference the settings did not make). For settings the engine reads at
construction only; the default compiles per variant, for settings that act at compile time too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import command_line, parse_case, report_head, settings, write_report  # noqa: E402  (bench/micro, this script's directory)

import peers  # noqa: E402  (seeded random-weight models, pruned as bench_dense prunes them)
import trimformer  # noqa: E402
from harness import core_roundtrip_ns, cpu_model  # noqa: E402
from trimformer.runtime.engine import compile_encoder  # noqa: E402

CASE_KEYS = {"model": str, "sparsity": float, "pattern": str, "quantize": str, "batch": int, "seq": int,
             "threads": int}
DEFAULTS = {"model": "bert-base", "sparsity": 0.9, "pattern": "block", "quantize": "int8-static", "batch": 1,
            "seq": 128, "threads": 2}


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, spec = text.partition("=")
    env = {}
    for item in filter(None, spec.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("TRIMFORMER_"):
            raise SystemExit(f"variant {text!r}: expected NAME=TRIMFORMER_X=V[;TRIMFORMER_Y=W]")
        env[key] = value
    return name, env


def build(case: dict, env: dict[str, str], saved_plan: Path | None = None):
    """The case's engine with `env` set while it is made: compiled, or loaded from saved_plan (--same-plan)"""
    info = peers.prepare_model(case["model"], sparsity=case["sparsity"], pattern=case["pattern"])
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, info.vocab_size - 1, size=(case["batch"], case["seq"])).astype(np.int64)
    mask = np.ones_like(ids)
    quantize = None if case["quantize"] == "fp32" else case["quantize"]
    calib = [{"input_ids": ids[:1], "attention_mask": mask[:1]}] if quantize == "int8-static" else None
    with settings(env):
        if saved_plan is not None:
            eng = trimformer.load(saved_plan, threads=case["threads"])
        else:
            eng = compile_encoder(info.hf_dir, quantize=quantize, calibration=calib, threads=case["threads"],
                                  sparse="tune")
    return eng, ids, mask


def measure(engines: dict, ids, mask, blocks: int, per_block: int,
            distances: list | None = None) -> dict[str, list[list[float]]]:
    """Each variant's passes, block by block; with `distances`, the cross-core round trip before and after each
    block (all variants' passes) appended to it"""
    times: dict[str, list[list[float]]] = {name: [] for name in engines}
    for eng in engines.values():
        for _ in range(3):
            eng.run(input_ids=ids, attention_mask=mask)
    for b in range(blocks):
        order = list(engines) if b % 2 == 0 else list(reversed(engines))
        before = core_roundtrip_ns() if distances is not None else None
        for name in order:
            block = []
            for _ in range(per_block):
                t0 = time.perf_counter()
                engines[name].run(input_ids=ids, attention_mask=mask)
                block.append((time.perf_counter() - t0) * 1e3)
            times[name].append(block)
        if distances is not None:
            distances.append([before, core_roundtrip_ns()])
    return times


def variant_rows(variants: dict, times: dict, first: str, blocks: list[int] | None) -> list[str]:
    """A table row per variant over the given blocks (all with None)"""
    pick = (lambda t: t) if blocks is None else (lambda t: t[blocks])
    ref = np.median(pick(np.array(times[first])), axis=1)
    rows = []
    for name, env in variants.items():
        t = pick(np.array(times[name]))
        ratio = np.median(t, axis=1) / ref
        q1, q3 = np.percentile(ratio, [25, 75])
        settings = " ".join(f"{k}={v}" for k, v in env.items()) or "(none)"
        rows.append(f"| {name} | {settings} | {np.median(t):.3f} | {t.min():.3f} | {np.median(ratio):.4f} | "
                    f"{q1:.4f}-{q3:.4f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", required=True,
                    help="NAME=TRIMFORMER_X=V[;TRIMFORMER_Y=W] (the first variant is the reference)")
    ap.add_argument("--case", action="append", required=True,
                    help="LABEL:key=value,... (keys: " + ", ".join(CASE_KEYS) + ")")
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--per-block", type=int, default=8)
    ap.add_argument("--note", action="append", default=[], help="a line for the Markdown notes")
    ap.add_argument("--same-plan", action="store_true",
                    help="compile each case once and load it per variant (settings read at construction only)")
    ap.add_argument("--core-distance", type=float, default=None, metavar="NS",
                    help="report blocks whose cross-core round trips were both under / both at or over NS apart")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    variants = dict(parse_variant(v) for v in args.variant)
    cases = dict(parse_case(c, CASE_KEYS, DEFAULTS) for c in args.case)
    results, distances = {}, {}
    for label, case in cases.items():
        engines, ids, mask = {}, None, None
        with tempfile.TemporaryDirectory() as tmp:
            plan = None
            if args.same_plan:
                plan = Path(tmp) / "model"
                trimformer.save(build(case, {})[0], plan)
            for name, env in variants.items():
                engines[name], ids, mask = build(case, env, plan)
        distances[label] = [] if args.core_distance is not None else None
        results[label] = measure(engines, ids, mask, args.blocks, args.per_block, distances[label])
        del engines
        print(f"{label}: done", file=sys.stderr)
    command = command_line(argv)
    first = next(iter(variants))
    lines = report_head(f"A/B of engine settings ({cpu_model()})", command,
                        f"{args.blocks} blocks of {args.per_block} passes per variant, interleaved (the order "
                        f"alternating per block), in one process. Ratio: the median over blocks of the block's median "
                        f"pass against `{first}`'s in the same block, with the blocks' 25th-75th percentiles."
                        + (" Same plan: each case compiled once, saved, and loaded per variant with its settings."
                           if args.same_plan else " Each variant compiled with its settings."), args.note)
    for label, case in cases.items():
        lines += [f"## {label} (" + ", ".join(f"{k} {case[k]}" for k in CASE_KEYS) + ")", "",
                  f"| variant | settings | median ms | min ms | vs {first} | blocks' 25-75% |",
                  "|---|---|---:|---:|---:|---|"]
        lines += variant_rows(variants, results[label], first, None)
        lines.append("")
        if distances[label] is not None:
            for state, keep in (("near", lambda d: d[0] < args.core_distance and d[1] < args.core_distance),
                                ("apart", lambda d: d[0] >= args.core_distance and d[1] >= args.core_distance)):
                picked = [i for i, d in enumerate(distances[label]) if None not in d and keep(d)]
                ns = [x for i in picked for x in distances[label][i]]
                lines += [f"### {label}, blocks with the cores {state} ({len(picked)} of {len(distances[label])}; "
                          + (f"round trip median {np.median(ns):.0f} ns)" if ns else "none)"), ""]
                if picked:
                    lines += [f"| variant | settings | median ms | min ms | vs {first} | blocks' 25-75% |",
                              "|---|---|---:|---:|---:|---|", *variant_rows(variants, results[label], first, picked),
                              ""]
    write_report(args.out, {"command": command, "cpu": cpu_model(), "variants": variants, "cases": cases,
                            "times_ms": results, "core_roundtrip_ns": distances}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
