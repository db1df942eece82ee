"""Every decoder weight format through the whole executor: the engine equals an FP32 engine built from the
format's own dequantized weights (prefill uses dequantize + GEMM, decode the k-bit GEMV), at every ISA level."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from trimformer.formats.registry import quantize_int8_per_channel, unpack_kbit  # noqa: E402
from trimformer.runtime.decoder import DecoderEngine, compile_decoder  # noqa: E402


def _model(seed=0, k=64):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=101, hidden_size=k, intermediate_size=2 * k, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


def _as_f32(eng: DecoderEngine, isa: str) -> DecoderEngine:
    t = {}
    for name, _fmt in eng.formats.items():
        st = {k[len(name):]: v for k, v in eng.tensors.items() if k.startswith(name + ".")}
        if ".kcodes" in st:
            t[name + ".weight"] = unpack_kbit(st)
        elif ".bweight" in st:
            t[name + ".weight"] = (st[".bweight"].astype(np.uint32) << 16).view(np.float32)
        else:
            t[name + ".weight"] = st[".weight"]
        if ".bias" in st:
            t[name + ".bias"] = st[".bias"]
    rest = {k: v for k, v in eng.tensors.items() if not any(k.startswith(n + ".") for n in eng.formats)}
    return DecoderEngine(eng.spec, {**rest, **t}, {n: "f32" for n in eng.formats}, isa=isa, threads=2)


KBIT = ["int4-g32", "int4-asym-g32", "int3-g64", "int2-g32", "nf4-g64", "fp4-g32", "fp8-e4m3", "fp8-e5m2",
        "int8-wo", "int8-asym-g32"]


@pytest.mark.parametrize("weights", KBIT + ["bf16"])
def test_weight_only_formats_equal_their_dequantized_fp32(weights, isa):
    model = _model()
    eng = compile_decoder(model, weights=weights, isa=isa, threads=2)
    ref = _as_f32(eng, isa)
    ids = np.random.default_rng(0).integers(0, 101, size=(2, 24))
    a, b = eng.logits(ids), ref.logits(ids)
    if weights == "bf16" and eng.formats["layers.0.qkv"] == "bf16" and isa == "avx512_vnni":
        # the BF16 kernel also rounds activations to bf16: close to, not equal to, the widened FP32 weights
        assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max()
        return
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    # decode path: the same tokens one at a time through the cache
    assert eng.generate(ids[:, :5].tolist(), 10, stop_tokens=()) == ref.generate(ids[:, :5].tolist(), 10,
                                                                                  stop_tokens=())


def _w8a8_reference(model, ids, outliers=None):
    """Per-token u8 activations x per-channel s8 weights, emulated in torch on every decoder Linear."""
    m = _model()
    m.load_state_dict(model.state_dict())

    def quant_linear(lin, name):
        w = lin.weight.detach().numpy().copy()
        idx = np.array(outliers.get(name, []) if outliers else [], np.int64)
        w_out = w[:, idx].copy()
        w[:, idx] = 0
        q, s = quantize_int8_per_channel(w)
        wq = torch.tensor(q.astype(np.float32) * s[:, None])

        def fwd(x):
            x2 = x.clone()
            xo = x2[..., idx].clone()
            x2[..., idx] = 0
            lo = torch.clamp(x2.amin(-1, keepdim=True), max=0)
            hi = torch.clamp(x2.amax(-1, keepdim=True), min=0)
            sc = torch.where(hi > lo, (hi - lo) / 255, torch.ones_like(hi))
            zp = torch.round(-lo / sc).clamp(0, 255)
            xq = (torch.clamp(torch.round(x2 / sc) + zp, 0, 255) - zp) * sc
            return xq @ wq.T + xo @ torch.tensor(w_out).T

        lin.forward = fwd

    for i, layer in enumerate(m.model.layers):
        for nm, lin in [("q_proj", layer.self_attn.q_proj), ("k_proj", layer.self_attn.k_proj),
                        ("v_proj", layer.self_attn.v_proj), ("o_proj", layer.self_attn.o_proj),
                        ("gate_proj", layer.mlp.gate_proj), ("up_proj", layer.mlp.up_proj),
                        ("down_proj", layer.mlp.down_proj)]:
            canon = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "o_proj": "o", "gate_proj": "gate_up",
                     "up_proj": "gate_up", "down_proj": "down"}[nm]
            quant_linear(lin, f"layers.{i}.{canon}")
    with torch.no_grad():
        return m(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("weights", ["w8a8", "llm-int8"])
def test_w8a8_matches_emulation(weights, isa):
    model = _model(1)
    outl = {"layers.0.qkv": [3, 17], "layers.1.down": [0, 5, 100], "layers.0.o": [63]} if weights == "llm-int8" else None
    eng = compile_decoder(model, weights=weights, isa=isa, threads=2, head_weights="f32", outliers=outl)
    ids = np.random.default_rng(2).integers(0, 101, size=(1, 20))
    ref = _w8a8_reference(model, ids, outl)
    got = eng.logits(ids)
    assert np.abs(got - ref).max() <= 2e-3 * np.abs(ref).max()


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match="unknown decoder weights"):
        compile_decoder(_model(), weights="int5-g32")


@pytest.mark.parametrize("weights", ["int4-g32", "int4-asym-g64", "int3-g64"])
def test_w4a8_engine(weights, isa):
    model = _model(2)
    wo = compile_decoder(model, weights=weights, isa=isa, threads=2)
    a8 = compile_decoder(model, weights=weights, isa=isa, threads=2, activations="int8")
    assert all(f.endswith("+a8") for n, f in a8.formats.items())
    ids = np.random.default_rng(5).integers(0, 101, size=(2, 24))
    a, b = a8.logits(ids), wo.logits(ids)
    assert np.abs(a - b).max() <= 5e-2 * np.abs(b).max()  # int8 activations: close to weight-only
    # the same numerics at every row count: prefill logits of the last token == feeding tokens one by one
    step = compile_decoder(model, weights=weights, isa=isa, threads=2, activations="int8")
    prompts = ids[:, :6].tolist()
    assert step.generate(prompts, 12, stop_tokens=()) == step.generate(prompts, 12, stop_tokens=(), use_cache=False)


@pytest.mark.parametrize("weights", ["int4-g32", "int4-asym-g64"])
def test_w4a8_prefill_gemm_engine_matches_the_gemv(weights, monkeypatch):
    # from 8 token rows the avx512 level runs W4A8 Linears on the prefill GEMM; TRIMFORMER_A8_GEMV_ONLY=1 keeps the
    # GEMV: the same integer group sums, so the logits agree to float rounding, and they do differ (the path ran)
    from trimformer import _core

    if not _core.kbit_gemm_a8_available(""):
        pytest.skip("no W4A8 prefill GEMM at this level")
    model = _model(2)
    ids = np.random.default_rng(6).integers(0, 101, size=(2, 24))
    gemm = compile_decoder(model, weights=weights, threads=2, activations="int8").logits(ids)
    monkeypatch.setenv("TRIMFORMER_A8_GEMV_ONLY", "1")
    gemv = compile_decoder(model, weights=weights, threads=2, activations="int8").logits(ids)
    assert not np.array_equal(gemm, gemv)
    np.testing.assert_allclose(gemm, gemv, rtol=1e-4, atol=1e-4 * np.abs(gemv).max())


def test_w4a8_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="4-bit integer"):
        compile_decoder(_model(), weights="nf4-g64", activations="int8")
    with pytest.raises(ValueError, match="multiple"):
        compile_decoder(_model(), weights="int4-g48", activations="int8")


def _pruned(seed=3, k=72, sparsity=0.6, pattern="unstructured"):
    """A tiny Llama (odd widths: 72 hidden, 144 intermediate) with every decoder Linear pruned, as SparseGPT leaves
    it (zeros in the dense weights); the LM head stays dense."""
    from trimformer.formats.sparsity import magnitude_mask

    model = _model(seed, k)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                w = mod.weight.numpy()
                mod.weight.copy_(torch.from_numpy(w * magnitude_mask(w, sparsity, pattern)))
    return model


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_bitmask_f32_engine_equals_dense(pattern, isa):
    model = _pruned(pattern=pattern)
    dense = compile_decoder(model, weights="f32", isa=isa, threads=2)
    sparse = compile_decoder(model, weights="sparse", isa=isa, threads=2)
    assert {f for n, f in sparse.formats.items() if n != "lm_head"} == {"bitmask-f32"}
    assert sparse.formats["lm_head"] == "f32"
    assert sparse.weight_bytes < dense.weight_bytes
    ids = np.random.default_rng(7).integers(0, 101, size=(2, 24))
    a, b = sparse.logits(ids), dense.logits(ids)  # prefill: expanded chunks through the same FP32 GEMM
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    prompts = ids[:, :5].tolist()  # decode: the expand-load GEMV
    assert sparse.generate(prompts, 12, stop_tokens=()) == dense.generate(prompts, 12, stop_tokens=())
    lp_s, lp_d = sparse.log_probs(ids[:1]), dense.log_probs(ids[:1])
    assert np.abs(lp_s - lp_d).max() <= 1e-4


def test_bitmask_int8_engine_equals_dense_w8a8(isa):
    """Sparse W8A8 quantizes activations exactly like dense W8A8: the integer products are the same."""
    model = _pruned(4)
    w8 = compile_decoder(model, weights="w8a8", isa=isa, threads=2)
    s8 = compile_decoder(model, weights="sparse-int8", isa=isa, threads=2)
    assert {f for n, f in s8.formats.items() if n != "lm_head"} == {"bitmask-int8"}
    assert s8.weight_bytes < w8.weight_bytes
    ids = np.random.default_rng(8).integers(0, 101, size=(2, 20))
    a, b = s8.logits(ids), w8.logits(ids)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    prompts = ids[:, :4].tolist()
    assert s8.generate(prompts, 12, stop_tokens=()) == w8.generate(prompts, 12, stop_tokens=())


def test_sparse_weights_keep_dense_layers_dense():
    model = _pruned(5)
    with torch.no_grad():  # one layer not pruned at all
        model.model.layers[1].mlp.down_proj.weight.normal_()
    eng = compile_decoder(model, weights="sparse")
    assert eng.formats["layers.1.down"] == "f32" and eng.formats["layers.0.down"] == "bitmask-f32"
    eng8 = compile_decoder(model, weights="sparse-int8")
    assert eng8.formats["layers.1.down"] == "int8" and eng8.formats["layers.0.down"] == "bitmask-int8"


def test_corrupt_bitmask_tensors_are_clear_errors():
    model = _pruned(6)
    eng = compile_decoder(model, weights="bitmask-f32")
    base = dict(eng.tensors)
    bad = dict(base)
    bad["layers.0.o.bm_values"] = base["layers.0.o.bm_values"][:-1]
    with pytest.raises(ValueError, match="bm_values"):
        DecoderEngine(eng.spec, bad, eng.formats)
    bad = dict(base)
    mask = base["layers.0.down.bm_mask"].copy()
    mask[0, -1] |= 0x80  # intermediate 144 = 2 words + 16 bits: bit 191 lies past in_features
    bad["layers.0.down.bm_mask"] = mask
    with pytest.raises(ValueError, match="past in_features"):
        DecoderEngine(eng.spec, bad, eng.formats)
    bad = dict(base)
    bad["layers.0.qkv.bm_shape"] = np.array([5, 72], np.int32)
    with pytest.raises(ValueError, match="bm_mask|shape"):
        DecoderEngine(eng.spec, bad, eng.formats)


def test_sparse_engine_save_load(tmp_path):
    import trimformer as tf

    model = _pruned(7)
    for weights in ("sparse", "sparse-int8"):
        eng = compile_decoder(model, weights=weights)
        again = tf.load(tf.save(eng, tmp_path / weights))
        assert again.formats == eng.formats
        ids = np.random.default_rng(9).integers(0, 101, size=(1, 12))
        np.testing.assert_array_equal(again.logits(ids), eng.logits(ids))
