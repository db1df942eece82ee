"""Compression recipes: an ordered list of stages (finetune, prune, distill, quantize, mixed-precision,
prune-ffn, prune-heads) read from YAML, validated up front (unknown keys, impossible targets, stage order), then run on an HF
encoder; the output is a compressed HF-style checkpoint plus the trimformer runtime model.

    name: obs50-int8
    calibration: {samples: 256}
    stages:
      - prune: {method: obs, sparsity: 0.5, pattern: unstructured}
      - quantize: {method: ptq, observer: minmax}
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..formats.sparsity import PATTERNS
from .distill import DistillConfig
from .quantization import OBSERVERS
from .training import TrainConfig

__all__ = ["Recipe", "RecipeError", "load_recipe", "run_recipe", "validate_recipe"]


class RecipeError(ValueError):
    """A recipe that cannot run: unknown keys, bad values, impossible targets or stage order."""


_TOP_KEYS = {"name", "description", "task", "calibration", "stages", "eval"}
_CALIB_KEYS = {"samples", "batch_size", "max_length"}
_EVAL_KEYS = {"split", "max_samples"}
_TRAIN_KEYS = set(TrainConfig.__dataclass_fields__)
_DISTILL_KEYS = set(DistillConfig.__dataclass_fields__)
STAGE_KEYS: dict[str, set[str]] = {
    "finetune": {"train"},
    "prune": {"method", "schedule", "sparsity", "pattern", "scope", "per_layer", "start", "end", "every", "train",
              "distill"},
    "prune-ffn": {"keep", "train", "distill"},
    "prune-heads": {"keep", "train", "distill"},
    "distill": {"train", "distill"},
    "quantize": {"method", "observer", "smoothquant", "keep_float", "train", "distill", "weights",
                 "weight_symmetric", "activations", "activation_symmetric"},
    "mixed-precision": {"budget", "eval_samples", "max_float", "split"},
}


@dataclass
class Recipe:
    name: str
    stages: list[tuple[str, dict[str, Any]]]
    calibration: dict[str, Any] = field(default_factory=lambda: {"samples": 256, "batch_size": 32, "max_length": 128})
    eval: dict[str, Any] = field(default_factory=lambda: {"split": "test", "max_samples": None})
    task: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "task": self.task,
                "calibration": self.calibration, "eval": self.eval,
                "stages": [{k: v} for k, v in self.stages]}


def _where(i: int, kind: str) -> str:
    return f"stage {i + 1} ({kind})"


def _check_keys(d: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise RecipeError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return dict(d)


def _check_train(opts: dict[str, Any], where: str, required: bool) -> None:
    if "train" not in opts:
        if required:
            raise RecipeError(f"{where}: needs a 'train' mapping (epochs, lr, ...)")
        return
    t = _check_keys(opts["train"], _TRAIN_KEYS, where + " train")
    try:
        TrainConfig(**t)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where} train: {e}") from None
    if "distill" in opts:
        try:
            DistillConfig(**_check_keys(opts["distill"], _DISTILL_KEYS, where + " distill"))
        except (TypeError, ValueError) as e:
            raise RecipeError(f"{where} distill: {e}") from None


def validate_recipe(doc: Mapping[str, Any]) -> Recipe:
    """Check a recipe document completely before anything runs; raises RecipeError naming the problem."""
    if not isinstance(doc, Mapping):
        raise RecipeError("a recipe is a mapping with 'name' and 'stages'")
    d = _check_keys(doc, _TOP_KEYS, "recipe")
    stages_raw = d.get("stages")
    if not isinstance(stages_raw, list):
        raise RecipeError("recipe: 'stages' must be a list (empty: the model is compiled in float32 as is)")
    calib = {"samples": 256, "batch_size": 32, "max_length": 128,
             **_check_keys(d.get("calibration"), _CALIB_KEYS, "calibration")}
    if int(calib["samples"]) < 1:
        raise RecipeError("calibration: samples must be >= 1")
    ev = {"split": "test", "max_samples": None, **_check_keys(d.get("eval"), _EVAL_KEYS, "eval")}
    if ev["split"] not in ("train", "validation", "test"):
        raise RecipeError(f"eval: split must be train, validation or test, got {ev['split']!r}")
    stages: list[tuple[str, dict[str, Any]]] = []
    quantized = False
    for i, st in enumerate(stages_raw):
        if not isinstance(st, Mapping) or len(st) != 1:
            raise RecipeError(f"stage {i + 1}: each stage is a one-key mapping such as '- prune: {{...}}'")
        kind, opts = next(iter(st.items()))
        if kind not in STAGE_KEYS:
            raise RecipeError(f"stage {i + 1}: unknown stage {kind!r}; known: {sorted(STAGE_KEYS)}")
        where = _where(i, kind)
        opts = _check_keys(opts, STAGE_KEYS[kind], where)
        if quantized and kind != "mixed-precision":
            raise RecipeError(f"{where}: comes after 'quantize'; quantization must be the last weight-changing stage")
        if kind == "finetune":
            _check_train(opts, where, required=False)
        elif kind == "distill":
            _check_train(opts, where, required=True)
        elif kind == "prune":
            method = opts.setdefault("method", "magnitude")
            schedule = opts.setdefault("schedule", "one-shot")
            pattern = opts.setdefault("pattern", "unstructured")
            if method not in ("magnitude", "obs"):
                raise RecipeError(f"{where}: method must be 'magnitude' or 'obs', got {method!r}")
            if schedule not in ("one-shot", "gradual"):
                raise RecipeError(f"{where}: schedule must be 'one-shot' or 'gradual', got {schedule!r}")
            if pattern not in PATTERNS:
                raise RecipeError(f"{where}: unknown pattern {pattern!r}; known: {list(PATTERNS)}")
            if pattern in ("2:4", "4:8"):
                fixed = 1 - int(pattern[0]) / int(pattern[2])
                if "sparsity" in opts and abs(float(opts["sparsity"]) - fixed) > 1e-9:
                    raise RecipeError(f"{where}: pattern {pattern} fixes the sparsity at {fixed:.2f}; "
                                      f"sparsity {opts['sparsity']} is impossible with it")
                opts["sparsity"] = fixed
            if "sparsity" not in opts:
                raise RecipeError(f"{where}: needs 'sparsity'")
            s = opts["sparsity"]
            if not isinstance(s, (int, float)) or not 0.0 <= float(s) < 1.0:
                raise RecipeError(f"{where}: sparsity must be a number in [0, 1), got {s!r}")
            if schedule == "gradual":
                if method != "magnitude":
                    raise RecipeError(f"{where}: gradual pruning is magnitude-based (method: magnitude)")
                _check_train(opts, where, required=True)
                if not 0.0 <= float(opts.get("start", 0.0)) < float(opts.get("end", 0.7)) <= 1.0:
                    raise RecipeError(f"{where}: need 0 <= start < end <= 1")
            else:
                for k in ("start", "end", "every"):
                    if k in opts:
                        raise RecipeError(f"{where}: '{k}' only applies to schedule: gradual")
                if "train" in opts:
                    _check_train(opts, where, required=False)  # sparse transfer: fine-tune after, masks fixed
            if opts.get("scope", "layer") not in ("layer", "global"):
                raise RecipeError(f"{where}: scope must be 'layer' or 'global'")
            if opts.get("scope") == "global" and (method == "obs" or pattern in ("2:4", "4:8")):
                raise RecipeError(f"{where}: scope 'global' is for magnitude unstructured/block pruning")
        elif kind in ("prune-ffn", "prune-heads"):
            keep = opts.get("keep")
            what = "neuron" if kind == "prune-ffn" else "head"
            if not isinstance(keep, (int, float)) or not 0 < keep <= (1 if isinstance(keep, float) else 1 << 30):
                raise RecipeError(f"{where}: keep must be a fraction in (0, 1] or a positive {what} count")
            if "train" in opts:
                _check_train(opts, where, required=False)
        elif kind == "quantize":
            method = opts.setdefault("method", "ptq")
            if method not in ("ptq", "qat", "dynamic"):
                raise RecipeError(f"{where}: method must be 'ptq', 'qat' or 'dynamic', got {method!r}")
            if opts.get("observer", "minmax") not in OBSERVERS:
                raise RecipeError(f"{where}: observer must be one of {list(OBSERVERS)}")
            sq = opts.get("smoothquant")
            if sq is not None and (not isinstance(sq, (int, float)) or not 0 <= sq <= 1):
                raise RecipeError(f"{where}: smoothquant is the migration strength alpha in [0, 1]")
            from .quantization import QuantScheme, UnsupportedSchemeError

            try:
                QuantScheme(mode="int8-static", observer=opts.get("observer", "minmax"),
                            **{k: opts[k] for k in ("weights", "weight_symmetric", "activations",
                                                    "activation_symmetric") if k in opts}).check_native()
            except UnsupportedSchemeError as e:
                raise RecipeError(f"{where}: {e}") from None
            _check_train(opts, where, required=method == "qat")
            if method != "qat" and "train" in opts:
                raise RecipeError(f"{where}: 'train' applies to method: qat")
            quantized = True
        elif kind == "mixed-precision":
            if not stages or stages[-1][0] != "quantize" or stages[-1][1]["method"] == "dynamic":
                raise RecipeError(f"{where}: must directly follow a static 'quantize' stage (ptq or qat)")
            b = opts.get("budget")
            if not isinstance(b, (int, float)) or b < 0:
                raise RecipeError(f"{where}: budget (accuracy drop allowed, in [0, 1]) must be a number >= 0")
        stages.append((kind, opts))
    return Recipe(name=str(d.get("name") or "recipe"), stages=stages, calibration=calib, eval=ev,
                  task=d.get("task"), description=str(d.get("description") or ""))


def load_recipe(path_or_doc: str | Path | Mapping[str, Any]) -> Recipe:
    if isinstance(path_or_doc, Mapping):
        return validate_recipe(path_or_doc)
    import yaml

    path = Path(path_or_doc)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such recipe file")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    return validate_recipe(doc)


# --------------------------------------------------------------------------------------------------- running


def _write_outputs(out: Path, model: Any, tokenizer: Any, engine: Any, manifest: dict[str, Any]) -> None:
    from .. import save
    from ..io import replacing_directory
    from .training import save_checkpoint

    with replacing_directory(out) as tmp:
        save_checkpoint(model, tokenizer, tmp / "hf",
                        {"trimformer_compression.json": json.dumps(manifest, indent=1, default=str)})
        save(engine, tmp / "runtime")
        (tmp / "summary.json").write_text(json.dumps(manifest, indent=1, default=str))

TORCH_STAGES = ("finetune", "distill", "prune", "prune-ffn", "prune-heads")  # they change the HF model only
_STAGE_FILE = "trimformer_stage.json"


def stages_dir(out: str | Path) -> Path:
    """Where run_recipe keeps the HF checkpoint after each training / pruning stage of a run writing `out`."""
    out = Path(out)
    return out.parent / f"{out.name}.stages"


def _checkpointable(rec: Recipe, n: int) -> bool:
    """Whether the first n stages end in a state an HF checkpoint holds (no quantized engine yet)."""
    return 1 <= n <= len(rec.stages) and rec.stages[n - 1][0] in TORCH_STAGES and \
        all(kind in TORCH_STAGES for kind, _ in rec.stages[:n])


def checkpoint_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over the tensors (name, dtype, shape, bytes) of an HF checkpoint: the same weights give the same
    fingerprint wherever the directory lives or however the file was written."""
    import hashlib

    from safetensors.numpy import load_file

    files = sorted(Path(model_dir).glob("model*.safetensors"))
    h = hashlib.sha256()
    if not files:  # a checkpoint in another container (pytorch_model.bin): the bytes of its weight files
        for f in sorted(Path(model_dir).glob("*.bin")):
            h.update(f.name.encode() + f.read_bytes())
        return h.hexdigest()
    for f in files:
        for name, t in sorted(load_file(str(f)).items()):
            h.update(f"{name}|{t.dtype}|{t.shape}|".encode())
            h.update(t.tobytes())
    return h.hexdigest()


