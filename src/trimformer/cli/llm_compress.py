"""`trimformer quantize-llm` and `trimformer prune-llm`: decoder-LLM compression into the compressed-LLM
checkpoint directory (docs/llm.md).

    trimformer quantize-llm --method gptq --format int4-g128 --model smollm2 --out artifacts/llm/int4-gptq
    trimformer quantize-llm --method gptq --format int4-asym-g128 --act-order --mse --samples 128 \
        --model smollm2 --out artifacts/llm/int4-asym-gptq
    trimformer quantize-llm --method smoothquant --format w8a8 --alpha 0.5 --model DIR --out OUT
    trimformer prune-llm --method sparsegpt --sparsity 0.5 --quantize int4-g128 --model smollm2 --out OUT
    trimformer prune-llm --method magnitude --sparsity 2:4 --model model.gguf --out OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..compress.llm.api import DEFAULT_SAMPLES, DEFAULT_SEQLEN, PRUNE_METHODS, QUANT_METHODS

__all__ = ["register"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="SRC",
                   help="'smollm2' (the GGUF asset), a .gguf file or a Hugging Face checkpoint directory")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory (written atomically)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory for calibration (default: the model's)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                   help=f"calibration samples from the Wikipedia calibration slice (default {DEFAULT_SAMPLES})")
    p.add_argument("--seqlen", type=int, default=DEFAULT_SEQLEN, metavar="T",
                   help=f"tokens per calibration sample (default {DEFAULT_SEQLEN})")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed")
    p.add_argument("--percdamp", type=float, default=0.01, help="GPTQ/SparseGPT Hessian damping (x mean diag)")
    p.add_argument("--strict-groups", action="store_true",
                   help="fail when the group size does not divide a Linear's inputs (default: the nominal group "
                        "with a shorter last group, e.g. 576 inputs at 128 = 4 x 128 + 64, recorded per Linear)")
    p.add_argument("--true-sequential", action=argparse.BooleanOptionalAction, default=True,
                   help="GPTQ/SparseGPT: inside a layer compress q/k/v, then o_proj on the compressed attention's "
                        "outputs, then gate/up, then down (default; --no-true-sequential: all Hessians from the "
                        "layer's uncompressed forward)")
    p.add_argument("--mse", action="store_true",
                   help="k-bit groups: search each group's range (shrunk min/max) for the lowest squared error "
                        "instead of plain min/max (RTN, GPTQ, SparseGPT --quantize)")
    p.add_argument("--tune-steps", type=int, default=0, metavar="N",
                   help="GPTQ/SparseGPT: afterwards, N steps per layer of block-wise output reconstruction "
                        "(group scales/offsets, norm weights, kept weights of pruned Linears; docs/llm.md)")
    p.add_argument("--tune-batch", type=int, default=4, metavar="B", help="calibration samples per tuning step")
    p.add_argument("--e2e-steps", type=int, default=0, metavar="N",
                   help="k-bit / pruned results: last, N steps of end-to-end distillation of the whole model "
                        "towards the uncompressed one's logits (group scales/offsets, norm weights, kept weights "
                        "of pruned Linears; docs/llm.md)")
    p.add_argument("--e2e-batch", type=int, default=2, metavar="B", help="calibration samples per e2e step")
    p.add_argument("--e2e-samples", type=int, default=0, metavar="N",
                   help="calibration samples of the e2e pass (default: the solver's --samples); more distinct "
                        "samples keep many steps from fitting the few the solver used")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks instead of one-line errors")


def _prepare(args: argparse.Namespace) -> dict[str, Any]:
    from .main import CLIError

    if args.samples < 1 or args.seqlen < 2:
        raise CLIError("--samples must be >= 1 and --seqlen >= 2")
    if args.tune_steps < 0 or args.tune_batch < 1:
        raise CLIError("--tune-steps must be >= 0 and --tune-batch >= 1")
    if args.e2e_steps < 0 or args.e2e_batch < 1 or args.e2e_samples < 0:
        raise CLIError("--e2e-steps and --e2e-samples must be >= 0 and --e2e-batch >= 1")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CLIError(f"{out} exists; pass --force to replace it")
    src = Path(args.model)
    if args.model != "smollm2" and src.exists() and out.resolve() == src.resolve():
        raise CLIError("--out must differ from --model")
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise CLIError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    return {"tokenizer": tokenizer, "n_samples": args.samples, "seqlen": args.seqlen, "seed": args.seed,
            "percdamp": args.percdamp, "strict_groups": args.strict_groups, "overwrite": args.force,
            "progress": not args.quiet, "true_sequential": args.true_sequential, "mse": args.mse,
            "tune": {"steps": args.tune_steps, "batch_samples": args.tune_batch} if args.tune_steps else None,
            "e2e": {"steps": args.e2e_steps, "batch_samples": args.e2e_batch, "samples": args.e2e_samples}
            if args.e2e_steps else None}


def _report(args: argparse.Namespace, res: Any) -> None:
    rec = res.record
    summary = {"out": str(res.out), "method": rec.method, "linears": len(rec.linears),
               "activations": rec.activations, "outlier_features": sum(len(v) for v in rec.outliers.values()),
               "parameters": rec.extra, "seconds": round(res.seconds, 1)}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        params = dict(rec.extra)
        if "tune" in params:  # per-layer losses: in the JSON summary and the checkpoint's record
            t = params["tune"]
            params["tune"] = f"{t['steps']} steps, {t['layers_kept']}/{t['layers']} layers improved"
        if "e2e" in params:
            e = params["e2e"]
            params["e2e"] = (f"{e['steps']} steps, KL {e['loss_before']:.4f} -> {e['loss_after']:.4f}"
                             + ("" if e["kept"] else " (no gain: undone)"))
        extra = ", ".join(f"{k}={v}" for k, v in params.items())
        print(f"wrote {res.out}: {rec.method} ({extra}) on {len(rec.linears)} Linears in {res.seconds:.1f}s")


def cmd_quantize_llm(args: argparse.Namespace) -> int:
    from ..compress.llm import quantize_llm

    kw = _prepare(args)
    res = quantize_llm(args.model, method=args.method, format=args.format,
                       group_size=args.group_size, out=args.out, act_order=args.act_order, alpha=args.alpha,
                       threshold=args.threshold, **kw)
    _report(args, res)
    return 0


def cmd_prune_llm(args: argparse.Namespace) -> int:
    from ..compress.llm import prune_llm

    kw = _prepare(args)
    res = prune_llm(args.model, method=args.method, sparsity=args.sparsity, out=args.out, pattern=args.pattern,
                    quantize=args.quantize, **kw)
    _report(args, res)
    return 0


def register(subparsers: Any) -> None:
    """Add the quantize-llm and prune-llm subcommands to the `trimformer` parser."""
    q = subparsers.add_parser(
        "quantize-llm", help="quantize a decoder LLM (RTN, GPTQ, SmoothQuant W8A8, LLM.int8())",
        description="Quantize every Linear of a decoder LLM's layers, layer by layer, into a compressed-LLM "
                    "checkpoint directory (see docs/llm.md).")
    q.add_argument("--method", choices=QUANT_METHODS, default="gptq")
    q.add_argument("--format", default=None,
                   help="TYPE[-gGROUP]: int4-g128, int4-asym-g128, int3-g128, int2-g64, nf4-g64, fp4-g64, "
                        "fp8-e4m3, fp8-e5m2, int8 (per channel), w8a8 (default int4-g128; smoothquant: w8a8)")
    q.add_argument("--group-size", type=int, default=None, help="override the format's group size (-1: per channel)")
    q.add_argument("--act-order", action="store_true", help="GPTQ: process columns by decreasing Hessian diagonal")
    q.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength (default 0.5)")
    q.add_argument("--threshold", type=float, default=6.0, help="LLM.int8() outlier threshold on |x| (default 6)")
    _common(q)
    q.set_defaults(func=cmd_quantize_llm)

    p = subparsers.add_parser(
        "prune-llm", help="prune a decoder LLM (SparseGPT, magnitude), optionally + k-bit quantization",
        description="Prune every Linear of a decoder LLM's layers into a compressed-LLM checkpoint directory.")
    p.add_argument("--method", choices=PRUNE_METHODS, default="sparsegpt")
    p.add_argument("--sparsity", default="0.5", help="fraction (0.5, 0.7) or N:M pattern (2:4, 4:8)")
    p.add_argument("--pattern", choices=("unstructured", "block"), default=None,
                   help="with a fractional sparsity: unstructured (default) or 4x4 blocks")
    p.add_argument("--quantize", default=None, metavar="FORMAT",
                   help="also quantize the kept weights (symmetric type, e.g. int4-g128)")
    _common(p)
    p.set_defaults(func=cmd_prune_llm)
