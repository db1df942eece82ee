"""Kernel benchmark: every sparse weight format vs our dense INT8 and FP32 over sparsity and token counts.

Each format runs one Linear through the executor's own loader and kernels (`_core.LinearRunner`: activation
quantization / re-layout included, pre-packed weights, no Python in the timed call), best of --iters calls
interleaved across formats, same threads. Effective throughput counts the dense-equivalent operations
(2*m*n*k) so that sparse and dense are comparable. Patterns: "block" (4x4 blocks) for block-int8 / block-f32,
"unstructured" for csr-int8 / csr-f32, "2:4" / "4:8" (50%) for nm-f32 / nm-int8; each is also run through the
other formats it fits, as the planner would. Where the level runs csr-f32 as generated code, its plain row walk is
timed too (`csr-f32/walk`, the planner's other csr-f32 kernel: it keeps the faster per layer); where it does not
(other levels, weights too dense for the code), csr-f32 is the walk and the column repeats its time.
--activations (INT8 formats, dense and sparse alike): "dynamic" (default: each row's range found and the rows
quantized in the call), "static" (calibrated parameters: quantized in the call, as a static INT8 pass's QKV,
attn_out and FFN1 run) or "u8" (the input arrives quantized, and for block-sparse quads re-laid, as FFN2's does from
FFN1's epilogue in a static INT8 pass: the GEMM with its epilogue alone, the kernel as the issue describes it).

    python bench/bench_sparse_kernels.py --threads 2 --out bench/results/sparse_kernels
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from harness import core_roundtrip_ns, env_prefix, format_roundtrips
from trimformer import _core
from trimformer.formats.registry import get_format
from trimformer.formats.sparsity import magnitude_mask
from trimformer.runtime.engine import ACTIVATION_MODES, CSR_F32_WALK, time_formats

SHAPES = {"bert-base qkv": (2304, 768), "bert-base ffn1": (3072, 768), "bert-base ffn2": (768, 3072),
          "bert-base attn_out": (768, 768), "minilm ffn1": (1536, 384)}
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
# pattern -> sparse formats timed on weights pruned in that pattern
# (block-int7: 4x4 blocks with 7-bit weights, reduce_range; multiplied 8-bit at avx2, else as block-int8)
FORMATS = {"block": ("block-int8", "block-int7", "csr-int8", "block-f32", "csr-f32"),
           "unstructured": ("csr-int8", "block-int8", "csr-f32"),
           "2:4": ("nm-int8", "nm-f32", "csr-f32"), "4:8": ("nm-int8", "nm-f32")}
ACTIVATIONS_NOTE = {
    "dynamic": "dynamic (float rows in; each row's range found and the rows quantized and re-laid in the call).",
    "static": "static (float rows in, quantized with calibrated parameters and re-laid in the call, no range pass, "
              "as a static INT8 pass's QKV, attn_out and FFN1 run).",
    "u8": "u8 (the rows arrive quantized with static parameters, and re-laid for block-sparse quads and gathered "
          "quads, as FFN2's input does from FFN1's epilogue in a static INT8 pass; made once before the timed calls: "
          "the GEMM and its epilogue alone). Float formats read float rows."}


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _time_rows(shapes: dict[str, tuple[int, int]], tokens: list[int], sparsities: list[float], patterns: list[str],
               iters: int, threads: int, seed: int, region_per_call: bool, activations: str) -> list[dict]:
    """One pass over the rows: each row's seconds per call for the dense baselines and its pattern's formats"""
    rng = np.random.default_rng(seed)
    timed = []
    for label, (n, k) in shapes.items():
        w0 = rng.standard_normal((n, k)).astype(np.float32)
        for m in tokens:
            for pattern in patterns:
                levels = [0.5] if pattern in ("2:4", "4:8") else sparsities
                for sp in levels:
                    w = w0 * magnitude_mask(w0, sp, pattern)
                    # dense baselines timed in the same interleaved loop (on the pruned weight: same cost as dense)
                    before = core_roundtrip_ns() if threads > 1 else None
                    t = time_formats(w, ["int8", "f32", *FORMATS[pattern]], tokens=m, iters=iters, threads=threads,
                                     region_per_call=region_per_call, walk=True, activations=activations)
                    if "csr-f32" in t:  # without code csr-f32 is the walk: the same column in every row
                        t.setdefault(CSR_F32_WALK, t["csr-f32"])
                    cores = [before, core_roundtrip_ns()] if threads > 1 else None  # where the host had the cores
                    timed.append({"shape": label, "n": n, "k": k, "m": m, "pattern": pattern, "sparsity": sp, "t": t,
                                  "cores": cores})
                    print(f"{label:18s} m={m:5d} {pattern:12s} {sp:.2f}: timed", file=sys.stderr)
    return timed


def _report_row(e: dict) -> dict:
    t, n, k, m = e["t"], e["n"], e["k"], e["m"]
    ops = 2.0 * m * n * k
    base = {"int8": t["int8"], "f32": t["f32"]}
    row = {"shape": e["shape"], "n": n, "k": k, "m": m, "pattern": e["pattern"], "sparsity": e["sparsity"],
           "dense_int8_ms": base["int8"] * 1e3, "dense_f32_ms": base["f32"] * 1e3, "formats": {},
           "core_roundtrip_ns": e["cores"]}
    for fmt in [*FORMATS[e["pattern"]], *([CSR_F32_WALK] if CSR_F32_WALK in t else [])]:
        stored = "csr-f32" if fmt == CSR_F32_WALK else fmt  # the walk runs csr-f32's stored weight
        dense = base["int8"] if get_format(stored).int8_activations else base["f32"]
        row["formats"][fmt] = {
            "ms": t[fmt] * 1e3, "speedup_vs_dense_same_precision": dense / t[fmt],
            "speedup_vs_dense_int8": base["int8"] / t[fmt], "effective_gops": ops / t[fmt] / 1e9}
    return row


def run(shapes: dict[str, tuple[int, int]], tokens: list[int], sparsities: list[float], patterns: list[str],
        iters: int, threads: int, seed: int = 0, region_per_call: bool = False, rounds: int = 1,
        round_gap_s: float = 0.0, activations: str = "dynamic") -> list[dict]:
    """Every row timed `rounds` times, all rows per round (a pause between rounds), each format's time its best over
    all calls of all rounds: the rounds spread each row's calls over the run, so that a slow phase of a shared
    host that lasts through one pass over a row does not set that row's figures alone"""
    merged: list[dict] | None = None
    for r in range(rounds):
        if r:
            time.sleep(round_gap_s)
        timed = _time_rows(shapes, tokens, sparsities, patterns, iters, threads, seed, region_per_call, activations)
        if merged is None:
            merged = timed
            continue
        for a, b in zip(merged, timed, strict=True):
            a["t"] = {f: min(a["t"][f], b["t"][f]) for f in a["t"]}
            if a["cores"] is not None:
                a["cores"] = a["cores"] + b["cores"]
    rows = [_report_row(e) for e in merged or []]
    for row in rows:
        best = max(row["formats"], key=lambda f: row["formats"][f]["speedup_vs_dense_same_precision"])
        print(f"{row['shape']:18s} m={row['m']:5d} {row['pattern']:12s} {row['sparsity']:.2f}: best {best} "
              f"{row['formats'][best]['speedup_vs_dense_same_precision']:.2f}x its dense", file=sys.stderr)
    return rows