def _find_resume_point(rec: Recipe, base: str, task: str, out: Path) -> tuple[int, dict[str, Any]]:
    """The last stage checkpoint under `out`.stages made by this recipe's same first stages from the base weights
    with fingerprint `base` (the stage may have run on another machine)."""
    root = stages_dir(out)
    for n in range(len(rec.stages), 0, -1):
        f = root / f"stage-{n}" / _STAGE_FILE
        if not f.is_file():
            continue
        try:
            meta = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        same = (meta.get("base_fingerprint") == base and meta.get("task") == task and meta.get("done") == n
                and _same(meta.get("stages"), rec.to_dict()["stages"][:n]))
        if same:
            return n, meta
    return _finished_output_point(rec, base, task, out)


# stages that leave the HF weights as they were (the quantizers read them; SmoothQuant and QAT change them)
def _keeps_weights(kind: str, opts: Mapping[str, Any]) -> bool:
    return kind == "mixed-precision" or (kind == "quantize" and opts.get("method") in ("ptq", "dynamic")
                                         and opts.get("smoothquant") is None)


def _finished_output_point(rec: Recipe, base: str, task: str, out: Path) -> tuple[int, dict[str, Any]]:
    """A finished run in `out` as a resume point: when its recipe began with this recipe's first n stages
    (training / pruning, no finetune: the teacher is the base) and every later stage of it left the weights as they
    were, `out`/hf holds the weights after stage n, so a recipe that differs only after stage n (another quantize
    stage) need not train again."""
    try:
        summary = json.loads((out / "summary.json").read_text())
        old = summary["recipe"]["stages"]
        # a summary from before fingerprints were recorded: the base weights must still be where that run read them
        recorded = summary.get("base_fingerprint") or checkpoint_fingerprint(summary["base"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, {}
    if recorded != base or summary.get("task") != task or not (out / "hf" / "config.json").is_file():
        return 0, {}
    new = rec.to_dict()["stages"]
    for n in range(min(len(rec.stages), len(summary.get("stages", []))), 0, -1):
        if not _checkpointable(rec, n) or any(kind == "finetune" for kind, _ in rec.stages[:n]):
            continue
        if _same(old[:n], new[:n]) and \
                all(_keeps_weights(*next(iter(stage.items()))) for stage in old[n:]):
            return n, {"checkpoint": str(out / "hf"), "stage_log": summary["stages"][:n],
                       "masks": any(kind == "prune" for kind, _ in rec.stages[:n]), "teacher_stage": None}
    return 0, {}


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (tuples and lists alike, as a round trip through a summary file leaves them)."""
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def run_recipe(recipe: Recipe | str | Path | Mapping[str, Any], model_dir: str | Path, task: str = "wiki-topics",
               out: str | Path | None = None, *, log: Callable[[str], None] | None = print,
               progress: Callable[[str], Callable[[int, int], None]] | None = None, evaluate: bool = True,
               threads: int | None = None, device: str | None = None, stop_after: int | None = None,
               resume: bool = False) -> dict[str, Any]:
    """Run every stage on the checkpoint in `model_dir`; write `out`/hf, `out`/runtime and `out`/summary.json
    when `out` is given. Returns the summary (stages with wall times, runtime accuracy when `evaluate`).

    With `out`, the HF checkpoint after each training / pruning stage is kept in `out`.stages/stage-N (removed
    once `out` is written). `stop_after=N` ends the run there (e.g. train on a GPU machine, then quantize and
    evaluate where the model will run); `resume=True` continues from the last such checkpoint made by the same
    recipe stages on the same base. `device` overrides every stage's training device ("cuda"); it is recorded
    in the stage options."""
    from ..eval import evaluate_task
    from ..runtime.engine import compile_encoder
    from . import pruning, quantization
    from .tasks import calibration_batches, check_task, task_data
    from .training import load_classifier, save_checkpoint

    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    check_task(task)
    if rec.task and rec.task != task:
        raise RecipeError(f"recipe {rec.name!r} is for task {rec.task!r}, not {task!r}")
    if device is not None:
        TrainConfig(device=device)  # validates the name
    if (stop_after is not None or resume) and out is None:
        raise RecipeError("stop_after and resume keep stage checkpoints beside `out`: give an output directory")
    if stop_after is not None and not _checkpointable(rec, stop_after):
        raise RecipeError(f"stop_after={stop_after}: a run can stop after a training or pruning stage that no "
                          f"quantize or mixed-precision stage precedes (stages: {[k for k, _ in rec.stages]})")
    say = log or (lambda s: None)
    t_all = time.perf_counter()
    ckpt_root = stages_dir(out) if out is not None else None
    fingerprint = checkpoint_fingerprint(model_dir) if ckpt_root is not None else None
    done, meta = _find_resume_point(rec, fingerprint, task, Path(out)) if resume else (0, {})
    if done:
        start = Path(meta.get("checkpoint") or ckpt_root / f"stage-{done}")
        say(f"resuming after stage {done} from {start}")
        model, tok = load_classifier(start, task)
        teacher_stage = meta.get("teacher_stage")
        teacher = load_classifier(ckpt_root / f"stage-{teacher_stage}" if teacher_stage else model_dir, task)[0]
        teacher.eval()
    else:
        model, tok = load_classifier(model_dir, task)
        teacher = copy.deepcopy(model).eval()
        teacher_stage = None
    cal = rec.calibration
    batches = calibration_batches(tok, int(cal["samples"]), int(cal["batch_size"]), int(cal["max_length"]),
                                  return_tensors="np")
    train_data: dict[int, Any] = {}

    def data_for(cfg: TrainConfig):
        key = cfg.max_samples or 0
        if key not in train_data:
            train_data[key] = task_data(task, "train", cfg.max_samples)
        return train_data[key]

    masks: dict | None = pruning.current_masks(model) if meta.get("masks") else None
    engine = None
    stage_log = list(meta.get("stage_log", []))
    resumed_seconds = sum(float(s.get("seconds", 0.0)) for s in stage_log)
    qat_params = None
    for i, (kind, opts) in enumerate(rec.stages):
        if i < done:
            continue
        if device is not None and "train" in opts:
            opts = {**opts, "train": {**opts["train"], "device": device}}
        t0 = time.perf_counter()
        label = f"[{i + 1}/{len(rec.stages)}] {kind}"
        say(f"{label} {json.dumps(opts, default=str)}")
        bar = progress(label) if progress else None
        info: dict[str, Any] = {}

        def fit(callbacks=(), opts=opts, bar=bar, masks=masks, teacher=teacher):
            return _fit(model, teacher, tok, masks, opts, callbacks, data_for, say, bar)

        if kind == "finetune":
            info = {k: v for k, v in fit().items() if k != "history"}
            teacher = copy.deepcopy(model).eval()
            teacher_stage = i + 1
        elif kind == "distill":
            info = {k: v for k, v in fit().items() if k != "history"}
        elif kind == "prune":
            if opts["schedule"] == "gradual":
                gp = pruning.GradualPruner(float(opts["sparsity"]), opts["pattern"], start=float(opts.get("start", 0)),
                                           end=float(opts.get("end", 0.7)), every=int(opts.get("every", 10)),
                                           scope=opts.get("scope", "layer"), per_layer=opts.get("per_layer"))
                info = {k: v for k, v in fit(callbacks=[gp]).items() if k != "history"}
            else:
                rep = pruning.prune(model, float(opts["sparsity"]), opts["pattern"], opts["method"],
                                    calibration=batches if opts["method"] == "obs" else None,
                                    scope=opts.get("scope", "layer"), per_layer=opts.get("per_layer"),
                                    progress=bar)
                info = {"overall_sparsity": rep.overall}
                if "train" in opts:  # sparse transfer: fine-tune with this pattern fixed
                    info["train"] = {k: v for k, v in fit(masks=pruning.current_masks(model)).items()
                                     if k != "history"}
            masks = pruning.current_masks(model)
            info["sparsity"] = float(sum(1 - m.mean() for m in masks.values()) / len(masks))
        elif kind in ("prune-ffn", "prune-heads"):
            structured = pruning.prune_ffn_neurons if kind == "prune-ffn" else pruning.prune_heads
            info = structured(model, opts["keep"], calibration=batches)
            info.pop("kept", None)
            masks = None if masks is None else pruning.current_masks(model)
            if "train" in opts:
                info["train"] = {k: v for k, v in fit(masks=masks).items() if k != "history"}
        elif kind == "quantize":
            keep = tuple(opts.get("keep_float", ()))
            scheme_opts = {k: opts[k] for k in ("weights", "weight_symmetric", "activations",
                                                "activation_symmetric") if k in opts}
            if opts["method"] == "dynamic":
                engine = quantization.quantize(model, "int8-dynamic", keep_float=keep, threads=threads,
                                               **scheme_opts)
            elif opts["method"] == "ptq":
                engine = quantization.quantize(model, "int8-static", batches, observer=opts.get("observer", "minmax"),
                                               smoothquant=opts.get("smoothquant"), keep_float=keep, threads=threads,
                                               **scheme_opts)
            else:
                if opts.get("smoothquant") is not None:
                    quantization.smooth_attention_output(model, batches, opts["smoothquant"])
                qat_params = quantization.prepare_qat(model, batches, opts.get("observer", "minmax"), keep,
                                                      threads=threads)
                info = {k: v for k, v in fit().items() if k != "history"}
                engine = quantization.quantize(model, "qat", keep_float=keep, threads=threads)
                quantization.remove_qat(model)
            info["formats"] = dict(sorted(_count(engine.formats).items()))
        elif kind == "mixed-precision":
            split = opts.get("split", "validation")
            n_eval = opts.get("eval_samples", 300)

            def metric(eng, split=split, n_eval=n_eval):
                return evaluate_task(eng, task, split=split, tokenizer=tok, max_samples=n_eval)["accuracy"]

            prev = rec.stages[i - 1][1]
            if prev["method"] == "qat":
                quantization.prepare_qat(model, batches, activation_params=qat_params)
            eng, mp = quantization.mixed_precision(
                model, batches, metric, float(opts["budget"]), observer=prev.get("observer", "minmax"),
                max_float=opts.get("max_float"), threads=threads)
            if prev["method"] == "qat":  # keep QAT's exact params for the layers left in INT8
                eng = compile_encoder(model, quantize="int8-static", activation_params=qat_params,
                                      keep_float=tuple(mp["keep_float"]), threads=threads)
                quantization.remove_qat(model)
            engine = eng
            info = {k: v for k, v in mp.items() if k != "history"}
        info["seconds"] = time.perf_counter() - t0
        stage_log.append({"stage": kind, "options": opts, **info})
        say(f"{label} done in {info['seconds']:.0f}s")
        if ckpt_root is not None and _checkpointable(rec, i + 1):
            stage_meta = {"base": str(model_dir), "base_fingerprint": fingerprint, "task": task, "done": i + 1,
                          "stages": rec.to_dict()["stages"][:i + 1],
                          "stage_log": stage_log, "masks": masks is not None, "teacher_stage": teacher_stage}
            save_checkpoint(model, tok, ckpt_root / f"stage-{i + 1}",
                            {_STAGE_FILE: json.dumps(stage_meta, indent=1, default=str)})
        if stop_after is not None and i + 1 >= stop_after:
            say(f"stopped after stage {i + 1}: resume with the same recipe, base and output and resume=True")
            return {"recipe": rec.to_dict(), "base": str(model_dir), "task": task, "stages": stage_log,
                    "stopped_after": i + 1, "checkpoint": str(ckpt_root / f"stage-{i + 1}"),
                    "compress_seconds": time.perf_counter() - t_all + resumed_seconds}
    if engine is None:
        engine = compile_encoder(model, threads=threads)
    engine.tokenizer_path = Path(model_dir) if engine.tokenizer_path is None else engine.tokenizer_path
    summary: dict[str, Any] = {"recipe": rec.to_dict(), "base": str(model_dir), "task": task, "stages": stage_log,
                               "base_fingerprint": fingerprint,
                               "linear_formats": _count(engine.formats),
                               "sparsity": pruning.sparsity_report(model)}
    summary["compress_seconds"] = time.perf_counter() - t_all + resumed_seconds
    if done:
        summary["resumed_after_stage"] = done
    if evaluate:
        res = evaluate_task(engine, task, split=rec.eval["split"], tokenizer=tok, max_samples=rec.eval["max_samples"])
        summary["eval"] = {"split": rec.eval["split"], **res}
        say(f"runtime {rec.eval['split']} accuracy {100 * res['accuracy']:.2f}%  macro-F1 {100 * res['macro_f1']:.2f}%"
            f"  (n={res['n']})")
    summary["engine"] = engine
    if out is not None:
        manifest = {k: v for k, v in summary.items() if k not in ("engine", "sparsity")}
        _write_outputs(Path(out), model, tok, engine, manifest)
        if ckpt_root is not None and ckpt_root.exists():
            shutil.rmtree(ckpt_root, ignore_errors=True)
    return summary


def _fit(model: Any, teacher: Any, tok: Any, masks: Mapping | None, opts: Mapping[str, Any], callbacks: Any,
         data_for: Callable, say: Callable, bar: Any) -> dict[str, Any]:
    """One training run of a stage: plain or distilled, keeping the current sparsity pattern fixed unless the
    stage's own gradual pruner owns the masks."""
    from . import pruning
    from .distill import distill
    from .training import train

    cfg = TrainConfig(**opts.get("train", {}))
    cbs = list(callbacks)
    if masks is not None and not any(isinstance(c, pruning.GradualPruner) for c in cbs):
        cbs.append(pruning.FixedMasks(masks))
    if "distill" in opts:
        return distill(model, teacher, tok, data_for(cfg), cfg, DistillConfig(**opts["distill"]), callbacks=cbs,
                       log=say, progress=bar)
    return train(model, tok, data_for(cfg), cfg, callbacks=cbs, log=say, progress=bar)


def _count(formats: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in formats.values():
        out[f] = out.get(f, 0) + 1
    return out
