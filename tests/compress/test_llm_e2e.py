"""compress/llm/e2e.py: end-to-end distillation of the storable parameters on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from safetensors.numpy import load_file  # noqa: E402
from test_llm_pipeline import VOCAB, _check_dir, tiny_gpt2, tiny_llama  # noqa: E402

from trimformer.compress.llm import load_compressed_llm, prune_llm, quantize_llm  # noqa: E402
from trimformer.compress.llm.e2e import E2EConfig  # noqa: E402
from trimformer.compress.llm.model import get_linear_weight, iter_layer_linears  # noqa: E402


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(1)
    return [rng.integers(0, VOCAB, 32) for _ in range(8)]


def _peaked(factory):
    """A tiny random model with sharp next-token distributions (the default init gives near-uniform logits, so
    a KL of ~1e-4 with little to learn): layer weights x4 and the final norm x20."""
    def make():
        model = factory()
        with torch.no_grad():
            for _, mod in iter_layer_linears(model):
                mod.weight.mul_(4.0)
            final = model.model.norm if hasattr(model, "model") else model.transformer.ln_f
            final.weight.mul_(20.0)
        return model
    return make


FAST = {"steps": 16, "batch_samples": 2, "lr_scale": 3e-3, "lr_norm": 3e-3, "lr_weight": 5e-4}


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_rtn_e2e_lowers_the_loss_and_keeps_the_codes(factory, calib, tmp_path):
    factory = _peaked(factory)
    plain = quantize_llm(factory(), method="rtn", format="int4-asym-g16", progress=False)
    out = tmp_path / "q"
    res = quantize_llm(factory(), method="rtn", format="int4-asym-g16", calibration=calib, out=out, e2e=FAST,
                       progress=False)
    e2e = res.record.extra["e2e"]
    assert e2e["kept"] and e2e["loss_after"] < 0.99 * e2e["loss_before"], e2e
    assert e2e["steps"] == 16 and res.record.calibration["n_samples"] == 8
    _check_dir(out, factory)  # every stored weight equals its codes' dequantization
    scales_moved = False
    for name, rec in res.record.linears.items():
        ref = plain.record.linears[name]
        np.testing.assert_array_equal(rec.codes, ref.codes, err_msg=name)  # only scales / offsets train
        scales_moved |= not np.array_equal(rec.scales, ref.scales)
    assert scales_moved
    model, _ = load_compressed_llm(out)
    for (name, mod), (_, ref) in zip(iter_layer_linears(model), iter_layer_linears(res.model), strict=True):
        assert torch.equal(get_linear_weight(mod), get_linear_weight(ref)), name
    assert all(p.requires_grad for p in res.model.parameters())  # the pass restores the requires_grad flags


def test_e2e_that_does_not_help_is_undone(calib, tmp_path):
    zero = {"steps": 2, "batch_samples": 4, "lr_scale": 0.0, "lr_norm": 0.0, "lr_weight": 0.0}
    quantize_llm(tiny_llama(), method="gptq", format="int4-g16", calibration=calib, out=tmp_path / "a",
                 progress=False)
    b = quantize_llm(tiny_llama(), method="gptq", format="int4-g16", calibration=calib, out=tmp_path / "b",
                     e2e=zero, progress=False)
    e2e = b.record.extra["e2e"]
    assert not e2e["kept"] and e2e["loss_after"] == e2e["loss_before"]
    for f in ("model.safetensors", "quantized.safetensors"):
        da, db = load_file(str(tmp_path / "a" / f)), load_file(str(tmp_path / "b" / f))
        assert da.keys() == db.keys()
        for k in da:
            np.testing.assert_array_equal(da[k], db[k], err_msg=k)


@pytest.mark.parametrize("method,quantize", [("sparsegpt", None), ("magnitude", None), ("sparsegpt", "int4-g16")])
def test_prune_e2e_keeps_the_masks(method, quantize, calib, tmp_path):
    factory = _peaked(tiny_llama)
    plain = prune_llm(factory(), method=method, sparsity="2:4", quantize=quantize, calibration=calib,
                      progress=False)
    res = prune_llm(factory(), method=method, sparsity="2:4", quantize=quantize, calibration=calib,
                    out=tmp_path / "p", e2e=FAST, progress=False)
    assert res.record.extra["e2e"]["kept"]
    tuned = dict(iter_layer_linears(res.model))
    changed = False
    for name, mod in iter_layer_linears(plain.model):
        w0, w1 = get_linear_weight(mod), get_linear_weight(tuned[name])
        assert torch.equal(w0 == 0, w1 == 0), name
        changed |= not torch.equal(w0, w1)
    assert changed
    if quantize:
        _check_dir(tmp_path / "p", tiny_llama)


def test_e2e_samples_of_its_own(calib, monkeypatch):
    """``samples``: the pass draws its own windows of the calibration slice (same seed; the solver keeps its
    ``n_samples``), or takes the first ``samples`` of a user-provided list."""
    import trimformer.llm_data as llm_data

    draws: list[tuple[int, int, int]] = []

    def fake_windows(tokenizer, n, seqlen, seed=0):
        draws.append((n, seqlen, seed))
        rng = np.random.default_rng(seed)
        return [rng.integers(0, VOCAB, seqlen) for _ in range(n)]

    monkeypatch.setattr(llm_data, "calibration_samples", fake_windows)
    cfg = {**FAST, "steps": 4, "samples": 6}
    res = quantize_llm(_peaked(tiny_llama)(), method="gptq", format="int4-asym-g16", tokenizer=object(),
                       n_samples=3, seqlen=24, seed=5, e2e=cfg, progress=False)
    assert draws == [(3, 24, 5), (6, 24, 5)]  # the solver's windows, then the pass's own
    assert res.record.calibration["n_samples"] == 3 and res.record.calibration["e2e_samples"] == 6
    assert res.record.extra["e2e"]["samples"] == 6

    given = quantize_llm(_peaked(tiny_llama)(), method="gptq", format="int4-asym-g16", calibration=calib,
                         e2e={**cfg, "samples": 5}, progress=False)
    assert given.record.calibration["n_samples"] == 8 and given.record.calibration["e2e_samples"] == 5
    with pytest.raises(ValueError, match="e2e samples=9 but only 8"):
        quantize_llm(tiny_llama(), method="rtn", format="int4-g16", calibration=calib, e2e={**cfg, "samples": 9},
                     progress=False)
    with pytest.raises(ValueError, match="samples must be >= 0"):
        E2EConfig(steps=2, samples=-1)


def test_bad_e2e_arguments(calib):
    with pytest.raises(ValueError, match="e2e"):
        quantize_llm(tiny_llama(), method="smoothquant", calibration=calib, e2e=3, progress=False)
    with pytest.raises(TypeError, match="e2e must be"):
        quantize_llm(tiny_llama(), method="gptq", calibration=calib, e2e="lots", progress=False)
    with pytest.raises(ValueError, match="steps"):
        E2EConfig(steps=-1)
    with pytest.raises(TypeError):
        quantize_llm(tiny_llama(), method="rtn", calibration=calib, e2e={"stepz": 3}, progress=False)
