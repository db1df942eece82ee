"""trimformer.pipelines against the equivalent transformers computation, on tiny random models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402

import trimformer as tf  # noqa: E402
from trimformer.pipelines import (  # noqa: E402
    QuestionAnsweringPipeline,
    TextClassificationPipeline,
    TokenizerNotFoundError,
    load_tokenizer,
    pipeline,
)
from trimformer.pipelines.token_classification import TokenClassificationPipeline  # noqa: E402

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France and a large city on the Seine.",
    "Marie Curie was a physicist and chemist who worked in Paris.",
    "What is the capital of France?",
    "Who worked in Paris?",
    "Transformers run encoders on small CPUs with quantized kernels.",
    "Berlin is in Germany, Madrid is in Spain, and Rome is in Italy.",
]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def make_tokenizer() -> Tokenizer:
    """A deterministic WordPiece tokenizer: whole corpus words, single letters and ##letters."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w.strip(".,?").lower() for s in CORPUS for w in s.split()})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    vocab_list = special + list(".,?!;:'\"-()") + letters + ["##" + c for c in letters] + words
    vocab = {t: i for i, t in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    return tok


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return make_tokenizer()


def _save(model, tok: Tokenizer, path: Path) -> Path:
    model.save_pretrained(str(path))
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def bert_cls(tmp_path_factory, tok):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                                  num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
                                  initializer_range=0.2)
    model = transformers.BertForSequenceClassification(cfg).eval()
    return model, _save(model, tok, tmp_path_factory.mktemp("bert_cls"))


@pytest.fixture(scope="module")
def roberta_tok(tmp_path_factory, tok):
    torch.manual_seed(1)
    cfg = transformers.RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=130,
                                     pad_token_id=0, type_vocab_size=1, num_labels=5, id2label=TAGS,
                                     label2id={v: k for k, v in TAGS.items()}, initializer_range=0.2)
    model = transformers.RobertaForTokenClassification(cfg).eval()
    return model, _save(model, tok, tmp_path_factory.mktemp("roberta_tok"))


@pytest.fixture(scope="module")
def distil_qa(tmp_path_factory, tok):
    torch.manual_seed(2)
    cfg = transformers.DistilBertConfig(vocab_size=tok.get_vocab_size(), dim=32, n_layers=2, n_heads=4,
                                        hidden_dim=64, max_position_embeddings=128, initializer_range=0.2)
    model = transformers.DistilBertForQuestionAnswering(cfg).eval()
    return model, _save(model, tok, tmp_path_factory.mktemp("distil_qa"))


def _hf(model, enc, types: bool = True) -> dict:
    """Run the transformers model on one tokenized input (no padding)."""
    kw = {"input_ids": torch.tensor([enc.ids]), "attention_mask": torch.tensor([enc.attention_mask])}
    if types:
        kw["token_type_ids"] = torch.tensor([enc.type_ids])
    with torch.no_grad():
        out = model(**kw)
    return {k: v[0].numpy().astype(np.float64) for k, v in out.items() if v is not None}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------------------------ text-classification


def test_text_classification_matches_transformers(bert_cls, tok):
    model, path = bert_cls
    clf = pipeline("text-classification", model=path, batch_size=2, threads=1)
    assert isinstance(clf, TextClassificationPipeline)
    names = clf.engine.spec.id2label  # test_label_names_from_config checks these are the config's names
    texts = CORPUS[::-1]  # varied lengths over several batches: results must come back in input order
    got = clf(texts)
    assert len(got) == len(texts)
    for text, res in zip(texts, got, strict=True):
        probs = _softmax(_hf(model, tok.encode(text))["logits"])
        assert res["label"] == names[int(probs.argmax())]
        assert abs(res["score"] - probs.max()) < 1e-4
    single = clf(texts[0])
    assert isinstance(single, list) and single[0]["label"] == got[0]["label"]
    full = clf(texts[0], top_k=None)
    probs = _softmax(_hf(model, tok.encode(texts[0]))["logits"])
    assert [d["label"] for d in full] == [names[i] for i in np.argsort(-probs)]
    np.testing.assert_allclose([d["score"] for d in full], np.sort(probs)[::-1], atol=1e-4)
    assert abs(sum(d["score"] for d in full) - 1.0) < 1e-6
    two = clf(texts[:3], top_k=2)
    assert len(two) == 3 and all(len(r) == 2 for r in two)
    assert clf([]) == []


