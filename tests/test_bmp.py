"""Block-max pruning against the exhaustive scorer and scipy on seeded random collections."""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.index.build import build_index
from lsr.index.live import open_single_segment
from lsr.index.postings_view import SCAN_MIN_TERMS
from lsr.index.scorers.bmp import bmp_search, bmp_search_batch
from lsr.index.scorers.exhaustive import search, search_batch
from lsr.index.scorers.query import canonical_query
from lsr.index.search import search_sparse, single_segment_view
from lsr.index.sparse_batch import SparseBatch


def build(path, docs: sp.csr_matrix, block_size: int, reorder: str = "none"):
    batch = SparseBatch.from_scipy(docs)
    ids = [f"d{i}" for i in range(docs.shape[0])]
    build_index(path, [(ids, batch, None)], docs.shape[1], quantization="global", scale=1.0, block_size=block_size, reorder=reorder)
    return open_single_segment(path)


def scipy_top_k(index, terms, weights, k, fine: bool = False):
    """Exact float64 scores over the stored impacts (``fine``: the 16-bit ones); positive only,
    ties by doc id."""
    terms, weights = canonical_query(terms, weights, index.term_scales)
    q = sp.csr_matrix((weights.astype(np.float64), terms.astype(np.int64), [0, len(terms)]), shape=(1, index.vocab_size))
    scores = (q @ index.to_scipy_docs(fine=fine).T.astype(np.float64)).toarray()[0]
    positive = np.flatnonzero(scores > 0)
    order = np.lexsort((positive, -scores[positive]))[:k]
    return positive[order], scores[positive[order]]


def assert_both_scorers_equal_scipy(index, terms, weights, k):
    """Safe BMP and the exhaustive scorer equal scipy, at 8 and at 16 bits, scores and ties."""
    for precision in ("8-bit", "16-bit"):
        expected_docs, expected_scores = scipy_top_k(index, terms, weights, k, fine=precision == "16-bit")
        for found_docs, found_scores in (search(index, terms, weights, k, precision),
                                         bmp_search(index, terms, weights, k, precision=precision)):
            assert found_docs.tolist() == expected_docs.tolist()
            assert found_scores.tolist() == expected_scores.tolist()


@st.composite
def cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    num_docs = draw(st.integers(1, 300))
    vocab = draw(st.sampled_from([5, 50, 400, 70_000]))
    nnz_per_doc = draw(st.integers(0, 12))
    rows, cols = [], []
    for d in range(num_docs):
        if rng.random() < 0.1:
            continue  # an empty document
        terms = rng.choice(min(vocab, 60), size=min(nnz_per_doc, min(vocab, 60)), replace=False)
        if vocab > 65_536:
            terms = terms + 65_500  # term ids past uint16
        rows += [d] * len(terms)
        cols += list(terms)
    # Few distinct impacts make many ties, which is where exactness is hardest.
    values = rng.choice([1, 2, 3, 255], size=len(rows)).astype(np.float32)
    docs = sp.csr_matrix((values, (rows, cols)), shape=(num_docs, vocab))
    if docs.nnz == 0:
        docs = sp.csr_matrix(([1.0], ([0], [0])), shape=(num_docs, vocab))
    q_len = draw(st.integers(0, 40))  # past SPARSE_MASK_BITS distinct sparse terms too
    q_terms = rng.choice(min(vocab, 60), size=q_len) + (65_500 if vocab > 65_536 else 0)  # duplicates allowed
    q_terms = np.append(q_terms, vocab + 5)  # a term outside the vocabulary
    q_weights = rng.choice([0.0, 0.5, 1.0, 1.25, 2.0], size=len(q_terms)).astype(np.float32)
    k = draw(st.sampled_from([1, 3, 10, 100, 1000, 5000]))
    block_size = draw(st.sampled_from([1, 8, 16, 32, 128]))
    reorder = draw(st.sampled_from(["none", "bp", "random"]))
    return docs, q_terms, q_weights, k, block_size, reorder


@settings(max_examples=80, deadline=None)
@given(cases())
def test_safe_bmp_equals_exhaustive_equals_scipy(tmp_path_factory, case):
    docs, terms, weights, k, block_size, reorder = case
    index = build(tmp_path_factory.mktemp("ix") / "ix", docs, block_size, reorder)
    assert_both_scorers_equal_scipy(index, terms, weights, k)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([400, 70_000]), st.integers(SCAN_MIN_TERMS - 2, SCAN_MIN_TERMS + 30),
       st.sampled_from([1, 10, 1000]), st.sampled_from([1, 8, 32]))
