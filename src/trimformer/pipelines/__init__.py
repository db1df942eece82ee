"""Hugging Face-style pipelines over a trimformer Engine (tokenization with the `tokenizers` library only).

    from trimformer.pipelines import pipeline
    clf = pipeline("text-classification", model="path/to/model")
    clf("great movie!")                       # [{"label": "POSITIVE", "score": 0.99}]
    emb = pipeline("sentence-embedding", model=trimformer.assets.minilm_path())
    emb(["a sentence", "another one"])        # np.ndarray [2, 384], mean-pooled and L2-normalized
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..runtime.engine import Engine
from .base import (
    Pipeline,
    TokenizerNotFoundError,
    default_max_length,
    load_tokenizer,
    resolve_engine,
)
from .calibration import calibration_batches, calibration_sentences
from .feature_extraction import FeatureExtractionPipeline, SentenceEmbeddingPipeline
from .question_answering import QuestionAnsweringPipeline
from .text_classification import TextClassificationPipeline
from .token_classification import TokenClassificationPipeline

PIPELINES: dict[str, type[Pipeline]] = {
    "feature-extraction": FeatureExtractionPipeline,
    "sentence-embedding": SentenceEmbeddingPipeline,
    "text-classification": TextClassificationPipeline,
    "token-classification": TokenClassificationPipeline,
    "question-answering": QuestionAnsweringPipeline,
}
TASK_ALIASES: dict[str, str] = {
    "sentiment-analysis": "text-classification",
    "sequence-classification": "text-classification",
    "ner": "token-classification",
    "embeddings": "sentence-embedding",
    "sentence-embeddings": "sentence-embedding",
    "sentence-similarity": "sentence-embedding",
}
#: the pipeline task that matches each head (EncoderSpec.task)
DEFAULT_TASK_FOR_HEAD: dict[str, str] = {
    "feature-extraction": "sentence-embedding",
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
}


def normalize_task(task: str) -> str:
    """Canonical pipeline task name (aliases such as "ner" or "sentiment-analysis" resolved)."""
    t = TASK_ALIASES.get(task, task)
    if t == "text-generation":
        return t
    if t not in PIPELINES:
        raise ValueError(f"unknown task {task!r}; supported: "
                         f"{', '.join([*PIPELINES, 'text-generation', *TASK_ALIASES])}")
    return t


def pipeline(task: str | None = None, model: Any = None, tokenizer: Any = None, threads: int | None = None,
             quantize: str | None = None, batch_size: int = 32, max_length: int | None = None, device: Any = None,
             **kwargs: Any) -> Pipeline:
    """Build a pipeline for `task` over `model`.

    model: an Engine, a saved trimformer directory (model.json), a Hugging Face checkpoint directory (compiled
    here, with `quantize`), or an in-memory transformers model. tokenizer: a `tokenizers.Tokenizer`, a
    tokenizer.json path or a directory; default: the one saved with the model. task=None picks the task of
    the model's head. Other keyword arguments are the task's options (e.g. top_k, pooling,
    aggregation_strategy, doc_stride) and can also be given per call.
    """
    if device not in (None, "cpu", -1) and not (isinstance(device, str) and device.startswith("cpu")):
        raise ValueError(f"trimformer runs on CPU only; device={device!r} is not supported")
    if task == "text-generation":
        return _text_generation(model, tokenizer, threads, **kwargs)
    task = normalize_task(task) if task is not None else None
    calib = kwargs.pop("calibration_samples", 128)
    engine = resolve_engine(model, threads=threads, quantize=quantize, tokenizer=tokenizer,
                            calibration_samples=calib)
    if task is None:
        task = DEFAULT_TASK_FOR_HEAD[engine.spec.task]
    _check_head(task, engine)
    if tokenizer is None:
        tokenizer = engine.tokenizer_path or (model if isinstance(model, (str, Path)) else None)
        if tokenizer is None:
            raise TokenizerNotFoundError("no tokenizer ships with this model: pass tokenizer= (a tokenizer.json "
                                         "path, a directory holding one, or a tokenizers.Tokenizer)")
    tok = load_tokenizer(tokenizer)
    return PIPELINES[task](engine, tok, batch_size=batch_size, max_length=max_length, **kwargs)


def _text_generation(model: Any, tokenizer: Any, threads: int | None, **kwargs: Any):
    """A text-generation pipeline over a DecoderEngine, a saved decoder, a checkpoint / .gguf or an HF model."""
    from ..runtime.decoder import DecoderEngine, compile_decoder
    from .text_generation import TextGenerationPipeline

    weights = kwargs.pop("weights", "f32")
    if isinstance(model, DecoderEngine):
        engine = model
    elif isinstance(model, (str, Path)) and (Path(model) / "model.json").is_file():
        from ..io import load

        engine = load(model, threads=threads)
        if not isinstance(engine, DecoderEngine):
            raise ValueError(f"{model} is an encoder: text-generation needs a decoder (Llama family, GPT-2)")
    elif model is None:
        raise ValueError("text-generation needs model= (a decoder checkpoint, .gguf file or DecoderEngine)")
    elif isinstance(model, Engine):
        raise ValueError("this Engine is an encoder: text-generation needs a decoder (Llama family, GPT-2)")
    else:
        engine = compile_decoder(model, weights=weights, threads=threads)
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    return TextGenerationPipeline(engine, tok, **kwargs)


def _check_head(task: str, engine: Engine) -> None:
    from .base import HEAD_OF_TASK, TASK_OF_HEAD

    need = HEAD_OF_TASK[PIPELINES[task].task]
    if need is not None and engine.spec.task != need:
        hint = TASK_OF_HEAD.get(engine.spec.task, engine.spec.task)
        other = "sentence-embedding" if hint == "feature-extraction" else "feature-extraction"
        raise ValueError(f"task '{task}' needs a model with a {need} head, but this model's task is "
                         f"'{engine.spec.task}' (use pipeline('{hint}') or pipeline('{other}'))")


__all__ = [
    "DEFAULT_TASK_FOR_HEAD", "FeatureExtractionPipeline", "PIPELINES", "Pipeline", "QuestionAnsweringPipeline",
    "SentenceEmbeddingPipeline", "TASK_ALIASES", "TextClassificationPipeline", "TokenClassificationPipeline",
    "TokenizerNotFoundError", "calibration_batches", "calibration_sentences", "default_max_length",
    "load_tokenizer", "normalize_task", "pipeline",
]
