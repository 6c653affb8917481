"""SPLADE encoder invariances, and equality with the plain formula and sentence-transformers."""

import numpy as np
import pytest
import torch

from lsr.encoders.models import bundled_splade_path

TEXTS = [
    "Vitamin D deficiency is associated with lower bone mineral density.",
    "short query",
    "The quick brown fox jumps over the lazy dog " * 20,
    "Microstructural development of human newborn cerebral white matter assessed in vivo.",
    "",
]


def dense(batch):
    return batch.to_scipy().toarray()


def plain_splade(texts, max_length, pooling="max"):
    """SPLADE straight from the formula, on an untouched Hugging Face model."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = bundled_splade_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForMaskedLM.from_pretrained(path).eval()
    tokens = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**tokens).logits  # (batch, seq_len, vocab)
    activations = torch.log1p(torch.relu(logits)) * tokens["attention_mask"].unsqueeze(-1)
    pooled = activations.amax(dim=1) if pooling == "max" else activations.sum(dim=1)
    return pooled.numpy()


def test_fast_path_equals_plain_formula(encoder):
    ours = dense(encoder.encode(TEXTS, max_length=256))
    np.testing.assert_allclose(ours, plain_splade(TEXTS, 256), atol=1e-5)


def test_unchunked_path_equals_fast_path(encoder):
    fast = dense(encoder.encode(TEXTS, 256, fast=True))
    slow = dense(encoder.encode(TEXTS, 256, fast=False))
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_sum_pooling_equals_plain_formula():
    from lsr.encoders.splade import SpladeEncoder

    encoder = SpladeEncoder(pooling="sum")
    np.testing.assert_allclose(dense(encoder.encode(TEXTS[:3], 64)), plain_splade(TEXTS[:3], 64, "sum"), atol=1e-4)


def test_batch_equals_one_by_one_in_input_order(encoder):
    together = dense(encoder.encode_documents(TEXTS))
    for i, text in enumerate(TEXTS):
        alone = dense(encoder.encode_documents([text]))[0]
        np.testing.assert_allclose(together[i], alone, atol=1e-5)


def test_padding_does_not_change_a_vector(encoder):
    def run(texts):
        tokens = encoder.tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
        with torch.no_grad():
            return encoder._forward(tokens)

    alone = run([TEXTS[1]])
    padded = run([TEXTS[1], TEXTS[2]])  # pads TEXTS[1] to 64
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=0)


def test_query_and_document_max_lengths(encoder):
    long_text = " ".join(f"word{i}" for i in range(400))
    ids = encoder.tokenizer(long_text)["input_ids"]
    first_64 = encoder.tokenizer.decode(ids[1:63])  # 62 word pieces + [CLS] + [SEP] = 64
    np.testing.assert_allclose(dense(encoder.encode_queries([long_text])),
                               dense(encoder.encode_queries([first_64])), atol=1e-5)
    assert encoder.describe()["query_max_length"] == 64 and encoder.describe()["doc_max_length"] == 256


def test_output_is_a_sparse_batch_with_positive_weights(encoder):
    batch = encoder.encode_queries(TEXTS[:2])
    assert batch.vocab_size == 30522 and len(batch) == 2
    assert batch.indices.dtype == np.uint32 and batch.values.dtype == np.float32
    assert np.all(batch.values > 0) and 5 < batch.nnz / 2 < 200
    assert len(encoder.encode_queries([])) == 0


def test_equals_sentence_transformers_sparse_encoder(encoder):
    import sentence_transformers  # a dev dependency: the test fails without it, never skips
    reference = sentence_transformers.SparseEncoder(str(bundled_splade_path()), device="cpu")
    reference.max_seq_length = 256
    theirs = reference.encode(TEXTS[:4], batch_size=8, convert_to_tensor=True).to_dense().numpy()
    ours = dense(encoder.encode_documents(TEXTS[:4]))
    assert np.abs(ours - theirs).max() < 1e-4
