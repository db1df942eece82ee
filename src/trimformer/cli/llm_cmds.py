"""Decoder-LLM commands: `trimformer generate` (streaming) and decoder compilation for `trimformer compile`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def load_decoder_engine(src: str | Path, weights: str | None, threads: int | None, isa: str | None,
                        activations: str | None = None):
    """A DecoderEngine from a saved trimformer decoder (model.json) or a checkpoint / compressed dir / .gguf."""
    from ..io import load
    from ..runtime.decoder import DecoderEngine, compile_decoder

    src = Path(src)
    if (src / "model.json").is_file():
        if weights not in (None, "f32"):
            raise ValueError(f"{src} is already compiled; --weights applies when compiling a checkpoint")
        engine = load(src, threads=threads, isa=isa)
        if not isinstance(engine, DecoderEngine):
            raise ValueError(f"{src} is an encoder model; this command needs a decoder (Llama family, GPT-2)")
        return engine
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such model")
    return compile_decoder(src, weights=weights or "f32", threads=threads, isa=isa, activations=activations)


def compile_decoder_cmd(args: argparse.Namespace, console: Any) -> int:
    """`trimformer compile` for decoder sources: compile with --weights and save."""
    from .. import save

    t0 = time.perf_counter()
    engine = load_decoder_engine(args.src, getattr(args, "weights", None), args.threads,
                                 None if args.isa == "auto" else args.isa, getattr(args, "activations", None))
    save(engine, args.out)
    counts: dict[str, int] = {}
    for f in engine.formats.values():
        counts[f] = counts.get(f, 0) + 1
    s = engine.spec
    console.print(f"compiled {args.src} -> {args.out} in {time.perf_counter() - t0:.1f} s")
    console.print(f"  {s.arch} decoder, {s.layers} layers, hidden {s.hidden}, heads {s.heads}/{s.kv_heads}; "
                  "linear formats: " + ", ".join(f"{n} {f}" for f, n in sorted(counts.items())))
    console.print(f"  native weights {engine.weight_bytes / 2**20:.1f} MiB; ISA {engine.isa}")
    if getattr(args, "verbose", False):
        for name, fmt in engine.formats.items():
            console.print(f"    {name:24s} {fmt}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate text from a prompt, streaming tokens to stdout."""
    from ..pipelines.text_generation import TextGenerationPipeline

    engine = load_decoder_engine(args.model, args.weights, args.threads, None if args.isa == "auto" else args.isa,
                                 args.activations)
    pipe = TextGenerationPipeline(engine)
    opts: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "do_sample": args.temperature > 0,
                            "temperature": args.temperature if args.temperature > 0 else 1.0,
                            "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}
    if args.stop is not None:
        opts["stop_tokens"] = [engine.tokenizer.token_to_id(t) if not t.isdigit() else int(t) for t in args.stop]
    t0 = time.perf_counter()
    count = 0

    echoed = args.chat  # the prompt is echoed with the first piece: a request the engine refuses prints nothing

    def echo_prompt() -> None:
        nonlocal echoed
        if not echoed:
            sys.stdout.write(args.prompt)
            echoed = True

    def show(piece: str) -> None:
        nonlocal count
        count += 1
        echo_prompt()
        sys.stdout.write(piece)
        sys.stdout.flush()

    pipe(args.prompt, chat=args.chat, stream=show, **opts)
    echo_prompt()  # max_new_tokens=0 (or an immediate stop): the prompt alone
    sys.stdout.write("\n")
    if args.stats:
        dt = time.perf_counter() - t0
        print(f"[{engine!r}: {dt:.2f} s]", file=sys.stderr)
    return 0


def register(sub: Any, common: argparse.ArgumentParser, runtime: argparse.ArgumentParser) -> None:
    g = sub.add_parser("generate", parents=[common, runtime], help="generate text with a decoder LLM (streaming)",
                       description="Generate a continuation of --prompt with a decoder (a trimformer model, a "
                                   "Hugging Face / compressed checkpoint or a .gguf file), streaming to stdout.")
    g.add_argument("model", metavar="MODEL")
    g.add_argument("--prompt", "-p", required=True)
    g.add_argument("--weights", default=None,
                   help="format when compiling a checkpoint: f32, bf16, w8a8, llm-int8, int8-wo, gguf, sparse / "
                        "sparse-int8 (bitmask formats for pruned Linears) or a k-bit TYPE[-gGROUP] such as int4-g128, "
                        "nf4-g64, fp8-e4m3 (default f32)")
    g.add_argument("--activations", choices=("int8",), default=None,
                   help="int8: per-token int8 activations on 4-bit integer weights (W4A8 VNNI dot products)")
    g.add_argument("--max-new-tokens", "-n", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sampling")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=None, metavar="TOKEN",
                   help="stop token (text or id; repeatable; default: the model's end-of-sequence)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template markers")
    g.add_argument("--stats", action="store_true", help="print the time taken to stderr")
    g.set_defaults(func=cmd_generate)
