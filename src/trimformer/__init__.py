"""trimformer: compress Transformer models and run them fast on CPUs.

    import trimformer as tf
    engine = tf.compile("path/to/hf-checkpoint", quantize="int8-dynamic")
    out = engine.run(input_ids, attention_mask)
    tf.save(engine, "model.tf"); engine = tf.load("model.tf")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .io import ModelFormatError, load, save  # noqa: E402
from .models.decoder import is_decoder_source  # noqa: E402
from .models.encoder import CheckpointError, UnsupportedModelError  # noqa: E402
from .runtime.decoder import DecoderEngine, GenerationError, compile_decoder  # noqa: E402
from .runtime.engine import Engine, compile_encoder  # noqa: E402


def compile(model: Any, *, quantize: str | None = None, calibration: Any = None, threads: int | None = None,
            isa: str | None = None, weights: str | None = None, **options: Any) -> Engine | DecoderEngine:
    """Compile a Hugging Face encoder (checkpoint directory or in-memory model) into an Engine, or a decoder LLM
    (Llama family / GPT-2: HF directory, compressed-LLM directory, ``.gguf`` file or in-memory model) into a
    DecoderEngine.

    Decoders: ``weights`` is the Linear format ("f32", "bf16", "w8a8", "llm-int8", "int8-wo", a k-bit
    ``TYPE[-gGROUP]`` such as "int4-g128" / "nf4-g64" / "fp8-e4m3", or "gguf" to keep a GGUF's blocks exactly);
    further options in `trimformer.runtime.decoder.compile_decoder`.

    quantize: None (FP32), "bf16" (bfloat16 weights and GEMM inputs, float32 accumulation), "int8-dynamic"
    (activation ranges per row, per call) or "int8-static" (calibrated scales baked in; `calibration` is an
    iterable of tokenized batches `{"input_ids", "attention_mask", ...}`).

    Further planner options (`sparse`, `attention`, `keep_float`, `calibration_method`, `quantize_head`) are
    described in `trimformer.runtime.engine.compile_encoder`.
    """
    if weights is not None or is_decoder_source(model):
        if quantize is not None or calibration is not None:
            raise ValueError("decoders take weights=..., not quantize= / calibration=")
        return compile_decoder(model, weights=weights or "f32", threads=threads, isa=isa, **options)
    return compile_encoder(model, quantize=quantize, calibration=calibration, threads=threads, isa=isa, **options)


def pipeline(task: str, model: Any = None, tokenizer: Any = None, **kwargs: Any):
    """A Hugging Face-style pipeline over a trimformer Engine (see trimformer.pipelines)."""
    from .pipelines import pipeline as _pipeline

    return _pipeline(task, model=model, tokenizer=tokenizer, **kwargs)


__all__ = ["CheckpointError", "DecoderEngine", "Engine", "GenerationError", "ModelFormatError", "UnsupportedModelError", "compile", "load", "pipeline",
           "save", "__version__"]
