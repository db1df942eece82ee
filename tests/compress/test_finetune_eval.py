"""`trimformer finetune` writes a loadable HF classifier atomically; evaluate_task / accuracy_f1 / embedding
fidelity are computed by the runtime."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import tiny_dir  # noqa: E402, F401

from trimformer.eval import accuracy_f1, embedding_fidelity, evaluate_task  # noqa: E402


def test_accuracy_f1():
    pred = np.array([0, 1, 1, 2, 2, 2])
    lab = np.array([0, 1, 2, 2, 2, 0])
    acc, f1 = accuracy_f1(pred, lab, 3)
    assert acc == pytest.approx(4 / 6)
    # per class F1: c0 = 2*1/(2+0+1), c1 = 2/(2+1), c2 = 4/(4+1+1)
    assert f1 == pytest.approx(np.mean([2 / 3, 2 / 3, 4 / 6]))


def test_finetune_cli_and_runtime_eval(tiny_dir, tmp_path):  # noqa: F811
    from transformers import AutoModelForSequenceClassification

    from trimformer.cli.main import main

    out = tmp_path / "ft"
    assert main(["finetune", "--task", "wiki-topics", "--model", str(tiny_dir), "--out", str(out), "--epochs", "1",
                 "--max-samples", "16", "--batch-size", "8", "--max-length", "32", "--threads", "1"]) == 0
    assert not list(tmp_path.glob(".ft.tmp-*"))  # the temp dir was renamed into place
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"] and len(cfg["id2label"]) == 11
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    AutoModelForSequenceClassification.from_pretrained(str(out))
    res = evaluate_task(out, "wiki-topics", max_samples=20, max_length=32)
    assert res["n"] == 20 and 0 <= res["accuracy"] <= 1 and 0 <= res["macro_f1"] <= 1


def test_embedding_fidelity(tiny_dir):  # noqa: F811
    from transformers import AutoTokenizer

    import trimformer as tf
    from trimformer.compress.tasks import calibration_batches

    dense = tf.compile(tiny_dir)
    same = embedding_fidelity(dense, dense, n=16)
    assert same["mean_cosine"] == pytest.approx(1.0, abs=1e-5) and same["n"] == 16
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    int8 = tf.compile(tiny_dir, quantize="int8-static", calibration=calibration_batches(tok, 8, 8, 32))
    q = embedding_fidelity(int8, dense, n=16)
    from trimformer.cli.main import main

    assert main(["eval", str(tiny_dir), "--fidelity-to", str(tiny_dir), "--max-samples", "8", "--json"]) == 0
    assert 0.9 < q["mean_cosine"] <= 1.0 + 1e-6 and q["min_cosine"] <= q["mean_cosine"] + 1e-7


def test_freeze_embeddings_and_training_device(tiny_dir):  # noqa: F811
    """freeze_embeddings keeps the word-embedding matrix exactly (and trainable again afterwards); the loop
    returns the model on CPU and records its device; a bad device name fails before any work."""
    from trimformer.compress.tasks import task_data
    from trimformer.compress.training import TrainConfig, load_classifier, train

    model, tok = load_classifier(tiny_dir)
    emb = model.get_input_embeddings().weight.detach().clone()
    ffn = model.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    cfg = TrainConfig(epochs=1, max_samples=8, batch_size=4, max_length=32, threads=1, freeze_embeddings=True)
    res = train(model, tok, task_data("wiki-topics", "train", 8), cfg, log=None)
    assert res["device"] == "cpu" and next(model.parameters()).device.type == "cpu"
    assert torch.equal(model.get_input_embeddings().weight, emb)
    assert not torch.equal(model.bert.encoder.layer[0].intermediate.dense.weight, ffn)
    assert model.get_input_embeddings().weight.requires_grad
    with pytest.raises(ValueError, match="device must be"):
        TrainConfig(device="gpu")


def test_crop_tokens_keeps_special_tokens_and_a_contiguous_span():
    import random

    from trimformer.compress.training import CROP_MIN, TrainConfig, crop_tokens

    rng = random.Random(0)
    ids = [101, *range(1000, 1060), 102]
    for _ in range(50):
        c = crop_tokens(ids, rng)
        assert c[0] == 101 and c[-1] == 102 and len(c) - 2 >= CROP_MIN
        inner = c[1:-1]
        assert inner == list(range(inner[0], inner[0] + len(inner)))  # contiguous in the original
    short = [101, 5, 6, 102]
    assert crop_tokens(short, rng) == short
    with pytest.raises(ValueError, match="crop_augment"):
        TrainConfig(crop_augment=1.5)
