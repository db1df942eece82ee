"""Static-range calibration: the observers see every Linear input, and clipping methods stay inside the range."""

import numpy as np
import pytest

import trimformer as tf
from trimformer.runtime.calibration import _mse_range, _percentile_range, calibrate_ranges
from trimformer.runtime.engine import compile_encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                     vocab_size=90, max_position_embeddings=40)
    d = tmp_path_factory.mktemp("bert")
    BertModel(cfg, add_pooling_layer=False).eval().save_pretrained(d)
    return d


def test_minmax_ranges_match_the_float_activations(model_dir, rng):
    ids = rng.integers(0, 90, (3, 11))
    eng = tf.compile(model_dir)
    ranges = calibrate_ranges(eng, [{"input_ids": ids}], "minmax")
    assert set(ranges) == set(eng.spec.linear_names())
    # the first QKV input is the embedding LayerNorm output: compare with an independent float computation
    emb = eng.tensors["emb.word"][ids] + eng.tensors["emb.pos"][: ids.shape[1]] + eng.tensors["emb.type"][0]
    mu, var = emb.mean(-1, keepdims=True), emb.var(-1, keepdims=True)
    ln = (emb - mu) / np.sqrt(var + eng.spec.ln_eps) * eng.tensors["emb.ln.g"] + eng.tensors["emb.ln.b"]
    lo, hi = ranges["layers.0.qkv"]
    assert abs(lo - ln.min()) < 1e-4 and abs(hi - ln.max()) < 1e-4


@pytest.mark.parametrize("method", ["percentile", "mse"])
def test_clipping_methods_stay_inside_the_observed_range(model_dir, rng, method):
    batches = [{"input_ids": rng.integers(0, 90, (2, 9))} for _ in range(3)]
    eng = tf.compile(model_dir)
    full = calibrate_ranges(eng, batches, "minmax")
    clipped = calibrate_ranges(eng, batches, method)
    for name, (lo, hi) in clipped.items():
        assert full[name][0] - 1e-6 <= lo <= 0 <= hi <= full[name][1] + 1e-6
    q = compile_encoder(model_dir, quantize="int8-static", calibration=batches, calibration_method=method)
    assert q.run(batches[0]["input_ids"])["last_hidden_state"].shape == (2, 9, 32)


def test_range_choosers_on_known_histograms():
    edges = np.linspace(-1.0, 9.0, 1001)
    hist = np.zeros(1000)
    hist[:200] = 100.0  # the bulk in [-1, 1]
    hist[-1] = 1.0  # one far outlier near 9
    lo, hi = _percentile_range(hist, edges, 99.9)
    assert hi < 1.5
    lo, hi = _mse_range(hist, edges)
    assert hi < 9.0 and lo <= -0.9  # the outlier is clipped, the bulk kept


def test_unknown_calibration_method(model_dir):
    with pytest.raises(ValueError, match="calibration method"):
        calibrate_ranges(tf.compile(model_dir), [], "kl")
