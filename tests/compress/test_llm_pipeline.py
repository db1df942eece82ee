"""compress/llm: layer-wise pipelines on tiny random Llama / GPT-2 models write valid checkpoint directories."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from safetensors.numpy import load_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

from trimformer.compress.llm import (  # noqa: E402
    COMPRESSION_FILE,
    layer_group_size,
    load_compressed_llm,
    parse_format,
    prune_llm,
    quantize_llm,
    read_compression,
)
from trimformer.compress.llm.api import _AbsMax, _smooth_layer  # noqa: E402
from trimformer.compress.llm.model import get_linear_weight, iter_layer_linears, layer_linears  # noqa: E402
from trimformer.formats import kbit  # noqa: E402
from trimformer.llm_data import torch_perplexity  # noqa: E402

VOCAB = 128


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64)).eval()


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(0)
    return [rng.integers(0, VOCAB, 32) for _ in range(4)]


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(1).integers(0, VOCAB, 96)


def _check_dir(out, model_factory, expect_quantized: bool = True):
    meta = read_compression(out)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    mods = dict(iter_layer_linears(model_factory()))
    names = list(mods)
    assert sorted(meta["linears"]) == sorted(names)
    if expect_quantized:
        q = load_file(str(out / "quantized.safetensors"))
        dense = load_file(str(out / "model.safetensors"))
        for name, rec in meta["linears"].items():
            codes = q[f"{name}.codes"]
            assert codes.dtype == np.uint8 and int(codes.max()) < 2 ** kbit.get_kbit_type(rec["format"]).bits
            deq = kbit.dequantize(codes, q[f"{name}.scales"], q[f"{name}.offsets"], rec["format"])
            w = dense[f"{name}.weight"]
            w = w.T if type(mods[name]).__name__ == "Conv1D" else w  # GPT-2 Conv1D keeps HF's [in, out] layout
            cols = meta["outliers"].get(name, [])
            keep = np.ones(deq.shape[1], bool)
            keep[cols] = False
            np.testing.assert_array_equal(deq[:, keep], w[:, keep])
    return meta


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_gptq_end_to_end(factory, calib, tokens, tmp_path):
    base = factory()
    dense = torch_perplexity(base, tokens, 32)
    res = quantize_llm(copy.deepcopy(base), method="gptq", format="int8", out=tmp_path / "q", calibration=calib,
                       progress=False)
    meta = _check_dir(tmp_path / "q", factory)
    assert meta["method"] == "gptq" and meta["calibration"]["n_samples"] == 4 and meta["activations"] is None
    model, _ = load_compressed_llm(tmp_path / "q")
    ppl = torch_perplexity(model, tokens, 32)
    assert ppl == pytest.approx(torch_perplexity(res.model, tokens, 32), rel=1e-5)
    assert ppl == pytest.approx(dense, rel=0.02)  # INT8 barely moves a random model


@pytest.mark.parametrize("fmt", ["int4-g32", "int4-asym-g32", "nf4-g32", "fp4-g32", "int3-g32", "fp8-e4m3"])
def test_rtn_formats_gpt2(fmt, tmp_path):
    quantize_llm(tiny_gpt2(), method="rtn", format=fmt, out=tmp_path / "q", progress=False)
    meta = _check_dir(tmp_path / "q", tiny_gpt2)
    spec = parse_format(fmt)
    assert all(r["format"] == spec.type_name and r["group_size"] == spec.group_size
               for r in meta["linears"].values())


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_sparsegpt_patterns_and_joint_int4(factory, calib, tmp_path):
    res = prune_llm(factory(), method="sparsegpt", sparsity="2:4", quantize="int4-g32", out=tmp_path / "p",
                    calibration=calib, progress=False)
    meta = _check_dir(tmp_path / "p", factory)
    for name, mod in iter_layer_linears(res.model):
        w = get_linear_weight(mod).numpy()
        assert np.all((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2), name
        assert meta["linears"][name]["pattern"] == "2:4" and meta["linears"][name]["sparsity"] == 0.5
    res = prune_llm(factory(), method="sparsegpt", sparsity=0.6, out=tmp_path / "u", calibration=calib,
                    progress=False)
    meta = _check_dir(tmp_path / "u", factory, expect_quantized=False)
    assert not (tmp_path / "u" / "quantized.safetensors").exists()
    assert meta["parameters"]["achieved_sparsity"] == pytest.approx(0.6, abs=0.01)


def test_magnitude_block_pattern(tmp_path):
    res = prune_llm(tiny_llama(), method="magnitude", sparsity=0.5, pattern="block", out=tmp_path / "m",
                    progress=False)
    for _, mod in iter_layer_linears(res.model):
        w = get_linear_weight(mod).numpy()
        tiles = (w != 0).reshape(w.shape[0] // 4, 4, w.shape[1] // 4, 4)
        assert np.all(tiles.all(axis=(1, 3)) | ~tiles.any(axis=(1, 3)))
        assert (~tiles.any(axis=(1, 3))).mean() == pytest.approx(0.5, abs=0.02)
    assert read_compression(tmp_path / "m")["calibration"] is None


def test_smoothing_preserves_the_layer():
    model = tiny_llama()
    layer = model.model.layers[0]
    x = torch.randn(1, 16, 64) * torch.linspace(0.1, 20, 64)  # outlier channels
    pos = torch.arange(16)[None]
    emb = model.model.rotary_emb(x, position_ids=pos)
    ref = layer(x, position_embeddings=emb, position_ids=pos)
    stats = {}
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: seen.__setitem__(n, a[0]))
             for n, m in layer_linears(layer).items()]
    layer(x, position_embeddings=emb, position_ids=pos)
    for h in hooks:
        h.remove()
    for n, t in seen.items():
        stats[n] = _AbsMax(t.shape[-1])
        stats[n].add(t)
    before = layer.input_layernorm.weight.clone()
    _smooth_layer(layer, stats, 0.5, model.config)
    assert not torch.allclose(before, layer.input_layernorm.weight)
    torch.testing.assert_close(layer(x, position_embeddings=emb, position_ids=pos), ref, rtol=1e-4, atol=1e-4)


def test_smoothquant_w8a8_and_llm_int8(calib, tokens, tmp_path):
    base = tiny_llama()
    dense = torch_perplexity(base, tokens, 32)
    quantize_llm(copy.deepcopy(base), method="smoothquant", format="w8a8", out=tmp_path / "sq",
                 calibration=calib, progress=False)
    meta = _check_dir(tmp_path / "sq", tiny_llama)
    assert meta["activations"] == "w8a8-per-token" and meta["parameters"]["alpha"] == 0.5
    model, _ = load_compressed_llm(tmp_path / "sq")
    assert torch_perplexity(model, tokens, 32) == pytest.approx(dense, rel=0.05)

    quantize_llm(copy.deepcopy(base), method="llm-int8", threshold=0.5, out=tmp_path / "i8", calibration=calib,
                 progress=False)
    meta = _check_dir(tmp_path / "i8", tiny_llama)
    assert meta["outliers"] and all(isinstance(i, int) for v in meta["outliers"].values() for i in v)
    q = load_file(str(tmp_path / "i8" / "quantized.safetensors"))
    zero = int(kbit.get_kbit_type("int8").level_codes[np.flatnonzero(kbit.get_kbit_type("int8").levels == 0)[0]])
    name, cols = next(iter(meta["outliers"].items()))
    assert np.all(q[f"{name}.codes"][:, cols] == zero)
    model, _ = load_compressed_llm(tmp_path / "i8")
    orig = get_linear_weight(dict(base.named_modules())[name])
    torch.testing.assert_close(get_linear_weight(dict(model.named_modules())[name])[:, cols], orig[:, cols])


def test_group_size_ragged_last_group(tmp_path):
    # the nominal group with a shorter last one (576 = 4 x 128 + 64); per channel when it spans every input
    assert layer_group_size(576, 128) == 128 and layer_group_size(1536, 128) == 128
    assert layer_group_size(576, 64) == 64 and layer_group_size(96, 64) == 64 and layer_group_size(100, 32) == 32
    assert layer_group_size(128, 128) is None and layer_group_size(576, None) is None
    # hidden 288 (= 9 x 32, like SmolLM2's 576) is not a multiple of 64: 4 groups of 64 and one of 32
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=288, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    quantize_llm(LlamaForCausalLM(cfg), method="rtn", format="int4-g64", out=tmp_path / "q", progress=False)
    meta = read_compression(tmp_path / "q")
    for name, rec in meta["linears"].items():
        assert rec["group_size"] == 64, name
    assert meta["parameters"]["group_sizes"] == {"64": 7}
    q = load_file(str(tmp_path / "q" / "quantized.safetensors"))
    assert q["model.layers.0.self_attn.q_proj.scales"].shape == (288, 5)
    load_compressed_llm(tmp_path / "q")  # dense weights equal the dequantized (ragged) codes


def test_bad_arguments(calib, tmp_path):
    m = tiny_llama()
    with pytest.raises(ValueError, match="unknown quantization method"):
        quantize_llm(m, method="awq")
    with pytest.raises(ValueError, match="unknown weight format"):
        quantize_llm(m, method="rtn", format="int5-g32")
    with pytest.raises(ValueError, match="multiple of group size"):
        quantize_llm(m, method="rtn", format="int4-g128", strict_groups=True)
    with pytest.raises(ValueError, match="w8a8"):
        quantize_llm(m, method="smoothquant", format="int4-g32")
    with pytest.raises(ValueError, match="tokenizer"):
        quantize_llm(m, method="gptq", format="int4-g32")
    with pytest.raises(ValueError, match="token ids"):
        quantize_llm(m, method="gptq", format="int4-g32", calibration=[np.array([1, 2, VOCAB + 5])])
    with pytest.raises(ValueError, match="exact zero"):
        prune_llm(m, method="sparsegpt", quantize="int4-asym-g32", calibration=calib)
    with pytest.raises(ValueError, match="sparsity"):
        prune_llm(m, method="magnitude", sparsity=1.5)
    with pytest.raises(ValueError, match="N:M"):
        prune_llm(m, method="magnitude", sparsity="1:3")
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune_llm(m, method="wanda")
    with pytest.raises(FileNotFoundError):
        quantize_llm(str(tmp_path / "missing"), method="rtn")
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        quantize_llm(tiny_llama(), method="rtn", format="int8", out=tmp_path / "exists")
    with pytest.raises(FileNotFoundError, match=COMPRESSION_FILE):
        read_compression(tmp_path / "exists")
    bad = tmp_path / "badver"
    bad.mkdir()
    (bad / COMPRESSION_FILE).write_text(json.dumps({"version": 99, "method": "rtn", "linears": {}}))
    with pytest.raises(ValueError, match="version"):
        read_compression(bad)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_batched_layerwise_equals_one_by_one(factory, calib):
    """Batching the calibration samples changes nothing: same Hessians, same compressed weights."""
    from trimformer.compress.llm.model import layerwise
    from trimformer.compress.obs import HessianAccumulator

    hessians = {}
    for batch in (1, 3):
        found = hessians.setdefault(batch, {})

        def process(idx, prefix, layer, coll, found=found):
            for rel, c in coll.items():
                found[f"{prefix}.{rel}"] = c.hessian.clone()
            for mod in layer_linears(layer).values():  # perturb so the next layer's inputs depend on it
                mod.weight.data.mul_(0.9)

        layerwise(factory(), calib, process, lambda n, m: HessianAccumulator(
            m.weight.shape[0] if type(m).__name__ == "Conv1D" else m.weight.shape[1]), progress=False,
            batch_size=batch)
    assert hessians[1].keys() == hessians[3].keys() == dict(iter_layer_linears(factory())).keys()
    for name in hessians[1]:
        torch.testing.assert_close(hessians[1][name], hessians[3][name], rtol=1e-4, atol=1e-5)


def test_torch_perplexity_batched_equals_one_by_one(tokens):
    model = tiny_llama()
    one = torch_perplexity(model, tokens, 32, batch_size=1)
    assert torch_perplexity(model, tokens, 32, batch_size=2) == pytest.approx(one, rel=1e-5)
    assert torch_perplexity(model, tokens[:90], 32, batch_size=3) > 1.0  # trailing partial window scored
    with torch.no_grad():  # the definition: exp of the mean next-token NLL per window
        logits = model(input_ids=torch.from_numpy(tokens[None, :32])).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, torch.from_numpy(tokens[1:32]))
    assert torch_perplexity(model, tokens[:32], 32) == pytest.approx(float(torch.exp(nll)), rel=1e-5)


STAGES = {
    "llama": [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
              ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]],
    "gpt2": [["attn.c_attn"], ["attn.c_proj"], ["mlp.c_fc"], ["mlp.c_proj"]],
}


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_true_sequential_stages_see_the_compressed_groups(factory, calib):
    """sequential=True: one process call per group of Linears sharing an input, in forward order, each group's
    Hessian collected with the earlier groups already compressed (checked against a direct forward)."""
    from trimformer.compress.llm.model import capture_layer0_inputs, layerwise
    from trimformer.compress.obs import HessianAccumulator

    def k_of(m):
        return m.weight.shape[0] if type(m).__name__ == "Conv1D" else m.weight.shape[1]

    calls, hessians = [], {}

    def process(idx, prefix, layer, coll):
        calls.append((idx, list(coll)))
        for rel, c in coll.items():
            hessians[(idx, rel)] = c.hessian.clone()
        mods = layer_linears(layer)
        for rel in coll:  # "compress": the later groups must see this
            mods[rel].weight.data.mul_(0.5)

    model = factory()
    ref_model = copy.deepcopy(model)
    layerwise(model, calib, process, lambda n, m: HessianAccumulator(k_of(m)), progress=False, batch_size=3,
              sequential=True)
    stages = STAGES["llama" if factory is tiny_llama else "gpt2"]
    assert calls == [(i, s) for i in range(2) for s in stages]
    # layer 0, last group: its input through the layer with every earlier group halved
    layer = (ref_model.model.layers if factory is tiny_llama else ref_model.transformer.h)[0]
    mods = layer_linears(layer)
    for rel in [r for s in stages[:-1] for r in s]:
        mods[rel].weight.data.mul_(0.5)
    last = stages[-1][0]
    acc = HessianAccumulator(k_of(mods[last]))
    hook = mods[last].register_forward_pre_hook(lambda m, a: acc.add(a[0]))
    with torch.no_grad():
        for args, kwargs in capture_layer0_inputs(ref_model, calib):
            layer(*args, **kwargs)
    hook.remove()
    torch.testing.assert_close(hessians[(0, last)], acc.hessian, rtol=1e-4, atol=1e-5)
    # the non-sequential Hessian of that Linear (uncompressed layer) differs
    plain = {}
    layerwise(factory(), calib, lambda i, p, lay, c: plain.update({(i, r): v.hessian.clone() for r, v in c.items()}),
              lambda n, m: HessianAccumulator(k_of(m)), progress=False)
    assert not torch.allclose(plain[(0, last)], hessians[(0, last)])
    torch.testing.assert_close(plain[(0, stages[0][0])], hessians[(0, stages[0][0])])  # first group: same


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_true_sequential_gptq_and_sparsegpt(factory, calib, tokens, tmp_path):
    base = factory()
    dense = torch_perplexity(base, tokens, 32)
    seq = quantize_llm(copy.deepcopy(base), method="gptq", format="int4-g32", act_order=True, mse=True,
                       calibration=calib, out=tmp_path / "seq", progress=False)
    flat = quantize_llm(copy.deepcopy(base), method="gptq", format="int4-g32", act_order=True, mse=True,
                        true_sequential=False, calibration=calib, progress=False)
    meta = _check_dir(tmp_path / "seq", factory)
    assert meta["parameters"]["true_sequential"] is True and meta["parameters"]["mse"] is True
    assert flat.record.extra["true_sequential"] is False
    w_seq = dict(iter_layer_linears(seq.model))
    w_flat = dict(iter_layer_linears(flat.model))
    first = next(iter(w_seq))  # layer 0's first group sees the same inputs either way
    torch.testing.assert_close(get_linear_weight(w_seq[first]), get_linear_weight(w_flat[first]))
    assert any(not torch.equal(get_linear_weight(w_seq[n]), get_linear_weight(w_flat[n])) for n in w_seq)
    assert torch_perplexity(seq.model, tokens, 32) == pytest.approx(dense, rel=0.1)
    res = prune_llm(copy.deepcopy(base), method="sparsegpt", sparsity="2:4", calibration=calib, progress=False,
                    out=tmp_path / "sp")
    assert res.record.extra["true_sequential"] is True
    _check_dir(tmp_path / "sp", factory, expect_quantized=False)


@pytest.mark.parametrize("fmt", ["int4-asym-g32", "int4-g32"])
def test_gptq_asym_and_mse_checkpoints_run_in_the_runtime(fmt, calib, tmp_path):
    """Asymmetric (zero-point) INT4 GPTQ with the MSE search: the runtime runs the checkpoint's exact codes."""
    pytest.importorskip("trimformer._core", reason="native runtime not built")
    from trimformer.runtime.decoder import compile_decoder

    out = tmp_path / fmt
    res = quantize_llm(tiny_llama(), method="gptq", format=fmt, act_order=True, mse=True, calibration=calib,
                       out=out, progress=False)
    meta = _check_dir(out, tiny_llama)
    assert {r["format"] for r in meta["linears"].values()} == {fmt.split("-g")[0]}
    eng = compile_decoder(out, threads=1)
    assert any(f.startswith(fmt.split("-g")[0]) for f in eng.formats.values())
    ids = np.random.default_rng(3).integers(0, VOCAB, size=(1, 20))
    with torch.no_grad():
        ref = res.model(torch.tensor(ids)).logits.numpy()
    assert np.abs(eng.logits(ids) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_rtn_mse_checkpoint(tmp_path):
    quantize_llm(tiny_llama(), method="rtn", format="int4-asym-g32", mse=True, out=tmp_path / "r", progress=False)
    meta = _check_dir(tmp_path / "r", tiny_llama)
    assert meta["parameters"]["mse"] is True
