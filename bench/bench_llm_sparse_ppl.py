"""Perplexity of pruned decoder checkpoints run by the runtime's sparse formats against the dense formats of the
same precision (same checkpoint, the documented held-out slice of docs/llm.md): `sparse` (bitmask-f32) must equal
`f32` exactly, `sparse-int8` (bitmask-int8) must equal `w8a8`; the ratio to the unpruned model's dense
perplexity is the cost of the pruning itself (bench/results/llm_quality.md has the torch side).

    python bench/bench_llm_sparse_ppl.py --dirs /path/to/sparsegpt-50,/path/to/sparsegpt-2_4 \\
        --out bench/results/llm_sparse_ppl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PAIRS = [("f32", "sparse"), ("w8a8", "sparse-int8")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dirs", required=True, help="comma-separated pruned checkpoint directories (prune-llm output)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/llm_sparse_ppl")
    args = ap.parse_args()

    from trimformer import assets
    from trimformer.llm_eval import evaluate_perplexity

    base = evaluate_perplexity(assets.smollm2_gguf_path(), weights="f32", threads=args.threads)
    rows = []
    for d in [Path(x) for x in args.dirs.split(",") if x]:
        meta = json.loads((d / "trimformer_compression.json").read_text())
        for dense, sparse in PAIRS:
            r = {w: evaluate_perplexity(d, weights=w, threads=args.threads) for w in (dense, sparse)}
            params = meta.get("parameters", {})
            rows.append({"checkpoint": d.name, "method": meta.get("method"),
                         "pattern": params.get("pattern"), "sparsity": params.get("achieved_sparsity"),
                         "dense": dense, "sparse": sparse, "dense_formats": r[dense]["weights"],
                         "sparse_formats": r[sparse]["weights"], "dense_ppl": r[dense]["perplexity"],
                         "sparse_ppl": r[sparse]["perplexity"], "tokens": r[sparse]["tokens"]})
            print(json.dumps(rows[-1]), flush=True)
    doc = {"command": " ".join(["python", *sys.argv]), "unpruned_f32_ppl": base["perplexity"], "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    lines = ["# Pruned SmolLM2-135M: runtime perplexity, sparse formats vs dense of the same precision", "",
             f"Command: `{doc['command']}`  ",
             f"Slice: docs/llm.md (8192 tokens, 1024-token windows); unpruned dense FP32 perplexity "
             f"**{base['perplexity']:.3f}**.", "",
             "| checkpoint | dense | sparse | dense ppl | sparse ppl | sparse / dense | ratio to unpruned fp32 |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        fmts = r["sparse_formats"] if isinstance(r["sparse_formats"], str) else ", ".join(r["sparse_formats"])
        lines.append(f"| {r['checkpoint']} | {r['dense']} | {r['sparse']} ({fmts}) | "
                     f"{r['dense_ppl']:.3f} | {r['sparse_ppl']:.3f} | {r['sparse_ppl'] / r['dense_ppl']:.6f} | "
                     f"{r['sparse_ppl'] / base['perplexity']:.4f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