def test_long_queries_scored_by_a_pass_over_each_block_equal_scipy(tmp_path_factory, seed, vocab, q_len, k, block_size):
    """Queries of more than SCAN_MIN_TERMS distinct terms score a block by one pass over its
    entries (`query_positions`), shorter ones by a search per term: both equal scipy, with
    per-term scales, at 8 and 16 bits."""
    rng = np.random.default_rng(seed)
    num_docs, width = int(rng.integers(1, 200)), 80
    offset = 65_500 if vocab > 65_536 else 0  # term ids past uint16
    rows, cols = [], []
    for d in range(num_docs):
        terms = rng.choice(width, size=int(rng.integers(0, 50)), replace=False) + offset
        rows += [d] * len(terms)
        cols += list(terms)
    values = (rng.choice([1, 2, 3, 255], size=len(rows)) * rng.uniform(0.001, 0.02, len(rows))).astype(np.float32)
    docs = sp.csr_matrix((values, (rows, cols)), shape=(num_docs, vocab))
    path = tmp_path_factory.mktemp("ix") / "ix"
    build_index(path, [([f"d{i}" for i in range(num_docs)], SparseBatch.from_scipy(docs), None)], vocab,
                block_size=block_size, reorder="bp")
    index = open_single_segment(path)
    terms = rng.choice(width, size=q_len, replace=False) + offset
    weights = rng.choice([0.5, 1.0, 1.25, 2.0], size=q_len).astype(np.float32)
    assert_both_scorers_equal_scipy(index, terms, weights, k)


@settings(max_examples=40, deadline=None)
@given(cases(), st.integers(0, 2**32 - 1))
def test_safe_bmp_equals_scipy_with_the_default_per_term_scales(tmp_path_factory, case, seed):
    """Float weights quantised per term (the default), not one global scale of integers."""
    docs, terms, weights, k, block_size, reorder = case
    rng = np.random.default_rng(seed)
    docs = docs.copy()
    docs.data = (docs.data * rng.uniform(0.001, 0.02, docs.nnz)).astype(np.float32)
    path = tmp_path_factory.mktemp("ix") / "ix"
    build_index(path, [([f"d{i}" for i in range(docs.shape[0])], SparseBatch.from_scipy(docs), None)], docs.shape[1],
                block_size=block_size, reorder=reorder)
    index = open_single_segment(path)
    assert index.meta["quantization"]["method"] == "uint8-per-term"
    view = single_segment_view(index)
    assert_both_scorers_equal_scipy(index, terms, weights, k)
    # The defaults of the search a user runs (auto scorer, auto precision: 16-bit here).
    found_docs, found_scores = search_sparse(view, terms, weights, k)
    expected_docs, expected_scores = scipy_top_k(index, terms, weights, k, fine=True)
    assert found_docs.tolist() == expected_docs.tolist()
    assert found_scores.tolist() == expected_scores.tolist()


@settings(max_examples=40, deadline=None)
@given(cases(), st.sampled_from([0.3, 0.6, 0.9, 1.0]), st.sampled_from([0.25, 0.5, 1.0]),
       st.sampled_from([None, 1, 2, 5]))
