"""Kernel benchmark: block-sparse INT8 GEMM vs our dense INT8 and FP32 GEMMs over sparsity and token counts.

Effective throughput counts the dense-equivalent operations (2*m*n*k) so that sparse and dense are comparable.
All kernels are timed by the native `_core.time_gemm` (pre-packed weights, no Python in the loop), same threads.

    python bench/bench_sparse_kernels.py --threads 2 --out bench/results/sparse_kernels
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

from trimformer import _core

SHAPES = {"bert-base qkv": (2304, 768), "bert-base ffn1": (3072, 768), "bert-base ffn2": (768, 3072),
          "bert-base attn_out": (768, 768), "minilm ffn1": (1536, 384)}
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", default="128,2048", help="m values (batch x seq)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", default="bench/results/sparse_kernels")
    args = ap.parse_args(argv)
    tokens = [int(t) for t in args.tokens.split(",")]
    rows = []
    for label, (n, k) in SHAPES.items():
        for m in tokens:
            ops = 2.0 * m * n * k
            f32 = _core.time_gemm("f32", m, n, k, args.iters, "", args.threads)
            s8 = _core.time_gemm("s8", m, n, k, args.iters, "", args.threads)
            row = {"shape": label, "n": n, "k": k, "m": m, "f32_ms": f32 * 1e3, "int8_ms": s8 * 1e3, "sparse": {}}
            for sp in SPARSITIES:
                for block_rows in (1, 4):
                    t = _core.time_gemm("bsr", m, n, k, args.iters, "", args.threads, 1.0 - sp, block_rows)
                    row["sparse"][f"{block_rows}x4@{sp:.2f}"] = {
                        "ms": t * 1e3, "speedup_vs_int8": s8 / t, "effective_gops": ops / t / 1e9}
            rows.append(row)
            print(f"{label:18s} m={m:5d} int8 {s8 * 1e3:7.3f} ms  4x4@0.90 "
                  f"{row['sparse']['4x4@0.90']['speedup_vs_int8']:.2f}x", file=sys.stderr)
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "threads": args.threads,
            "isa": _core.detect_isa(), "machine": platform.processor() or platform.machine(),
            "command": "python " + " ".join(sys.argv)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Block-sparse INT8 kernels vs dense ({meta['threads']} threads, {meta['isa']}, {meta['date']})", "",
             f"Command: `{meta['command']}`", "",
             "Speed-up of the block-sparse INT8 GEMM over our dense INT8 GEMM (same shapes, same threads); "
             "blocks are 1x4 (one output row x 4 inputs) or 4x4 (4 output rows x 4 inputs).", "",
             "| shape | m | dense INT8 ms | dense FP32 ms | " +
             " | ".join(f"{b}x4 {int(s * 100)}%" for s in SPARSITIES for b in (1, 4)) + " |",
             "|---|---|---|---|" + "---|" * (2 * len(SPARSITIES))]
    for r in rows:
        cells = [f"{r['sparse'][f'{b}x4@{s:.2f}']['speedup_vs_int8']:.2f}x" for s in SPARSITIES for b in (1, 4)]
        lines.append(f"| {r['shape']} | {r['m']} | {r['int8_ms']:.3f} | {r['f32_ms']:.3f} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(tokens), figsize=(6 * len(tokens), 4.5), squeeze=False)
        for ax, m in zip(axes[0], tokens, strict=True):
            for r in (r for r in rows if r["m"] == m):
                ax.plot([s * 100 for s in SPARSITIES],
                        [r["sparse"][f"4x4@{s:.2f}"]["speedup_vs_int8"] for s in SPARSITIES], marker="o",
                        label=f"{r['shape']} 4x4")
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_title(f"block-sparse INT8 / dense INT8, m={m}")
            ax.set_xlabel("sparsity (%)")
            ax.set_ylabel("speed-up over dense INT8")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print(f"wrote {out}.json/.md/.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
