"""The exhaustive scorer against scipy on seeded random collections."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.index.build import build_index
from lsr.index.format import Segment
from lsr.index.live import open_single_segment
from lsr.index.postings_view import term_view
from lsr.index.scorers.exhaustive import NO_DELETES, search, search_batch, segment_top_k, segment_top_k_batch
from lsr.index.scorers.oracle import oracle_top_k
from lsr.index.scorers.query import canonical_batch, canonical_query
from lsr.index.sparse_batch import SparseBatch


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


def oracle_kernel(index: Segment, terms, weights, k: int, live=NO_DELETES):
    """The float64 dense-array scorer (``index.scorers.oracle``) on a canonical query."""
    docs, scores = np.full(k, -1, np.int64), np.zeros(k, np.float64)
    n = oracle_top_k(terms, weights, index.num_docs, k, live, term_view(index.postings), docs, scores)
    return docs[:n], scores[:n]


@st.composite
def float_collections(draw):
    """Float weights quantised per term (the default), queries with any sign, deletions."""
    num_docs = draw(st.integers(1, 300))
    vocab = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    docs = sp.random(num_docs, vocab, density=draw(st.floats(0.02, 0.6)), random_state=rng, format="csr",
                     data_rvs=lambda n: rng.random(n).astype(np.float32) * 3).tolil()
    docs[0, 0] = 1.0  # an index needs one weight
    docs = docs.tocsr()
    terms = rng.choice(vocab, size=draw(st.integers(0, vocab)), replace=False)
    weights = (rng.random(len(terms)) * 2).astype(np.float32)
    if draw(st.booleans()):
        weights[rng.random(len(terms)) < 0.3] *= -1
    live = (rng.random(num_docs) < draw(st.sampled_from([0.0, 0.3]))).astype(np.uint8) ^ 1
    block_size = draw(st.sampled_from([1, 4, 8, 64]))
    return docs, terms, weights, draw(st.integers(1, 50)), live, block_size


@settings(max_examples=80, deadline=None)
@given(float_collections())
def test_default_quantisation_equals_the_oracle_and_scipy(tmp_path_factory, case):
    """The float32 candidate pass with exact rescoring equals the float64 oracle bit for bit,
    with per-term scales, negative query weights, deleted documents and several block sizes."""
    docs, terms, weights, k, live, block_size = case
    path = tmp_path_factory.mktemp("ix") / "ix"
    build_index(path, [([f"d{i}" for i in range(docs.shape[0])], SparseBatch.from_scipy(docs), None)],
                docs.shape[1], block_size=block_size)
    index = open_single_segment(path)
    canonical = canonical_query(terms, weights, index.term_scales)
    live_mask = live if live.min(initial=1) == 0 else NO_DELETES
    found = segment_top_k(index, *canonical, k, live_mask)
    expected = oracle_kernel(index, *canonical, k, live_mask)
    assert found[0].tolist() == expected[0].tolist() and found[1].tolist() == expected[1].tolist()
    # and the oracle against scipy (float64 sums of the same products; order-free up to rounding)
    impacts = index.to_scipy_docs().astype(np.float64)
    query = np.zeros(docs.shape[1])
    query[canonical[0]] = canonical[1]
    scores = impacts @ query
    assert all(live_mask is NO_DELETES or live[d] for d in expected[0])
    np.testing.assert_allclose(expected[1], scores[expected[0]], rtol=1e-12)
    assert (scores[expected[0]] > 0).all()


def test_near_ties_within_float32_rounding_are_ranked_exactly(tmp_path):
    """Sums that differ below float32's resolution: the float32 pass cannot order them, the
    rescoring must (and ties go by doc id)."""
    weights = np.array([1.0, 2.0**-20, 2.0**-21], dtype=np.float32)
    rows = [[200, 0, 0], [200, 1, 0], [200, 0, 1], [200, 1, 1], [200, 0, 0], [199, 255, 255]]
    docs = sp.csr_matrix(np.array(rows, dtype=np.float32))
    index = build(tmp_path, docs)
    terms = np.array([0, 1, 2])
    found, scores = search(index, terms, weights, k=6)
    expected = oracle_kernel(index, *canonical_query(terms, weights, index.term_scales), 6)
    assert found.tolist() == expected[0].tolist() == [3, 1, 2, 0, 4, 5]
    assert scores.tolist() == expected[1].tolist()
    assert found[:2].tolist() == [3, 1]  # float32 rounds 200 + 2^-20 back to 200


def test_a_document_that_float32_ranks_lower_is_still_found(tmp_path):
    """Two roundings lose what one keeps: doc 0 is 200 + 0.8 ulp exactly but 200 in float32,
    doc 1 is 200 + 0.75 ulp exactly and 200 + 1 ulp in float32. The top 1 is doc 0, which only
    the error margin keeps among the candidates."""
    ulp = 2.0**-16  # of float32 at 200
    docs = sp.csr_matrix(np.array([[200, 1, 1, 0], [200, 0, 0, 1]], dtype=np.float32))
    index = build(tmp_path, docs)
    terms = np.array([0, 1, 2, 3])
    weights = np.array([1.0, 0.4 * ulp, 0.4 * ulp, 0.75 * ulp], dtype=np.float32)
    found, scores = search(index, terms, weights, k=1)
    assert found.tolist() == [0]
    assert scores[0] == 200 + np.float64(weights[1]) + np.float64(weights[2])


def test_the_accumulator_is_clean_between_queries_and_segments(tmp_path):
    rng = np.random.default_rng(3)
    big = build(tmp_path, sp.random(3000, 50, density=0.1, random_state=rng, format="csr",
                                    data_rvs=lambda n: rng.integers(1, 256, n).astype(np.float32)), "big")
    small = build(tmp_path, sp.random(40, 50, density=0.3, random_state=rng, format="csr",
                                      data_rvs=lambda n: rng.integers(1, 256, n).astype(np.float32)), "small")
    queries = [(rng.choice(50, 6, replace=False), rng.random(6).astype(np.float32)) for _ in range(6)]
    for index in (big, small, big):
        for terms, weights in queries:
            found = search(index, terms, weights, 20)
            expected = oracle_kernel(index, *canonical_query(terms, weights, index.term_scales), 20)
            assert found[0].tolist() == expected[0].tolist() and found[1].tolist() == expected[1].tolist()


def test_weights_too_large_for_float32_sums_go_to_the_oracle(tmp_path):
    docs = sp.csr_matrix(np.array([[255, 1], [1, 255]], dtype=np.float32))
    index = build(tmp_path, docs)
    found, scores = search(index, np.array([0, 1]), np.array([3e38, 2e38], dtype=np.float32), 2)
    assert found.tolist() == [0, 1] and np.isfinite(scores).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_equals_single_with_deletions(tmp_path, threads):
    import numba

    rng = np.random.default_rng(11)
    docs = sp.random(2000, 80, density=0.06, random_state=rng, format="csr",
                     data_rvs=lambda n: rng.random(n).astype(np.float32))
    path = tmp_path / "ix"
    build_index(path, [([f"d{i}" for i in range(2000)], SparseBatch.from_scipy(docs), None)], 80)
    index = open_single_segment(path)
    live = (rng.random(2000) > 0.2).astype(np.uint8)
    queries = canonical_batch(SparseBatch.from_scipy(sp.random(9, 80, density=0.1, random_state=rng, format="csr",
                                                                dtype=np.float32)), index.term_scales)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        results = segment_top_k_batch(index, queries, 30, live)
    finally:
        numba.set_num_threads(previous)
    for q in range(len(queries)):
        single = segment_top_k(index, *queries.row(q), 30, live)
        expected = oracle_kernel(index, *queries.row(q), 30, live)
        assert results.row(q)[0].tolist() == single[0].tolist() == expected[0].tolist()
        assert results.row(q)[1].tolist() == single[1].tolist() == expected[1].tolist()


def test_postings_past_the_first_doc_id_chunk_equal_scipy_on_the_input(tmp_path):
    """More than 2^16 docs: term-major doc ids are stored as low 16 bits chunk by chunk
    (``index.bmp_build``). Checked against the input matrix itself (integer impacts at scale 1,
    dyadic weights, so every float64 sum is exact), not through the index's own decoding."""
    rng = np.random.default_rng(21)
    n, vocab = 140_001, 30
    docs = sp.random(n, vocab, density=0.02, random_state=rng, format="csr",
                     data_rvs=lambda size: rng.integers(1, 256, size).astype(np.float32)).tolil()
    docs[[0, 65_535, 65_536, 131_072, n - 1], 3] = 255  # the edges of the chunks
    docs = docs.tocsr()
    docs.sort_indices()
    index = build(tmp_path, docs)
    assert index.postings.chunks == 3
    assert (index.to_scipy_docs() != docs).nnz == 0
    doc_ids, impacts = index.term_postings(3)
    column = docs[:, 3].tocsc()
    assert doc_ids.tolist() == column.indices.tolist() and impacts.tolist() == column.data.astype(int).tolist()
    live = (rng.random(n) > 0.1).astype(np.uint8)
    for q in range(6):
        terms = rng.choice(vocab, 5, replace=False)
        weights = (rng.integers(1, 64, 5) / 8).astype(np.float32)
        scores = docs.astype(np.float64) @ np.bincount(terms, weights.astype(np.float64), minlength=vocab)
        mask = live if q % 2 else NO_DELETES
        eligible = np.flatnonzero((scores > 0) & (mask.astype(bool) if q % 2 else True))
        for k, precision in ((10, "8-bit"), (1000, "8-bit"), (1000, "16-bit")):
            expected = eligible[np.lexsort((eligible, -scores[eligible]))][:k]
            canonical = canonical_query(terms, weights, index.term_scales)
            if precision == "8-bit":
                found, found_scores = segment_top_k(index, *canonical, k, mask)
            else:  # at scale 1 the 16-bit impacts are the 8-bit ones times 256: the same ranking
                found, found_scores = segment_top_k(index, *canonical, k, mask, fine=True)
            assert found.tolist() == expected.tolist()
            assert found_scores.tolist() == scores[expected].tolist()


