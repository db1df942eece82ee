"""Fine-tuning loop shared by dense fine-tuning, gradual pruning, distillation and quantization-aware training.

One loop (AdamW, linear warmup then linear decay, gradient clipping); the compression methods plug in as
callbacks (e.g. the gradual pruner updates and re-applies masks after every optimizer step) and as a loss
function (e.g. the distiller adds KD terms against a teacher).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .tasks import DEFAULT_MAX_LENGTH, TaskData, check_task, task_data

LossFn = Callable[[Any, dict[str, Any]], "tuple[Any, dict[str, float]]"]


@dataclass
class TrainConfig:
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = DEFAULT_MAX_LENGTH
    max_samples: int | None = None  # per epoch: an evenly spaced deterministic subset of the train split
    seed: int = 0
    threads: int = 2
    grad_clip: float = 1.0
    log_every: int = 25
    device: str = "cpu"  # a torch device ("cuda", "cuda:1"): the loop moves the model there and back afterwards
    freeze_embeddings: bool = False  # keep the word-embedding matrix fixed (a third of MiniLM; no AdamW state)
    # probability that a training text is replaced by a random contiguous span of its tokens (>= CROP_MIN), drawn
    # afresh each time: with distillation the teacher labels each span, which a small train set lacks
    crop_augment: float = 0.0

    def __post_init__(self) -> None:
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.crop_augment <= 1.0:
            raise ValueError(f"crop_augment must be a probability in [0, 1], got {self.crop_augment}")
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", self.device):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu', got {self.device!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainCallback:
    """Hooks into the training loop; every method is optional."""

    def on_train_begin(self, model: Any, total_steps: int) -> None: ...

    def on_step_begin(self, model: Any, step: int, total_steps: int) -> None: ...

    def on_step_end(self, model: Any, step: int, total_steps: int) -> None:
        """Called after the optimizer step (step counts from 1)."""

    def on_train_end(self, model: Any) -> None: ...


def cross_entropy_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    import torch.nn.functional as F

    loss = F.cross_entropy(out.logits, batch["labels"])
    return loss, {"ce": float(loss.detach())}


def linear_schedule(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warmup to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _pretokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return enc["input_ids"]


CROP_MIN = 16


def crop_tokens(ids: list[int], rng: random.Random, min_len: int = CROP_MIN) -> list[int]:
    """A random contiguous span (>= min_len tokens) of a tokenized text, its first and last special tokens kept."""
    inner = ids[1:-1]
    if len(inner) <= min_len:
        return ids
    n = rng.randint(min_len, len(inner))
    start = rng.randint(0, len(inner) - n)
    return [ids[0], *inner[start:start + n], ids[-1]]


def _collate(ids: list[list[int]], labels: list[int], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids),
            "labels": torch.tensor(labels, dtype=torch.long)}


def train(model: Any, tokenizer: Any, data: TaskData, config: TrainConfig, *, loss_fn: LossFn | None = None,
          callbacks: Sequence[TrainCallback] = (), log: Callable[[str], None] | None = print,
          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train `model` (a transformers sequence classifier) in place on `data`. Returns a summary dict."""
    import torch

    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _training_device(config.device)
    teacher = getattr(loss_fn, "teacher", None)  # a Distiller's teacher runs beside the student
    frozen = []
    if config.freeze_embeddings:
        frozen = [p for p in model.get_input_embeddings().parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    try:
        return _train_loop(model, tokenizer, data, config, device, loss_fn or cross_entropy_loss, callbacks, log,
                           progress)
    finally:  # the rest of the toolkit (masks, export, compile) works on CPU tensors
        model.to("cpu")
        if teacher is not None:
            teacher.to("cpu")
        for p in frozen:
            p.requires_grad_(True)


def _training_device(name: str) -> Any:
    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"training device {name!r} asked for, but this torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device 'cpu'")
    return device


