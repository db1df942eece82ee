"""The planner's FFN feature order (runtime/feature_order.py): a permutation that leaves csr-int8 fewer 1x4 blocks
on unstructured FFN2 weights, applied to FFN1's rows and FFN2's columns alike, with INT8 results equal to the bit
to those of the model's own order; block and N:M layouts and float models are left as they are."""

import numpy as np
import pytest

import trimformer as tf
from conftest import tiny_bert
from trimformer import _core
from trimformer.compress import prune_magnitude
from trimformer.runtime.engine import compile_encoder
from trimformer.runtime.feature_order import _pairs, order_ffn_features, quad_blocks, quad_order

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 37, 130])
def test_quad_order_is_a_permutation(rng, k):
    mask = rng.random((23, k)) < 0.2
    order = quad_order(mask)
    assert sorted(order.tolist()) == list(range(k))
    assert quad_blocks(mask[:, order]) <= mask.any(axis=1).sum() * ((k + 3) // 4)


@pytest.mark.parametrize("count", [1, 2, 7, 10])
def test_pairs_cover_every_row_once(rng, count):
    vecs = (rng.random((count, 11)) < 0.3).astype(np.float32)
    flat = [i for p in _pairs(vecs) for i in p]
    assert sorted(flat) == list(range(count))
    assert all(len(p) == 2 for p in _pairs(vecs)[:-1])


@pytest.mark.parametrize("rows, k", [(96, 256), (61, 202), (200, 90)])
def test_quad_order_leaves_fewer_blocks_on_unstructured_masks(rng, rows, k):
    mask = rng.random((rows, k)) < 0.1
    assert quad_blocks(mask[:, quad_order(mask)]) < 0.97 * quad_blocks(mask)


def test_quad_blocks_counts_padded_quads():
    mask = np.zeros((2, 6), bool)
    mask[0, 0] = mask[0, 5] = mask[1, 3] = True
    assert quad_blocks(mask) == 3


def _inputs(rng):
    ids = rng.integers(1, 100, (3, 21))
    mask = np.ones_like(ids)
    mask[1, 13:] = 0
    return ids, mask


@pytest.mark.parametrize("quantize", ["int8-dynamic", "int8-static"])
def test_reordered_int8_model_equals_its_own_order(isa, rng, tmp_path, monkeypatch, quantize):
    model = tiny_bert(intermediate=92)
    prune_magnitude(model, 0.9, "unstructured")
    ids, mask = _inputs(rng)
    calib = [{"input_ids": ids, "attention_mask": mask}]
    monkeypatch.setenv("TRIMFORMER_FEATURE_ORDER", "0")
    own = compile_encoder(model, quantize=quantize, calibration=calib, sparse=None, isa=isa)
    monkeypatch.delenv("TRIMFORMER_FEATURE_ORDER")
    eng = compile_encoder(model, quantize=quantize, calibration=calib, sparse=None, isa=isa)
    assert "feature_order" not in own.extra
    if _core.bsr_pair_kernel(isa):  # avx2 multiplies input pairs, not quads: nothing to gain, nothing changed
        assert "feature_order" not in eng.extra
    else:
        assert set(eng.extra["feature_order"]) == {"0", "1"}
        assert all(after < before for before, after in eng.extra["feature_order"].values())
        assert eng.formats["layers.0.ffn2"] == "csr-int8"
    a = eng.run(ids, mask)["last_hidden_state"]
    np.testing.assert_array_equal(a, own.run(ids, mask)["last_hidden_state"])
    back = tf.load(tf.save(eng, tmp_path / "m"), isa=isa)
    assert back.extra.get("feature_order") == eng.extra.get("feature_order")
    np.testing.assert_array_equal(back.run(ids, mask)["last_hidden_state"], a)


@pytest.mark.parametrize("pattern", ["block", "2:4"])
def test_block_and_nm_layouts_keep_their_order(rng, pattern):
    model = tiny_bert(intermediate=96)
    prune_magnitude(model, 0.5 if pattern == "2:4" else 0.9, pattern)
    ids, mask = _inputs(rng)
    eng = compile_encoder(model, quantize="int8-dynamic", sparse=None, isa="scalar")
    assert "feature_order" not in eng.extra


def test_float_models_keep_their_order():
    model = tiny_bert(intermediate=92)
    prune_magnitude(model, 0.9, "unstructured")
    assert "feature_order" not in compile_encoder(model, sparse=None, isa="scalar").extra


def test_order_ffn_features_moves_ffn1_rows_and_ffn2_columns_alike(rng):
    w1 = rng.standard_normal((40, 16)).astype(np.float32)
    b1 = rng.standard_normal(40).astype(np.float32)
    w2 = rng.standard_normal((24, 40)).astype(np.float32) * (rng.random((24, 40)) < 0.1)
    dense = {"layers.0.ffn1.weight": w1, "layers.0.ffn1.bias": b1, "layers.0.ffn2.weight": w2}
    out, changed = order_ffn_features(dense, 1, lambda i: True, 0.5)
    assert dense["layers.0.ffn1.weight"] is w1  # the caller's tensors are not touched
    assert changed[0][1] < changed[0][0]
    x = rng.standard_normal((5, 16)).astype(np.float32)
    ref = np.maximum(x @ w1.T + b1, 0) @ w2.T
    got = np.maximum(x @ out["layers.0.ffn1.weight"].T + out["layers.0.ffn1.bias"], 0) @ out["layers.0.ffn2.weight"].T
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert order_ffn_features(dense, 1, lambda i: False, 0.5)[1] == {}
    assert order_ffn_features(dense, 1, lambda i: True, 0.1)[1] == {}  # still too dense for the sparse formats
