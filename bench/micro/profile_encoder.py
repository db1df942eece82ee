"""Where an encoder's forward pass spends its time: the executor's per-op profiler against the planner's own
compile-time timings of each Linear (best of a few calls, hot caches, no activation or requantize epilogue).

The gap between the two columns is what the Linear costs inside the pass beyond its bare kernel: input
quantization and re-layout, the fused epilogue (GELU, requantize for the next layer) and colder caches.

    python bench/micro/profile_encoder.py --model bert-base --sparsity 0.9 --pattern block \
        --out bench/results/profile_bert_block90
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import peers  # noqa: E402  (bench/peers.py: seeded random-weight models, pruned the same way as bench_dense)
from trimformer.runtime.engine import compile_encoder  # noqa: E402


def profile(model: str, sparsity: float, pattern: str, quantize: str, batch: int, seq: int, iters: int,
            threads: int, sparse: str = "tune", attention: str = "default", reduce_range: int = 0) -> dict:
    info = peers.prepare_model(model, sparsity=sparsity, pattern=pattern)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, info.vocab_size - 1, size=(batch, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    calib = [{"input_ids": ids[:1], "attention_mask": mask[:1]}] if quantize == "int8-static" else None
    t0 = time.perf_counter()
    eng = compile_encoder(info.hf_dir, quantize=None if quantize == "fp32" else quantize, calibration=calib,
                          threads=threads, sparse="tune" if sparse == "tune" else None,
                          attention=None if attention == "default" else attention, reduce_range=bool(reduce_range))
    compile_s = time.perf_counter() - t0
    for _ in range(3):
        eng.run(input_ids=ids, attention_mask=mask)
    # medians over single passes (a shared machine's slow passes would drag a mean): first with the profiler off,
    # then each op's median over profiled passes
    walls = []
    for _ in range(iters):
        t0 = time.perf_counter()
        eng.run(input_ids=ids, attention_mask=mask)
        walls.append((time.perf_counter() - t0) * 1e3)
    per_op: dict[str, list[float]] = defaultdict(list)
    for _ in range(iters):
        eng._native.set_profile(True)  # clears the previous pass's times
        eng.run(input_ids=ids, attention_mask=mask)
        for k, v in eng._native.profile().items():
            per_op[k].append(v)
    eng._native.set_profile(False)
    wall_ms = float(np.median(walls))
    ops = {k: float(np.median(v)) for k, v in per_op.items()}
    tuned: dict[str, float] = defaultdict(float)
    formats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, d in (eng.extra.get("dispatch") or {}).items():
        kind = name.split(".")[-1]
        tuned[kind] += d["ms"][d["chosen"]]
        formats[kind][d["chosen"]] += 1
    return {"model": model, "sparsity": sparsity, "pattern": pattern, "quantize": quantize, "batch": batch,
            "seq": seq, "threads": threads, "sparse": sparse, "iters": iters, "compile_s": compile_s, "wall_ms": wall_ms,
            "ops_ms": ops, "tuned_kernel_ms": dict(tuned),
            "formats": {k: dict(v) for k, v in formats.items()}, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                     time.gmtime())}


def write(r: dict, out: Path, command: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(r, indent=1))
    total = sum(r["ops_ms"].values())
    lines = [f"# Encoder profile: {r['model']}, {r['sparsity']:.0%} {r['pattern']}, {r['quantize']}, "
             f"batch {r['batch']} x seq {r['seq']}, {r['threads']} threads ({r['date']})", "",
             f"Command: `{command}`", "",
             f"Wall time per forward pass (profiler off, median of {r['iters']}): {r['wall_ms']:.2f} ms; "
             f"the ops' medians over {r['iters']} profiled passes sum to {total:.2f} ms.", "",
             "Tuned kernel: the planner's compile-time timing of the chosen format, summed over the layers "
             "(best of 5 calls on 128 synthetic rows, hot caches, plain epilogue). Development profile on a "
             "shared machine: read the shares, not the absolute times.", "",
             "| op | ms per pass | share | tuned kernel ms | formats |", "|---|---|---|---|---|"]
    for op, ms in sorted(r["ops_ms"].items(), key=lambda kv: -kv[1]):
        tk = r["tuned_kernel_ms"].get(op)
        fm = ", ".join(f"{n} {f}" for f, n in r["formats"].get(op, {}).items())
        lines.append(f"| {op} | {ms:.2f} | {ms / total:.0%} | {'' if tk is None else f'{tk:.2f}'} | {fm} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bert-base", choices=list(peers.MODEL_CONFIGS))
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--pattern", default="block")
    ap.add_argument("--quantize", default="int8-static", choices=["fp32", "bf16", "int8-dynamic", "int8-static"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sparse", default="tune", choices=["tune", "first"],
                    help="tune: the planner times dense and sparse formats per layer (the default); first: every "
                         "layer takes the first sparse format its pattern admits, untimed (compile_encoder sparse=None)")
    ap.add_argument("--attention", default="default", choices=["default", "f32", "int8", "bf16"],
                    help="attention matmul precision (default: the planner's choice, engine.default_attention)")
    ap.add_argument("--reduce-range", "--reduce_range", dest="reduce_range", type=int, default=0, choices=[0, 1],
                    help="1: compile with reduce_range=True (block-int7 where the level has its 8-bit kernel)")
    ap.add_argument("--out", default="bench/results/profile_encoder")
    args = ap.parse_args(argv)
    r = profile(args.model, args.sparsity, args.pattern, args.quantize, args.batch, args.seq, args.iters,
                args.threads, args.sparse, args.attention, args.reduce_range)
    write(r, Path(args.out), "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    print(Path(args.out).with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