def test_approximate_results_are_correctly_scored(tmp_path_factory, case, alpha, beta, max_blocks):
    docs, terms, weights, k, block_size, reorder = case
    index = build(tmp_path_factory.mktemp("ix") / "ix", docs, block_size, reorder)
    found_docs, found_scores = bmp_search(index, terms, weights, k, alpha=alpha, beta=beta, max_blocks=max_blocks)
    exact_docs, exact_scores = scipy_top_k(index, terms, weights, index.num_docs)
    exact = dict(zip(exact_docs.tolist(), exact_scores.tolist()))
    assert len(set(found_docs.tolist())) == len(found_docs) <= k
    if beta == 1:  # every term kept: each returned score is the doc's exact score
        assert all(exact[d] == s for d, s in zip(found_docs.tolist(), found_scores.tolist()))
    else:  # fewer terms: a returned score never exceeds the exact one
        assert all(s <= exact[d] + 1e-9 for d, s in zip(found_docs.tolist(), found_scores.tolist()))
    assert list(found_scores) == sorted(found_scores, reverse=True)
    if max_blocks is not None:  # docs come from at most max_blocks blocks
        assert len(set((found_docs // index.postings.block_size).tolist())) <= max_blocks


def test_a_block_budget_past_the_needed_blocks_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    docs = sp.random(3000, 200, density=0.05, random_state=rng, format="csr", dtype=np.float32) * 20
    index = build(tmp_path / "ix", docs.ceil(), 8, "bp")
    queries = sp.random(20, 200, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    for q in range(queries.shape[0]):
        terms, weights = queries[q].indices, queries[q].data
        expected = search(index, terms, weights, 10)
        assert all(np.array_equal(a, b) for a, b in zip(bmp_search(index, terms, weights, 10, max_blocks=10**6), expected))
        one = bmp_search(index, terms, weights, 10, max_blocks=1)  # the best-bound block alone
        assert len(set((one[0] // 8).tolist())) <= 1


def test_all_zero_and_empty_queries(tmp_path):
    docs = sp.random(100, 50, density=0.1, random_state=0, format="csr", dtype=np.float32) * 100
    index = build(tmp_path / "ix", docs.ceil(), 8)
    for terms, weights in (([], []), ([1, 2], [0.0, 0.0]), ([7, 7], [1.0, -1.0])):
        found = bmp_search(index, np.array(terms, dtype=np.int64), np.array(weights, dtype=np.float32), 10)
        assert found[0].size == 0


def test_negative_weights_stay_exact(tmp_path):
    rng = np.random.default_rng(1)
    docs = sp.random(500, 40, density=0.2, random_state=rng, format="csr", dtype=np.float32) * 50
    index = build(tmp_path / "ix", docs.ceil(), 16, "bp")
    terms, weights = np.arange(10), np.array([1, -1, 2, 0.5, -0.25, 1, 1, 3, -2, 1], dtype=np.float32)
    for k in (1, 10, 1000):
        expected = scipy_top_k(index, terms, weights, k)
        found = bmp_search(index, terms, weights, k)
        assert found[0].tolist() == expected[0].tolist() and found[1].tolist() == expected[1].tolist()


def test_batch_equals_single(tmp_path):
    rng = np.random.default_rng(2)
    docs = sp.random(2000, 300, density=0.03, random_state=rng, format="csr", dtype=np.float32) * 10
    index = build(tmp_path / "ix", docs, 32, "bp")
    queries = SparseBatch.from_scipy(sp.random(30, 300, density=0.05, random_state=rng, format="csr", dtype=np.float32))
    for k, alpha, beta, max_blocks in ((10, 1.0, 1.0, None), (100, 1.0, 1.0, None), (10, 0.7, 0.5, None),
                                       (10, 1.0, 1.0, 3)):
        batch = bmp_search_batch(index, queries, k, alpha, beta, max_blocks)
        exhaustive = search_batch(index, queries, k)
        for q in range(len(queries)):
            single = bmp_search(index, *queries.row(q), k, alpha, beta, max_blocks)
            assert np.array_equal(batch.row(q)[0], single[0]) and np.array_equal(batch.row(q)[1], single[1])
            if alpha == beta == 1 and max_blocks is None:
                assert np.array_equal(exhaustive.row(q)[0], single[0])


def test_bad_parameters(tmp_path):
    docs = sp.csr_matrix(np.eye(4, dtype=np.float32))
    index = build(tmp_path / "ix", docs, 2)
    with pytest.raises(ValueError, match="alpha and beta must be in"):
        bmp_search(index, [0], [1.0], 10, alpha=1.5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_blocks must be a positive integer"):
            bmp_search(index, [0], [1.0], 10, max_blocks=bad)
    with pytest.raises(ValueError, match="k must be at least 1"):
        bmp_search(index, [0], [1.0], 0)
    with pytest.raises(ValueError, match="block size must be between 1 and 256"):
        build(tmp_path / "bad", docs, 300)


# Slow: it runs the oracle tests of five files again under a fresh JIT (137 s of the default
# suite's 980 on CI's 2 cores, over the 15-minute budget); `pytest -m slow` runs it.
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NUMBA_BOUNDSCHECK") == "1", reason="already bounds-checked")
def test_kernels_under_numba_boundscheck(tmp_path):
    """The oracle tests once more with every array access bounds-checked (fresh JIT cache)."""
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    tests = ["tests/test_bmp.py", "tests/test_exhaustive.py", "tests/test_reorder.py", "tests/test_postings_writer.py",
             "tests/test_live_index.py::test_random_writes_flushes_and_merges_match_the_oracle",
             "tests/test_live_index.py::test_bmp_seeds_stay_exact_when_the_top_documents_are_deleted",
             "tests/test_write_buffer.py"]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--hypothesis-seed=0", *tests],
        env=env, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 4]), st.sampled_from([1, 10, 100]))
def test_many_blocks_safe_search_and_bounds(tmp_path_factory, seed, block_size, k):
    """Collections of hundreds of blocks with rare and common terms (bounds from entries and
    from dense rows) and the default per-term scales: safe BMP equals scipy, and every block's
    bound covers its docs' scores."""
    from lsr.index.scorers.bmp import block_upper_bounds

    rng = np.random.default_rng(seed)
    num_docs, vocab = int(rng.integers(300, 900)), 60
    present = rng.random((num_docs, vocab)) < rng.uniform(0.005, 0.5, vocab)  # rare terms and common ones
    docs = sp.csr_matrix(np.where(present, rng.uniform(0.001, 3.0, (num_docs, vocab)), 0).astype(np.float32))
    path = tmp_path_factory.mktemp("ix") / "ix"
    build_index(path, [([f"d{i}" for i in range(num_docs)], SparseBatch.from_scipy(docs), None)], vocab,
                block_size=block_size, reorder="none")
    index = open_single_segment(path)
    dense_rows = index.postings.bm_dense_slot >= 0
    assert dense_rows.any() and not dense_rows.all()  # both kinds of bounds: dense rows and entries
    terms = rng.choice(vocab, size=int(rng.integers(1, 30)), replace=False).astype(np.uint32)
    weights = rng.uniform(0.1, 2.0, len(terms)).astype(np.float32)
    for precision in ("8-bit", "16-bit"):
        expected_docs, expected_scores = scipy_top_k(index, terms, weights, k, fine=precision == "16-bit")
        found_docs, found_scores = bmp_search(index, terms, weights, k, precision=precision)
        assert found_docs.tolist() == expected_docs.tolist()
        assert found_scores.tolist() == expected_scores.tolist()

    scaled_terms, scaled = canonical_query(terms, weights, index.term_scales)
    bounds = block_upper_bounds(index, scaled_terms, scaled).astype(np.float64)
    all_docs, all_scores = scipy_top_k(index, terms, weights, num_docs)
    assert np.all(bounds[all_docs // block_size] * (1 + 1e-5) >= all_scores)


def test_16_bit_precision_needs_16_bit_impacts(tmp_path):
    """An index built without them (or imported) says so for 16-bit, and auto falls back to 8-bit."""
    rng = np.random.default_rng(5)
    docs = sp.random(200, 50, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    path = tmp_path / "ix"
    build_index(path, [([f"d{i}" for i in range(200)], SparseBatch.from_scipy(docs), None)], 50, fine_impacts=False)
    index = open_single_segment(path)
    assert index.postings.block_post_impacts16 is None
    terms, weights = np.arange(10), np.ones(10, np.float32)
    with pytest.raises(ValueError, match="16-bit impacts"):
        bmp_search(index, terms, weights, 5, precision="16-bit")
    with pytest.raises(ValueError, match="precision must be one of"):
        bmp_search(index, terms, weights, 5, precision="float")
    auto = search_sparse(single_segment_view(index), terms, weights, 5)
    eight = bmp_search(index, terms, weights, 5, precision="8-bit")
    assert auto[0].tolist() == eight[0].tolist() and auto[1].tolist() == eight[1].tolist()


def test_16_bit_search_is_closer_to_float_than_8_bit(tmp_path):
    """Recall@10 against exact float scoring, on random float weights: 16-bit is at least as
    good as 8-bit, and near 1."""
    rng = np.random.default_rng(11)
    num_docs, vocab = 3000, 200
    docs = sp.random(num_docs, vocab, density=0.06, random_state=rng, format="csr", dtype=np.float32)
    docs.data = (docs.data * rng.uniform(0.2, 3.0, docs.nnz)).astype(np.float32)
    path = tmp_path / "ix"
    build_index(path, [([f"d{i}" for i in range(num_docs)], SparseBatch.from_scipy(docs), None)], vocab,
                reorder="bp")
    index = open_single_segment(path)
    position = np.array([int(index.doc_ids[i][1:]) for i in range(num_docs)])
    hits = {"8-bit": 0, "16-bit": 0}
    for _ in range(60):
        terms = rng.choice(vocab, 12, replace=False)
        weights = rng.uniform(0.1, 2.0, 12).astype(np.float32)
        query = np.zeros(vocab)
        query[terms] = weights
        exact = np.argsort(-(docs @ query), kind="stable")[:10]
        for precision in hits:
            found, _ = bmp_search(index, terms, weights, 10, precision=precision)
            hits[precision] += len(set(position[found].tolist()) & set(exact.tolist()))
    assert hits["16-bit"] >= hits["8-bit"]
    assert hits["16-bit"] / 600 >= 0.995
