"""Recipes: validation errors for bad keys / impossible targets / stage order, and a small end-to-end pipeline
(a 2-layer model: prune + fine-tune with fixed masks + quantize + compile + run + save) through the CLI."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("yaml")

from tiny_models import tiny_dir  # noqa: E402, F401

from trimformer.compress.recipes import RecipeError, load_recipe, validate_recipe  # noqa: E402


def _doc(*stages, **top):
    return {"name": "t", "stages": list(stages), **top}


@pytest.mark.parametrize("doc, match", [
    (_doc({"prune": {"sparsity": 0.5, "patern": "block"}}), r"unknown key\(s\) \['patern'\]"),
    (_doc({"prunee": {}}), "unknown stage 'prunee'"),
    (_doc({"prune": {"sparsity": 0.8, "pattern": "2:4"}}), "2:4 fixes the sparsity at 0.50"),
    (_doc({"prune": {"sparsity": 1.2}}), "sparsity must be a number in"),
    (_doc({"prune": {"pattern": "block"}}), "needs 'sparsity'"),
    (_doc({"prune": {"sparsity": 0.8, "schedule": "gradual"}}), "needs a 'train'"),
    (_doc({"prune": {"sparsity": 0.8, "schedule": "gradual", "method": "obs", "train": {}}}), "magnitude-based"),
    (_doc({"prune": {"sparsity": 0.5, "every": 3}}), "only applies to schedule: gradual"),
    (_doc({"quantize": {}}, {"prune": {"sparsity": 0.5}}), "comes after 'quantize'"),
    (_doc({"mixed-precision": {"budget": 0.01}}), "must directly follow a static 'quantize'"),
    (_doc({"quantize": {"weights": "per-tensor"}}), "cannot run weights='per-tensor'"),
    (_doc({"quantize": {"observer": "kl"}}), "observer must be one of"),
    (_doc({"quantize": {"method": "qat"}}), "needs a 'train'"),
    (_doc({"finetune": {"train": {"epochs": 1, "lr_typo": 1}}}), r"unknown key\(s\) \['lr_typo'\]"),
    (_doc({"finetune": {"train": {"epochs": 0}}}), "epochs must be > 0"),
    (_doc({"distill": {"train": {}, "distill": {"temperature": -1}}}), "temperature must be > 0"),
    (_doc({"prune-heads": {"keep": 0}}), "positive head count"),
    (_doc({"prune-heads": {"keep": 0.5, "sparsity": 0.5}}), r"unknown key\(s\) \['sparsity'\]"),
    ({"name": "t", "stages": [], "extra": 1}, r"unknown key\(s\) \['extra'\]"),
    ({"name": "t", "stages": {"prune": {}}}, "must be a list"),
])
def test_recipe_validation_errors(doc, match):
    with pytest.raises(RecipeError, match=match):
        validate_recipe(doc)


def test_example_recipes_validate():
    from pathlib import Path

    files = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))
    assert len(files) >= 6
    for f in files:
        rec = load_recipe(f)
        assert rec.name == f.stem


def test_pipeline_end_to_end_cli(tiny_dir, tmp_path):  # noqa: F811
    import yaml

    import trimformer as tf
    from trimformer.cli.main import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "e2e", "calibration": {"samples": 16, "batch_size": 8, "max_length": 32},
        "eval": {"max_samples": 24},
        "stages": [{"prune": {"method": "obs", "sparsity": 0.75, "pattern": "block",
                              "train": {"epochs": 1, "max_samples": 16, "batch_size": 8, "max_length": 32,
                                        "threads": 1}}},
                   {"quantize": {"method": "ptq", "observer": "entropy"}}]}))
    out = tmp_path / "out"
    assert main(["compress", "--recipe", str(recipe), "--model", str(tiny_dir), "--out", str(out), "--json",
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["prune", "quantize"]
    assert summary["eval"]["n"] == 24 and 0 <= summary["eval"]["accuracy"] <= 1
    eng = tf.load(out / "runtime")
    assert eng.quantize == "int8-static"
    ids = np.array([[101, 2023, 2003, 102]])
    assert eng.run(ids)["logits"].shape == (1, 11)
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(str(out / "hf"))
    w = hf.bert.encoder.layer[0].intermediate.dense.weight.detach().numpy()
    assert abs((w == 0).mean() - 0.75) < 0.02  # the pattern survived the fine-tuning of the prune stage
    assert (out / "hf" / "trimformer_compression.json").is_file()
    assert main(["eval", "--task", "wiki-topics", str(out / "runtime"), "--json", "--max-samples", "24"]) == 0


def test_head_pruning_recipe_runs(tiny_dir, tmp_path):  # noqa: F811
    """prune-heads (no fine-tune) then dynamic INT8: the runtime model has 2 of 4 heads and still runs."""
    from trimformer.compress.recipes import run_recipe

    rec = validate_recipe({"name": "heads", "calibration": {"samples": 8, "batch_size": 4, "max_length": 32},
                           "eval": {"max_samples": 8},
                           "stages": [{"prune-heads": {"keep": 2}}, {"quantize": {"method": "dynamic"}}]})
    import trimformer as tf

    run_recipe(rec, tiny_dir, out=tmp_path / "out", log=None)
    eng = tf.load(tmp_path / "out" / "runtime")
    assert eng.spec.heads == 2 and eng.spec.head_dim == 8
    assert eng.run(np.array([[101, 2023, 2003, 102]]))["logits"].shape == (1, 11)
    cfg = json.loads((tmp_path / "out" / "hf" / "config.json").read_text())
    assert {k: len(v) for k, v in cfg["pruned_heads"].items()} == {"0": 2, "1": 2}


def _two_stage_recipe():
    return validate_recipe({
        "name": "stop", "calibration": {"samples": 8, "batch_size": 4, "max_length": 32},
        "eval": {"max_samples": 8},
        "stages": [{"prune": {"method": "magnitude", "schedule": "gradual", "sparsity": 0.75, "pattern": "block",
                              "every": 1, "train": {"epochs": 1, "max_samples": 8, "batch_size": 4,
                                                     "max_length": 32, "threads": 1}}},
                   {"quantize": {"method": "ptq"}}]})


def test_stop_after_then_resume_equals_one_run(tiny_dir, tmp_path):  # noqa: F811
    """A run stopped after its training stage (as on a GPU machine) and resumed elsewhere gives the same
    model as one uninterrupted run; the resumed summary keeps the first stage's log and the checkpoints go."""
    from trimformer.compress.recipes import run_recipe, stages_dir

    rec = _two_stage_recipe()
    whole = run_recipe(rec, tiny_dir, out=tmp_path / "whole", log=None)
    assert not stages_dir(tmp_path / "whole").exists()
    part = run_recipe(rec, tiny_dir, out=tmp_path / "split", log=None, stop_after=1)
    assert part["stopped_after"] == 1 and not (tmp_path / "split").exists()
    ckpt = stages_dir(tmp_path / "split") / "stage-1"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "trimformer_stage.json").is_file()
    logs = []
    rest = run_recipe(rec, tiny_dir, out=tmp_path / "split", log=logs.append, resume=True)
    assert rest["resumed_after_stage"] == 1 and any("resuming after stage 1" in m for m in logs)
    assert [s["stage"] for s in rest["stages"]] == ["prune", "quantize"]
    assert rest["stages"][0]["seconds"] == part["stages"][0]["seconds"]
    assert not stages_dir(tmp_path / "split").exists()
    ids = np.array([[101, 2023, 2003, 102, 7, 9]])
    np.testing.assert_array_equal(whole["engine"].run(ids)["logits"], rest["engine"].run(ids)["logits"])
    assert rest["eval"]["accuracy"] == whole["eval"]["accuracy"]


