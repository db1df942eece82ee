"""Shared fixture of the compression tests (imported by the test modules): a 2-layer random BERT classifier for the 11 topics, saved with the
real MiniLM tokenizer (so the real task data and calibration slice flow through it in seconds)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from trimformer import assets
    from trimformer.compress.tasks import task_data

    assets.ensure_assets(("minilm", "wiki"))
    names = task_data("wiki-topics", "validation", 1).label_names
    tok = AutoTokenizer.from_pretrained(str(assets.minilm_path()))
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     vocab_size=tok.vocab_size, max_position_embeddings=512, num_labels=len(names),
                     id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    d = tmp_path_factory.mktemp("tiny") / "model"
    BertForSequenceClassification(cfg).save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


