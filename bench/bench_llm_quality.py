"""Decoder-LLM compression quality: torch perplexity of each method on SmolLM2-135M, as a ratio to dense fp32.

    nice -n 5 python bench/bench_llm_quality.py --out bench/results/llm_quality --out-dir artifacts/llm \\
        > artifacts/llm_quality.log 2>&1

Every method compresses the fp32 baseline (the GGUF asset dequantized by transformers) layer by layer, writes its
checkpoint directory to <out-dir>/<name> (reusable by the runtime: `trimformer compile` / `eval --perplexity`),
and is scored by loading that directory back (weights verified against their codes; W8A8 / LLM.int8()
activations fake-quantized per token) on the documented perplexity slice (docs/llm.md: last 400 articles by
sorted title, first 8192 tokens, 1024-token windows). Results are merged into <out>.json / <out>.md after every
method, so a long run can be resumed with --only / --skip-done. Wall times are per method on a shared machine
(informational, not speed claims). `--tiny` runs the whole script on a random 2-layer Llama in seconds.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import platform
import re
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

# name -> (api, kwargs, target); api "quantize" | "prune". Ordered cheap (no calibration) first.
# shared settings of the end-to-end distillation rows below (GPTQ's best layer-wise setting; true-sequential
# SparseGPT) and their targets
_GPTQ_ASYM = {"method": "gptq", "format": "int4-asym-g128", "act_order": True, "true_sequential": True, "mse": True}
_GPTQ_E2E_TARGET = "<=1.06,<int4-asym-g128-rtn-mse-e2e32"
_SPARSEGPT_50 = {"method": "sparsegpt", "sparsity": 0.5, "true_sequential": True}
_SPARSEGPT_24 = {"method": "sparsegpt", "sparsity": "2:4", "true_sequential": True}
_SPARSEGPT_50_TARGET, _SPARSEGPT_24_TARGET = "<=1.5,<=0.1*magnitude-50", "<=2.2,<magnitude-2:4"

METHODS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "int8-rtn": ("quantize", {"method": "rtn", "format": "int8"}, "<=1.02"),
    "int4-g128-rtn": ("quantize", {"method": "rtn", "format": "int4-g128"}, None),
    "int4-asym-g128-rtn": ("quantize", {"method": "rtn", "format": "int4-asym-g128"}, None),
    "int4-g64-rtn": ("quantize", {"method": "rtn", "format": "int4-g64"}, None),
    "nf4-g64-rtn": ("quantize", {"method": "rtn", "format": "nf4-g64"}, None),
    "fp4-g64-rtn": ("quantize", {"method": "rtn", "format": "fp4-g64"}, None),
    "fp8-e4m3-rtn": ("quantize", {"method": "rtn", "format": "fp8-e4m3"}, None),
    "magnitude-50": ("prune", {"method": "magnitude", "sparsity": 0.5}, None),
    "magnitude-2:4": ("prune", {"method": "magnitude", "sparsity": "2:4"}, None),
    "w8a8-smoothquant": ("quantize", {"method": "smoothquant", "format": "w8a8", "alpha": 0.5,
                                      "n_samples": 8}, "<=1.02"),
    "llm-int8": ("quantize", {"method": "llm-int8", "format": "int8", "threshold": 6.0, "n_samples": 8}, None),
    "int4-g128-gptq": ("quantize", {"method": "gptq", "format": "int4-g128", "true_sequential": False}, "<=1.06,<int4-g128-rtn"),
    "int4-g128-gptq-act": ("quantize", {"method": "gptq", "format": "int4-g128", "act_order": True, "true_sequential": False},
                           "<=1.06,<int4-g128-rtn"),
    "int4-asym-g128-gptq-act": ("quantize", {"method": "gptq", "format": "int4-asym-g128", "act_order": True, "true_sequential": False},
                                "<=1.06,<int4-asym-g128-rtn"),
    "int4-asym-g128-gptq": ("quantize", {"method": "gptq", "format": "int4-asym-g128", "true_sequential": False},
                            "<=1.06,<int4-asym-g128-rtn"),
    "sparsegpt-50": ("prune", {"method": "sparsegpt", "sparsity": 0.5, "true_sequential": False}, "<=1.5,<=0.1*magnitude-50"),
    "sparsegpt-2:4": ("prune", {"method": "sparsegpt", "sparsity": "2:4", "true_sequential": False}, "<=2.2,<magnitude-2:4"),
    "int3-g128-gptq": ("quantize", {"method": "gptq", "format": "int3-g128", "true_sequential": False}, None),
    "sparsegpt-50+int4-g128": ("prune", {"method": "sparsegpt", "sparsity": 0.5, "quantize": "int4-g128", "true_sequential": False},
                               None),
    "int4-g64-gptq": ("quantize", {"method": "gptq", "format": "int4-g64", "true_sequential": False}, None),
    "nf4-g64-gptq": ("quantize", {"method": "gptq", "format": "nf4-g64", "true_sequential": False}, None),
    "fp4-g64-gptq": ("quantize", {"method": "gptq", "format": "fp4-g64", "true_sequential": False}, None),
    # the rows above were measured before true-sequential existed (now the API default): they keep the old
    # behaviour. Below: true-sequential (seq), MSE scale search (mse), more calibration (n_samples x seqlen).
    "int4-g128-gptq-ragged": ("quantize", {"method": "gptq", "format": "int4-g128", "true_sequential": False},
                              "<=1.06,<int4-g128-rtn"),
    "int4-g128-rtn-ragged": ("quantize", {"method": "rtn", "format": "int4-g128"}, None),
    "int4-asym-g128-rtn-ragged": ("quantize", {"method": "rtn", "format": "int4-asym-g128"}, None),
    "int4-g128-rtn-mse": ("quantize", {"method": "rtn", "format": "int4-g128", "mse": True}, None),
    "int4-asym-g128-rtn-mse": ("quantize", {"method": "rtn", "format": "int4-asym-g128", "mse": True}, None),
    "int4-g128-gptq-act-seq": ("quantize", {"method": "gptq", "format": "int4-g128", "act_order": True,
                                            "true_sequential": True}, "<=1.06,<int4-g128-rtn-ragged"),
    "int4-g128-gptq-act-seq-mse": ("quantize", {"method": "gptq", "format": "int4-g128", "act_order": True,
                                                "true_sequential": True, "mse": True}, "<=1.06,<int4-g128-rtn-ragged"),
    "int4-asym-g128-gptq-act-seq-mse": ("quantize", {"method": "gptq", "format": "int4-asym-g128",
                                                     "act_order": True, "true_sequential": True, "mse": True},
                                        "<=1.06,<int4-asym-g128-rtn-ragged"),
    "int4-g128-gptq-act-seq-mse-128": ("quantize", {"method": "gptq", "format": "int4-g128", "act_order": True,
                                                    "true_sequential": True, "mse": True, "n_samples": 128},
                                       "<=1.06,<int4-g128-rtn-ragged"),
    "int4-asym-g128-gptq-act-seq-mse-128": ("quantize", {"method": "gptq", "format": "int4-asym-g128",
                                                         "act_order": True, "true_sequential": True, "mse": True,
                                                         "n_samples": 128}, "<=1.06,<int4-asym-g128-rtn-ragged"),
    "int4-g128-gptq-act-seq-mse-128x2048": ("quantize", {"method": "gptq", "format": "int4-g128",
                                                         "act_order": True, "true_sequential": True, "mse": True,
                                                         "n_samples": 128, "seqlen": 2048},
                                            "<=1.06,<int4-g128-rtn-ragged"),
    "int4-asym-g128-gptq-act-seq-mse-128x2048": ("quantize", {"method": "gptq", "format": "int4-asym-g128",
                                                              "act_order": True, "true_sequential": True,
                                                              "mse": True, "n_samples": 128, "seqlen": 2048},
                                                 "<=1.06,<int4-asym-g128-rtn-ragged"),
    "sparsegpt-50-seq": ("prune", {"method": "sparsegpt", "sparsity": 0.5, "true_sequential": True},
                         "<=1.5,<=0.1*magnitude-50"),
    "sparsegpt-2:4-seq": ("prune", {"method": "sparsegpt", "sparsity": "2:4", "true_sequential": True},
                          "<=2.2,<magnitude-2:4"),
    "sparsegpt-50-seq-128": ("prune", {"method": "sparsegpt", "sparsity": 0.5, "true_sequential": True,
                                       "n_samples": 128}, "<=1.5,<=0.1*magnitude-50"),
    "sparsegpt-2:4-seq-128": ("prune", {"method": "sparsegpt", "sparsity": "2:4", "true_sequential": True,
                                        "n_samples": 128}, "<=2.2,<magnitude-2:4"),
    "sparsegpt-50-seq-128x2048": ("prune", {"method": "sparsegpt", "sparsity": 0.5, "true_sequential": True,
                                            "n_samples": 128, "seqlen": 2048}, "<=1.5,<=0.1*magnitude-50"),
    "sparsegpt-2:4-seq-128x2048": ("prune", {"method": "sparsegpt", "sparsity": "2:4", "true_sequential": True,
                                             "n_samples": 128, "seqlen": 2048}, "<=2.2,<magnitude-2:4"),
    # block-wise output reconstruction after the solver (tune.py): scales / offsets / norms (+ rounding, kept
    # weights) trained per layer against the uncompressed layer's outputs
    "int4-asym-g128-gptq-act-seq-mse-tune50": ("quantize", {"method": "gptq", "format": "int4-asym-g128",
                                                            "act_order": True, "true_sequential": True, "mse": True,
                                                            "tune": {"steps": 50, "lr_round": 0.0}},
                                               "<=1.06,<int4-asym-g128-rtn-ragged"),
    "int4-asym-g128-gptq-act-seq-mse-tune50r": ("quantize", {"method": "gptq", "format": "int4-asym-g128",
                                                             "act_order": True, "true_sequential": True,
                                                             "mse": True, "tune": {"steps": 50}},
                                                "<=1.06,<int4-asym-g128-rtn-ragged"),
    "sparsegpt-50-seq-tune50": ("prune", {"method": "sparsegpt", "sparsity": 0.5, "true_sequential": True,
                                          "tune": {"steps": 50}}, "<=1.5,<=0.1*magnitude-50"),
    "sparsegpt-2:4-seq-tune50": ("prune", {"method": "sparsegpt", "sparsity": "2:4", "true_sequential": True,
                                           "tune": {"steps": 50}}, "<=2.2,<magnitude-2:4"),
    # last, end-to-end distillation of the whole model towards the fp32 logits (e2e.py): group scales / offsets,
    # norms, kept weights of pruned Linears; 32 steps x 2 samples = two passes over the 32 calibration samples
    "int4-asym-g128-rtn-mse-e2e32": ("quantize", {"method": "rtn", "format": "int4-asym-g128", "mse": True,
                                                  "e2e": {"steps": 32}}, "<=1.06"),
    "int4-asym-g128-gptq-act-seq-mse-e2e32": ("quantize", {"method": "gptq", "format": "int4-asym-g128",
                                                           "act_order": True, "true_sequential": True, "mse": True,
                                                           "e2e": {"steps": 32}},
                                              "<=1.06,<int4-asym-g128-rtn-mse-e2e32"),
    "int4-asym-g128-gptq-act-seq-mse-tune50r-e2e32": ("quantize", {"method": "gptq", "format": "int4-asym-g128",
                                                                   "act_order": True, "true_sequential": True,
                                                                   "mse": True, "tune": {"steps": 50},
                                                                   "e2e": {"steps": 32}},
                                                      "<=1.06,<int4-asym-g128-rtn-mse-e2e32"),
    "sparsegpt-50-seq-e2e32": ("prune", {"method": "sparsegpt", "sparsity": 0.5, "true_sequential": True,
                                         "e2e": {"steps": 32}}, "<=1.5,<=0.1*magnitude-50"),
    # the same with a higher rate for the kept weights / 64 steps (after the 32-step rows above)
    "sparsegpt-50-seq-e2e32-w1e-4": ("prune", {"method": "sparsegpt", "sparsity": 0.5, "true_sequential": True,
                                               "e2e": {"steps": 32, "lr_weight": 1e-4}}, "<=1.5,<=0.1*magnitude-50"),
    "sparsegpt-2:4-seq-e2e32-w1e-4": ("prune", {"method": "sparsegpt", "sparsity": "2:4", "true_sequential": True,
                                                "e2e": {"steps": 32, "lr_weight": 1e-4}}, "<=2.2,<magnitude-2:4"),
    "int4-asym-g128-gptq-act-seq-mse-e2e64": ("quantize", {"method": "gptq", "format": "int4-asym-g128",
                                                           "act_order": True, "true_sequential": True, "mse": True,
                                                           "e2e": {"steps": 64}},
                                              "<=1.06,<int4-asym-g128-rtn-mse-e2e32"),
    "sparsegpt-2:4-seq-e2e32": ("prune", {"method": "sparsegpt", "sparsity": "2:4", "true_sequential": True,
                                          "e2e": {"steps": 32}}, "<=2.2,<magnitude-2:4"),
    # kept-weight rate 3e-4 (3e-5 -> 1e-4 helped both sparse rows); then 64 steps for 50%
    "sparsegpt-50-seq-e2e32-w3e-4": ("prune", {**_SPARSEGPT_50, "e2e": {"steps": 32, "lr_weight": 3e-4}},
                                     _SPARSEGPT_50_TARGET),
    "sparsegpt-2:4-seq-e2e32-w3e-4": ("prune", {**_SPARSEGPT_24, "e2e": {"steps": 32, "lr_weight": 3e-4}},
                                      _SPARSEGPT_24_TARGET),
    "sparsegpt-50-seq-e2e64-w3e-4": ("prune", {**_SPARSEGPT_50, "e2e": {"steps": 64, "lr_weight": 3e-4}},
                                     _SPARSEGPT_50_TARGET),
    # GPTQ: 32 -> 64 steps helped (1.066 -> 1.061); block-wise tune50r + e2e32 gave 1.078 (calibration KL 0.029,
    # below e2e64's 0.051: the block-wise pass fits the calibration set, not the slice)
    "int4-asym-g128-gptq-act-seq-mse-e2e128": ("quantize", {**_GPTQ_ASYM, "e2e": {"steps": 128}}, _GPTQ_E2E_TARGET),
    # 128 steps over 32 samples overfit them (calibration KL down, held-out perplexity up): the pass gets its own
    # windows of the calibration slice (the solver's 32 first), each seen once
    "int4-asym-g128-gptq-act-seq-mse-e2e64-s128": ("quantize", {**_GPTQ_ASYM, "e2e": {"steps": 64, "samples": 128}},
                                                   _GPTQ_E2E_TARGET),
    "int4-asym-g128-gptq-act-seq-mse-e2e128-s256": ("quantize",
                                                    {**_GPTQ_ASYM, "e2e": {"steps": 128, "samples": 256}},
                                                    _GPTQ_E2E_TARGET),
}
KBIT_TABLE = ("int4-g64", "nf4-g64", "fp4-g64")


def _check(target: str | None, ratio: float, results: dict[str, Any]) -> bool | None:
    """Evaluate a target like '<=1.06,<int4-g128-rtn' or '<=0.1*magnitude-50' (None if a peer is missing)."""
    if target is None:
        return None
    ok = True
    for part in target.split(","):
        op = "<=" if part.startswith("<=") else "<"
        rhs = part[len(op):]
        if "*" in rhs:
            factor, peer = rhs.split("*", 1)
            if peer not in results:
                return None
            bound = float(factor) * results[peer]["ratio"]
        elif rhs[0].isdigit():
            bound = float(rhs)
        else:
            if rhs not in results:
                return None
            bound = results[rhs]["ratio"]
        ok &= ratio <= bound if op == "<=" else ratio < bound
    return bool(ok)


def tune_summary(tune: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per-layer outcome of block-wise tuning (the checkpoint's parameters.tune): layers kept and the range of
    loss after / before over the layers."""
    if not tune:
        return None
    ratios = [a / b for a, b in zip(tune["loss_after"], tune["loss_before"], strict=True) if b > 0]
    return {"kept": tune["layers_kept"], "layers": tune["layers"],
            "loss_ratio_min": min(ratios, default=1.0), "loss_ratio_max": max(ratios, default=1.0)}


