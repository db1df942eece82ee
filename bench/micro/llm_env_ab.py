"""A/B of a decoder setting read from the environment at construction (TRIMFORMER_ATTN_ROWS, ...) on SmolLM2-135M's
prefill, in one process: two engines of the packaged GGUF's weights, one built with the variable set and one
without, time a `--prompt`-token prefill each in turn (the order reversing each cycle), so that a shared host's
drift falls on both. Reports, per prompt length, each engine's median prefill and the per-cycle ratio (default /
with the setting: above 1, the setting is faster) with its quartiles.

    python bench/micro/llm_env_ab.py --env TRIMFORMER_ATTN_ROWS=100000 --prompts 128,512,1024 \
        --out bench/results/llm_env_ab_example
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ab_builds import (  # noqa: E402
    command_line,
    env_setting,
    report_head,
    setting_ratios,
    setting_table,
    settings,
    write_report,
)

from bench_llm import prompt_tokens  # noqa: E402
from trimformer import assets  # noqa: E402
from trimformer.runtime.decoder import compile_decoder  # noqa: E402


def prefill_s(eng, ids: np.ndarray) -> float:
    """Seconds of one prefill of ids (a fresh cache with room for them)"""
    nat = eng._native
    nat.begin(ids.shape[0], ids.shape[1] + 2)
    t0 = time.perf_counter()
    nat.forward(ids, None, 0, None)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", required=True, help="NAME=VALUE of the setting under test")
    ap.add_argument("--weights", default="gguf", help="compile_decoder's weights= (the GGUF's Q4_1 blocks: gguf)")
    ap.add_argument("--activations", default="", help="compile_decoder's activations= (int8: W4A8)")
    ap.add_argument("--prompts", default="512,1024", help="prompt lengths (tokens per row)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    name, value = env_setting(ap, args.env)
    lengths = [int(x) for x in args.prompts.split(",") if x.strip()]
    if args.cycles < 1 or args.batch < 1 or not lengths or min(lengths) < 1:
        ap.error("--cycles, --batch and the prompt lengths must be positive")
    kw = {"weights": args.weights, "threads": args.threads, "activations": args.activations or None}
    engines = {"default": compile_decoder(assets.smollm2_gguf_path(), **kw)}
    with settings({name: value}):
        engines["set"] = compile_decoder(assets.smollm2_gguf_path(), **kw)
    rows = []
    for n in lengths:
        ids = np.array(prompt_tokens(n, args.batch), np.int64)
        for eng in engines.values():  # warm-up: buffers sized, pages touched
            prefill_s(eng, ids)
        t: dict[str, list[float]] = {"default": [], "set": []}
        order = ["default", "set"]
        for c in range(args.cycles):
            for label in order if c % 2 == 0 else order[::-1]:
                t[label].append(prefill_s(engines[label], ids))
        rows.append({"prompt": n, "seconds": t, **setting_ratios(t, f"prompt {n}", args.env)})
    lines = report_head(
        f"A/B of {args.env} on SmolLM2-135M prefill, in one process", command_line(argv),
        f"weights {args.weights}{' + ' + args.activations + ' activations' if args.activations else ''}, batch "
        f"{args.batch}, {args.threads} thread(s): each engine's prefill of the prompt in turn over {args.cycles} cycles "
        f"(a fresh cache each). Ratio: the default's time over the time with {args.env}, per cycle (above 1: the "
        "setting is faster).", args.note)
    lines += setting_table("prompt tokens", rows, "prompt")
    write_report(args.out, {"command": command_line(argv), "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
