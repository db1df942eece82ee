"""Knowledge distillation from a dense teacher: logit KD with temperature, hidden-state MSE and MiniLM-v2-style
self-attention relation loss. A `Distiller` is a loss function for the training loop, so it combines with gradual
pruning (callbacks) and quantization-aware training (fake-quant modules in the student) unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .tasks import TaskData
from .training import TrainCallback, TrainConfig, train


@dataclass
class DistillConfig:
    temperature: float = 2.0
    ce_weight: float = 0.5          # hard-label cross-entropy
    kd_weight: float = 0.5          # KL(teacher || student) of temperature-softened logits, times T^2
    hidden_weight: float = 0.0      # MSE between hidden states (embeddings + every block; same hidden size)
    relation_weight: float = 0.0    # MiniLM-v2 Q-Q, K-K, V-V relation KL of the last block
    relation_heads: int = 4

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for k in ("ce_weight", "kd_weight", "hidden_weight", "relation_weight"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")
        if self.ce_weight + self.kd_weight + self.hidden_weight + self.relation_weight == 0:
            raise ValueError("all distillation loss weights are zero")
        if self.relation_heads < 1:
            raise ValueError(f"relation_heads must be >= 1, got {self.relation_heads}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistillConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown distillation options {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def logit_kd_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """Hinton KD: T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean."""
    import torch.nn.functional as F

    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    reduction="batchmean", log_target=True) * t * t


def hidden_mse_loss(student_hidden: Sequence[Any], teacher_hidden: Sequence[Any], mask: Any | None = None) -> Any:
    """Mean over layers of the MSE of hidden states at non-padding tokens (layer i of the student against layer
    i * (teacher layers / student layers) of the teacher, so a shallower student maps onto evenly spaced layers)."""
    ns, nt = len(student_hidden) - 1, len(teacher_hidden) - 1
    if ns < 1 or nt % ns:
        raise ValueError(f"cannot map {ns} student layers onto {nt} teacher layers")
    step = nt // ns
    total = 0.0
    for i, hs in enumerate(student_hidden):
        ht = teacher_hidden[i * step]
        if hs.shape != ht.shape:
            raise ValueError(f"hidden-state MSE needs equal hidden sizes, got {tuple(hs.shape)} vs {tuple(ht.shape)}")
        d = (hs - ht) ** 2
        if mask is not None:
            m = mask[..., None].to(d.dtype)
            total = total + (d * m).sum() / (m.sum() * d.shape[-1])
        else:
            total = total + d.mean()
    return total / len(student_hidden)


def relation_kl(x_s: Any, x_t: Any, heads: int, mask: Any | None = None) -> Any:
    """MiniLM-v2 relation loss for one of Q/K/V: split into `heads` relation heads, relation = softmax(x x^T /
    sqrt(d)) over keys, KL(teacher || student) over non-padding queries. Hidden sizes may differ."""
    import torch
    import torch.nn.functional as F

    def rel(x):
        b, s, h = x.shape
        if h % heads:
            raise ValueError(f"size {h} does not split into {heads} relation heads")
        x = x.view(b, s, heads, h // heads).transpose(1, 2)
        scores = x @ x.transpose(-1, -2) / (h // heads) ** 0.5
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
        return F.log_softmax(scores, -1)

    ls, lt = rel(x_s), rel(x_t)
    kl = (lt.exp() * (lt - ls)).sum(-1)  # [b, heads, s]
    if mask is not None:
        m = mask[:, None, :].to(kl.dtype)
        return (kl * m).sum() / (m.sum() * heads)
    return kl.mean()


class _QKVCapture:
    """Forward hooks that record the last block's Q, K and V projections."""

    def __init__(self, model: Any):
        from .pruning import _encoder_blocks

        block = _encoder_blocks(model)[-1]
        attn = block.attention
        if hasattr(attn, "self"):
            mods = (attn.self.query, attn.self.key, attn.self.value)
        else:  # DistilBERT
            mods = (attn.q_lin, attn.k_lin, attn.v_lin)
        self.out: list[Any] = [None, None, None]
        self.hooks = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(mods)]

    def _hook(self, i: int):
        def hook(mod, inputs, output):
            self.out[i] = output
        return hook

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


class Distiller:
    """Loss function (model, batch) -> (loss, parts) distilling `teacher` into the model being trained."""

    def __init__(self, teacher: Any, config: DistillConfig | None = None):
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.config = config or DistillConfig()
        self._caps: dict[int, _QKVCapture] = {}

    def _capture(self, model: Any) -> _QKVCapture:
        if id(model) not in self._caps:
            self._caps[id(model)] = _QKVCapture(model)
        return self._caps[id(model)]

    def __call__(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        import torch
        import torch.nn.functional as F

        c = self.config
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        want_hidden = c.hidden_weight > 0
        rel = c.relation_weight > 0
        if rel:
            cs, ct = self._capture(model), self._capture(self.teacher)
        with torch.no_grad():
            t_out = self.teacher(**inputs, output_hidden_states=want_hidden)
            t_qkv = list(ct.out) if rel else None
        s_out = model(**inputs, output_hidden_states=want_hidden)
        parts: dict[str, Any] = {}
        if c.ce_weight:
            parts["ce"] = c.ce_weight * F.cross_entropy(s_out.logits, batch["labels"])
        if c.kd_weight:
            parts["kd"] = c.kd_weight * logit_kd_loss(s_out.logits, t_out.logits, c.temperature)
        mask = inputs.get("attention_mask")
        if want_hidden:
            parts["hidden"] = c.hidden_weight * hidden_mse_loss(s_out.hidden_states, t_out.hidden_states, mask)
        if rel:
            parts["relation"] = c.relation_weight * sum(
                relation_kl(xs, xt, c.relation_heads, mask) for xs, xt in zip(cs.out, t_qkv, strict=True)) / 3
        loss = sum(parts.values())
        return loss, {k: float(v.detach()) for k, v in parts.items()}


def distill(student: Any, teacher: Any, tokenizer: Any, data: TaskData, config: TrainConfig | None = None,
            distill_config: DistillConfig | None = None, *, callbacks: Sequence[TrainCallback] = (),
            log: Any = print, progress: Any = None) -> dict[str, Any]:
    """Train `student` in place against `teacher` on `data` (callbacks: e.g. a GradualPruner or FixedMasks)."""
    distiller = Distiller(teacher, distill_config)
    try:
        return train(student, tokenizer, data, config or TrainConfig(), loss_fn=distiller, callbacks=callbacks,
                     log=log, progress=progress)
    finally:
        for cap in distiller._caps.values():
            cap.remove()
