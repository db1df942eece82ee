"""bench/remote_train_topics.py carries checkpoints between machines: what `unpack` rebuilds must be the packed
checkpoint tensor for tensor (base tensors restored locally), and a damaged part must fail, not load."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import tiny_dir  # noqa: E402, F401

_spec = importlib.util.spec_from_file_location(
    "remote_train_topics", Path(__file__).parents[2] / "bench" / "remote_train_topics.py")
remote = importlib.util.module_from_spec(_spec)
sys.modules["remote_train_topics"] = remote
_spec.loader.exec_module(remote)


def _tensors(d):
    from safetensors.numpy import load_file

    return load_file(str(Path(d) / "model.safetensors"))


def _changed_copy(src, dst, suffix="intermediate.dense.weight"):
    """A copy of `src` with one tensor changed (a derived checkpoint that shares the rest with its base)."""
    import shutil

    from safetensors.numpy import save_file

    shutil.copytree(src, dst)
    t = _tensors(src)
    name = sorted(k for k in t if k.endswith(suffix))[0]
    t[name] = t[name] * 0.5
    save_file(t, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return name


def test_pack_unpack_round_trip_with_base(tiny_dir, tmp_path):  # noqa: F811
    changed = _changed_copy(tiny_dir, tmp_path / "derived")
    parts = remote.pack(tmp_path / "derived", tiny_dir, tmp_path / "parts", "d")
    out = remote.unpack(parts, tiny_dir, tmp_path / "back")
    a, b = _tensors(tmp_path / "derived"), _tensors(out)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(b[changed], _tensors(tiny_dir)[changed])
    assert (out / "config.json").read_text() == (tmp_path / "derived" / "config.json").read_text()
    with pytest.raises(SystemExit, match="needs --base"):
        remote.unpack(parts, None, tmp_path / "nobase")


def test_unpack_rejects_a_changed_base_and_damaged_parts(tiny_dir, tmp_path):  # noqa: F811
    _changed_copy(tiny_dir, tmp_path / "derived")
    parts = remote.pack(tmp_path / "derived", tiny_dir, tmp_path / "parts", "d")
    # not the base the pack was made against: its word embeddings, which the pack leaves out, differ
    _changed_copy(tiny_dir, tmp_path / "otherbase", "word_embeddings.weight")
    with pytest.raises(SystemExit, match="tensors differ"):
        remote.unpack(parts, tmp_path / "otherbase", tmp_path / "x")
    blob = bytearray(parts[0].read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    parts[0].write_bytes(bytes(blob))
    with pytest.raises(SystemExit, match="do not match"):
        remote.unpack(parts, tiny_dir, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_pack_best_takes_the_best_by_validation_within_the_limits(tiny_dir, tmp_path):  # noqa: F811
    ckpts = {}
    for name, acc in (("low", 0.5), ("high", 0.9), ("mid", 0.7)):
        _changed_copy(tiny_dir, tmp_path / name)
        ckpts[name] = {"name": name, "val_accuracy_fp32": acc, "checkpoint": str(tmp_path / name)}
    ckpts["failed"] = {"name": "failed"}  # a candidate stopped at the limit has no accuracy
    out = tmp_path / "out"
    out.mkdir()
    assert remote.pack_best(ckpts, Path(tiny_dir), out, top=2, max_bytes=2**30) == ["high", "mid"]
    assert sorted(p.name for p in out.iterdir()) == ["high.part00", "high.sha256", "mid.part00", "mid.sha256"]
    back = remote.unpack([out / "high.part00"], Path(tiny_dir), tmp_path / "high-back")
    for k, v in _tensors(tmp_path / "high").items():
        np.testing.assert_array_equal(_tensors(back)[k], v)
    # the file-count limit (what one device call brings back) leaves the rest out, and no stray folder behind
    out2 = tmp_path / "out2"
    out2.mkdir()
    assert remote.pack_best(ckpts, Path(tiny_dir), out2, top=3, max_bytes=2**30, max_files=4) == ["high", "mid"]
    assert len(list(out2.iterdir())) == 4
    out3 = tmp_path / "out3"
    out3.mkdir()
    assert remote.pack_best(ckpts, Path(tiny_dir), out3, top=3, max_bytes=1) == []
    assert list(out3.iterdir()) == []