def test_resume_ignores_checkpoints_of_other_recipes(tiny_dir, tmp_path):  # noqa: F811
    from trimformer.compress.recipes import run_recipe

    rec = _two_stage_recipe()
    run_recipe(rec, tiny_dir, out=tmp_path / "o", log=None, stop_after=1)
    other = validate_recipe({**rec.to_dict(), "stages": [
        {"prune": {**rec.stages[0][1], "sparsity": 0.5}}, {"quantize": {"method": "ptq"}}]})
    logs = []
    res = run_recipe(other, tiny_dir, out=tmp_path / "o", log=logs.append, resume=True, evaluate=False)
    assert "resumed_after_stage" not in res and not any("resuming" in m for m in logs)
    assert abs(res["stages"][0]["sparsity"] - 0.5) < 0.05


def test_resume_from_finished_output_requantizes_without_training(tiny_dir, tmp_path):  # noqa: F811
    """A finished run whose later stages left the weights alone is a resume point for a recipe that differs only
    in its quantize stage: the prune stage is not run again, and the result equals one uninterrupted run."""
    from trimformer.compress.recipes import run_recipe

    rec = _two_stage_recipe()
    run_recipe(rec, tiny_dir, out=tmp_path / "o", log=None, evaluate=False)
    first = json.loads((tmp_path / "o" / "summary.json").read_text())
    requant = validate_recipe({**rec.to_dict(), "stages": [
        rec.to_dict()["stages"][0], {"quantize": {"method": "ptq", "observer": "mse", "smoothquant": 0.5}}]})
    logs = []
    res = run_recipe(requant, tiny_dir, out=tmp_path / "o", log=logs.append, resume=True, evaluate=False)
    assert res["resumed_after_stage"] == 1 and any("resuming after stage 1" in m for m in logs)
    assert res["stages"][0]["seconds"] == first["stages"][0]["seconds"]
    whole = run_recipe(requant, tiny_dir, out=tmp_path / "w", log=None, evaluate=False)
    ids = np.array([[101, 2023, 2003, 102, 7, 9]])
    np.testing.assert_array_equal(whole["engine"].run(ids)["logits"], res["engine"].run(ids)["logits"])
    # that output's weights were folded by SmoothQuant: it is no resume point for a third quantize stage
    logs = []
    res = run_recipe(rec, tiny_dir, out=tmp_path / "o", log=logs.append, resume=True, evaluate=False)
    assert "resumed_after_stage" not in res and not any("resuming" in m for m in logs)


