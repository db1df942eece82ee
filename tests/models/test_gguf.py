"""GGUF loading on the real SmolLM2 asset: block decoding against gguf's reference dequantization for every type in
the shipped file, the exact (no re-quantization) runtime path, parity with transformers' GGUF loader, and clear
errors for damaged files."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from trimformer import assets  # noqa: E402
from trimformer.formats.registry import pack_kbit, unpack_kbit  # noqa: E402
from trimformer.models.decoder import GGUFError, gguf_tensor_f32, load_gguf, open_gguf  # noqa: E402
from trimformer.runtime.decoder import _gguf_block_codes, compile_decoder  # noqa: E402


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return assets.smollm2_gguf_path()
    except assets.AssetNotFoundError as e:  # pragma: no cover - assets are installed by `make setup`
        pytest.skip(str(e))


def test_block_codes_equal_gguf_reference_for_every_type(gguf_path):
    reader = open_gguf(gguf_path)
    seen = set()
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind in seen:
            continue
        seen.add(kind)
        ref = gguf_tensor_f32(t)
        np.testing.assert_array_equal(ref, gguf.quants.dequantize(t.data, t.tensor_type).reshape(ref.shape))
        enc = _gguf_block_codes(t)
        if kind in ("F32", "F16"):
            assert enc is None
            continue
        assert enc is not None, kind
        codes, scales, offsets, type_name = enc
        np.testing.assert_array_equal(unpack_kbit(pack_kbit(codes, scales, offsets, type_name, 32)), ref)
    assert {"Q4_1", "Q8_0", "F32"} <= seen


def test_exact_gguf_weights_equal_dequantized_fp32_and_transformers(gguf_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    exact = compile_decoder(gguf_path, weights="gguf", threads=2)
    assert "emb.tok" not in exact.tensors  # the tied Q8_0 embedding is stored once
    dense = compile_decoder(gguf_path, weights="f32", threads=2)
    ids = np.array([[1, 504, 3575, 282, 4649, 314, 2, 17, 900, 4000]])
    a, b = exact.logits(ids), dense.logits(ids)
    np.testing.assert_array_equal(a, b)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                              dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    assert np.abs(b - ref).max() / np.abs(ref).max() < 1e-4


def test_gguf_tokenizer_matches_transformers(gguf_path):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    eng = compile_decoder(gguf_path, weights="gguf", threads=1)
    hf = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    text = assets.text_slice("perplexity", max_chars=3000) + " 12345 <|im_start|>user hé"
    assert eng.tokenizer.encode(text).ids == hf(text)["input_ids"]


def test_damaged_gguf_files_raise_clear_errors(gguf_path, tmp_path):
    data = gguf_path.read_bytes()
    trunc = tmp_path / "truncated.gguf"
    trunc.write_bytes(data[: len(data) // 3])
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    for p in (trunc, junk, empty):
        with pytest.raises(GGUFError):
            load_gguf(p)
    with pytest.raises(FileNotFoundError):
        load_gguf(tmp_path / "missing.gguf")