@pytest.mark.parametrize("vocab, dtype", [(30_522, np.uint16), (70_000, np.uint32)])
def test_block_terms_are_16_bit_where_the_vocabulary_fits(tmp_path, vocab, dtype):
    """The forward index keeps term ids in 16 bits for a BERT-sized vocabulary and in 32 past
    2^16; both search alike (terms above 2^16 included)."""
    rng = np.random.default_rng(vocab)
    docs = sp.random(500, vocab, density=0.002, random_state=rng, format="csr",
                     data_rvs=lambda size: rng.integers(1, 256, size).astype(np.float32)).tolil()
    docs[:50, vocab - 1] = 200  # the largest term id
    docs = docs.tocsr()
    index = build(tmp_path, docs)
    assert index.postings.block_terms.dtype == dtype
    terms = np.concatenate([rng.choice(vocab - 1, 7, replace=False), [vocab - 1]])
    weights = (rng.integers(1, 64, 8) / 8).astype(np.float32)
    from lsr.index.scorers.bmp import bmp_search

    for k in (5, 100):
        expected = oracle(index, sp.csr_matrix((weights, (np.zeros(8, int), terms)), shape=(1, vocab)), k)
        for found in (search(index, terms, weights, k), bmp_search(index, terms, weights, k)):
            assert found[0].tolist() == expected[0].tolist() and found[1].tolist() == expected[1].tolist()
