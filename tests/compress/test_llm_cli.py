"""`trimformer quantize-llm` / `prune-llm` on a tiny random Llama checkpoint directory; one-line errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
from trimformer.cli.main import main  # noqa: E402
from trimformer.compress.llm import read_compression  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    d = tmp_path_factory.mktemp("llm") / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def test_quantize_and_prune_cli(tiny_dir, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize-llm", "--method", "rtn", "--format", "nf4-g32", "--model", str(tiny_dir),
                 "--out", str(out), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "rtn" and summary["linears"] == 14
    meta = read_compression(out)
    assert {r["format"] for r in meta["linears"].values()} == {"nf4"}
    # exists without --force: refused; with --force: replaced
    assert main(["quantize-llm", "--method", "rtn", "--format", "int8", "--model", str(tiny_dir),
                 "--out", str(out), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["quantize-llm", "--method", "rtn", "--format", "int8", "--model", str(tiny_dir),
                 "--out", str(out), "--quiet", "--force"]) == 0
    assert {r["format"] for r in read_compression(out)["linears"].values()} == {"int8"}
    assert main(["prune-llm", "--method", "magnitude", "--sparsity", "2:4", "--quantize", "int4-g32",
                 "--model", str(tiny_dir), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    meta = read_compression(tmp_path / "p")
    assert {(r["pattern"], r["format"]) for r in meta["linears"].values()} == {("2:4", "int4")}
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic writer leaves no temp dirs


@pytest.mark.parametrize("argv,message", [
    (["quantize-llm", "--method", "rtn", "--format", "int5"], "unknown weight format"),
    (["quantize-llm", "--method", "gptq", "--format", "int4-g32"], "tokenizer"),
    (["quantize-llm", "--method", "rtn", "--format", "int4-g128", "--strict-groups"], "multiple of group size"),
    (["prune-llm", "--method", "magnitude", "--sparsity", "0.5", "--quantize", "int4-asym-g32"], "exact zero"),
    (["prune-llm", "--method", "magnitude", "--sparsity", "abc"], "sparsity"),
    (["quantize-llm", "--method", "rtn", "--samples", "0"], "--samples"),
    (["quantize-llm", "--method", "rtn", "--tune-steps", "-1"], "--tune-steps"),
    (["quantize-llm", "--method", "rtn", "--format", "int4-g32", "--tune-steps", "5"], "follows GPTQ"),
    (["prune-llm", "--method", "magnitude", "--sparsity", "0.5", "--tune-steps", "5"], "follows SparseGPT"),
    (["quantize-llm", "--method", "rtn", "--e2e-steps", "-1"], "--e2e-steps"),
    (["quantize-llm", "--method", "rtn", "--e2e-steps", "4", "--e2e-samples", "-2"], "--e2e-samples"),
    (["quantize-llm", "--method", "smoothquant", "--e2e-steps", "5"], "e2e (end-to-end distillation)"),
    (["prune-llm", "--method", "magnitude", "--sparsity", "0.5", "--e2e-steps", "5"], "tokenizer"),
])
def test_cli_errors(tiny_dir, tmp_path, capsys, argv, message):
    assert main([*argv, "--model", str(tiny_dir), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("trimformer: error:") and message in last


def test_missing_model(tmp_path, capsys):
    assert main(["quantize-llm", "--method", "rtn", "--model", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_mse_and_true_sequential_flags(tiny_dir, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["quantize-llm", "--method", "rtn", "--format", "int4-asym-g32", "--mse", "--no-true-sequential",
                 "--model", str(tiny_dir), "--out", str(out), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["mse"] is True
    assert read_compression(out)["parameters"]["mse"] is True
    assert main(["prune-llm", "--method", "magnitude", "--sparsity", "0.5", "--quantize", "int4-g32", "--mse",
                 "--model", str(tiny_dir), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert read_compression(tmp_path / "p")["parameters"]["mse"] is True