def test_text_classification_pairs(bert_cls, tok):
    model, path = bert_cls
    clf = pipeline("sentiment-analysis", model=tf.compile(path, threads=1))
    names = clf.engine.spec.id2label
    a, b = CORPUS[3], CORPUS[1]
    probs = _softmax(_hf(model, tok.encode(a, b))["logits"])
    for res in (clf({"text": a, "text_pair": b}), clf((a, b)), clf(a, text_pair=b)):
        assert res[0]["label"] == names[int(probs.argmax())]
        assert abs(res[0]["score"] - probs.max()) < 1e-4
    batch = clf([(a, b), {"text": b, "text_pair": a}, a])
    assert abs(batch[0]["score"] - probs.max()) < 1e-4
    p_single = _softmax(_hf(model, tok.encode(a))["logits"])
    assert abs(batch[2]["score"] - p_single.max()) < 1e-4


def test_label_names_from_config(bert_cls, roberta_tok):
    """Labels come from the checkpoint's config.json id2label."""
    assert pipeline("text-classification", model=bert_cls[1]).engine.spec.id2label == LABELS
    assert pipeline("token-classification", model=roberta_tok[1]).engine.spec.id2label == TAGS


# ----------------------------------------------------------------------------------- token-classification


def test_token_classification_matches_transformers(roberta_tok, tok):
    model, path = roberta_tok
    ner = pipeline("ner", model=path, batch_size=3, ignore_labels=[])
    names = ner.engine.spec.id2label
    assert isinstance(ner, TokenClassificationPipeline)
    texts = [CORPUS[2], CORPUS[6], "Hello Marie!", CORPUS[0]]
    got = ner(texts)
    for text, ents in zip(texts, got, strict=True):
        enc = tok.encode(text)
        probs = _softmax(_hf(model, enc, types=False)["logits"])
        want = [t for t in range(len(enc.ids)) if not enc.special_tokens_mask[t]]
        assert [e["index"] for e in ents] == want
        for e in ents:
            t = e["index"]
            assert e["entity"] == names[int(probs[t].argmax())]
            assert abs(e["score"] - probs[t].max()) < 1e-4
            assert (e["start"], e["end"]) == enc.offsets[t]
            assert e["word"] == enc.tokens[t]
    # ignore_labels drops labels; aggregation gives spans of the original text
    assert all(e["entity"] != names[0] for e in ner(texts[0], ignore_labels=[names[0]]))
    for strategy in ("simple", "first", "average", "max"):
        groups = ner(texts[1], aggregation_strategy=strategy)
        for g in groups:
            assert g["word"] == texts[1][g["start"]:g["end"]]
            assert 0 < g["score"] <= 1


def test_entity_grouping():
    ents = [{"entity": e, "score": s, "start": a, "end": b} for e, s, a, b in [
        ("B-PER", 0.9, 0, 5), ("I-PER", 0.7, 6, 11), ("O", 0.8, 12, 15), ("B-LOC", 0.6, 16, 21),
        ("B-LOC", 0.5, 22, 25), ("I-LOC", 0.4, 26, 28)]]
    text = "Marie Curie was there and Paris ok"
    groups = TokenClassificationPipeline._group(text, ents)
    assert [g["entity_group"] for g in groups] == ["PER", "O", "LOC", "LOC"]
    assert groups[0]["word"] == "Marie Curie" and abs(groups[0]["score"] - 0.8) < 1e-9
    assert (groups[3]["start"], groups[3]["end"]) == (22, 28)


# ------------------------------------------------------------------------------------- question-answering


def _best_span(enc, start, end, max_answer_len=15):
    """Reference: HF's span scoring (softmax over context + CLS, spans inside the context)."""
    ctx = np.array([s == 1 for s in enc.sequence_ids])
    keep = ctx.copy()
    keep[0] = True
    ps = _softmax(np.where(keep, start, -10000.0))
    pe = _softmax(np.where(keep, end, -10000.0))
    best = (-1.0, 0, 0)
    idx = np.nonzero(ctx)[0]
    for s in idx:
        for e in idx:
            if s <= e < s + max_answer_len and ps[s] * pe[e] > best[0]:
                best = (ps[s] * pe[e], s, e)
    return best


