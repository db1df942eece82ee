"""Perplexity of a decoder computed by the trimformer runtime on the documented held-out slice (docs/llm.md):
the last 400 Wikipedia articles by sorted title, first 8,192 tokens, non-overlapping 1,024-token windows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .llm_data import PERPLEXITY_TOKENS, PERPLEXITY_WINDOW, perplexity_tokens


def evaluate_perplexity(model: Any, *, weights: str | None = None, threads: int | None = None,
                        n_tokens: int = PERPLEXITY_TOKENS, window: int = PERPLEXITY_WINDOW,
                        progress: bool = False, activations: str | None = None) -> dict[str, Any]:
    """{"perplexity", "tokens", "window", "weights", "seconds", ...}: model is a DecoderEngine, a saved trimformer
    decoder, a HF / compressed-LLM checkpoint directory or a .gguf file (compiled with `weights`)."""
    from .cli.llm_cmds import load_decoder_engine
    from .runtime.decoder import DecoderEngine

    engine = model if isinstance(model, DecoderEngine) else load_decoder_engine(model, weights, threads, None, activations)
    tokens = perplexity_tokens(engine.tokenizer, n_tokens)
    t0 = time.perf_counter()
    r = engine.perplexity(tokens, window=window, progress=progress)
    formats = sorted(set(engine.formats.values()))
    return {"perplexity": r["perplexity"], "tokens": r["tokens"], "window": window, "slice_tokens": int(n_tokens),
            "weights": formats[0] if len(formats) == 1 else formats, "isa": engine.isa, "threads": engine.threads,
            "seconds": time.perf_counter() - t0,
            "model": str(model) if isinstance(model, (str, Path)) else repr(engine)}
