"""prune_magnitude makes exactly the pattern asked for, and the runtime runs the pruned model block-sparse with
outputs bit-identical to the same model run dense INT8."""

import numpy as np
import pytest

import trimformer as tf
from conftest import rel_err
from trimformer import _core
from trimformer.compress import encoder_linears, prune_magnitude
from trimformer.runtime.engine import compile_encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _model(kind="bert"):
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    if kind == "distilbert":
        return DistilBertModel(DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=96, vocab_size=100,
                                                max_position_embeddings=64)).eval()
    return BertForSequenceClassification(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                    intermediate_size=96, vocab_size=100, max_position_embeddings=64,
                                                    num_labels=3)).eval()


@pytest.mark.parametrize("pattern", ["unstructured", "block", "2:4", "4:8"])
def test_prune_patterns(pattern):
    model = _model()
    achieved = prune_magnitude(model, 0.8, pattern)
    layers = encoder_linears(model)
    assert set(achieved) == set(layers) and len(layers) == 12  # 6 Linear per BERT layer (q, k, v separate)
    expected = {"unstructured": 0.8, "block": 0.8, "2:4": 0.5, "4:8": 0.5}[pattern]
    for name, lin in layers.items():
        w = lin.weight.detach().numpy()
        assert abs((w == 0).mean() - expected) < 0.02, name
        if pattern == "block":
            b = (w != 0).reshape(w.shape[0] // 4, 4, w.shape[1] // 4, 4)
            assert np.all(b.all(axis=(1, 3)) | ~b.any(axis=(1, 3)))
    assert not (model.classifier.weight == 0).any()  # heads stay dense


def test_per_layer_targets_and_errors():
    model = _model("distilbert")
    name = next(iter(encoder_linears(model)))
    achieved = prune_magnitude(model, {name: 0.5})
    assert list(achieved) == [name] and abs(achieved[name] - 0.5) < 0.01
    with pytest.raises(ValueError, match="no such"):
        prune_magnitude(model, {"nope": 0.5})
    with pytest.raises(ValueError, match="pattern"):
        prune_magnitude(model, 0.5, "1:3")


@pytest.mark.parametrize("quantize", ["int8-dynamic", "int8-static"])
def test_block_sparse_runtime_equals_dense_int8(isa, rng, quantize, tmp_path):
    model = _model()
    prune_magnitude(model, 0.75, "block")
    ids = rng.integers(1, 100, (3, 21))
    mask = np.ones_like(ids)
    mask[1, 15:] = 0
    calib = [{"input_ids": ids, "attention_mask": mask}]
    sparse = compile_encoder(model, quantize=quantize, calibration=calib, isa=isa, sparse=True)
    dense = compile_encoder(model, quantize=quantize, calibration=calib, isa=isa, sparse=False)
    assert sparse.formats["layers.0.qkv"] == "block-int8" and dense.formats["layers.0.qkv"] == "int8"
    a, b = sparse.run(ids, mask), dense.run(ids, mask)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert rel_err(a["logits"], ref) < 0.1
    back = tf.load(tf.save(sparse, tmp_path / "m"), isa=isa)
    assert back.formats == sparse.formats
    np.testing.assert_array_equal(back.run(ids, mask)["logits"], a["logits"])


def test_compile_time_dispatch_times_each_candidate(tmp_path):
    model = _model()
    prune_magnitude(model, 0.9, "block")
    eng = compile_encoder(model, quantize="int8-dynamic")  # sparse="tune" by default
    timings = eng.extra["dispatch"]
    assert set(timings) == {n for n in eng.spec.linear_names() if n.startswith("layers.")}
    from trimformer.runtime.engine import choose_format

    for name, t in timings.items():  # the fastest measured format is kept; a sparse one within the margin of dense
        assert {"int8", "block-int8"} <= set(t["ms"])
        assert eng.formats[name] == t["chosen"] == choose_format(t["ms"], "int8")
    back = tf.load(tf.save(eng, tmp_path / "m"))  # the choice is cached in the saved model
    assert back.formats == eng.formats and back.extra["dispatch"] == timings
    dense_extra = compile_encoder(_model(), quantize="int8-dynamic").extra
    if _core.bsr_pair_kernel(""):  # dense weights: every INT8 layer also times the block kernel (avx2)
        assert all(set(t["ms"]) == {"int8", "block-int8"} for t in dense_extra["dispatch"].values())
    else:
        assert "dispatch" not in dense_extra  # nothing to tune


def test_corrupt_block_sparse_tensors_fail_clearly(rng):
    from trimformer.runtime.engine import Engine

    model = _model()
    prune_magnitude(model, 0.75, "block")
    eng = compile_encoder(model, quantize="int8-dynamic", sparse=True)
    bad = dict(eng.tensors)
    cols = bad["layers.0.ffn1.bsr_cols"].copy()
    cols[0] = 10_000
    bad["layers.0.ffn1.bsr_cols"] = cols
    with pytest.raises(ValueError, match="out of range"):
        Engine(eng.spec, bad, eng.formats, quantize="int8-dynamic")
    bad = dict(eng.tensors)
    rp = bad["layers.0.ffn1.bsr_rowptr"].copy()
    rp[1], rp[2] = rp[2], rp[1] - 1
    bad["layers.0.ffn1.bsr_rowptr"] = rp
    with pytest.raises(ValueError, match="decrease|shape"):
        Engine(eng.spec, bad, eng.formats, quantize="int8-dynamic")
    bad = dict(eng.tensors)
    rp = bad["layers.0.ffn1.bsr_rowptr"]
    row = int(np.argmax(np.diff(rp) >= 2))
    cols = bad["layers.0.ffn1.bsr_cols"].copy()
    cols[rp[row]], cols[rp[row] + 1] = cols[rp[row] + 1], cols[rp[row]]
    bad["layers.0.ffn1.bsr_cols"] = cols
    with pytest.raises(ValueError, match="increase"):
        Engine(eng.spec, bad, eng.formats, quantize="int8-dynamic")
