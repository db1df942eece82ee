"""compress/llm/tune.py: block-wise output reconstruction after GPTQ / SparseGPT on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from safetensors.numpy import load_file  # noqa: E402
from test_llm_pipeline import VOCAB, _check_dir, tiny_gpt2, tiny_llama  # noqa: E402

from trimformer.compress.llm import load_compressed_llm, prune_llm, quantize_llm, read_compression  # noqa: E402
from trimformer.compress.llm.checkpoint import LinearRecord  # noqa: E402
from trimformer.compress.llm.model import get_linear_weight, iter_layer_linears  # noqa: E402
from trimformer.compress.llm.tune import TuneConfig, _KbitWeight  # noqa: E402
from trimformer.formats import kbit  # noqa: E402


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(0)
    return [rng.integers(0, VOCAB, 32) for _ in range(8)]


FAST = {"steps": 12, "batch_samples": 2, "lr_round": 0.02, "lr_scale": 5e-3, "lr_norm": 5e-3, "lr_weight": 1e-3}


@pytest.mark.parametrize("fmt", ["int4-asym-g32", "nf4-g32", "int3-g16"])
def test_parametrization_starts_at_the_stored_weights(fmt):
    """With nothing trained yet, the fake-quantized weight is exactly the record's dequantized weight."""
    name, group = fmt.rsplit("-g", 1)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((7, 45)).astype(np.float32)  # ragged last group
    codes, scales, offsets = kbit.quantize_rtn(w, name, int(group))
    rec = LinearRecord(name, int(group), None, None, codes, scales, offsets)
    deq = kbit.dequantize(codes, scales, offsets, name, int(group))
    pm = _KbitWeight(rec, None, conv1d=False)
    np.testing.assert_allclose(pm(torch.zeros(1)).detach().numpy(), deq, rtol=0, atol=1e-6)
    out = LinearRecord(name, int(group))
    np.testing.assert_array_equal(pm.export(out).numpy(), deq)
    np.testing.assert_array_equal(out.codes, codes)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_gptq_tune_checkpoint(factory, calib, tmp_path):
    out = tmp_path / "q"
    res = quantize_llm(factory(), method="gptq", format="int4-asym-g32", calibration=calib, out=out,
                       tune=FAST, progress=False)
    meta = _check_dir(out, factory)  # every stored weight equals its codes' dequantization
    tune = meta["parameters"]["tune"]
    assert tune["layers"] == 2 and tune["steps"] == 12
    assert all(a <= b for a, b in zip(tune["loss_after"], tune["loss_before"], strict=True))
    # random tiny models have plenty to gain: at least one layer must have improved and been kept
    assert tune["layers_kept"] >= 1 and min(a / b for a, b in zip(tune["loss_after"], tune["loss_before"], strict=True)) < 0.99
    model, _ = load_compressed_llm(out)
    for (name, mod), (_, ref) in zip(iter_layer_linears(model), iter_layer_linears(res.model), strict=True):
        assert torch.equal(get_linear_weight(mod), get_linear_weight(ref)), name
    assert all(p.requires_grad for p in res.model.parameters())  # tuning restores the requires_grad flags


def test_tuning_that_does_not_help_is_undone(calib, tmp_path):
    """Zero learning rates change nothing: the layer is restored exactly and the checkpoint equals the untuned."""
    zero = {"steps": 3, "batch_samples": 2, "lr_round": 0.0, "lr_scale": 0.0, "lr_norm": 0.0, "lr_weight": 0.0}
    a = quantize_llm(tiny_llama(), method="gptq", format="int4-g32", calibration=calib, out=tmp_path / "a",
                     progress=False)
    b = quantize_llm(tiny_llama(), method="gptq", format="int4-g32", calibration=calib, out=tmp_path / "b",
                     tune=zero, progress=False)
    assert b.record.extra["tune"]["layers_kept"] == 0
    for f in ("model.safetensors", "quantized.safetensors"):
        da, db = load_file(str(tmp_path / "a" / f)), load_file(str(tmp_path / "b" / f))
        assert da.keys() == db.keys()
        for k in da:
            np.testing.assert_array_equal(da[k], db[k], err_msg=k)
    assert a.record.extra.get("tune") is None


