"""Distillation losses: zero against itself, positive otherwise; relation loss across hidden sizes; a distilled
and gradually pruned student trains (KD + pruning) with its pattern intact."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_prune_api import _Tok, _toy_data, check_pattern, tiny_bert  # noqa: E402

from trimformer.compress.distill import (  # noqa: E402
    DistillConfig,
    Distiller,
    distill,
    hidden_mse_loss,
    logit_kd_loss,
    relation_kl,
)
from trimformer.compress.pruning import GradualPruner, encoder_linears  # noqa: E402
from trimformer.compress.training import TrainConfig, _collate  # noqa: E402


def test_losses_zero_on_self_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    assert float(logit_kd_loss(a, a, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(logit_kd_loss(a, b, 2.0)) > 0
    x, y = torch.randn(2, 6, 16, generator=g), torch.randn(2, 6, 32, generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    assert float(relation_kl(x, x, 4, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(relation_kl(x, y, 4, mask)) > 0  # different hidden sizes: relations are [b, heads, s, s]
    hs = [torch.randn(2, 6, 16, generator=g) for _ in range(3)]
    assert float(hidden_mse_loss(hs, hs, mask)) == 0.0
    with pytest.raises(ValueError, match="relation heads"):
        relation_kl(x, x, 5)
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig(temperature=0)
    with pytest.raises(ValueError, match="unknown distillation"):
        DistillConfig.from_dict({"temp": 2})


def test_distiller_parts_and_training_with_gradual_pruning():
    teacher = tiny_bert()
    student = copy.deepcopy(teacher)
    cfg = DistillConfig(temperature=2.0, ce_weight=0.5, kd_weight=0.5, hidden_weight=1.0, relation_weight=1.0)
    data = _toy_data()
    batch = _collate([[int(t) for t in s.split()] for s in data.texts[:8]], data.labels[:8], 0)
    loss, parts = Distiller(teacher, cfg)(student, batch)
    assert set(parts) == {"ce", "kd", "hidden", "relation"}
    assert parts["kd"] == pytest.approx(0.0, abs=1e-5) and parts["hidden"] == pytest.approx(0.0, abs=1e-6)
    gp = GradualPruner(0.75, "block", end=0.5, every=2)
    summary = distill(student, teacher, _Tok(), data, TrainConfig(epochs=2, batch_size=8, lr=1e-3, threads=1,
                                                                  log_every=3), cfg, callbacks=[gp], log=None)
    hist = summary["history"]
    assert {"kd", "hidden", "relation"} <= set(hist[0]) and np.isfinite(hist[-1]["loss"])
    for lin in encoder_linears(student).values():
        check_pattern(lin.weight.detach().numpy(), "block", 0.75)
    assert all(not p.requires_grad for p in teacher.parameters())
