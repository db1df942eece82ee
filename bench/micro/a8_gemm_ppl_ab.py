"""Perplexity of SmolLM2-135M (packaged GGUF, W4A8: its Q4_1 blocks + int8 activations) with the W4A8 prefill GEMM
and with the GEMV at every row count (TRIMFORMER_A8_GEMV_ONLY=1), on the documented held-out tokens at two window
sizes. The two compute the same integer group sums and differ only in the order of float rounding; the per-token
int8 requantization at each layer can turn such differences into different activation codes, which this measures.

    python bench/micro/a8_gemm_ppl_ab.py --out bench/results/zen4_a8_gemm_ppl_ab
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import cpu_model  # noqa: E402
from trimformer import assets  # noqa: E402
from trimformer.llm_eval import evaluate_perplexity  # noqa: E402
from trimformer.runtime.decoder import compile_decoder  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--windows", default="1024,512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = []
    for label, flag in (("gemm", None), ("gemv", "1")):
        os.environ.pop("TRIMFORMER_A8_GEMV_ONLY", None)
        if flag:
            os.environ["TRIMFORMER_A8_GEMV_ONLY"] = flag
        eng = compile_decoder(assets.smollm2_gguf_path(), weights="gguf", threads=args.threads, activations="int8")
        for window in (int(w) for w in args.windows.split(",")):
            ppl = evaluate_perplexity(eng, n_tokens=args.tokens, window=window)["perplexity"]
            rows.append({"variant": label, "window": window, "perplexity": ppl})
            print(f"{label} window {window}: {ppl:.4f}", file=sys.stderr)
    os.environ.pop("TRIMFORMER_A8_GEMV_ONLY", None)
    cmd = "python bench/micro/a8_gemm_ppl_ab.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": cmd, "machine": cpu_model(), "rows": rows}, indent=1))
    lines = ["# W4A8 perplexity: prefill GEMM vs GEMV (SmolLM2-135M, shipped Q4_1 + int8 activations)", "",
             f"Command: `{cmd}`", "", f"Machine: {cpu_model()}, {args.threads} threads, first {args.tokens} held-out "
             "tokens.", "", "| window | gemm | gemv (TRIMFORMER_A8_GEMV_ONLY=1) | gemm / gemv |", "|---|---|---|---|"]
    for window in sorted({r["window"] for r in rows}, reverse=True):
        g = next(r["perplexity"] for r in rows if r["variant"] == "gemm" and r["window"] == window)
        v = next(r["perplexity"] for r in rows if r["variant"] == "gemv" and r["window"] == window)
        lines.append(f"| {window} | {g:.4f} | {v:.4f} | {g / v:.4f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
