"""Recursive graph bisection: a permutation that tightens block maxima."""

import numpy as np
import scipy.sparse as sp

from lsr.index.reorder import bp_order, random_order


def clustered_collection(num_clusters=40, per_cluster=25, vocab=2000, seed=0):
    """Docs drawn from topics with disjoint term pools, shuffled."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for c in range(num_clusters):
        pool = np.arange(c * 50, c * 50 + 50)
        for i in range(per_cluster):
            terms = rng.choice(pool, size=12, replace=False)
            rows += [c * per_cluster + i] * 12
            cols += list(terms)
    docs = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(num_clusters * per_cluster, vocab))
    return docs[rng.permutation(docs.shape[0])]


def block_term_entries(docs: sp.csr_matrix, order: np.ndarray, block_size: int) -> int:
    """Sum over blocks of the distinct terms in the block (the size of the block-max lists)."""
    reordered = docs[order].tocoo()
    return len(set(zip((reordered.row // block_size).tolist(), reordered.col.tolist())))


def test_bp_returns_a_permutation():
    docs = clustered_collection()
    order = bp_order(docs.indptr, docs.indices, docs.shape[1])
    assert sorted(order.tolist()) == list(range(docs.shape[0]))
    assert order.dtype == np.int64


def test_bp_never_worsens_block_bounds_on_clustered_data():
    docs = clustered_collection()
    identity = np.arange(docs.shape[0])
    order = bp_order(docs.indptr, docs.indices, docs.shape[1])
    for block_size in (8, 16, 32):
        before = block_term_entries(docs, identity, block_size)
        after = block_term_entries(docs, order, block_size)
        assert after < 0.7 * before  # ideal (docs sorted by topic) is about 0.5
        assert after <= block_term_entries(docs, random_order(docs.shape[0]), block_size)


def test_bp_handles_tiny_and_empty_collections():
    assert bp_order(np.array([0]), np.array([], dtype=np.uint32), 5).tolist() == []
    assert bp_order(np.array([0, 0, 0]), np.array([], dtype=np.uint32), 5).tolist() in ([0, 1], [1, 0])
    docs = sp.csr_matrix(np.eye(3, dtype=np.float32))
    assert sorted(bp_order(docs.indptr, docs.indices, 3, leaf_size=1).tolist()) == [0, 1, 2]
