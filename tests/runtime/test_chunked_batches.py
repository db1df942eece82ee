"""A batch's sequences may pass the layer stack in groups of about chunk_rows tokens (runtime/engine.py
chunk_rows_for), by the whole thread team (batches under two sequences per thread) or side by side, one thread per
group with its own workspace (larger batches): every op is row-wise or per-sequence, so the outputs must equal the
whole-batch pass exactly, for every weight format, ISA level, padding mask and group size (including a partial
last group)."""

import numpy as np
import pytest

from trimformer.compress import prune_magnitude
from trimformer.runtime.engine import CHUNK_ROWS, chunk_rows_for, compile_encoder

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _model(seed=0, positions=64):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, vocab_size=100,
        max_position_embeddings=positions, num_labels=3)).eval()


@pytest.mark.parametrize("quantize,sparsity,pattern", [
    (None, 0.0, "block"), (None, 0.9, "unstructured"), ("int8-dynamic", 0.0, "block"),
    ("int8-static", 0.9, "block"), ("int8-static", 0.5, "2:4")])
def test_grouped_sequences_equal_the_whole_batch(isa, rng, monkeypatch, quantize, sparsity, pattern):
    model = _model()
    if sparsity:
        prune_magnitude(model, sparsity, pattern)
    ids = rng.integers(1, 100, (7, 23))
    mask = np.ones_like(ids)
    mask[2, 15:] = 0
    mask[6, 4:] = 0
    calib = [{"input_ids": ids[:2], "attention_mask": mask[:2]}]
    outs = {}
    for rows in (0, 23, 50, 1000):  # whole batch; one sequence per group; 2 per group, 1 left; all in one group
        monkeypatch.setenv("TRIMFORMER_CHUNK_ROWS", str(rows))
        eng = compile_encoder(model, quantize=quantize, calibration=calib if quantize == "int8-static" else None,
                              isa=isa, threads=2, sparse=None if sparsity else False)
        assert eng.chunk_rows == rows
        outs[rows] = eng.run(ids, mask), eng.run(ids[:3], mask[:3])  # 7 sequences: side by side; 3: the team
    for rows in (23, 50, 1000):
        for k in ("last_hidden_state", "logits"):
            np.testing.assert_array_equal(outs[rows][0][k], outs[0][0][k])
            np.testing.assert_array_equal(outs[rows][1][k], outs[0][1][k])


def test_chunk_rows_choice(monkeypatch):
    from trimformer.runtime import engine

    monkeypatch.delenv("TRIMFORMER_CHUNK_ROWS", raising=False)
    small = {"layers.0.ffn1.weight": np.zeros((1024, 1024), np.int8), "emb.word": np.zeros((30000, 768), np.float32)}
    big = {"layers.0.ffn1.weight": np.zeros((3072, 768), np.float32), "layers.0.ffn2.weight": np.zeros((768, 3072), np.float32),
           "layers.0.qkv.weight": np.zeros((2304, 768), np.float32)}
    for l2, rows in ((2 << 20, CHUNK_ROWS), (None, CHUNK_ROWS), (1 << 20, engine.CHUNK_ROWS_SMALL_L2)):
        monkeypatch.setattr(engine, "l2_bytes_per_core", lambda l2=l2: l2)
        assert chunk_rows_for(small, 1) == rows  # the embeddings do not count; shorter groups on a small L2
        assert chunk_rows_for(big, 1) == 0
    monkeypatch.setenv("TRIMFORMER_CHUNK_ROWS", "-3")
    with pytest.raises(ValueError, match="TRIMFORMER_CHUNK_ROWS"):
        chunk_rows_for(small, 1)


