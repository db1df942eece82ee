"""Task evaluation computed by the trimformer runtime (an Engine), never by PyTorch.

`evaluate_task` runs a compiled model (or compiles a checkpoint directory first) on the deterministic test split
and reports accuracy and macro-F1; `embedding_fidelity` compares a compressed feature extractor's pooled
embeddings with the dense model's (cosine similarity).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["accuracy_f1", "as_engine", "embedding_fidelity", "evaluate_task"]


def accuracy_f1(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[float, float]:
    """Accuracy and macro-F1 (mean over classes present in labels or predictions; F1 = 0 for a class with no TP)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    acc = float((pred == labels).mean()) if len(labels) else 0.0
    f1s = []
    for c in range(n_classes):
        tp = int(((pred == c) & (labels == c)).sum())
        fp = int(((pred == c) & (labels != c)).sum())
        fn = int(((pred != c) & (labels == c)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return acc, float(np.mean(f1s)) if f1s else 0.0


def as_engine(model: Any, *, threads: int | None = None, isa: str | None = None) -> Any:
    """An Engine as is; a trimformer model dir loaded; a Hugging Face checkpoint dir compiled in float32."""
    from .runtime.engine import Engine, compile_encoder

    if isinstance(model, Engine):
        return model
    path = Path(model)
    if (path / "model.json").is_file():
        from . import load

        return load(path, threads=threads, isa=isa)
    if (path / "config.json").is_file():
        return compile_encoder(path, threads=threads, isa=isa)
    raise FileNotFoundError(f"{path}: neither a trimformer model (model.json) nor a Hugging Face checkpoint")


def _tokenizer_for(engine: Any, tokenizer: Any, model: Any) -> Any:
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from transformers import AutoTokenizer

    src = tokenizer or engine.tokenizer_path or (model if isinstance(model, (str, Path)) else None)
    if src is None:
        raise ValueError("no tokenizer: the engine has none saved; pass tokenizer=")
    return AutoTokenizer.from_pretrained(str(src))


def evaluate_task(model: Any, task: str = "wiki-topics", *, split: str = "test", tokenizer: Any = None,
                  batch_size: int = 32, max_length: int = 128, max_samples: int | None = None,
                  threads: int | None = None, isa: str | None = None) -> dict[str, Any]:
    """{"accuracy", "macro_f1", "n", "seconds"} of the runtime model on `task`'s `split` (fractions in [0, 1])."""
    from .compress.tasks import batches, task_data

    engine = as_engine(model, threads=threads, isa=isa)
    if engine.spec.task != "sequence-classification":
        raise ValueError(f"task {task!r} needs a sequence-classification model, this one is {engine.spec.task!r}")
    data = task_data(task, split, max_samples)
    n_out = len(engine.spec.id2label or {})
    if n_out != len(data.label_names):
        raise ValueError(f"model has {n_out} labels, task {task!r} has {len(data.label_names)}")
    tok = _tokenizer_for(engine, tokenizer, model)
    preds = []
    t0 = time.perf_counter()
    for b in batches(tok, data.texts, batch_size, max_length):
        logits = engine.run(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))["logits"]
        preds.append(np.argmax(logits, axis=-1))
    seconds = time.perf_counter() - t0
    acc, f1 = accuracy_f1(np.concatenate(preds), np.asarray(data.labels), len(data.label_names))
    return {"accuracy": acc, "macro_f1": f1, "n": len(data.labels), "seconds": seconds}


def embedding_fidelity(model: Any, reference: Any, texts: list[str] | None = None, *, tokenizer: Any = None,
                       pooling: str = "mean", batch_size: int = 32, max_length: int = 128,
                       n: int = 256) -> dict[str, float]:
    """Cosine similarity of the pooled, L2-normalized embeddings of `model` and `reference` (both runtime models)
    over `texts` (default: the first n test-split sentences). {"mean_cosine", "min_cosine", "n"}."""
    from . import assets
    from .compress.tasks import batches

    eng, ref = as_engine(model), as_engine(reference)
    if texts is None:
        assets.ensure_assets(("wiki",))
        texts = assets.wiki_sentences(n, "test")
    tok = _tokenizer_for(eng, tokenizer, model)
    cos = []
    for b in batches(tok, texts, batch_size, max_length):
        a = eng.run(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), pooling=pooling, normalize=True)
        r = ref.run(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), pooling=pooling, normalize=True)
        cos.append(np.sum(a["pooled"] * r["pooled"], axis=-1))
    c = np.concatenate(cos)
    return {"mean_cosine": float(c.mean()), "min_cosine": float(c.min()), "n": int(len(c))}