def _groups(r: dict[str, Any]) -> str:
    """Group sizes actually used ('128: 210' = 210 Linears at 128, the 576-input ones with a last group of 64);
    '?' for rows recorded before this was stored."""
    g = r.get("group_sizes")
    if not g:
        return "?" if "-g" in (r["kwargs"].get("format") or r["kwargs"].get("quantize") or "") else ""
    return ", ".join(f"{k}: {v}" for k, v in g.items())


def _markdown(data: dict[str, Any]) -> str:
    res = data["results"]
    lines = [
        "# Decoder-LLM compression quality (torch perplexity, SmolLM2-135M)", "",
        f"Command: `{data['command']}`  ",
        f"Model: {data['model']}; perplexity slice: {data['slice']}; dense fp32 perplexity "
        f"**{data['dense_perplexity']:.3f}** ({data['tokens']} tokens).  ",
        f"Calibration: {data['calibration']} (per-method samples x tokens in the table). "
        f"Date of the last run: {data['date']}. Results accumulate over runs (`--skip-done`); each JSON entry "
        "keeps its command. Wall times: shared 2-core machine, informational only. Groups: rows measured "
        "before the ragged last group (576 inputs at group 128 = 4 x 128 + 64) used group 192 for the 576-input "
        "Linears ('192: 180, 128: 30'); the `-ragged` RTN rows and every row added since use the nominal group.",
        "",
        "| name | method | format / sparsity, settings | calib. samples x tokens | perplexity | ratio to fp32 | target | met | "
        "compress s | eval s | groups (Linears) |",
        "|---|---|---|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for name in METHODS:
        if name not in res:
            continue
        r = res[name]
        parts = (r["target"] or "").split(",") if r["target"] else []
        met = " / ".join({True: "yes", False: "**no**", None: "?"}[_check(p, r["ratio"], res)] for p in parts)
        what = r["kwargs"].get("format") or str(r["kwargs"].get("sparsity"))
        if r["kwargs"].get("act_order"):
            what += " act-order"
        if r["kwargs"].get("true_sequential"):
            what += " true-seq"
        if r["kwargs"].get("mse"):
            what += " mse"
        if r["kwargs"].get("quantize"):
            what += " + " + r["kwargs"]["quantize"]
        tune = r["kwargs"].get("tune")
        if tune:  # block-wise reconstruction (tune.py); lr_round 0: no rounding offsets trained
            what += f" tune {tune['steps']}" + (" (no rounding)" if tune.get("lr_round") == 0 else "")
            t = r.get("tune_layers")
            if t:
                what += (f"; {t['kept']}/{t['layers']} layers improved, loss x{t['loss_ratio_min']:.2f}-"
                         f"{t['loss_ratio_max']:.2f}")
        e2e = r["kwargs"].get("e2e")
        if e2e:  # end-to-end distillation (e2e.py): KL to the fp32 logits on the calibration samples
            what += f" e2e {e2e['steps']}" + "".join(f" {k} {v:g}" for k, v in e2e.items() if k.startswith("lr_"))
            if e2e.get("samples"):
                what += f" on {e2e['samples']} samples"
            e = r.get("e2e")
            if e:
                what += f"; KL {e['loss_before']:.3f} -> {e['loss_after']:.3f}" + ("" if e["kept"] else " (undone)")
        calib = "-"
        if r["kwargs"]["method"] not in ("rtn", "magnitude") or e2e:
            calib = f"{r['calibration_samples']} x {r.get('seqlen', 512)}"
        lines.append(f"| {name} | {r['kwargs']['method']} | {what} | {calib} | {r['perplexity']:.3f} | {r['ratio']:.4f} | "
                     f"{r['target'] or ''} | {met} | {r['compress_s']:.0f} | {r['eval_s']:.0f} | {_groups(r)} |")
    rows = [(t, res.get(f"{t}-rtn"), res.get(f"{t}-gptq")) for t in KBIT_TABLE]
    if any(a or b for _, a, b in rows):
        lines += ["", "## k-bit data types at block size 64 (int4 symmetric vs NF4 vs FP4 E2M1)", "",
                  "| type | RTN ratio | GPTQ ratio |", "|---|---:|---:|"]
        for t, a, b in rows:
            fa = f"{a['ratio']:.4f}" if a else "-"
            fb = f"{b['ratio']:.4f}" if b else "-"
            lines.append(f"| {t} | {fa} | {fb} |")
    return "\n".join(lines) + "\n"


def _tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(cfg).eval()


def same_model(a: str | None, b: str) -> bool:
    """Whether two model descriptions name the same model: the asset's install directory (a venv's site-packages)
    differs between environments and does not make it another model."""
    def strip(desc: str | None) -> str:
        return re.sub(r"/\S*/", "", desc or "")
    return a is not None and strip(a) == strip(b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="smollm2 (the GGUF asset), a .gguf file or an HF dir")
    ap.add_argument("--only", default="", help="comma-separated method names (default: all, in order)")
    ap.add_argument("--skip-done", action="store_true", help="skip methods already in <out>.json")
    # 32 x 512 tokens keeps a calibrated method at a few minutes on the shared 2-core machine (GPTQ's paper uses
    # 128 x 2048); SmoothQuant / LLM.int8() only need |x| maxima and use 8
    ap.add_argument("--samples", type=int, default=32, help="calibration samples (methods may override)")
    ap.add_argument("--seqlen", type=int, default=512, help="calibration sample length in tokens (methods may "
                    "override)")
    ap.add_argument("--max-samples", type=int, default=0, help="cap every method's calibration samples (smoke)")
    ap.add_argument("--tokens", type=int, default=8192, help="perplexity tokens (8192 = the documented slice)")
    ap.add_argument("--window", type=int, default=1024)
    # on a shared 2-core machine use --threads 1: with another process busy, 2 torch threads made a 2-layer GPTQ
    # run 12x slower (105 s vs 8.8 s) than 1 thread
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/llm_quality", help="writes <out>.json and <out>.md")
    ap.add_argument("--out-dir", default="artifacts/llm", help="checkpoint directories <out-dir>/<name>")
    ap.add_argument("--merge", action="append", default=[], metavar="JSON",
                    help="add the results of another run's JSON (same model/slice) before running (repeatable)")
    ap.add_argument("--no-run", action="store_true", help="only merge and rewrite <out>.json / <out>.md")
    ap.add_argument("--tiny", action="store_true", help="random 2-layer Llama, random tokens (smoke test)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from trimformer.compress.llm import load_compressed_llm, load_llm, prune_llm, quantize_llm
    from trimformer.llm_data import calibration_samples, perplexity_tokens, torch_perplexity

    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    out_json = Path(args.out + ".json")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out_json.read_text()) if out_json.is_file() else {}

    t = time.perf_counter()
    if args.tiny:
        base = load_llm(_tiny_model())
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, 512, args.tokens)
        calib_all = [rng.integers(0, 512, args.seqlen) for _ in range(args.samples)]

        def calib_for(n: int, seqlen: int) -> list:
            return [rng.integers(0, 512, seqlen) for _ in range(n)] if seqlen != args.seqlen else calib_all[:n]
        model_desc = "random tiny Llama (smoke test)"
    else:
        base = load_llm(args.model)
        tokens = perplexity_tokens(base.tokenizer, args.tokens)
        calib_all = calibration_samples(base.tokenizer, args.samples, args.seqlen, seed=0)

        def calib_for(n: int, seqlen: int) -> list:
            if seqlen == args.seqlen and n <= len(calib_all):
                return calib_all[:n]
            return calibration_samples(base.tokenizer, n, seqlen, seed=0)
        model_desc = f"{args.model} ({base.source}), fp32 dequantized baseline"
    print(f"loaded {model_desc} in {time.perf_counter() - t:.1f}s", flush=True)

    slice_desc = (f"last 400 Wikipedia articles by sorted title, first {args.tokens} tokens, {args.window}-token "
                  "windows" if not args.tiny else f"{args.tokens} random tokens")
    same_setup = (same_model(previous.get("model"), model_desc) and previous.get("tokens") == int(tokens.size)
                  and previous.get("window") == args.window)
    if same_setup and "dense_perplexity" in previous:
        dense = previous["dense_perplexity"]
        print(f"dense fp32 perplexity {dense:.4f} (from {out_json})", flush=True)
    else:
        t = time.perf_counter()
        dense = torch_perplexity(base.model, tokens, args.window)
        print(f"dense fp32 perplexity {dense:.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
    data = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model_desc, "slice": slice_desc, "tokens": int(tokens.size), "window": args.window,
        "dense_perplexity": dense,
        "calibration": (f"{args.samples} x {args.seqlen} tokens from the calibration slice (seed 0), disjoint "
                        "from the perplexity slice; SmoothQuant/LLM.int8() use the first 8"),
        "host": platform.node(), "torch": torch.__version__, "threads": args.threads,
        "results": previous.get("results", {}) if same_setup else {},
    }
    for extra_json in args.merge:
        other = json.loads(Path(extra_json).read_text())
        if not same_model(other.get("model"), model_desc) or other.get("tokens") != int(tokens.size):
            raise SystemExit(f"{extra_json}: different model or slice, not merged")
        for name, r in other.get("results", {}).items():
            data["results"].setdefault(name, r)
    failures = 0
    for name in names if not args.no_run else []:
        if args.skip_done and name in data["results"]:
            continue
        api, kwargs, target = METHODS[name]
        kw = dict(kwargs)
        n = kw.pop("n_samples", args.samples)
        seqlen = kw.pop("seqlen", args.seqlen)
        if args.max_samples:
            n = min(n, args.max_samples)
        fn = quantize_llm if api == "quantize" else prune_llm
        out = Path(args.out_dir) / name.replace(":", "_")
        print(f"== {name}: {api} {kw} -> {out}", flush=True)
        try:
            t = time.perf_counter()
            # an e2e pass with samples of its own: the API draws both sets from the slice (same seed); the smoke
            # run has no tokenizer to draw from, so its pass takes at most the solver's random samples
            e2e_samples = (kw.get("e2e") or {}).get("samples")
            if e2e_samples and args.tiny:
                kw["e2e"] = {**kw["e2e"], "samples": min(e2e_samples, n)}
            own = bool(e2e_samples) and not args.tiny
            calib = (dict(calibration=None, n_samples=n, seqlen=seqlen) if own
                     else dict(calibration=calib_for(n, seqlen)))
            res = fn(copy.deepcopy(base.model), tokenizer=base.tokenizer, out=out, overwrite=True, **calib, **kw)
            compress_s = time.perf_counter() - t
            group_sizes = res.record.extra.get("group_sizes")
            tune_layers = tune_summary(res.record.extra.get("tune"))
            e2e = {k: res.record.extra["e2e"][k] for k in ("loss_before", "loss_after", "kept")} \
                if "e2e" in res.record.extra else None
            del res
            gc.collect()
            t = time.perf_counter()
            model, meta = load_compressed_llm(out)
            ppl = torch_perplexity(model, tokens, args.window)
            eval_s = time.perf_counter() - t
            del model
            gc.collect()
        except Exception:
            traceback.print_exc()
            failures += 1
            continue
        data["results"][name] = {
            "kwargs": {k: v for k, v in kwargs.items() if k not in ("n_samples", "seqlen")},
            "calibration_samples": n,
            "seqlen": seqlen if api != "quantize" or kw["method"] != "rtn" or "e2e" in kw else None,
            "perplexity": ppl, "ratio": ppl / dense, "target": target, "compress_s": compress_s,
            "eval_s": eval_s, "command": data["command"], "group_sizes": group_sizes, "tune_layers": tune_layers, "e2e": e2e, "checkpoint": str(out), "outlier_features": sum(len(v) for v in
                                                                             meta["outliers"].values()),
        }
        met = _check(target, ppl / dense, data["results"])
        print(f"   perplexity {ppl:.4f}  ratio {ppl / dense:.4f}  target {target} met={met}  "
              f"compress {compress_s:.0f}s eval {eval_s:.0f}s", flush=True)
        out_json.write_text(json.dumps(data, indent=1) + "\n")
        Path(args.out + ".md").write_text(_markdown(data))
    out_json.write_text(json.dumps(data, indent=1) + "\n")
    Path(args.out + ".md").write_text(_markdown(data))
    print(_markdown(data))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