@pytest.mark.parametrize("quantize", [None, "int4-g32"])
def test_sparsegpt_tune_keeps_the_masks(quantize, calib, tmp_path):
    plain = prune_llm(tiny_llama(), method="sparsegpt", sparsity=0.5, quantize=quantize, calibration=calib,
                      progress=False)
    res = prune_llm(tiny_llama(), method="sparsegpt", sparsity=0.5, quantize=quantize, calibration=calib,
                    out=tmp_path / "p", tune=FAST, progress=False)
    assert res.record.extra["tune"]["layers_kept"] >= 1
    assert res.record.extra["achieved_sparsity"] == plain.record.extra["achieved_sparsity"]
    tuned = dict(iter_layer_linears(res.model))
    changed = False
    for name, mod in iter_layer_linears(plain.model):
        if not name.startswith("model.layers.0."):  # later layers were pruned on other inputs
            continue
        w0, w1 = get_linear_weight(mod), get_linear_weight(tuned[name])
        assert torch.equal(w0 == 0, w1 == 0), name
        changed |= not torch.equal(w0, w1)
    assert changed
    meta = read_compression(tmp_path / "p")
    assert meta["parameters"]["tune"]["layers"] == 2
    if quantize:
        _check_dir(tmp_path / "p", tiny_llama)


def test_bad_tune_arguments(calib):
    with pytest.raises(ValueError, match="follows GPTQ"):
        quantize_llm(tiny_llama(), method="rtn", format="int4-g32", tune=5, progress=False)
    with pytest.raises(ValueError, match="follows SparseGPT"):
        prune_llm(tiny_llama(), method="magnitude", sparsity=0.5, tune=5, progress=False)
    with pytest.raises(TypeError, match="tune must be"):
        quantize_llm(tiny_llama(), method="gptq", calibration=calib, tune="lots", progress=False)
    with pytest.raises(ValueError, match="steps"):
        TuneConfig(steps=-1)
    with pytest.raises(TypeError):
        quantize_llm(tiny_llama(), method="gptq", calibration=calib, tune={"stepz": 3}, progress=False)


@pytest.mark.parametrize("fmt", ["int4-g16", "int4-asym-g16", "nf4-g16"])
def test_gptq_residual_start_keeps_the_codes(fmt):
    """GPTQ's pre-rounding offsets lie inside their level's rounding interval: starting the rounding offsets there
    reproduces GPTQ's codes exactly."""
    from trimformer.compress.obs import gptq_quantize

    name, group = fmt.rsplit("-g", 1)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 40, generator=g)
    x = torch.randn(200, 40, generator=g)
    h = x.t() @ x
    residual = torch.zeros(6, 40)
    deq, codes, scales, offsets = gptq_quantize(w, h, name, int(group), act_order=True, residual=residual)
    assert residual.abs().max() > 0.05
    if name.startswith("int"):  # unit-spaced levels: within half a level, except past the grid's ends
        lut = torch.tensor(kbit.get_kbit_type(name).lut)[torch.from_numpy(codes.astype(np.int64))]
        inner = (lut > lut.min()) & (lut < lut.max())
        assert residual[inner].abs().max() <= 0.5 + 1e-6
    rec = LinearRecord(name, int(group), None, None, codes, scales, offsets)
    pm = _KbitWeight(rec, None, conv1d=False, v0=residual)
    out = LinearRecord(name, int(group))
    np.testing.assert_array_equal(pm.export(out).numpy(), deq.numpy())
    np.testing.assert_array_equal(out.codes, codes)
    with pytest.raises(ValueError, match="residual"):
        gptq_quantize(w, h, name, int(group), residual=torch.zeros(3, 3))


def test_gptq_tune_from_residuals(calib, tmp_path):
    res = quantize_llm(tiny_llama(), method="gptq", format="int4-g32", calibration=calib, out=tmp_path / "r",
                       tune={**FAST, "init_residual": True}, progress=False)
    assert res.record.extra["tune"]["init_residual"] is True and res.record.extra["tune"]["layers_kept"] >= 1
    _check_dir(tmp_path / "r", tiny_llama)
