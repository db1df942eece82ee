"""How much an input-column order chosen per weight would save csr-int8 on unstructured weights (an experiment, not
in the runtime): csr-int8 stores 1x4 blocks of 4 consecutive inputs, and at 90% unstructured sparsity a non-zero
block holds 1.16 non-zeros on average. Ordering the inputs so that columns whose non-zeros share rows sit in the
same quad leaves fewer blocks. The order here: pair the columns by the most shared rows (greedy over all pairs),
then pair the pairs the same way. The script counts the blocks of each BERT-base shape before and after and times
csr-int8 on the weight and on its column-permuted copy (time_formats: 1 thread, 128 tokens, cold weights),
alternating, round by round.

Only some of these orders are free in an encoder: FFN2's inputs are FFN1's outputs (permute FFN1's rows and
FFN2's columns alike) and attn_out's come from V's head channels (free within a head); QKV's and FFN1's inputs are
the residual stream, which every layer shares.

    python bench/micro/csr_int8_column_order.py --out bench/results/csr_int8_column_order_zen4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from trimformer.formats.sparsity import magnitude_mask
from trimformer.runtime.engine import time_formats

SHAPES = {"qkv": (2304, 768), "ffn1": (3072, 768), "ffn2": (768, 3072), "attn_out": (768, 768)}


def pair_greedy(vecs: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of rows of vecs (0/1 floats) by the most shared ones first."""
    shared = vecs @ vecs.T
    i, j = np.triu_indices(len(vecs), 1)
    used = np.zeros(len(vecs), bool)
    pairs = []
    for o in np.argsort(-shared[i, j], kind="stable"):
        a, b = i[o], j[o]
        if not (used[a] or used[b]):
            used[a] = used[b] = True
            pairs.append((int(a), int(b)))
            if len(pairs) == len(vecs) // 2:
                break
    return pairs


def quad_order(mask: np.ndarray) -> np.ndarray:
    """A column order (k a multiple of 4) that puts columns sharing rows in the same quad."""
    cols = mask.T.astype(np.float32)
    pairs = pair_greedy(cols)
    unions = np.array([np.maximum(cols[a], cols[b]) for a, b in pairs])
    return np.array([c for p, q in pair_greedy(unions) for c in (*pairs[p], *pairs[q])])


def blocks(mask: np.ndarray) -> int:
    return int(mask.reshape(mask.shape[0], -1, 4).any(-1).sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = {}
    for label, (n, k) in SHAPES.items():
        w = rng.standard_normal((n, k)).astype(np.float32)
        w = w * magnitude_mask(w, args.sparsity, "unstructured")
        order = quad_order(w != 0)
        assert sorted(order.tolist()) == list(range(k))
        wp = np.ascontiguousarray(w[:, order])
        rows[label] = {"w": w, "wp": wp, "blocks": blocks(w != 0), "blocks_ordered": blocks(wp != 0),
                       "ms": [], "ms_ordered": []}
    for _ in range(args.rounds):
        for r in rows.values():
            r["ms"].append(time_formats(r["w"], ["csr-int8"], tokens=128, iters=args.iters, threads=1)["csr-int8"] * 1e3)
            r["ms_ordered"].append(
                time_formats(r["wp"], ["csr-int8"], tokens=128, iters=args.iters, threads=1)["csr-int8"] * 1e3)
    out = {label: {k: v for k, v in r.items() if k not in ("w", "wp")} for label, r in rows.items()}
    command = "python " + " ".join(sys.argv)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"command": command, "date": time.strftime("%Y-%m-%d"),
                                                     "sparsity": args.sparsity, "shapes": out}, indent=1))
    lines = [f"# csr-int8 with a chosen input-column order ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `{command}`", "", *[f"- {n}" for n in args.note], "",
             f"{args.sparsity:.0%} unstructured weights; csr-int8, 1 thread, 128 tokens, ms per call (best of "
             f"{args.iters}, cold weights), the median over {args.rounds} rounds (each round's values in parentheses).",
             "", "| shape | 1x4 blocks | ordered | blocks ratio | ms | ms ordered | time ratio |", "|---|---|---|---|---|---|---|"]
    for label, r in out.items():
        a, b = float(np.median(r["ms"])), float(np.median(r["ms_ordered"]))
        lines.append(f"| {label} | {r['blocks']} | {r['blocks_ordered']} | {r['blocks_ordered'] / r['blocks']:.3f} | "
                     f"{a:.3f} ({', '.join(f'{x:.3f}' for x in r['ms'])}) | "
                     f"{b:.3f} ({', '.join(f'{x:.3f}' for x in r['ms_ordered'])}) | {b / a:.3f} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
