"""Decoder runtime vs transformers: tiny random Llama (GQA) and GPT-2 models, every ISA level."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from trimformer.runtime.decoder import GenerationError, compile_decoder  # noqa: E402


def tiny_llama(seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, **kw)
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=89, n_embd=48, n_layer=2, n_head=4, n_positions=96)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _ref_logits(model, ids, mask=None):
    with torch.no_grad():
        kw = {}
        if mask is not None:
            kw["attention_mask"] = torch.tensor(mask)
            pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
            kw["position_ids"] = torch.tensor(pos)
        return model(torch.tensor(ids), **kw).logits.float().numpy()


def _rel(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("seq", [1, 7, 33])  # below and above the GEMM-attention threshold
def test_logits_match_transformers(make, isa, seq):
    model = make()
    eng = compile_decoder(model, isa=isa, threads=2)
    rng = np.random.default_rng(seq)
    ids = rng.integers(0, model.config.vocab_size, size=(2, seq))
    got = eng.logits(ids)
    assert got.shape == (2, seq, model.config.vocab_size)
    assert _rel(got, _ref_logits(model, ids)) < 1e-4


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("rows", ["16", "48"])
def test_prefill_attention_by_query_chunks(make, isa, rows, monkeypatch):
    # A prompt's attention runs its query rows a chunk at a time, each chunk over the keys below its last row's
    # limit (DecoderEngine::attention_chunk_rows; TRIMFORMER_ATTN_ROWS=N sets N rows): logits still match
    # transformers, for prompts of several chunks and a last short one, left-padded rows included
    monkeypatch.setenv("TRIMFORMER_ATTN_ROWS", rows)
    model = make(4)
    eng = compile_decoder(model, isa=isa, threads=2)
    rng = np.random.default_rng(int(rows))
    ids = rng.integers(0, model.config.vocab_size, size=(2, 70))
    assert _rel(eng.logits(ids), _ref_logits(model, ids)) < 1e-4
    mask = np.ones_like(ids)
    mask[1, :23] = 0  # left padding: the chunks of row 1 start with fully masked query rows
    eng._native.begin(2, 70)
    got = eng._native.forward(ids, mask, 1, None)
    ref = _ref_logits(model, ids, mask)
    assert _rel(got[0], ref[0]) < 1e-4 and _rel(got[1, 23:], ref[1, 23:]) < 1e-4


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_left_padded_batch_matches_per_row(make):
    model = make(1)
    eng = compile_decoder(model, threads=2)
    rng = np.random.default_rng(0)
    a = rng.integers(0, model.config.vocab_size, size=20).tolist()
    b = rng.integers(0, model.config.vocab_size, size=9).tolist()
    out_batch = eng.generate([a, b], 6)
    assert out_batch == [eng.generate(a, 6)[0], eng.generate(b, 6)[0]]
    # greedy continuation equals transformers' argmax step by step
    seq = list(b)
    for tok in out_batch[1]:
        ref = _ref_logits(model, np.array([seq]))[0, -1]
        assert int(np.argmax(ref)) == tok
        seq.append(tok)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_kv_cache_equals_recompute(make, isa):
    model = make(2)
    eng = compile_decoder(model, isa=isa, threads=2)
    prompts = [[5, 3, 9, 11, 2, 7], [1, 4]]
    cached = eng.generate(prompts, 24, stop_tokens=())
    fresh = eng.generate(prompts, 24, stop_tokens=(), use_cache=False)
    assert cached == fresh
    assert all(len(r) == 24 for r in cached)


def test_log_probs_and_perplexity_match_transformers():
    model = tiny_llama(3)
    eng = compile_decoder(model, threads=2)
    ids = np.random.default_rng(1).integers(0, 97, size=(1, 50))
    ref = torch.log_softmax(torch.tensor(_ref_logits(model, ids)), -1).numpy()
    want = np.take_along_axis(ref[0, :-1], ids[0, 1:, None], 1)[:, 0]
    got = eng.log_probs(ids)[0]
    assert np.abs(got - want).max() < 1e-4
    ppl = eng.perplexity(ids[0], window=50)
    assert ppl["tokens"] == 49
    assert abs(ppl["perplexity"] - float(np.exp(-want.mean()))) < 1e-3 * ppl["perplexity"]


def test_sampling_is_seeded_and_respects_top_k():
    eng = compile_decoder(tiny_llama(4), threads=1)
    a = eng.generate([1, 2, 3], 16, do_sample=True, temperature=0.8, top_k=5, seed=7, stop_tokens=())
    b = eng.generate([1, 2, 3], 16, do_sample=True, temperature=0.8, top_k=5, seed=7, stop_tokens=())
    assert a == b
    # top_k=1 sampling is greedy
    assert eng.generate([1, 2, 3], 8, do_sample=True, top_k=1, seed=3, stop_tokens=()) == eng.generate(
        [1, 2, 3], 8, stop_tokens=())


def test_stop_tokens_and_streaming():
    eng = compile_decoder(tiny_llama(5), threads=1)
    free = eng.generate([4, 4, 4], 12, stop_tokens=())[0]
    stop = free[3]
    seen = []
    out = eng.generate([4, 4, 4], 12, stop_tokens=[stop], stream=lambda r, t: seen.append((r, t)))[0]
    assert out == free[: free.index(stop) + 1]
    assert seen == [(0, t) for t in out]


def test_bad_requests_raise():
    eng = compile_decoder(tiny_gpt2(), threads=1)
    with pytest.raises(GenerationError):
        eng.generate([], 4)
    with pytest.raises(GenerationError):
        eng.generate([[1, 2], []], 4)
    with pytest.raises(GenerationError, match="positions"):
        eng.generate([1] * 90, 10)  # GPT-2 tiny: 96 positions
    with pytest.raises(ValueError, match="out of range"):
        eng.logits([[1, 2, 500]])
    with pytest.raises(ValueError):
        eng.logits(np.zeros((2, 3), np.float32))


def test_save_load_roundtrip_and_compile_dispatch(tmp_path):
    import trimformer as tf

    model = tiny_llama(6)
    eng = tf.compile(model, weights="int4-g32", threads=1)
    assert isinstance(eng, tf.DecoderEngine)
    ids = np.arange(1, 20)[None, :]
    tf.save(eng, tmp_path / "m")
    back = tf.load(tmp_path / "m", threads=1)
    assert isinstance(back, tf.DecoderEngine) and back.formats == eng.formats
    np.testing.assert_array_equal(back.logits(ids), eng.logits(ids))
    assert back.generate(ids[0, :4].tolist(), 5) == eng.generate(ids[0, :4].tolist(), 5)
    # a corrupt decoder tensor is a clear error, not a crash
    import json

    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["spec"]["layers"] = 3
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(tf.ModelFormatError, match="missing tensor"):
        tf.load(tmp_path / "m")
    doc["spec"]["layers"], doc["spec"]["kv_heads"] = 6, "2"  # a wrong type is malformed, not a C++ bad_cast
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(tf.ModelFormatError, match="malformed .*'kv_heads'"):
        tf.load(tmp_path / "m")


def test_bad_decoder_checkpoints(tmp_path):
    import json

    from trimformer.models.decoder import CheckpointError, UnsupportedModelError, load_hf_dir

    model = tiny_llama(7)
    model.save_pretrained(tmp_path / "ok")
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())
    bad = tmp_path / "arch"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "mamba"}))
    with pytest.raises(UnsupportedModelError, match="supported"):
        load_hf_dir(bad)
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "config.json").write_text(json.dumps(cfg))
    data = (tmp_path / "ok" / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_hf_dir(trunc)
    shape = tmp_path / "shape"
    shape.mkdir()
    (shape / "config.json").write_text(json.dumps({**cfg, "hidden_size": 32}))
    (shape / "model.safetensors").write_bytes(data)
    with pytest.raises(CheckpointError, match="shape"):
        load_hf_dir(shape)
    (shape / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_hf_dir(shape)
    # malformed sizes stop at the config, the key named (0 heads was a ZeroDivisionError, a missing size a KeyError)
    for change, message in [({"num_attention_heads": 0}, "'num_attention_heads' must be an integer >= 1, got 0"),
                            ({"hidden_size": "32"}, "'hidden_size' must be an integer"),
                            ({"num_key_value_heads": 3}, "key/value heads"),
                            ({"intermediate_size": None}, "lacks 'intermediate_size'"),
                            ({"rms_norm_eps": [1e-6]}, "malformed value"),
                            ({"model_type": "gpt2", "n_embd": 30, "n_head": 4, "n_layer": 1, "n_positions": 8},
                             "not divisible")]:
        (shape / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(CheckpointError, match=re.escape(message)):
            load_hf_dir(shape)
