"""A DeepSparse engine that takes turns with other runtimes: runs inside bench/.venv-deepsparse (deepsparse_env.sh),
compiles one engine for (--batch, --seq), then times blocks of calls on request, so that bench_interleaved.py can
interleave DeepSparse with the runtimes in its own process (DeepSparse needs a venv of its own).

Protocol, one JSON object per line: the worker writes {"ready": ...} once compiled and warmed up; then reads
commands from stdin, "block N" (one untimed call, then N timed calls: replies {"ms": [...]}, timed here, around
the engine call alone, as the harness times every runtime) or "quit". Replies go to the stdout the worker started
with; DeepSparse's own banners are sent to stderr. Inputs: harness.make_inputs(batch, seq, vocab, seed), the ones
the other runtimes get. --check-in / --check-out: the output on the check inputs (an engine of their shape,
compiled first and dropped), saved as .npy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepsparse_runner import compile_engine
from harness import make_inputs

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")  # before deepsparse is imported (in main)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--check-in", default=None, help="npz with input_ids/attention_mask/token_type_ids")
    ap.add_argument("--check-out", default=None)
    args = ap.parse_args()

    reply = os.fdopen(os.dup(1), "w", buffering=1)  # the replies keep the original stdout ...
    os.dup2(2, 1)  # ... and everything else printed (DeepSparse's banners) goes to stderr

    def send(obj: dict[str, Any]) -> None:
        reply.write(json.dumps(obj) + "\n")

    import deepsparse
    import onnx

    names = [i.name for i in onnx.load(args.onnx, load_external_data=False).graph.input]
    tmp = Path(tempfile.mkdtemp(prefix="ds-worker-"))

    def engine_for(batch: int, seq: int) -> Any:
        return compile_engine(args.onnx, tmp, names, batch, seq, args.threads)

    def run(eng: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
        return eng.run([feed[n] for n in names])[0]

    try:
        if args.check_in:
            z = np.load(args.check_in)
            eng = engine_for(*z["input_ids"].shape)
            np.save(args.check_out, run(eng, {k: z[k] for k in ("input_ids", "attention_mask", "token_type_ids")}))
            del eng
        t0 = time.perf_counter()
        eng = engine_for(args.batch, args.seq)
        compile_s = time.perf_counter() - t0
        ids, mask, tt = make_inputs(args.batch, args.seq, args.vocab_size, args.seed)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
        for _ in range(args.warmup):
            run(eng, feed)
        send({"ready": True, "compile_s": compile_s, "deepsparse_version": deepsparse.__version__,
              "numpy": np.__version__, "onnx": onnx.__version__})
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            if cmd[0] != "block" or len(cmd) != 2 or not cmd[1].isdigit():
                send({"error": f"unknown command {line.strip()!r}"})
                continue
            run(eng, feed)  # its weights back into the caches the other runtimes' calls took
            ms = []
            for _ in range(int(cmd[1])):
                t = time.perf_counter()
                run(eng, feed)
                ms.append((time.perf_counter() - t) * 1e3)
            send({"ms": ms})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