def test_question_answering_matches_reference(distil_qa, tok):
    model, path = distil_qa
    qa = pipeline("question-answering", model=path)
    assert isinstance(qa, QuestionAnsweringPipeline)
    question, context = CORPUS[4], CORPUS[2] + " " + CORPUS[1]
    enc = tok.encode(question, context)
    out = _hf(model, enc, types=False)
    score, s, e = _best_span(enc, out["start_logits"], out["end_logits"])
    res = qa(question=question, context=context, align_to_words=False)
    assert set(res) == {"score", "start", "end", "answer"}
    assert (res["start"], res["end"]) == (enc.offsets[s][0], enc.offsets[e][1])
    assert abs(res["score"] - score) < 1e-4
    assert res["answer"] == context[res["start"]:res["end"]]
    # word-aligned answers, dict / positional / list inputs, top_k
    aligned = qa({"question": question, "context": context})
    assert aligned["answer"] == context[aligned["start"]:aligned["end"]]
    assert aligned["start"] <= res["start"] and aligned["end"] >= res["end"]
    assert qa(question, context) == aligned
    many = qa(question=[question, CORPUS[3]], context=context)
    assert many[0] == aligned and len(many) == 2
    top = qa(question=question, context=context, top_k=3)
    assert len(top) == 3 and top[0] == aligned and top[0]["score"] >= top[1]["score"] >= top[2]["score"]