def test_l2_size_from_sysfs(tmp_path):
    from trimformer.runtime import engine

    size = engine.l2_bytes_per_core()
    assert size is None or size >= 64 << 10  # this machine's, where Linux tells it
    cache = tmp_path / "cache"
    for name, level, kind, text in (("index0", 1, "Data", "32K"), ("index1", 1, "Instruction", "32K"),
                                    ("index2", 2, "Unified", "1024K"), ("index3", 3, "Unified", "32768K")):
        (cache / name).mkdir(parents=True)
        (cache / name / "level").write_text(f"{level}\n")
        (cache / name / "type").write_text(f"{kind}\n")
        (cache / name / "size").write_text(f"{text}\n")
    assert engine.l2_bytes_per_core(cache) == 1 << 20
    (cache / "index2" / "size").write_text("2M\n")
    assert engine.l2_bytes_per_core(cache) == 2 << 20
    (cache / "index2" / "size").write_text("garbage\n")
    assert engine.l2_bytes_per_core(cache) is None


@pytest.mark.parametrize("quantize,sparsity,pattern", [
    (None, 0.0, "block"), (None, 0.9, "block"), ("int8-dynamic", 0.0, "block"), ("int8-static", 0.9, "block"),
    ("int8-static", 0.9, "unstructured"), ("int8-static", 0.5, "2:4")])