@pytest.mark.parametrize("kwargs, match", [
    ({"stop_after": 2}, "stop after a training or pruning stage"),
    ({"stop_after": 0}, "stop after a training or pruning stage"),
    ({"device": "gpu0"}, "device must be"),
])
def test_run_recipe_argument_errors(tiny_dir, tmp_path, kwargs, match):  # noqa: F811
    from trimformer.compress.recipes import run_recipe

    with pytest.raises((RecipeError, ValueError), match=match):
        run_recipe(_two_stage_recipe(), tiny_dir, out=tmp_path / "o", log=None, **kwargs)
    with pytest.raises(RecipeError, match="give an output directory"):
        run_recipe(_two_stage_recipe(), tiny_dir, log=None, stop_after=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_cuda_device_without_cuda_fails_clearly(tiny_dir, tmp_path):  # noqa: F811
    from trimformer.compress.recipes import run_recipe

    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        run_recipe(_two_stage_recipe(), tiny_dir, out=tmp_path / "o", log=None, device="cuda")
    assert not (tmp_path / "o").exists()


def test_fingerprint_of_a_bin_checkpoint(tiny_dir, tmp_path):  # noqa: F811
    """A checkpoint saved as pytorch_model.bin still runs a recipe with an output (its stage checkpoints are keyed
    by a hash of the .bin bytes)."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    from trimformer.compress.recipes import checkpoint_fingerprint

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_dir))
    model.save_pretrained(str(tmp_path / "bin"))  # transformers 5 writes safetensors only: make the .bin by hand
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    for f in tiny_dir.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, tmp_path / "bin" / f.name)
    assert not list((tmp_path / "bin").glob("*.safetensors"))
    fp = checkpoint_fingerprint(tmp_path / "bin")
    assert fp == checkpoint_fingerprint(tmp_path / "bin") and fp != checkpoint_fingerprint(tiny_dir)
