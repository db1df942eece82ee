"""compress.quantize: QAT's fake-quant forward equals the runtime's INT8 forward; the exported activation params
are exactly the runtime's; SmoothQuant keeps the float function; unsupported schemes fail clearly; the entropy
observer; mixed precision under a budget."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_prune_api import _Tok, _toy_data, calib, tiny_bert  # noqa: E402

from trimformer.compress import pruning, quantization  # noqa: E402
from trimformer.compress.quantization import (  # noqa: E402
    UnsupportedSchemeError,
    mixed_precision,
    prepare_qat,
    qat_activation_params,
    quantize,
    remove_qat,
    runtime_activation_params,
    runtime_linear_name,
    smooth_attention_output,
    smooth_layernorm_inputs,
)
from trimformer.compress.training import TrainConfig, train  # noqa: E402
from trimformer.runtime.engine import compile_encoder  # noqa: E402


def _logits(model, batch):
    with torch.no_grad():
        return model(**{k: torch.as_tensor(v) for k, v in batch.items()}).logits.numpy()


def test_runtime_names():
    assert runtime_linear_name("bert.encoder.layer.3.attention.self.key") == "layers.3.qkv"
    assert runtime_linear_name("bert.encoder.layer.0.output.dense") == "layers.0.ffn2"
    assert runtime_linear_name("distilbert.transformer.layer.1.ffn.lin1") == "layers.1.ffn1"
    assert runtime_linear_name("classifier") is None


@pytest.mark.parametrize("pruned", [False, True])
def test_fake_quant_forward_equals_runtime_int8(pruned):
    model = tiny_bert()
    if pruned:
        pruning.prune(model, 0.75, "block")
    batches = calib(3)
    params = prepare_qat(model, batches)
    eng = quantize(model, "qat")
    for name, (scale, zp) in params.items():  # exported exactly
        assert eng.tensors[name + ".act_scale"][0] == np.float32(scale)
        assert eng.tensors[name + ".act_zero_point"][0] == zp
    # the same params calibrating through compile(quantize="int8-static")
    calibrated = runtime_activation_params(model, batches)
    assert params == {k: v for k, v in calibrated.items() if k.startswith("layers.")}
    b = calib(1, seed=7)[0]
    fake = _logits(model, b)
    rt = eng.run(b["input_ids"], b["attention_mask"])["logits"]
    remove_qat(model)
    flt = _logits(model, b)
    err_q = np.abs(fake - rt).max()
    err_f = np.abs(flt - rt).max()
    assert err_q < 2e-3 * max(1.0, np.abs(rt).max())
    assert err_q < 0.2 * err_f  # far closer to the INT8 runtime than the float model is


def test_qat_trains_and_keeps_masks():
    model = tiny_bert()
    pruning.prune(model, 0.5, "2:4")
    masks = pruning.current_masks(model)
    prepare_qat(model, calib(2))
    before = qat_activation_params(model)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, threads=1, log_every=1000)
    train(model, _Tok(), _toy_data(), cfg, callbacks=[pruning.FixedMasks(masks)], log=None)
    assert qat_activation_params(model) == before  # frozen: what the runtime will use
    for n, lin in pruning.encoder_linears(model).items():
        assert np.array_equal(lin.weight.detach().numpy() != 0, masks[n])
    eng = quantize(model, "qat")
    assert eng.quantize == "int8-static"


def test_smoothquant_v_out_fold_is_exact():
    model = tiny_bert()
    b = calib(1, seed=3)[0]
    ref = _logits(model, b)
    scales = smooth_attention_output(model, calib(2), alpha=0.5)
    assert set(scales) == {"layers.0.attn_out", "layers.1.attn_out"}
    np.testing.assert_allclose(_logits(model, b), ref, atol=1e-4)
    with pytest.raises(UnsupportedSchemeError, match="residual"):
        smooth_layernorm_inputs(model)
    eng = quantize(model, "int8-static", calib(2), smoothquant=0.5)
    assert eng.quantize == "int8-static"


def test_unsupported_schemes_fail_clearly():
    model = tiny_bert()
    for opts in ({"weights": "per-tensor"}, {"weight_symmetric": False}, {"activation_symmetric": True},
                 {"activations": "per-channel"}):
        with pytest.raises(UnsupportedSchemeError, match="cannot run"):
            quantize(model, "int8-static", calib(1), **opts)
    with pytest.raises(ValueError, match="observer"):
        quantize(model, "int8-static", calib(1), observer="nope")
    with pytest.raises(ValueError, match="calibration"):
        quantize(model, "int8-static")
    with pytest.raises(ValueError, match="not prepared"):
        quantize(model, "qat")


@pytest.mark.parametrize("observer", ["minmax", "percentile", "mse", "entropy"])
def test_observers_compile(observer):
    model = tiny_bert()
    eng = quantize(model, "int8-static", calib(2), observer=observer)
    b = calib(1, seed=5)[0]
    assert np.isfinite(eng.run(b["input_ids"], b["attention_mask"])["logits"]).all()


def test_entropy_clips_long_tail():
    from trimformer.runtime.calibration import _entropy_range

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 200_000), [60.0]])
    hist, edges = np.histogram(x, bins=2048, range=(x.min(), x.max()))
    lo, hi = _entropy_range(hist.astype(float), edges)
    assert x.min() <= lo < 0 < hi < 30  # the single outlier is clipped


def test_entropy_keeps_the_body_of_a_tailless_distribution():
    """Without outliers the range stays near the data's extent: clipping the body costs KL (a Q built from the
    folded P, or ranges narrower than the 256 levels, would make the narrowest range free)."""
    from trimformer.runtime.calibration import _entropy_range

    rng = np.random.default_rng(1)
    for x in (rng.normal(0, 1, 200_000), rng.uniform(-1, 3, 200_000)):
        hist, edges = np.histogram(x, bins=2048, range=(x.min(), x.max()))
        lo, hi = _entropy_range(hist.astype(float), edges)
        assert lo <= 0.6 * x.min() and hi >= 0.6 * x.max(), (lo, hi, x.min(), x.max())


def test_activation_params_validation():
    model = tiny_bert()
    params = runtime_activation_params(model, calib(1))
    with pytest.raises(ValueError, match="no \\(scale"):
        compile_encoder(model, quantize="int8-static", activation_params={"layers.0.qkv": params["layers.0.qkv"]})
    bad = dict(params, **{"layers.0.qkv": (0.0, 3)})
    with pytest.raises(ValueError, match="scale > 0"):
        compile_encoder(model, quantize="int8-static", activation_params=bad)
    with pytest.raises(ValueError, match="int8-static"):
        compile_encoder(model, quantize="int8-dynamic", activation_params=params)


def test_mixed_precision_meets_budget():
    model = tiny_bert()
    batches = calib(2)
    b = calib(1, seed=9)[0]
    ref = _logits(model, b)

    def metric(engine):  # higher is better: negative error against the float model
        return -float(np.abs(engine.run(b["input_ids"], b["attention_mask"])["logits"] - ref).max())

    report = quantization.sensitivity_report(model, batches, metric)
    assert len(report["layers"]) == 8 and report["layers"][0]["drop"] >= report["layers"][-1]["drop"]
    all_int8 = metric(quantize(model, "int8-static", batches))
    budget = -all_int8 / 4  # a quarter of the all-INT8 error
    eng, summary = mixed_precision(model, batches, metric, budget, report=report, sparse=None)
    assert summary["metric"] >= report["float_metric"] - budget
    assert summary["keep_float"] and all(eng.formats[n] == "f32" for n in summary["keep_float"])
    with pytest.raises(ValueError, match="budget"):
        mixed_precision(model, batches, metric, 0.0, report=report, max_float=0, sparse=None)
