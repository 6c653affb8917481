"""The exhaustive scorer against scipy on seeded random collections."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from index.build import build_index
from index.format import Segment
from index.live import open_single_segment
from index.scorers.exhaustive import search, search_batch
from index.sparse_batch import SparseBatch


def build(tmp_path, docs: sp.csr_matrix, name="ix"):
    batch = SparseBatch.from_scipy(docs)
    # A fixed scale keeps impacts exact integers: the oracle sees the same numbers.
    build_index(tmp_path / name, [([f"d{i}" for i in range(docs.shape[0])], batch, None)],
                docs.shape[1], quantization="global", scale=1.0)
    return open_single_segment(tmp_path / name)


def oracle(index: Segment, query: sp.csr_matrix, k: int):
    """scipy scores; positive only, by score descending then doc id ascending."""
    scores = (query.astype(np.float64) @ index.to_scipy_docs().T.astype(np.float64)).toarray()[0]
    positive = np.flatnonzero(scores > 0)
    order = np.lexsort((positive, -scores[positive]))[:k]
    return positive[order], scores[positive[order]]


def assert_matches_oracle(index, query: sp.csr_matrix, docs, scores, k):
    # float64 sums of float32 x uint8 products are exact, so the match is exact: same docs in
    # the same order, same scores, whatever the order of accumulation.
    expected_docs, expected_scores = oracle(index, query, k)
    assert docs.tolist() == expected_docs.tolist()
    assert scores.tolist() == expected_scores.tolist()


@st.composite
def collections(draw):
    num_docs = draw(st.integers(1, 60))
    vocab = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    docs = sp.random(num_docs, vocab, density=draw(st.floats(0.0, 0.5)), random_state=rng,
                     format="csr", data_rvs=lambda n: rng.integers(1, 256, n).astype(np.float32))
    num_terms = draw(st.integers(0, 8))
    # Terms beyond the vocabulary are dropped by the encoder; here they stand for terms no
    # document contains.
    terms = rng.choice(vocab, size=min(num_terms, vocab), replace=False)
    weights = rng.random(len(terms)).astype(np.float32) * 3
    k = draw(st.integers(1, 80))
    return docs, terms, weights, k


@settings(max_examples=60, deadline=None)
@given(collections())
def test_single_query_equals_scipy(tmp_path_factory, case):
    docs, terms, weights, k = case
    tmp_path = tmp_path_factory.mktemp("ix")
    if docs.nnz == 0:
        docs = docs.tolil()
        docs[0, 0] = 1.0
        docs = docs.tocsr()
    index = build(tmp_path, docs)
    query = sp.csr_matrix((weights, terms, [0, len(terms)]), shape=(1, docs.shape[1]))
    found_docs, found_scores = search(index, terms, weights, k)
    assert_matches_oracle(index, query, found_docs, found_scores, k)


def test_batch_equals_single_and_scipy(tmp_path):
    rng = np.random.default_rng(7)
    docs = sp.random(400, 120, density=0.05, random_state=rng, format="csr",
                     data_rvs=lambda n: rng.integers(1, 256, n).astype(np.float32))
    index = build(tmp_path, docs)
    queries = sp.random(25, 120, density=0.08, random_state=rng, format="lil", dtype=np.float32)
    queries[3] = 0  # an empty query
    queries = queries.tocsr()
    queries.eliminate_zeros()
    batch = SparseBatch.from_scipy(queries)
    results = search_batch(index, batch, k=15)
    assert results.counts[3] == 0
    for q in range(len(batch)):
        docs_q, scores_q = results.row(q)
        single_docs, single_scores = search(index, *batch.row(q), 15)
        assert np.array_equal(docs_q, single_docs) and np.array_equal(scores_q, single_scores)
        assert_matches_oracle(index, queries[q], docs_q, scores_q, 15)


def test_ties_are_broken_by_doc_id(tmp_path):
    docs = sp.csr_matrix(np.array([[0, 2], [1, 0], [0, 2], [1, 0], [0, 2]], dtype=np.float32))
    index = build(tmp_path, docs)
    found, scores = search(index, np.array([0, 1]), np.array([2.0, 1.0]), k=4)
    assert found.tolist() == [0, 1, 2, 3]  # all four tie at 2.0: lowest ids first
    assert scores.tolist() == [2.0, 2.0, 2.0, 2.0]


def test_unknown_terms_empty_query_and_large_k(tmp_path):
    docs = sp.csr_matrix(np.array([[1, 0, 3], [0, 2, 0]], dtype=np.float32))
    index = build(tmp_path, docs)
    assert search(index, np.array([], dtype=np.uint32), np.array([], dtype=np.float32), 5)[0].size == 0
    found, scores = search(index, np.array([2, 10_000]), np.array([1.0, 5.0]), k=1000)
    assert found.tolist() == [0] and scores.tolist() == [3.0]
    with pytest.raises(ValueError, match="k must be at least 1"):
        search(index, np.array([0]), np.array([1.0]), 0)


@pytest.mark.parametrize("quantization", ["per-term", "global"])
def test_scores_come_back_in_encoder_units(tmp_path, quantization):
    batch = SparseBatch.from_dicts([{0: 0.51, 1: 1.02}, {1: 0.2, 2: 0.01}], 4)
    build_index(tmp_path / "ix", [(["a", "b"], batch, None)], 4, quantization=quantization)
    index = open_single_segment(tmp_path / "ix")
    docs, scores = search(index, np.array([1, 2]), np.array([2.0, 1.0]), 2)
    assert docs.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [2.04, 0.41], atol=2 * 1.02 / 255)
    # Per term, the small weight of term 2 keeps its own resolution (a global scale zeroes it).
    assert (index.term_scales[2] == np.float32(0.01 / 255)) == (quantization == "per-term")