def test_question_answering_long_context(distil_qa, tok):
    model, path = distil_qa
    qa = pipeline("question-answering", model=path, max_length=24, batch_size=4)
    question = "Who worked in Paris?"
    context = " ".join(CORPUS * 2)
    res = qa(question=question, context=context, doc_stride=6, align_to_words=False)
    # reference: the same windows from the tokenizer, each run through transformers on its own
    ref = Tokenizer.from_str(tok.to_str())
    q_len = len(ref.encode(question, add_special_tokens=False).ids)
    stride = min(6, (24 - q_len - 3) // 2)
    ref.enable_truncation(24, stride=stride, strategy="only_second")
    enc = ref.encode(question, context)
    windows = [enc, *enc.overflowing]
    assert len(windows) > 3
    best = (-1.0, None)
    for w in windows:
        out = _hf(model, w, types=False)
        score, s, e = _best_span(w, out["start_logits"], out["end_logits"])
        if score > best[0]:
            best = (score, (w.offsets[s][0], w.offsets[e][1]))
    assert abs(res["score"] - best[0]) < 1e-4
    assert (res["start"], res["end"]) == best[1]
    assert res["answer"] == context[res["start"]:res["end"]]
    with pytest.raises(ValueError, match="question"):
        qa(question=" ".join(["paris"] * 30), context=context)


# --------------------------------------------------------------------------------- feature-extraction


def test_sentence_embeddings_match_transformers(minilm):
    sentences = ["A man is eating food.", "Trimformer runs Transformer encoders on CPUs quickly.", "Hi"]
    emb = pipeline("sentence-embedding", model=minilm, threads=1)
    got = emb(sentences)
    assert got.shape == (3, 384) and got.dtype == np.float32
    hf_tok = load_tokenizer(minilm)
    hf_tok.no_padding()
    hf_tok.no_truncation()
    model = transformers.AutoModel.from_pretrained(str(minilm)).eval()
    for i, s in enumerate(sentences):
        enc = hf_tok.encode(s)
        with torch.no_grad():
            h = model(input_ids=torch.tensor([enc.ids]), attention_mask=torch.tensor([enc.attention_mask]),
                      token_type_ids=torch.tensor([enc.type_ids])).last_hidden_state[0].numpy()
        ref = h.mean(0)
        ref /= np.linalg.norm(ref)
        assert float(got[i] @ ref) > 0.9999
        if i == 0:
            tokens = pipeline("feature-extraction", model=minilm)(s)
            assert np.asarray(tokens).shape == (1, len(enc.ids), 384)
            np.testing.assert_allclose(np.asarray(tokens)[0], h, atol=1e-4)
            cls = pipeline("feature-extraction", model=minilm, pooling="cls")(s)
            np.testing.assert_allclose(cls, h[0], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    one = emb(sentences[0])
    assert one.shape == (384,)
    np.testing.assert_allclose(one, got[0], atol=1e-6)
    raw = pipeline("feature-extraction", model=minilm, return_tensors=True)(sentences[:2])
    assert isinstance(raw[0], np.ndarray) and raw[0].ndim == 3


def test_vocab_txt_fallback(minilm, tmp_path):
    shutil.copy(minilm / "vocab.txt", tmp_path / "vocab.txt")
    shutil.copy(minilm / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    a, b = load_tokenizer(tmp_path), load_tokenizer(minilm / "tokenizer.json")
    b.no_padding()
    b.no_truncation()
    for s in ["Hello, World! Unbelievably tokenized text.", "Marie Curie (1867-1934)."]:
        assert a.encode(s).ids == b.encode(s).ids
        assert a.encode(s, "pair text").type_ids == b.encode(s, "pair text").type_ids


# ---------------------------------------------------------------------------------- sources and errors


def test_model_and_tokenizer_sources(bert_cls, tok, tmp_path):
    _, path = bert_cls
    engine = tf.compile(path, threads=1)
    saved = tf.save(engine, tmp_path / "saved")
    want = pipeline("text-classification", model=path)(CORPUS, top_k=None)
    bare = tf.compile(path)
    bare.tokenizer_path = None
    for model, tokenizer in [(engine, None), (saved, None), (bare, tok), (bare, path / "tokenizer.json"),
                             (bare, path)]:
        got = pipeline("text-classification", model=model, tokenizer=tokenizer)(CORPUS, top_k=None)
        for g, w in zip(got, want, strict=True):
            assert [d["label"] for d in g] == [d["label"] for d in w]
            np.testing.assert_allclose([d["score"] for d in g], [d["score"] for d in w], atol=1e-6)
    assert pipeline(model=saved).task == "text-classification"  # task from the model's head
    assert tok.padding is None and tok.truncation is None  # the caller's tokenizer was not modified
    with pytest.raises(TokenizerNotFoundError, match="tokenizer"):
        pipeline("text-classification", model=bare)


def test_quantized_pipelines(bert_cls, tmp_path):
    _, path = bert_cls
    ref = pipeline("text-classification", model=path)(CORPUS, top_k=None)
    for mode in ("int8-dynamic", "int8-static"):
        clf = pipeline("text-classification", model=path, quantize=mode, calibration_samples=16)
        assert clf.engine.quantize == mode
        got = clf(CORPUS, top_k=None)
        for g, w in zip(got, ref, strict=True):
            assert abs(sum(d["score"] for d in g) - 1) < 1e-6
            scores = {d["label"]: d["score"] for d in g}
            assert max(abs(scores[d["label"]] - d["score"]) for d in w) < 0.05


def test_errors(bert_cls, minilm):
    _, path = bert_cls
    with pytest.raises(ValueError, match="feature-extraction"):
        pipeline("text-classification", model=minilm)
    with pytest.raises(ValueError, match="sequence-classification"):
        pipeline("question-answering", model=path)
    with pytest.raises(ValueError, match="unknown task"):
        pipeline("summarization", model=path)
    with pytest.raises(ValueError, match="CPU"):
        pipeline("text-classification", model=path, device="cuda")
    with pytest.raises(ValueError, match="max_length"):
        pipeline("text-classification", model=path, max_length=1000)
    with pytest.raises(FileNotFoundError):
        pipeline("text-classification", model=path / "missing")
    with pytest.raises(ValueError, match="model="):
        pipeline("text-classification")
    with pytest.raises(TypeError, match="unknown option"):
        pipeline("text-classification", model=path, pooling="mean")
    with pytest.raises(ValueError, match="quantize"):
        pipeline("text-classification", model=tf.compile(path), quantize="int8-dynamic")
    with pytest.raises(ValueError, match="this Engine is an encoder"):
        pipeline("text-generation", model=tf.compile(path))
    # inputs that are not texts are named, not left to the tokenizer's "TextEncodeInput must be Union[...]"
    clf, fe = pipeline("text-classification", model=path), pipeline("feature-extraction", model=path)
    with pytest.raises(TypeError, match="input 1 is int 3"):
        fe(["a text", 3])
    with pytest.raises(TypeError, match="inputs must be strings"):
        clf(["a text", 3])
    with pytest.raises(TypeError, match="not int"):
        fe(123)
    with pytest.raises(TypeError, match="not bytes"):
        fe(b"a text")
    assert len(fe([("a text", "its pair"), ["another", "pair"]])) == 2
