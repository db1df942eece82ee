"""The `trimformer` command line: compile -> info -> run -> bench, JSON output, one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trimformer import assets
from trimformer.cli.main import CLIError, main


@pytest.fixture(scope="module")
def compiled(minilm, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "minilm-int8"
    assert main(["compile", str(minilm), "--out", str(out), "--quantize", "int8-static",
                 "--calibration-samples", "8", "--threads", "1", "--quiet"]) == 0
    return out


def test_linear_table_keeps_names_whole_on_a_narrow_console(compiled):
    # rich shortens the widest columns of a table wider than the console; it cut layer names
    # ("layers.0.attn_o…") where the kernel column was long
    import io

    from rich.console import Console

    import trimformer as tf
    from trimformer.cli.main import _linear_table

    engine = tf.load(compiled)
    buf = io.StringIO()
    Console(file=buf, width=70, color_system=None).print(_linear_table(engine))
    lines = buf.getvalue().splitlines()
    for name, fmt in engine.formats.items():
        row = next(line for line in lines if line.startswith(f"│ {name} "))
        assert f" {fmt} " in row, (name, fmt, row)


def test_compile_info_run_bench(minilm, compiled, capsys, tmp_path):
    assert (compiled / "model.json").is_file() and (compiled / "tokenizer.json").is_file()
    meta = json.loads((compiled / "model.json").read_text())
    assert meta["quantize"] == "int8-static"
    # dense weights: dense INT8, or where the level multiplies input pairs (avx2) the 4x4 block kernel with every
    # block kept wherever the compile-time timing found it faster
    from trimformer import _core

    formats = meta["linear_formats"].values()
    assert set(formats) <= ({"int8", "block-int8"} if _core.bsr_pair_kernel("") else {"int8"})
    counts = {f: list(formats).count(f) for f in set(formats)}
    capsys.readouterr()

    assert main(["info", str(compiled)]) == 0
    out = capsys.readouterr().out
    assert "int8-static" in out and "bert" in out and all(f"{c} {f}" in out for f, c in counts.items())

    assert main(["info", str(compiled), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "trimformer" and info["spec"]["layers"] == 6 and info["formats"] == counts
    assert sum(counts.values()) == 24
    assert info["isa"] and info["file_bytes"] > info["linear_bytes"] > 0

    assert main(["run", str(compiled), "--text", "A man is eating food.", "--text", "Hello", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["task"] == "sentence-embedding" and len(run["results"]) == 2
    vec = np.asarray(run["results"][0]["result"])
    assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-4
    assert main(["run", str(compiled), "--text", "A man is eating food."]) == 0
    assert "A man is eating food." in capsys.readouterr().out

    assert main(["bench", str(compiled), "--seq", "16", "--batch", "2", "--iters", "2", "--warmup", "1",
                 "--threads", "1", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["seq"] == 16 and bench["batch"] == 2 and bench["median_ms"] > 0 and bench["p90_ms"] > 0
    assert bench["tokens_per_s"] > 0 and "bench/bench_dense.py" in bench["note"]
    assert main(["bench", str(compiled), "--seq", "8", "--iters", "2", "--warmup", "0", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "median ms" in out and "bench/bench_dense.py" in out

    # verbose compile prints the per-Linear table; HF checkpoints also work directly with info
    assert main(["compile", str(minilm), "--out", str(tmp_path / "dyn"), "--quantize", "int8-dynamic",
                 "--keep-float", ".ffn2", "-v", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "layers.5.ffn2" in out and "f32" in out and "int8" in out
    assert main(["info", str(minilm), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "huggingface-checkpoint"
    # bf16 weights from the CLI too (the Python API's quantize="bf16")
    assert main(["compile", str(minilm), "--out", str(tmp_path / "bf16"), "--quantize", "bf16", "--threads", "1"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "bf16" / "model.json").read_text())["quantize"] == "bf16"
    # a bad thread count is named as such, before the model is read
    assert main(["bench", str(compiled), "--threads", "-2"]) != 0
    assert "threads must be an integer" in capsys.readouterr().err


def test_run_text_classification(minilm, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64, num_labels=2,
                                  initializer_range=0.2)
    model = transformers.BertForSequenceClassification(cfg).eval()
    src = tmp_path / "hf"
    model.save_pretrained(str(src))
    shutil.copy(minilm / "tokenizer.json", src / "tokenizer.json")
    out = tmp_path / "clf"
    assert main(["compile", str(src), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    texts = ["great movie", "a rather long and boring sentence about nothing at all"]
    assert main(["run", str(out), "--text", texts[0], "--text", texts[1], "--top-k", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["task"] == "text-classification"
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.no_padding()
    for text, r in zip(texts, res["results"], strict=True):
        enc = tok.encode(text)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc.ids])).logits[0]
        probs = torch.softmax(logits, -1).numpy()
        labels = [d["label"] for d in r["result"]]
        assert labels[0] == model.config.id2label[int(probs.argmax())]
        assert abs(r["result"][0]["score"] - probs.max()) < 1e-4
    assert main(["run", str(out), "--text", "a", "--text-pair", "b"]) == 0
    assert "text-classification" in capsys.readouterr().out
    assert main(["run", str(out), "--text", "a", "--task", "question-answering"]) == 2
    assert "sequence-classification" in capsys.readouterr().err


def test_errors_exit_2(tmp_path, capsys, compiled):
    missing = tmp_path / "nope"
    for argv in (["info", str(missing)], ["run", str(missing), "--text", "x"], ["bench", str(missing)],
                 ["compile", str(missing), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("trimformer: error:") and err.count("\n") == 1 and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == 2
    assert "config.json" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.json").write_text("{not json")
    assert main(["info", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["bench", str(compiled), "--seq", "100000"]) == 2
    assert main(["compile", str(compiled), "--out", str(tmp_path / "x")]) == 2
    assert "already" in capsys.readouterr().err
    with pytest.raises(ValueError, match="corrupt"):  # --debug re-raises, before or after the subcommand
        main(["--debug", "info", str(bad)])
    with pytest.raises(CLIError):
        main(["info", str(missing), "--debug"])
    with pytest.raises(SystemExit) as e:
        main(["compile", str(missing)])  # --out is required: argparse exits 2
    assert e.value.code == 2


def test_python_dash_m(compiled):
    env = dict(os.environ, TRIMFORMER_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "trimformer", "info", str(compiled)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "int8-static" in p.stdout
    p = subprocess.run([sys.executable, "-m", "trimformer", "info", str(compiled / "missing")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("trimformer: error:") and "Traceback" not in p.stderr


def test_eval_perplexity_and_generate_on_a_tiny_decoder(tmp_path, capsys, monkeypatch):
    """`trimformer eval --perplexity` and `trimformer generate` on a tiny random Llama with a real tokenizer."""
    import json as _json

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from trimformer.cli.main import main
    from trimformer.models.decoder import gguf_tokenizer_json

    tok_json = gguf_tokenizer_json(assets.smollm2_gguf_path())
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                                   tie_word_embeddings=True)
    d = tmp_path / "tiny"
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    (d / "tokenizer.json").write_text(tok_json)
    assert main(["eval", "--perplexity", str(d), "--json", "--perplexity-tokens", "600"]) == 0
    out = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["tokens"] == 599 and out["perplexity"] > 1
    assert main(["generate", str(d), "--prompt", "Hello", "-n", "5", "--weights", "int4-g32"]) == 0
    assert capsys.readouterr().out.startswith("Hello")
    assert main(["generate", str(d), "--prompt", "Hello", "-n", "0"]) == 0
    assert capsys.readouterr().out == "Hello\n"
    # a refused request prints nothing on stdout (the prompt was echoed before the check)
    assert main(["generate", str(d), "--prompt", "Hello", "-n", "-3"]) != 0
    captured = capsys.readouterr()
    assert captured.out == "" and "max_new_tokens" in captured.err
