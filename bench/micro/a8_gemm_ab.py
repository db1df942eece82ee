"""A/B of the W4A8 prefill GEMM (kbit_gemm_a8) against the GEMV at every row count (TRIMFORMER_A8_GEMV_ONLY=1), on
SmolLM2-135M from the packaged GGUF, in one process: two engines of the same weights, their decode steps and
prefills interleaved in rounds so that the machine's drift hits both alike. Decode: `--new` greedy steps per
round at each batch size (the GEMV or GEMM sees `batch` token rows); prefill: one `--prompt`-token pass per row.
Picks kKbitA8GemmMinRows (csrc/executor/decoder.cpp): the row count from which the GEMM is the faster.

    python bench/micro/a8_gemm_ab.py --weights gguf,int4-g128 --batches 1,4,6,8,16 --out bench/results/a8_gemm_ab
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import cpu_model  # noqa: E402
from trimformer import assets  # noqa: E402
from trimformer.runtime.decoder import compile_decoder  # noqa: E402

VARIANTS = {"gemm": None, "gemv": "1"}  # TRIMFORMER_A8_GEMV_ONLY per variant (read at construction)


def engines(weights: str, threads: int) -> dict:
    out = {}
    for label, flag in VARIANTS.items():
        if flag is None:
            os.environ.pop("TRIMFORMER_A8_GEMV_ONLY", None)
        else:
            os.environ["TRIMFORMER_A8_GEMV_ONLY"] = flag
        out[label] = compile_decoder(assets.smollm2_gguf_path(), weights=weights, threads=threads, activations="int8")
    os.environ.pop("TRIMFORMER_A8_GEMV_ONLY", None)
    return out


def decode_rate(eng, ids: np.ndarray, new: int) -> float:
    nat = eng._native
    batch = ids.shape[0]
    nat.begin(batch, ids.shape[1] + new + 2)
    logits = nat.forward(ids, None, 0, None)
    t0 = time.perf_counter()
    for _ in range(new):
        nxt = logits.argmax(axis=1).astype(np.int64)
        logits = nat.forward(nxt[:, None].copy(), None, 0, None)
    return new * batch / (time.perf_counter() - t0)


def prefill_rate(eng, ids: np.ndarray) -> float:
    nat = eng._native
    nat.begin(ids.shape[0], ids.shape[1] + 2)
    t0 = time.perf_counter()
    nat.forward(ids, None, 0, None)
    return ids.size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="gguf,int4-g128")
    ap.add_argument("--batches", default="1,4,6,8,16")
    ap.add_argument("--context", type=int, default=64, help="prompt tokens before the timed decode steps")
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for weights in [w for w in args.weights.split(",") if w]:
        engs = engines(weights, args.threads)
        cases = [("decode", int(b)) for b in args.batches.split(",")] + [("prefill", 1)]
        for kind, batch in cases:
            width = args.context if kind == "decode" else args.prompt
            ids = rng.integers(0, 40000, size=(batch, width)).astype(np.int64)
            rates = {label: [] for label in engs}
            for _ in range(args.rounds):
                for label, eng in engs.items():
                    rates[label].append(decode_rate(eng, ids, args.new) if kind == "decode" else prefill_rate(eng, ids))
            med = {label: float(np.median(v)) for label, v in rates.items()}
            rows.append({"weights": weights + "+a8", "kind": kind, "batch": batch, "tok_s": med,
                         "gemm_vs_gemv": med["gemm"] / med["gemv"], "rounds": rates})
            print(f"{weights}+a8 {kind} batch {batch}: gemm {med['gemm']:.1f} gemv {med['gemv']:.1f} tok/s "
                  f"({med['gemm'] / med['gemv']:.2f}x)", file=sys.stderr)
    cmd = "python bench/micro/a8_gemm_ab.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"command": cmd, "machine": cpu_model(), "threads": args.threads, "python": platform.python_version()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# W4A8 prefill GEMM vs the GEMV at every row count (SmolLM2-135M)", "", f"Command: `{cmd}`", "",
             f"Machine: {meta['machine']}, {args.threads} threads. Tokens/s, median of {args.rounds} interleaved "
             f"rounds; decode: {args.new} greedy steps after {args.context} prompt tokens per row; prefill: one "
             f"{args.prompt}-token row. `gemv`: TRIMFORMER_A8_GEMV_ONLY=1.", "",
             "| weights | pass | batch | gemm tok/s | gemv tok/s | gemm vs gemv |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['weights']} | {r['kind']} | {r['batch']} | {r['tok_s']['gemm']:.1f} | "
                     f"{r['tok_s']['gemv']:.1f} | {r['gemm_vs_gemv']:.2f}x |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