def write_reports(rows: list[dict], meta: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Sparse kernels vs dense ({meta['threads']} threads, {meta['isa']}, {meta['date']})", "",
             f"Command: `{meta['command']}`", "",
             f"Dense INT8 kernel: {meta.get('dense_int8', 'not recorded')} (`TRIMFORMER_NO_AMX` "
             f"{'set' if meta.get('no_amx_env') else 'unset'}).", "",
             "Calls: " + ("each in a parallel region of its own (a fork and a join per call, as a lone Linear runs)."
                          if meta.get("region_per_call") else
                          "the calls of a timing share one parallel region, each ending at the team's barrier, as "
                          "a pass's ops do (older tables opened a region per call); the region's first call is "
                          "untimed (LinearRunner.time's warm_call, from 2026-12-07 on: before it, the timed call was "
                          "the region's first and read the input the master thread alone had made)."),
             f"Rounds: {meta.get('rounds', 1)} pass(es) over all rows ({meta.get('round_gap_s', 0.0):g} s apart); "
             f"each time is the best over all calls of all rounds.",
             "INT8 activations: " + ACTIVATIONS_NOTE[meta.get("activations", "dynamic")], "",
             "Speed-up of each sparse format over our dense kernel of the same precision (INT8 formats vs dense "
             "INT8, float32 formats vs dense FP32) on the same Linear shape and token count, and effective "
             "dense-equivalent throughput (2*m*n*k / time, GOP/s). Development timings on a shared machine are "
             "not results: the committed tables come from a quiet machine. Cores: the cross-core round trip "
             "before / after the row's timings (harness.core_roundtrip_ns; on the Zen 4 VMs about 100 ns with the "
             "host's vCPUs near, about 320 ns apart).", ""]
    for pattern in dict.fromkeys(r["pattern"] for r in rows):
        sub = [r for r in rows if r["pattern"] == pattern]
        fmts = list(sub[0]["formats"])
        lines += [f"## {pattern}", "",
                  "| shape | m | sparsity | dense INT8 ms | dense FP32 ms | " +
                  " | ".join(f"{f} (x dense, GOP/s)" for f in fmts) + " | cores (ns) |",
                  "|---|---|---|---|---|" + "---|" * len(fmts) + "---|"]
        for r in sub:
            cells = [f"{r['formats'][f]['speedup_vs_dense_same_precision']:.2f}x, "
                     f"{r['formats'][f]['effective_gops']:.3g}" for f in fmts]
            lines.append(f"| {r['shape']} | {r['m']} | {r['sparsity']:.0%} | {r['dense_int8_ms']:.3f} | "
                         f"{r['dense_f32_ms']:.3f} | " + " | ".join(cells) + " | "
                         + format_roundtrips(r.get("core_roundtrip_ns")) + " |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    tokens = sorted({r["m"] for r in rows})
    swept = [p for p in dict.fromkeys(r["pattern"] for r in rows) if len({r["sparsity"] for r in rows
                                                                         if r["pattern"] == p}) > 1]
    fig, axes = plt.subplots(max(1, len(swept)), len(tokens), figsize=(6 * len(tokens), 4.2 * max(1, len(swept))),
                             squeeze=False)
    for i, pattern in enumerate(swept):
        for ax, m in zip(axes[i], tokens, strict=True):
            sub = [r for r in rows if r["pattern"] == pattern and r["m"] == m]
            for shape in dict.fromkeys(r["shape"] for r in sub):
                pts = [r for r in sub if r["shape"] == shape]
                for fmt in pts[0]["formats"]:
                    ax.plot([r["sparsity"] * 100 for r in pts],
                            [r["formats"][fmt]["speedup_vs_dense_same_precision"] for r in pts], marker="o",
                            label=f"{shape} {fmt}")
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_title(f"{pattern} pruning, m={m}")
            ax.set_xlabel("sparsity (%)")
            ax.set_ylabel("speed-up over dense, same precision")
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", default="1,128,2048", help="m values (batch x seq)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--shapes", type=_csv, default=list(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES))
    ap.add_argument("--patterns", type=_csv, default=list(FORMATS), help=f"comma list of {', '.join(FORMATS)}")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (a quick check that the script runs)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="passes over all rows; each format keeps its best over all of them")
    ap.add_argument("--round-gap-s", type=float, default=0.0, help="pause between rounds")
    ap.add_argument("--region-per-call", action="store_true",
                    help="each call in a parallel region of its own (the older tables' protocol)")
    ap.add_argument("--activations", choices=ACTIVATION_MODES, default="dynamic",
                    help="how the INT8 formats' input arrives (see the docstring)")
    ap.add_argument("--out", default="bench/results/sparse_kernels")
    args = ap.parse_args(argv)
    bad = [s for s in args.shapes if s not in SHAPES] + [p for p in args.patterns if p not in FORMATS]
    if bad:
        ap.error(f"unknown shapes / patterns: {bad}")
    shapes = {"tiny": (40, 72)} if args.tiny else {s: SHAPES[s] for s in args.shapes}
    tokens = [int(t) for t in args.tokens.split(",")]
    sparsities = [float(s) for s in args.sparsities.split(",")]
    if args.rounds < 1 or args.round_gap_s < 0:
        ap.error("--rounds must be positive and --round-gap-s not negative")
    rows = run(shapes, tokens, sparsities, args.patterns, args.iters, args.threads,
               region_per_call=args.region_per_call, rounds=args.rounds, round_gap_s=args.round_gap_s,
               activations=args.activations)
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "threads": args.threads,
            "isa": _core.detect_isa(), "machine": platform.processor() or platform.machine(),
            "command": env_prefix() + "python " + " ".join(sys.argv), "dense_int8": _core.gemm_s8_kernel(""),
            "no_amx_env": os.environ.get("TRIMFORMER_NO_AMX", ""), "region_per_call": args.region_per_call,
            "rounds": args.rounds, "round_gap_s": args.round_gap_s, "activations": args.activations}
    out = Path(args.out)
    write_reports(rows, meta, out)
    print(f"wrote {out}.json/.md/.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
