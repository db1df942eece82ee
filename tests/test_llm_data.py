"""llm_data: the perplexity slice and the calibration samples are deterministic and disjoint."""

from __future__ import annotations

import numpy as np
import pytest

from trimformer import assets
from trimformer.llm_data import calibration_samples, encode, perplexity_tokens


class ByteTokenizer:
    """Stands in for a transformers tokenizer: one token per UTF-8 byte."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        assert add_special_tokens is False
        return list(text.encode("utf-8"))


@pytest.fixture(scope="module")
def wiki():
    try:
        return assets.wiki_data_dir()
    except assets.AssetNotFoundError as e:
        pytest.skip(str(e))


def test_perplexity_slice_is_the_start_of_the_last_400_articles(wiki):
    tok = ByteTokenizer()
    ids = perplexity_tokens(tok, 4096)
    assert ids.dtype == np.int64 and ids.shape == (4096,)
    first_title = assets.slice_titles("perplexity")[0]
    assert first_title == sorted(assets.wiki_articles())[-400]
    assert bytes(ids.astype(np.uint8)).decode("utf-8", "ignore").startswith(assets.wiki_articles()[first_title][:200])
    np.testing.assert_array_equal(perplexity_tokens(tok, 4096), ids)


def test_calibration_samples_are_seeded_and_disjoint(wiki):
    tok = ByteTokenizer()
    a = calibration_samples(tok, 6, 256, seed=3)
    b = calibration_samples(tok, 6, 256, seed=3)
    c = calibration_samples(tok, 6, 256, seed=4)
    assert len(a) == 6 and all(s.shape == (256,) and s.dtype == np.int64 for s in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert not set(assets.slice_titles("calibration")) & set(assets.slice_titles("perplexity"))
    ppl_text = assets.text_slice("perplexity").encode("utf-8")
    for s in a:  # no calibration window occurs in the evaluation text
        assert bytes(s.astype(np.uint8)) not in ppl_text
    with pytest.raises(ValueError, match="seqlen"):
        calibration_samples(tok, 1, 1)


def test_encode_rejects_unknown_tokenizers():
    with pytest.raises(TypeError, match="tokenizer"):
        encode(object(), "text")
