"""compress.prune: every method/pattern/scope gives exactly its pattern; OBS beats magnitude on the layer
reconstruction; gradual pruning follows the cubic schedule and fine-tuning keeps pruned weights exactly zero;
FFN neuron and attention-head removal give smaller dense models the runtime runs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import tiny_dir  # noqa: E402, F401

from trimformer.compress import pruning  # noqa: E402
from trimformer.compress.pruning import (  # noqa: E402
    FixedMasks,
    GradualPruner,
    cubic_sparsity,
    encoder_linears,
    prune,
    prune_ffn_neurons,
    prune_heads,
)
from trimformer.compress.tasks import TaskData  # noqa: E402
from trimformer.compress.training import TrainConfig, train  # noqa: E402
from trimformer.runtime.engine import compile_encoder  # noqa: E402


def tiny_bert(layers=2, seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                                    intermediate_size=64, vocab_size=120, max_position_embeddings=64,
                                                    num_labels=3)).eval()


def calib(n=4, seq=16, seed=0):
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = g.integers(1, 120, (4, seq))
        mask = np.ones_like(ids)
        mask[0, seq // 2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def check_pattern(w: np.ndarray, pattern: str, sparsity: float) -> None:
    nz = w != 0
    if pattern == "block":
        b = nz.reshape(w.shape[0] // 4, 4, w.shape[1] // 4, 4)
        assert np.all(b.all(axis=(1, 3)) | ~b.any(axis=(1, 3)))
    if pattern in ("2:4", "4:8"):
        n, m = (int(x) for x in pattern.split(":"))
        assert (nz.reshape(w.shape[0], -1, m).sum(-1) <= n).all()
    else:
        assert abs((~nz).mean() - sparsity) < 0.03


@pytest.mark.parametrize("method", ["magnitude", "obs"])
@pytest.mark.parametrize("pattern", ["unstructured", "block", "2:4", "4:8"])
def test_prune_methods_respect_pattern(method, pattern):
    model = tiny_bert()
    rep = prune(model, 0.5, pattern, method, calibration=calib() if method == "obs" else None)
    assert len(rep.layers) == 12
    for lin in encoder_linears(model).values():
        check_pattern(lin.weight.detach().numpy(), pattern, 0.5)
    assert not (model.classifier.weight == 0).any()


def test_global_scope_uneven_layers_same_total():
    model = tiny_bert()
    with torch.no_grad():
        encoder_linears(model)["bert.encoder.layer.0.intermediate.dense"].weight.mul_(10.0)
    rep = prune(model, 0.6, scope="global")
    sizes = {n: lin.weight.numel() for n, lin in encoder_linears(model).items()}
    total = sum(rep.layers[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert abs(total - 0.6) < 0.01
    assert rep.layers["bert.encoder.layer.0.intermediate.dense"] < 0.1  # the scaled-up layer keeps its weights
    with pytest.raises(ValueError, match="global"):
        prune(tiny_bert(), 0.5, "2:4", scope="global")


def test_per_layer_targets_and_bad_input():
    model = tiny_bert()
    rep = prune(model, 0.3, per_layer={"intermediate.dense": 0.8})
    assert abs(rep.layers["bert.encoder.layer.1.intermediate.dense"] - 0.8) < 0.01
    assert abs(rep.layers["bert.encoder.layer.1.output.dense"] - 0.3) < 0.01
    with pytest.raises(ValueError, match="match no encoder"):
        prune(model, 0.3, per_layer={"nope": 0.5})
    with pytest.raises(ValueError, match="sparsity must be"):
        prune(model, 1.5)
    with pytest.raises(ValueError, match="method"):
        prune(model, 0.5, method="random")
    with pytest.raises(ValueError, match="calibration"):
        prune(model, 0.5, method="obs")
    with pytest.raises(TypeError, match="expected a PyTorch"):  # a path where the model goes
        prune("models/bert", 0.5)


def _layer_error(dense, pruned, batches, name):
    """||W X - W' X|| over the layer's real inputs (taken from the dense model)."""
    xs = []
    lin = encoder_linears(dense)[name]
    h = lin.register_forward_pre_hook(lambda m, i: xs.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        for b in batches:
            dense(**{k: torch.as_tensor(v) for k, v in b.items()})
    h.remove()
    x = torch.cat(xs)
    w0, w1 = lin.weight.detach(), encoder_linears(pruned)[name].weight.detach()
    return float((x @ (w0 - w1).T).norm())


def test_obs_reconstructs_better_than_magnitude():
    batches = calib(8)
    dense, mag, obs = tiny_bert(layers=1), tiny_bert(layers=1), tiny_bert(layers=1)
    prune(mag, 0.5)
    prune(obs, 0.5, method="obs", calibration=batches)
    for name in ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.intermediate.dense"):
        assert _layer_error(dense, obs, batches, name) < 0.9 * _layer_error(dense, mag, batches, name)


def test_cubic_schedule():
    assert cubic_sparsity(0, 100, 0.8) == 0.0
    assert cubic_sparsity(70, 100, 0.8, end=0.7) == pytest.approx(0.8)
    mid = cubic_sparsity(35, 100, 0.8, end=0.7)
    assert mid == pytest.approx(0.8 * (1 - 0.5 ** 3))
    values = [cubic_sparsity(s, 100, 0.8) for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


class _Tok:
    """A whitespace tokenizer over integer 'words' (enough for the training loop)."""

    pad_token_id = 0

    def __call__(self, texts, truncation=True, max_length=16, **kw):
        return {"input_ids": [[int(t) for t in s.split()][:max_length] for s in texts]}


def _toy_data(n=48, seed=0):
    g = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        y = int(g.integers(0, 3))
        toks = g.integers(1 + 40 * y, 40 + 40 * y, 10)
        texts.append(" ".join(map(str, toks)))
        labels.append(y)
    return TaskData(texts, labels, ["a", "b", "c"])


def test_pruned_weights_stay_zero_through_finetuning():
    model = tiny_bert()
    prune(model, 0.7, "block")
    before = pruning.current_masks(model)
    w_before = {n: lin.weight.detach().clone() for n, lin in encoder_linears(model).items()}
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, threads=1, log_every=1000)
    train(model, _Tok(), _toy_data(), cfg, callbacks=[FixedMasks()], log=None)
    for n, lin in encoder_linears(model).items():
        w = lin.weight.detach().numpy()
        assert np.array_equal(w != 0, before[n]), n  # exactly the same zeros, none revived
        assert not torch.equal(lin.weight.detach(), w_before[n])  # and the kept weights did train


def test_gradual_pruning_reaches_target_and_fixes_masks():
    model = tiny_bert()
    gp = GradualPruner(0.8, "block", end=0.5, every=2)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-3, threads=1, log_every=1000)
    train(model, _Tok(), _toy_data(), cfg, callbacks=[gp], log=None)
    s = [v for _, v in gp.history]
    assert s[-1] == pytest.approx(0.8) and all(a <= b for a, b in zip(s, s[1:], strict=False)) and len(s) > 3
    assert max(step for step, _ in gp.history) <= 0.5 * 18 + 2  # masks fixed after the schedule ends
    for lin in encoder_linears(model).values():
        check_pattern(lin.weight.detach().numpy(), "block", 0.8)


def test_ffn_neuron_removal_runs_in_runtime():
    model = tiny_bert()
    ids = np.random.default_rng(1).integers(1, 120, (2, 12))
    info = prune_ffn_neurons(model, 0.5, calibration=calib(2))
    assert info["intermediate_after"] == 32 and model.config.intermediate_size == 32
    assert encoder_linears(model)["bert.encoder.layer.1.output.dense"].in_features == 32
    eng = compile_encoder(model)
    with torch.no_grad():
        ref = model(input_ids=torch.as_tensor(ids)).logits.numpy()
    np.testing.assert_allclose(eng.run(ids)["logits"], ref, atol=1e-4)
    with pytest.raises(ValueError, match="keep"):
        prune_ffn_neurons(model, 0)


def tiny_distilbert(seed=0):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    return DistilBertForSequenceClassification(DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                                vocab_size=120, max_position_embeddings=64,
                                                                num_labels=3)).eval()


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("quantize", [None, "int8-dynamic"])
def test_head_removal_runs_in_runtime(arch, quantize, isa, tmp_path):
    model = tiny_bert() if arch == "bert" else tiny_distilbert()
    ids = np.random.default_rng(2).integers(1, 120, (2, 12))
    info = prune_heads(model, 0.5, calibration=calib(2))
    assert info["heads_before"] == 4 and info["heads_after"] == 2
    assert all(len(k) == 2 for k in info["kept"])
    assert {k: len(v) for k, v in model.config.pruned_heads.items()} == {"0": 2, "1": 2}
    q = encoder_linears(model)["bert.encoder.layer.0.attention.self.query" if arch == "bert" else
                                "distilbert.transformer.layer.0.attention.q_lin"]
    assert q.out_features == 16 and q.in_features == 32  # 2 heads of 8: attention width 16 < hidden 32
    with torch.no_grad():
        ref = model(input_ids=torch.as_tensor(ids)).logits.numpy()
    eng = compile_encoder(model, quantize=quantize, isa=isa)
    tol = 1e-4 if quantize is None else 5e-2 * np.abs(ref).max()
    np.testing.assert_allclose(eng.run(ids)["logits"], ref, atol=tol)
    # a saved head-pruned checkpoint: the runtime reads `pruned_heads`; the torch side rebuilds the smaller model
    model.save_pretrained(str(tmp_path / "m"))
    if quantize is None:
        np.testing.assert_allclose(compile_encoder(str(tmp_path / "m"), isa=isa).run(ids)["logits"], ref, atol=1e-4)


def test_head_removal_checkpoint_round_trip(tiny_dir, tmp_path):  # noqa: F811
    from trimformer.compress.training import load_classifier, save_checkpoint

    model, tok = load_classifier(tiny_dir)
    prune_heads(model, 3)  # no calibration: weight-norm importance
    save_checkpoint(model.eval(), tok, tmp_path / "pruned")
    again, _ = load_classifier(tmp_path / "pruned")
    ids = torch.as_tensor(np.random.default_rng(3).integers(1, 100, (2, 10)))
    with torch.no_grad():
        np.testing.assert_allclose(again.eval()(input_ids=ids).logits.numpy(), model(input_ids=ids).logits.numpy(),
                                   atol=1e-5)
    info = prune_heads(again, 2)  # pruning a pruned model keeps the original head indices
    assert info["heads_before"] == 3 and all(set(k) <= set(range(4)) for k in info["kept"])
    assert all(len(v) == 2 for v in again.config.pruned_heads.values())
    with pytest.raises(ValueError, match="keep"):
        prune_heads(again, 3)


def test_unevenly_pruned_heads_are_refused(tmp_path):
    import json

    from trimformer.models.encoder import UnsupportedModelError

    model = tiny_bert()
    prune_heads(model, 2)
    model.save_pretrained(str(tmp_path / "m"))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["pruned_heads"] = {"0": [1, 2], "1": [3]}
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="unevenly"):
        compile_encoder(str(tmp_path / "m"))
