"""Times one ONNX model on DeepSparse; runs inside bench/.venv-deepsparse (see deepsparse_env.sh).

Uses harness.py, so the protocol (inputs, warm-up, percentiles, budget sweep) is the one every other
runtime gets. DeepSparse engines have static shapes: one engine is compiled per (batch, seq).
Writes a JSON file (--json-out) rather than printing, since the engine prints banners to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness import BUDGET_BATCHES, Timing, make_inputs, max_throughput_under_budget, time_runner

os.environ.setdefault(
    "NM_DISABLE_ANALYTICS", "1"
)  # set before deepsparse is imported (in main): no analytics


def compile_engine(onnx_path: str, tmp: Path, names: list[str], batch: int, seq: int, threads: int) -> Any:
    """A DeepSparse engine of static shape (batch, seq) for every input in `names`. Engine(..., input_shapes=...)
    rewrites the ONNX file in place, so each engine gets its own copy under tmp."""
    import deepsparse

    path = tmp / f"b{batch}_s{seq}.onnx"
    shutil.copyfile(onnx_path, path)
    return deepsparse.Engine(model=str(path), batch_size=batch, num_cores=threads,
                             input_shapes=[[batch, seq] for _ in names])


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--seqs", type=_ints, required=True)
    ap.add_argument("--batches", type=_ints, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--max-time-s", type=float, default=None)
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-ms", type=float, default=None)
    ap.add_argument("--budget-batches", type=_ints, default=list(BUDGET_BATCHES))
    ap.add_argument("--check-in", default=None, help="npz with input_ids/attention_mask/token_type_ids")
    ap.add_argument("--check-out", default=None, help="where to save last_hidden_state for --check-in")
    ap.add_argument("--json-out", required=True)
    args = ap.parse_args()

    import deepsparse
    import onnx

    names = [i.name for i in onnx.load(args.onnx, load_external_data=False).graph.input]
    tmp = Path(tempfile.mkdtemp(prefix="ds-engines-"))
    compile_s: dict[str, float] = {}

    def engine_for(batch: int, seq: int) -> Any:
        t0 = time.perf_counter()
        eng = compile_engine(args.onnx, tmp, names, batch, seq, args.threads)
        compile_s[f"b{batch}_s{seq}"] = time.perf_counter() - t0
        return eng

    def run_with(eng: Any) -> Any:
        def run(ids: np.ndarray, mask: np.ndarray, tt: np.ndarray) -> np.ndarray:
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
            return eng.run([feed[n] for n in names])[0]

        return run

    def timed(batch: int, seq: int) -> Timing:
        eng = engine_for(batch, seq)
        t = time_runner(
            run_with(eng),
            make_inputs(batch, seq, args.vocab_size, args.seed),
            args.iters,
            args.warmup,
            max_time_s=args.max_time_s,
        )
        del eng
        return t

    out: dict[str, Any] = {
        "deepsparse_version": deepsparse.__version__,
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "input_names": names,
        "results": [],
        "budget": {},
    }
    try:
        if args.check_in:
            z = np.load(args.check_in)
            ids, mask, tt = z["input_ids"], z["attention_mask"], z["token_type_ids"]
            eng = engine_for(*ids.shape)
            np.save(args.check_out, run_with(eng)(ids, mask, tt))
            del eng
        for seq in args.seqs:
            for batch in args.batches:
                out["results"].append(timed(batch, seq).to_dict())
            if args.budget_ms is not None:
                out["budget"][str(seq)] = max_throughput_under_budget(
                    lambda b, s=seq: timed(b, s), args.budget_ms, args.budget_batches
                )
        out["compile_s"] = compile_s
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.json_out).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
