"""text-generation over a DecoderEngine: prompts in, continuations out (HF pipeline-like results)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..runtime.decoder import DecoderEngine, GenerationError


class TextGenerationPipeline:
    """pipe("Once upon a time", max_new_tokens=32) -> [{"generated_text": prompt + continuation}].

    A list of prompts is generated as one left-padded batch. chat=True wraps a prompt in the tokenizer's
    chat markers when the model has them (SmolLM2-Instruct: <|im_start|>user ... <|im_end|>)."""

    task = "text-generation"

    def __init__(self, engine: DecoderEngine, tokenizer: Any = None, **defaults: Any):
        self.engine = engine
        self.tokenizer = tokenizer if tokenizer is not None else engine.tokenizer
        self.defaults = {"max_new_tokens": 32, **defaults}

    def _encode(self, prompt: str, chat: bool) -> list[int]:
        if chat:
            vocab = self.tokenizer.get_vocab()
            if "<|im_start|>" not in vocab:
                raise GenerationError("chat=True: this tokenizer has no <|im_start|> chat markers")
            prompt = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
        ids = self.tokenizer.encode(prompt).ids
        if not ids:
            raise GenerationError("the prompt is empty after tokenization")
        return ids

    def __call__(self, prompts: str | list[str], *, return_full_text: bool = True, chat: bool = False,
                 stream: Callable[[str], None] | None = None, **kw: Any) -> list[dict[str, str]] | list[list[dict]]:
        opts = {**self.defaults, **kw}
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        if not texts:
            raise GenerationError("no prompts")
        if stream is not None and not single:
            raise GenerationError("streaming takes one prompt")
        ids = [self._encode(t, chat) for t in texts]
        if chat and "stop_tokens" not in opts:
            end = self.tokenizer.token_to_id("<|im_end|>")
            opts["stop_tokens"] = [end] if end is not None else None
        if stream is not None:
            shown = ""
            new: list[int] = []

            def on_token(_row: int, tok: int) -> None:
                nonlocal shown
                new.append(tok)
                text = self.tokenizer.decode(new)
                if len(text) > len(shown) and not text.endswith("\ufffd"):
                    stream(text[len(shown):])
                    shown = text

            opts["stream"] = on_token
        outs = self.engine.generate(ids, **opts)
        results = []
        for t, o in zip(texts, outs, strict=True):
            cont = self.tokenizer.decode(o)
            results.append([{"generated_text": (t + cont) if return_full_text else cont}])
        return results[0] if single else results
