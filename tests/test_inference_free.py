"""Inference-free query encoding: the tokenisation shortcut and the cached weight table."""

from __future__ import annotations


def test_word_piece_ids_equal_the_tokenizer_call_on_random_texts():
    """The backend shortcut of query tokenisation against the plain tokenizer call: random
    texts (some far above the limit), right and left truncation, and settings another call
    left on the shared tokenizer (padding to 64, truncation at 8) do not leak in."""
    import random

    from transformers import AutoTokenizer

    from lsr.encoders.models import bundled_splade_path
    from lsr.encoders.tokens import word_piece_ids

    tokenizer = AutoTokenizer.from_pretrained(bundled_splade_path())
    assert tokenizer.is_fast  # the backend shortcut is the path under test, not the fallback
    words = ["vitamin", "D", "bone", "density", "über", "COVID-19", "p53", "naïve", "x" * 40, "?", "effect", "cells"]
    rng = random.Random(0)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 120))) for _ in range(60)]
    for side in ("right", "left"):
        tokenizer.truncation_side = side
        tokenizer(["warm"], padding="max_length", max_length=64, truncation=True)  # leaves settings behind
        expected = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=16)["input_ids"]
        assert word_piece_ids(tokenizer, texts, 16) == expected
        assert any(len(ids) == 16 for ids in expected) and any(len(ids) < 16 for ids in expected)


def test_query_lookup_table_follows_changed_weights():
    """The cached weight table is made again after the weights change in place (set_idf, a
    training step), so a query is never scored with stale weights."""
    import numpy as np

    from lsr.encoders.inference_free import InferenceFreeEncoder

    encoder = InferenceFreeEncoder.from_base(None, np.ones(30522, dtype=np.float32))
    before = encoder.encode_queries(["vitamin bone"])
    encoder.set_idf(["vitamin", "vitamin bone", "cell"])
    after = encoder.encode_queries(["vitamin bone"])
    assert np.all(before.values == 1.0) and not np.allclose(after.values, before.values)


def test_query_encoding_equals_tokenise_unique_and_look_up_on_random_data():
    """The fast query path against the obvious one: the tokenizer call, np.unique of the ids,
    the relu'd weights looked up, zero weights dropped; random texts (empty ones and ones above
    the limit among them) and random weights with negatives and zeros, one query and a batch."""
    import random

    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from lsr.encoders.inference_free import InferenceFreeEncoder
    from lsr.encoders.models import bundled_splade_path

    rng = np.random.default_rng(3)
    weights = rng.normal(size=30522).astype(np.float32)
    weights[rng.random(30522) < 0.2] = 0.0
    encoder = InferenceFreeEncoder.from_base(None, np.ones(30522, dtype=np.float32), query_max_length=12)
    with torch.no_grad():
        encoder.module.query_weights.copy_(torch.from_numpy(weights))
    tokenizer = AutoTokenizer.from_pretrained(bundled_splade_path())
    words = ["vitamin", "D", "bone", "bone", "density", "über", "COVID-19", "p53", "naïve", "cells", "of", "the"]
    text_rng = random.Random(1)
    texts = ["", *(" ".join(text_rng.choice(words) for _ in range(text_rng.randint(0, 30))) for _ in range(80))]
    relu = np.maximum(weights, 0)
    expected_rows = []
    token_ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=12)["input_ids"]
    assert any(len(ids) == 12 for ids in token_ids)  # the cut at query_max_length is exercised
    for ids in token_ids:
        terms = np.unique(np.asarray(ids, dtype=np.int64))
        terms = terms[relu[terms] > 0]
        expected_rows.append((terms, relu[terms]))
    batch = encoder.encode_queries(texts)
    singles = [encoder.encode_queries([text]) for text in texts]
    assert len(batch) == len(texts)
    for row, (terms, values) in enumerate(expected_rows):
        for got in (batch.row(row), singles[row].row(0)):
            np.testing.assert_array_equal(got[0], terms)
            np.testing.assert_array_equal(got[1], values)
    assert len(expected_rows[0][0]) == 0 and sum(len(terms) for terms, _ in expected_rows) > 50
    assert len(encoder.encode_queries([])) == 0
