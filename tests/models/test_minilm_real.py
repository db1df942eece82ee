"""The real all-MiniLM-L6-v2 encoder on real Wikipedia sentences (trimformer.assets): FP32 parity with
transformers, and INT8 (dynamic and static) sentence embeddings with cosine >= 0.99 to FP32."""

import numpy as np
import pytest

import trimformer as tf
from conftest import rel_err
from trimformer import assets

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

N_SENTENCES = 512


@pytest.fixture(scope="module")
def data():
    from transformers import AutoModel, AutoTokenizer

    path = assets.minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    sentences = assets.wiki_sentences(N_SENTENCES, split="test")
    batches = [dict(tok(sentences[i:i + 64], padding=True, truncation=True, max_length=128, return_tensors="np"))
               for i in range(0, N_SENTENCES, 64)]
    refs = []
    with torch.no_grad():
        for b in batches:
            refs.append(model(**{k: torch.tensor(v) for k, v in b.items()}).last_hidden_state.numpy())
    calib_sentences = assets.wiki_sentences(256, split="train")
    calib = [dict(tok(calib_sentences[i:i + 32], padding=True, truncation=True, max_length=128,
                      return_tensors="np")) for i in range(0, 256, 32)]
    return path, batches, refs, calib


def _embed(hidden, mask):
    m = mask[..., None].astype(np.float32)
    v = (hidden * m).sum(1) / m.sum(1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_fp32_parity_on_real_model(data):
    path, batches, refs, _ = data
    eng = tf.compile(path)
    for b, ref in zip(batches[:2], refs[:2], strict=True):
        got = eng.run(b["input_ids"], b["attention_mask"], b["token_type_ids"])["last_hidden_state"]
        assert rel_err(got, ref) < 1e-4


@pytest.mark.parametrize("quantize", ["int8-dynamic", "int8-static"])
def test_int8_sentence_embeddings_cosine(data, quantize):
    path, batches, refs, calib = data
    eng = tf.compile(path, quantize=quantize, calibration=calib)
    cos = []
    for b, ref in zip(batches, refs, strict=True):
        got = eng.run(b["input_ids"], b["attention_mask"], b["token_type_ids"])["last_hidden_state"]
        cos.append((_embed(got, b["attention_mask"]) * _embed(ref, b["attention_mask"])).sum(1))
    cos = np.concatenate(cos)
    assert len(cos) >= 500
    print(f"{quantize}: cosine to FP32 over {len(cos)} sentences: mean {cos.mean():.5f} min {cos.min():.5f}")
    assert cos.mean() >= 0.99 and cos.min() >= 0.98