def _train_loop(model: Any, tokenizer: Any, data: TaskData, config: TrainConfig, device: Any, loss_fn: LossFn,
                callbacks: Sequence[TrainCallback], log: Callable[[str], None] | None,
                progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    import torch

    ids = _pretokenize(tokenizer, data.texts, config.max_length)
    labels = list(data.labels)
    per_epoch = math.ceil(len(ids) / config.batch_size)
    total = max(1, int(round(per_epoch * config.epochs)))
    warmup = int(config.warmup_ratio * total)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim == 1 or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: linear_schedule(s, total, warmup))
    gen = torch.Generator().manual_seed(config.seed)
    crop_rng = random.Random(config.seed)
    pad_id = tokenizer.pad_token_id or 0
    model.train()
    for cb in callbacks:
        cb.on_train_begin(model, total)
    t0, step, running, history = time.perf_counter(), 0, {}, []
    while step < total:
        order = torch.randperm(len(ids), generator=gen).tolist()
        for start in range(0, len(order), config.batch_size):
            if step >= total:
                break
            sel = order[start:start + config.batch_size]
            texts = [crop_tokens(ids[i], crop_rng) if config.crop_augment and crop_rng.random() < config.crop_augment
                     else ids[i] for i in sel]
            batch = {k: v.to(device, non_blocking=True)
                     for k, v in _collate(texts, [labels[i] for i in sel], pad_id).items()}
            for cb in callbacks:
                cb.on_step_begin(model, step, total)
            loss, parts = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            step += 1
            for cb in callbacks:
                cb.on_step_end(model, step, total)
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                running[k] = running.get(k, 0.0) + v
            if progress:
                progress(step, total)
            if step % config.log_every == 0 or step == total:
                n = config.log_every if step % config.log_every == 0 else step % config.log_every
                avg = {k: v / n for k, v in running.items()}
                history.append({"step": step, **avg})
                running = {}
                if log:
                    el = time.perf_counter() - t0
                    log(f"step {step}/{total} " + " ".join(f"{k}={v:.4f}" for k, v in avg.items())
                        + f" lr={sched.get_last_lr()[0]:.2e} elapsed={el:.0f}s eta={el / step * (total - step):.0f}s")
    for cb in callbacks:
        cb.on_train_end(model)
    model.eval()
    return {"steps": total, "epochs": config.epochs, "samples_per_epoch": len(ids),
            "seconds": time.perf_counter() - t0, "device": str(device), "history": history}


def load_classifier(model_dir: str | Path, task: str = "wiki-topics") -> tuple[Any, Any]:
    """(model, tokenizer): a BertForSequenceClassification-style model for `task` from an encoder or a classifier
    checkpoint directory (a fresh head is added when the checkpoint has none)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_task(task)
    names = task_data(task, "validation", max_samples=1).label_names
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)),
              "label2id": {n: i for i, n in enumerate(names)}}
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    if cfg.get("pruned_heads"):
        return _load_head_pruned(model_dir, labels), tok
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), **labels)
    return model, tok


def _load_head_pruned(model_dir: str | Path, labels: dict[str, Any]) -> Any:
    """A checkpoint whose config lists `pruned_heads`: build the full-size model, remove those heads, then load
    the (smaller) weights strictly (transformers 5 dropped its own head-pruning support)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .pruning import apply_pruned_heads

    config = AutoConfig.from_pretrained(str(model_dir), **labels)
    model = AutoModelForSequenceClassification.from_config(config)
    apply_pruned_heads(model)
    files = sorted(Path(model_dir).glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no model.safetensors")
    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if "classifier.weight" in missing:  # an encoder checkpoint without this task's head: keep the fresh one
        missing = [k for k in missing if not k.startswith(("classifier.", "pre_classifier."))]
    if missing or unexpected:
        raise ValueError(f"{model_dir}: head-pruned checkpoint does not match its config "
                         f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    return model.eval()


def save_checkpoint(model: Any, tokenizer: Any, out: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write an HF checkpoint dir (config, model.safetensors, tokenizer files) atomically (io.replacing_directory)."""
    from ..io import replacing_directory

    out = Path(out)
    with replacing_directory(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out


def finetune(model_dir: str | Path, out: str | Path, task: str = "wiki-topics", config: TrainConfig | None = None,
             *, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Dense fine-tuning of an encoder + classification head on `task`'s train split; writes an HF checkpoint."""
    import json

    config = config or TrainConfig()
    model, tok = load_classifier(model_dir, task)
    data = task_data(task, "train", config.max_samples)
    summary = train(model, tok, data, config, log=log)
    summary = {"task": task, "base": str(model_dir), "config": config.to_dict(),
               **{k: v for k, v in summary.items() if k != "history"}}
    save_checkpoint(model, tok, out, {"trimformer_finetune.json": json.dumps(summary, indent=1)})
    return summary
