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
