"""Long documents: overlapping windows, each encoded, max-pooled (lsr.encoders.windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lsr.encoders.windows import WINDOW_OVERLAP, max_by_owner, split_into_windows


@pytest.fixture(scope="module")
def splade():
    from lsr.encoders.splade import SpladeEncoder

    return SpladeEncoder(doc_max_length=1024, batch_size=3)


def _text(words: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    vocabulary = ["protein", "cell", "gene", "vitamin", "bone", "density", "cancer", "therapy", "risk", "trial",
                  "blood", "pressure", "insulin", "muscle", "enzyme", "receptor"]
    return " ".join(f"{rng.choice(vocabulary)}{rng.integers(0, 50)}" for _ in range(words))


@pytest.mark.parametrize("words", [3, 60, 170, 400])
def test_windows_cover_every_token_in_order_with_overlap(splade, words):
    tokenizer = splade.tokenizer
    text = _text(words, seed=words)
    content = tokenizer(text, add_special_tokens=False, truncation=True, max_length=200 - 2)["input_ids"]
    pieces, owner = split_into_windows(tokenizer, [text], max_length=200, window=64)
    assert set(owner.tolist()) == {0}
    bodies = [piece[1:-1] for piece in pieces]
    assert all(piece[0] == tokenizer.cls_token_id and piece[-1] == tokenizer.sep_token_id for piece in pieces)
    assert all(len(piece) <= 64 for piece in pieces)
    if len(content) <= 62:  # fits one window: exactly the usual tokenisation
        assert pieces == [tokenizer(text, truncation=True, max_length=64)["input_ids"]]
        return
    stride = 62 - int(62 * WINDOW_OVERLAP)
    for n, body in enumerate(bodies):  # window n is the content from n * stride on
        assert body == content[n * stride : n * stride + 62]
    assert bodies[-1][-1] == content[-1] and len(bodies) == 1 + -(-(len(content) - 62) // stride)


def test_windowed_encoding_equals_the_maximum_over_windows_encoded_one_by_one(splade):
    """The oracle: each window through the plain formula alone, the maximum taken by hand; documents
    that fit one window come out as without windows."""
    texts = [_text(900, 1), "vitamin d and bone density", _text(420, 2), _text(130, 3)]
    got = splade.encode_documents(texts).to_scipy().toarray()
    window = splade.module.mlm.config.max_position_embeddings
    pieces, owner = split_into_windows(splade.tokenizer, texts, 1024, window)
    assert np.bincount(owner).tolist()[0] > 1  # the long text has several windows
    expected = np.zeros_like(got)
    with torch.inference_mode():
        for piece, doc in zip(pieces, owner):
            tokens = {"input_ids": torch.tensor([piece]), "attention_mask": torch.ones(1, len(piece), dtype=torch.long)}
            expected[doc] = np.maximum(expected[doc], splade._forward_plain(tokens)[0].numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    short = splade.encode(texts[1:2], 256).to_scipy().toarray()
    np.testing.assert_array_equal(got[1], short[0])


def test_max_by_owner_is_differentiable_and_matches_a_loop():
    vectors = torch.rand(7, 5, requires_grad=True)
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    pooled = max_by_owner(vectors, owner, 3)
    expected = torch.stack([vectors[owner == d].amax(0) for d in range(3)])
    torch.testing.assert_close(pooled, expected)
    pooled.sum().backward()
    assert vectors.grad.sum().item() == pytest.approx(15)  # one winner per (document, term)


def test_training_reads_long_documents_in_windows_as_indexing_does(splade):
    from lsr.training.config import ModelConfig
    from lsr.training.models import TrainableEncoder

    trainable = TrainableEncoder(splade, ModelConfig(doc_max_length=1024))
    texts = [_text(900, 4), "vitamin d and bone density"]
    with torch.no_grad():
        trained_view = trainable.encode_documents(texts).numpy()
    np.testing.assert_allclose(trained_view, splade.encode_documents(texts).to_scipy().toarray(), rtol=1e-4, atol=1e-5)
