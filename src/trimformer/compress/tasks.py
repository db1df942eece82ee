"""Tasks the compression toolkit fine-tunes and evaluates on: the data, label names and tokenization.

"wiki-topics": 11-way topic classification of Wikipedia vital-article lead sections (trimformer.assets:
deterministic train 7,275 / validation 900 / test 858 split by SHA-256 of the title).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TASKS = ("wiki-topics",)
DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class TaskData:
    texts: list[str]
    labels: list[int]
    label_names: list[str]


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return task


def task_data(task: str, split: str, max_samples: int | None = None) -> TaskData:
    """Texts and integer labels of a split ("train", "validation", "test"); max_samples takes an evenly spaced
    deterministic subset (the split is sorted by title, so a prefix would be biased towards early letters)."""
    check_task(task)
    from .. import assets

    assets.ensure_assets(("wiki",))
    ds = assets.topic_dataset(split)  # type: ignore[arg-type]
    texts, labels = list(ds.texts), list(ds.labels)
    if max_samples is not None and max_samples < len(texts):
        if max_samples <= 0:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        idx = [int(i * len(texts) / max_samples) for i in range(max_samples)]
        texts, labels = [texts[i] for i in idx], [labels[i] for i in idx]
    return TaskData(texts, labels, list(ds.label_names))


def calibration_texts(n: int) -> list[str]:
    """The first n articles of the calibration slice (disjoint from validation/test and the perplexity slice)."""
    from .. import assets

    assets.ensure_assets(("wiki",))
    arts = assets.wiki_articles()
    titles = assets.slice_titles("calibration")
    if n > len(titles):
        raise ValueError(f"calibration slice has {len(titles)} articles, asked for {n}")
    return [arts[t] for t in titles[:n]]


def tokenize(tokenizer: Any, texts: list[str], max_length: int = DEFAULT_MAX_LENGTH,
             return_tensors: str = "np") -> dict[str, Any]:
    """Pad to the longest text of the batch (not to max_length): shorter batches cost less in both runtimes."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors=return_tensors)
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def batches(tokenizer: Any, texts: list[str], batch_size: int = 32, max_length: int = DEFAULT_MAX_LENGTH,
            return_tensors: str = "np") -> list[dict[str, Any]]:
    return [tokenize(tokenizer, texts[i:i + batch_size], max_length, return_tensors)
            for i in range(0, len(texts), batch_size)]


def calibration_batches(tokenizer: Any, n_samples: int = 256, batch_size: int = 32,
                        max_length: int = DEFAULT_MAX_LENGTH, return_tensors: str = "np") -> list[dict[str, Any]]:
    """Tokenized calibration batches from the calibration slice."""
    return batches(tokenizer, calibration_texts(n_samples), batch_size, max_length, return_tensors)
