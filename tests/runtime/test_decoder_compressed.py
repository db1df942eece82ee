"""Compressed-LLM checkpoints (trimformer quantize-llm / prune-llm) run by the runtime with their exact codes:
the runtime's logits equal the checkpoint's own float model (dequantized weights; W8A8 emulated per token)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from trimformer.compress.llm import load_compressed_llm, prune_llm, quantize_llm  # noqa: E402
from trimformer.runtime.decoder import compile_decoder  # noqa: E402

VOCAB = 128


def tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(0)
    return [rng.integers(0, VOCAB, 32) for _ in range(4)]


def _torch_logits(path, ids):
    model, _ = load_compressed_llm(path)
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("fmt", ["int4-g32", "nf4-g16", "int3-g32", "fp8-e4m3"])
def test_gptq_checkpoint_runs_with_its_codes(fmt, calib, tmp_path):
    out = tmp_path / fmt
    quantize_llm(tiny_llama(), method="gptq", format=fmt, calibration=calib, out=out, progress=False)
    eng = compile_decoder(out, threads=2)
    kind = fmt.split("-g")[0]
    assert any(f.startswith(kind) for f in eng.formats.values())
    ids = np.random.default_rng(3).integers(0, VOCAB, size=(1, 20))
    ref = _torch_logits(out, ids)
    assert np.abs(eng.logits(ids) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_ragged_groups_checkpoint(calib, tmp_path):
    # 64 inputs at group 48: one group of 48 and one of 16 (strict: no fallback to a divisor)
    out = tmp_path / "ragged"
    quantize_llm(tiny_llama(), method="rtn", format="int4-g48", out=out, progress=False)
    eng = compile_decoder(out, threads=1)
    ids = np.arange(1, 17)[None, :]
    ref = _torch_logits(out, ids)
    assert np.abs(eng.logits(ids) - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("method", ["smoothquant", "llm-int8"])
def test_w8a8_checkpoints(method, calib, tmp_path):
    out = tmp_path / method
    quantize_llm(tiny_llama(), method=method, calibration=calib, out=out, progress=False, threshold=1.0)
    eng = compile_decoder(out, threads=2)
    assert set(eng.formats.values()) - {"f32"} <= {"w8a8", "llm-int8"}
    if method == "llm-int8":
        assert "llm-int8" in eng.formats.values()
    ids = np.random.default_rng(4).integers(0, VOCAB, size=(1, 24))
    ref = _torch_logits(out, ids)  # symmetric per-token fake quantization; the runtime uses asymmetric u8
    got = eng.logits(ids)
    assert np.abs(got - ref).max() <= 3e-2 * np.abs(ref).max()


def test_sparsegpt_joint_int4_keeps_zeros(calib, tmp_path):
    out = tmp_path / "sp"
    prune_llm(tiny_llama(), method="sparsegpt", sparsity="2:4", quantize="int4-g32", calibration=calib, out=out,
              progress=False)
    eng = compile_decoder(out, threads=1)
    from trimformer.formats.registry import unpack_kbit

    st = {k[len("layers.0.qkv"):]: v for k, v in eng.tensors.items() if k.startswith("layers.0.qkv.")}
    w = unpack_kbit(st)
    assert (w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max() <= 2  # 2:4 survives quantization
    ids = np.arange(3, 23)[None, :]
    ref = _torch_logits(out, ids)
    assert np.abs(eng.logits(ids) - ref).max() <= 1e-4 * np.abs(ref).max()