def test_one_region_per_pass_equals_a_region_per_op(isa, rng, monkeypatch, quantize, sparsity, pattern):
    # The team runs a pass in one parallel region, without barriers between block-sparse INT8 Linears that split
    # their tokens alike (37 tokens: column splits; 183: a token split that starts the second thread inside a
    # re-layout tile; 300: whole-tile token splits); TRIMFORMER_REGION_PER_OP=1 opens a region per op. Same bits,
    # on repeated runs too, and with the profiler on (a barrier before each op's lap)
    model = _model()
    if sparsity:
        prune_magnitude(model, sparsity, pattern)
    monkeypatch.setenv("TRIMFORMER_CHUNK_ROWS", "0")  # no side-by-side groups: the team runs every op
    calib = [{"input_ids": rng.integers(1, 100, (2, 23)), "attention_mask": np.ones((2, 23), np.int64)}]
    engines = {}
    for per_op in ("1", "0"):
        monkeypatch.setenv("TRIMFORMER_REGION_PER_OP", per_op)
        engines[per_op] = compile_encoder(model, quantize=quantize, calibration=calib if quantize == "int8-static"
                                          else None, isa=isa, threads=2, sparse=None if sparsity else False)
    for batch, seq in ((1, 37), (3, 61), (5, 60)):
        ids = rng.integers(1, 100, (batch, seq))
        mask = np.ones_like(ids)
        mask[-1, seq // 3:] = 0
        want = engines["1"].run(ids, mask)
        for _ in range(3):
            got = engines["0"].run(ids, mask)
            for k in ("last_hidden_state", "logits"):
                np.testing.assert_array_equal(got[k], want[k])
    native = engines["0"]._native
    native.set_profile(True)
    got = engines["0"].run(ids, mask)
    native.set_profile(False)
    assert {"qkv", "attention", "attn_out", "ffn1", "ffn2"} <= set(native.profile())
    np.testing.assert_array_equal(got["last_hidden_state"], want["last_hidden_state"])


@pytest.mark.parametrize("quantize", ["int8-static", "int8-dynamic"])
@pytest.mark.parametrize("threads", [2, 3])
def test_qkv_split_by_heads_equals_the_token_split(isa, rng, monkeypatch, quantize, threads):
    # A block-sparse QKV under the team splits its output rows by heads (each thread the Q, K and V of the heads its
    # attention runs); TRIMFORMER_QKV_TOKEN_SPLIT=1 splits its tokens as the other Linears do. Same bits, with the
    # token counts of a short split (from 64 per thread) and of whole-tile splits, and a padded last sequence
    model = _model(seed=1, positions=320)
    prune_magnitude(model, 0.9, "block")
    monkeypatch.setenv("TRIMFORMER_CHUNK_ROWS", "0")
    calib = [{"input_ids": rng.integers(1, 100, (2, 23)), "attention_mask": np.ones((2, 23), np.int64)}]
    engines = {}
    for token_split in ("1", "0"):
        monkeypatch.setenv("TRIMFORMER_QKV_TOKEN_SPLIT", token_split)
        engines[token_split] = compile_encoder(model, quantize=quantize, isa=isa, threads=threads, sparse=None,
                                               calibration=calib if quantize == "int8-static" else None)
    assert "bsr-s8" in " ".join(engines["0"].linear_kernels.values())
    for batch, seq in ((1, 200), (2, 97), (1, 300), (1, 37)):
        ids = rng.integers(1, 100, (batch, seq))
        mask = np.ones_like(ids)
        mask[-1, seq // 2:] = 0
        want = engines["1"].run(ids, mask)["last_hidden_state"]
        for _ in range(2):
            np.testing.assert_array_equal(engines["0"].run(ids, mask)["last_hidden_state"], want)


@pytest.mark.parametrize("quantize,pattern", [("int8-static", "block"), ("int8-dynamic", "block"),
                                              ("int8-static", "unstructured")])
@pytest.mark.parametrize("heads,hidden", [(2, 128), (4, 128), (3, 96), (2, 256)])  # head_dim 64, 32, 32; 128
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_qkv_writes_the_int8_attention_operands(isa, rng, monkeypatch, quantize, pattern, heads, hidden, threads):
    # A block-sparse QKV before INT8 attention writes Q's u8 rows and K's packing with their scales itself
    # (Epilogue::qkv_s8, avx512) where seq is a multiple of 64 and head_dim of 16 up to 64, and every call covers
    # whole heads; TRIMFORMER_QKV_S8_OFF=1: the attention quantizes QKV's float rows. Same bits, whole batches and
    # side-by-side groups, padded last sequences; lengths that are no multiple of 64 take the float rows
    from transformers import BertConfig, BertModel

    torch.manual_seed(heads + hidden)
    model = BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
                                 intermediate_size=96, vocab_size=100, max_position_embeddings=320),
                      add_pooling_layer=False).eval()
    prune_magnitude(model, 0.9, pattern)  # unstructured: csr-int8 (gathered quads at avx512)
    calib = [{"input_ids": rng.integers(1, 100, (2, 64)), "attention_mask": np.ones((2, 64), np.int64)}]
    engines = {}
    for off in ("1", "0"):
        monkeypatch.setenv("TRIMFORMER_QKV_S8_OFF", off)
        engines[off] = compile_encoder(model, quantize=quantize, isa=isa, threads=threads, sparse=None,
                                       attention="int8", calibration=calib if quantize == "int8-static" else None)
    assert "bsr-s8" in " ".join(engines["0"].linear_kernels.values())
    d = hidden // heads
    units = hidden // 16  # the team's column split of each of Q, K and V (split_range, 16-row units)
    ends = np.cumsum([units // threads + (i < units % threads) for i in range(threads)]) * 16
    capable = isa == "avx512_vnni" and d <= 64
    fused = capable and (threads == 1 or all(e % d == 0 for e in ends))  # the team's calls too
    for rows in ("0", "128"):  # the whole batch by the team; groups of 2 x 64 or 1 x 128 tokens side by side
        monkeypatch.setenv("TRIMFORMER_CHUNK_ROWS", rows)
        for batch, seq in ((1, 128), (3, 64), (2, 192), (1, 64), (2, 97), (8, 64)):
            ids = rng.integers(1, 100, (batch, seq))
            mask = np.ones_like(ids)
            mask[-1, seq // 3:] = 0
            before = engines["0"]._native.qkv_s8_layers
            want = engines["1"].run(ids, mask)["last_hidden_state"]
            np.testing.assert_array_equal(engines["0"].run(ids, mask)["last_hidden_state"], want,
                                          err_msg=f"{batch} x {seq}, chunk rows {rows}")
            wrote = engines["0"]._native.qkv_s8_layers - before
            assert wrote == 0 or (capable and seq % 64 == 0), (batch, seq, rows, wrote)
            if fused and seq % 64 == 0:
                assert wrote > 0, (batch, seq, rows)
    # (a team's column split of QKV whose shares end inside a head keeps the float rows, 3 heads of 32 on 2 threads;
    # side-by-side groups, each a team of one, write the operands whatever the team's split)
    assert (engines["0"]._native.qkv_s8_layers > 0) == capable
    assert engines["1"]._native.qkv_s8_layers == 0


@pytest.mark.parametrize("quantize,sparsity,attention", [("int8-static", 0.9, "int8"), ("int8-dynamic", 0.0, "int8"),
                                                        (None, 0.9, "f32")])
@pytest.mark.parametrize("threads", [1, 2])
def test_attention_by_query_chunks_equals_whole_heads(isa, rng, monkeypatch, quantize, sparsity, attention, threads):
    # The INT8 and the unfused float attention run a head's query rows a chunk at a time (scores, softmax, P.V:
    # EncoderEngine::attention_rows, whole heads up to seq 221 and 48-row multiples beyond); TRIMFORMER_ATTN_ROWS=N
    # sets the chunk. Rows are independent, so every chunk size gives the same bits: chunks of 1, 17 and 48 rows, the
    # rule (seq 300 and 320: 144-row chunks and a short last one) and whole heads, on QKV's float rows (seq 300) and on
    # the operands a block-sparse QKV writes (seq 320, avx512), with a padded last sequence. (The fused float kernel,
    # avx2 and Zen 4, runs its own tiles.)
    model = _model(seed=3, positions=320)
    if sparsity:
        prune_magnitude(model, sparsity, "block")
    calib = [{"input_ids": rng.integers(1, 100, (2, 64)), "attention_mask": np.ones((2, 64), np.int64)}]
    engines = {}
    for rows in ("100000", "1", "17", "48", "0"):
        monkeypatch.setenv("TRIMFORMER_ATTN_ROWS", rows)
        engines[rows] = compile_encoder(model, quantize=quantize, isa=isa, threads=threads, sparse=None,
                                        attention=attention, calibration=calib if quantize == "int8-static" else None)
    for batch, seq in ((1, 300), (2, 320), (3, 40)):
        ids = rng.integers(1, 100, (batch, seq))
        mask = np.ones_like(ids)
        mask[-1, seq // 3:] = 0
        want = engines["100000"].run(ids, mask)["last_hidden_state"]
        for rows in ("1", "17", "48", "0"):
            np.testing.assert_array_equal(engines[rows].run(ids, mask)["last_hidden_state"], want,
                                          err_msg=f"{batch} x {seq}, {rows}-row chunks")


@pytest.mark.parametrize("threads", [1, 2])
def test_dynamic_fused_relayout_equals_the_u8_rows(isa, rng, monkeypatch, threads):
    # Dynamic INT8 block-sparse inputs are quantized straight into the re-layout where the level can
    # (bsr_quant_rows_pack_at, avx512); TRIMFORMER_DYNAMIC_U8_ROWS=1 quantizes them into u8 rows first, as the
    # other levels do. Same bits, for token counts that end inside a 16-token group and a padded last sequence
    model = _model(seed=2, positions=320)
    prune_magnitude(model, 0.9, "block")
    engines = {}
    for u8_rows in ("1", "0"):
        monkeypatch.setenv("TRIMFORMER_DYNAMIC_U8_ROWS", u8_rows)
        engines[u8_rows] = compile_encoder(model, quantize="int8-dynamic", isa=isa, threads=threads, sparse=None)
    assert "bsr-s8" in " ".join(engines["0"].linear_kernels.values())
    for batch, seq in ((1, 200), (3, 97), (1, 37)):
        ids = rng.integers(1, 100, (batch, seq))
        mask = np.ones_like(ids)
        mask[-1, seq // 2:] = 0
        np.testing.assert_array_equal(engines["0"].run(ids, mask)["last_hidden_state"],
                                      engines["1"].run(ids, mask)["last_hidden_state"])
