"""Saving and loading: round trip, atomic replacement, and clear errors for every kind of bad directory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import trimformer as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
                     vocab_size=120, max_position_embeddings=64, num_labels=3)
    d = tmp_path_factory.mktemp("hf")
    BertForSequenceClassification(cfg).eval().save_pretrained(d)
    return d


@pytest.fixture
def ids(rng):
    return rng.integers(1, 120, (2, 13)).astype(np.int64)


@pytest.mark.parametrize("quantize", [None, "bf16", "int8-dynamic", "int8-static"])
def test_round_trip_identical(model_dir, tmp_path, ids, quantize):
    calib = [{"input_ids": ids}]
    # sparse=False: dense tensors throughout (with the default tuning, an avx2 INT8 layer may keep the block format)
    eng = tf.compile(model_dir, quantize=quantize, calibration=calib, sparse=False)
    out = tf.save(eng, tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "weights.safetensors"]
    back = tf.load(out)
    assert back.quantize == quantize and back.spec == eng.spec and back.formats == eng.formats
    a, b = eng.run(ids), back.run(ids)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    doc = json.loads((out / "model.json").read_text())
    assert doc["schema_version"] == 1 and doc["kind"] == "encoder"
    if quantize and quantize.startswith("int8"):
        assert doc["tensors"]["layers.0.qkv.qweight"]["dtype"] == "int8"
    if quantize == "bf16":
        assert doc["tensors"]["layers.0.qkv.bweight"]["dtype"] == "uint16"


def test_tokenizer_files_travel_with_the_model(tmp_path, ids):
    from trimformer import assets

    eng = tf.compile(assets.minilm_path())
    out = tf.save(eng, tmp_path / "m")
    assert (out / "tokenizer.json").is_file()
    assert tf.load(out).tokenizer_path == out


def test_save_replaces_atomically(model_dir, tmp_path, ids):
    eng = tf.compile(model_dir)
    target = tmp_path / "m"
    tf.save(eng, target)
    tf.save(tf.compile(model_dir, quantize="int8-dynamic"), target)
    assert tf.load(target).quantize == "int8-dynamic"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary directories left behind


def test_killed_save_leaves_the_old_model_intact(model_dir, tmp_path, ids):
    target = tmp_path / "m"
    tf.save(tf.compile(model_dir), target)
    before = tf.load(target).run(ids)["logits"]
    # a child process that dies (SIGKILL) in the middle of writing the weights
    code = f"""
import os, signal, trimformer as tf
import trimformer.io as tio
eng = tf.compile({str(model_dir)!r}, quantize="int8-dynamic")
def die(*a, **k):
    open(a[1], "wb").write(b"partial")
    os.kill(os.getpid(), signal.SIGKILL)
tio.save_safetensors = die
tf.save(eng, {str(target)!r})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode != 0
    np.testing.assert_array_equal(tf.load(target).run(ids)["logits"], before)


def test_save_error_cleans_up(model_dir, tmp_path, monkeypatch):
    import trimformer.io as tio

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tio, "save_safetensors", boom)
    with pytest.raises(OSError, match="disk full"):
        tf.save(tf.compile(model_dir), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def _saved(model_dir, tmp_path):  # dense INT8 tensors (sparse=False: see test_round_trip_identical)
    return tf.save(tf.compile(model_dir, quantize="int8-dynamic", sparse=False), tmp_path / "m")


def test_load_errors(model_dir, tmp_path):
    with pytest.raises(tf.ModelFormatError, match="no model.json"):
        tf.load(tmp_path)
    path = _saved(model_dir, tmp_path)
    meta = json.loads((path / "model.json").read_text())

    (path / "model.json").write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(tf.ModelFormatError, match="schema version 99"):
        tf.load(path)
    (path / "model.json").write_text("{not json")
    with pytest.raises(tf.ModelFormatError, match="corrupt"):
        tf.load(path)
    bad = json.loads(json.dumps(meta))
    bad["tensors"]["layers.0.qkv.qweight"]["shape"] = [1, 2]
    (path / "model.json").write_text(json.dumps(bad))
    with pytest.raises(tf.ModelFormatError, match="layers.0.qkv.qweight"):
        tf.load(path)
    for field, value in [("hidden", "32"), ("heads", 2.0), ("layers", True), ("ln_eps", "tiny"), ("act", 3)]:
        bad = json.loads(json.dumps(meta))
        bad["spec"][field] = value  # a size the C++ core would read as a wrong type (hidden "32": std::bad_cast)
        (path / "model.json").write_text(json.dumps(bad))
        with pytest.raises(tf.ModelFormatError, match=f"malformed .*spec field '{field}'"):
            tf.load(path)
    bad = json.loads(json.dumps(meta))
    bad["linear_formats"]["layers.0.qkv"] = "int17"
    (path / "model.json").write_text(json.dumps(bad))
    with pytest.raises(tf.ModelFormatError, match="int17"):
        tf.load(path)
    (path / "model.json").write_text(json.dumps(meta))
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(tf.ModelFormatError, match="truncated"):
        tf.load(path)
    (path / "weights.safetensors").write_bytes(b"\x01")
    with pytest.raises(tf.ModelFormatError, match="too short"):
        tf.load(path)
    os.remove(path / "weights.safetensors")
    with pytest.raises(tf.ModelFormatError, match="no such file"):
        tf.load(path)


def test_loaded_weights_are_memory_mapped(model_dir, tmp_path):
    path = _saved(model_dir, tmp_path)
    eng = tf.load(path)
    arr = eng.tensors["layers.0.qkv.qweight"]
    assert not arr.flags.writeable and not arr.flags.owndata


def test_replacing_directory_keeps_the_old_one_on_any_failure(tmp_path, monkeypatch):
    import trimformer.io as tio

    target = tmp_path / "out"
    with tio.replacing_directory(target) as d:
        (d / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    # an error while writing: the old directory stays, the temporary one goes
    with pytest.raises(RuntimeError), tio.replacing_directory(target) as d:
        (d / "a.txt").write_text("second")
        raise RuntimeError("writer failed")
    assert (target / "a.txt").read_text() == "first"
    # the swap itself failing after the old directory was moved aside: it is moved back
    real_rename = os.rename

    def failing_rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(tio.os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename failed"), tio.replacing_directory(target) as d:
        (d / "a.txt").write_text("third")
    monkeypatch.undo()
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing left beside it
    # a new directory (nothing to replace), in a parent that does not exist yet
    with tio.replacing_directory(tmp_path / "new" / "deep") as d:
        (d / "b.txt").write_text("x")
    assert (tmp_path / "new" / "deep" / "b.txt").read_text() == "x"
