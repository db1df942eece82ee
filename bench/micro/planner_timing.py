"""The planner's per-layer choice with hot and cold compile-time timings, against whole forward passes: BERT-base
(random weights, Linear layers pruned to block patterns as in bench_dense), static INT8, each plan timed in
alternating rounds in one process: "tune, hot" (weights in cache while timing a layer), "tune, cold" (flushed
before each call, the default), every layer block-sparse, every layer dense.

    python bench/micro/planner_timing.py --out bench/results/planner_cold_timing
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import peers  # noqa: E402
from harness import alternate_by_time  # noqa: E402
from trimformer import _core  # noqa: E402
from trimformer.runtime import engine as engine_mod  # noqa: E402


def plans(hf_dir: Path, calib: list, threads: int) -> dict:
    cold_timing = engine_mod.time_formats
    out = {}
    try:
        engine_mod.time_formats = functools.partial(cold_timing, cold=False)
        out["tune, hot"] = engine_mod.compile_encoder(hf_dir, quantize="int8-static", calibration=calib,
                                                      threads=threads)
    finally:
        engine_mod.time_formats = cold_timing
    out["tune, cold"] = engine_mod.compile_encoder(hf_dir, quantize="int8-static", calibration=calib, threads=threads)
    out["all block-sparse"] = engine_mod.compile_encoder(hf_dir, quantize="int8-static", calibration=calib,
                                                         threads=threads, sparse=None)
    out["all dense"] = engine_mod.compile_encoder(hf_dir, quantize="int8-static", calibration=calib,
                                                  threads=threads, sparse=False)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparsities", default="0.5,0.7,0.8,0.9")
    ap.add_argument("--configs", default="128:1,128:16", help="seq:batch, comma separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/planner_timing")
    args = ap.parse_args(argv)
    rows = []
    for sp in (float(s) for s in args.sparsities.split(",")):
        info = peers.prepare_model("bert-base", sparsity=sp, pattern="block")
        rng = np.random.default_rng(0)
        ids1 = rng.integers(1000, info.vocab_size - 1, size=(1, 128)).astype(np.int64)
        calib = [{"input_ids": ids1, "attention_mask": np.ones_like(ids1)}]
        engines = plans(info.hf_dir, calib, args.threads)
        formats = {k: dict(Counter(e.formats.values())) for k, e in engines.items()}
        for cfg in args.configs.split(","):
            seq, batch = (int(v) for v in cfg.split(":"))
            ids = rng.integers(1000, info.vocab_size - 1, size=(batch, seq)).astype(np.int64)
            mask = np.ones_like(ids)
            ms = alternate_by_time({k: functools.partial(eng.run, ids, mask) for k, eng in engines.items()},
                                   args.rounds, args.seconds)
            rows.append({"sparsity": sp, "seq": seq, "batch": batch, "ms": ms, "formats": formats})
            print(sp, cfg, {k: round(v, 2) for k, v in ms.items()}, file=sys.stderr)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git": git,
            "command": "python " + " ".join(sys.argv), "isa": _core.detect_isa(),
            "gemm_s8": _core.gemm_s8_kernel(""), "threads": args.threads, "rounds": args.rounds}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = list(rows[0]["ms"])
    lines = [f"# Planner timings hot vs cold against whole passes ({meta['date']}, git {git})", "",
             f"Command: `{meta['command']}`", "",
             f"BERT-base, random weights pruned to 4x4 blocks, static INT8 ({meta['gemm_s8']} dense INT8), "
             f"{args.threads} threads, {args.rounds} alternating rounds of {args.seconds} s per plan; median ms "
             "per pass, and the Linears each plan keeps block-sparse (of 48).", "",
             "| sparsity | seq x batch | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{r['ms'][k]:.2f} ({r['formats'][k].get('block-int8', 0)})" for k in keys]
        lines.append(f"| {r['sparsity']:.0%} | {r['seq']} x {r['batch']} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json/.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
