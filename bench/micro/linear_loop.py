"""One Linear's calls in a loop for a profiler to sample (`perf record -e cpu-clock -p PID`): a block-sparse INT8
BERT-base shape on synthetic rows, timed as LinearRunner.time does (cold weights, --calls per parallel region), for
--seconds; prints the best call.

    python bench/micro/linear_loop.py --shape attn_out --tokens 768 --activations dynamic --seconds 20 &
    perf record -e cpu-clock -o /tmp/loop.data -p $! -- sleep 14
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from trimformer import _core
from trimformer.formats.sparsity import magnitude_mask
from trimformer.runtime.engine import ACTIVATION_MODES, timing_tensors

SHAPES = {"qkv": (2304, 768), "ffn1": (3072, 768), "ffn2": (768, 3072), "attn_out": (768, 768)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=tuple(SHAPES), default="attn_out")
    ap.add_argument("--tokens", type=int, default=768)
    ap.add_argument("--format", default="block-int8")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--activations", choices=ACTIVATION_MODES, default="dynamic")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=50, help="calls per parallel region")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    if args.tokens < 1 or args.calls < 1:
        ap.error("--tokens and --calls must be positive")
    n, k = SHAPES[args.shape]
    w = np.random.default_rng(0).standard_normal((n, k)).astype(np.float32)
    w *= magnitude_mask(w, args.sparsity, "block")
    stored, u8 = timing_tensors(w, args.format, args.activations)
    runner = _core.LinearRunner(stored, "x", "", args.threads)
    best, end = float("inf"), time.monotonic() + args.seconds
    while time.monotonic() < end:
        best = min(best, runner.time(args.tokens, args.calls, True, False, u8))
    print(f"{args.format} {args.shape} {args.tokens} tokens, {args.activations} input: best {best * 1e3:.4f} ms per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
