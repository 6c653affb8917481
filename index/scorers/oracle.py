"""Exhaustive term-at-a-time scorer: the correctness oracle for every faster scorer.

Each query term's postings (term-major, partitioned by block, see ``index.bmp_build``) are
accumulated into a dense float64 score array (query weight x
uint8 impact), then the top k are taken by partial selection. float64 makes the sums exact in
practice: a float32 weight times a uint8 impact has at most 32 significant bits, so a sum of
such products has no rounding unless the query's weights span more than about 2^13, and the
result does not depend on the order of accumulation (so scipy, or any later scorer, gets the
very same scores and the same ranking). Results hold only documents with
a positive score, ordered by score descending and, on equal scores, by internal doc id
ascending. Returned scores are in the encoder's units (query weights are scaled per term, see
``index.scorers.query``). Deleted documents (a ``uint8`` live mask, empty when nothing is
deleted) never become candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from index.bmp_build import SEED_KS
from index.format import Segment
from index.scorers.query import canonical_batch, canonical_query
from index.sparse_batch import SparseBatch

NO_DELETES = np.zeros(0, dtype=np.uint8)  # a live mask that says: nothing is deleted
NO_DELETE_COUNTS = np.zeros((0, len(SEED_KS)), dtype=np.int32)  # deleted docs per term and seed column: none

# kernels


@njit(cache=True, nogil=True)
def _accumulate(q_terms, q_weights, block_size, term_entry_offsets, term_entry_blocks, term_entry_starts,
                term_post_docs, term_post_impacts, scores):
    """Term at a time: each query term's postings, one sequential sweep, into the dense scores."""
    num_terms = term_entry_offsets.shape[0] - 1
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        if t >= num_terms:  # a term the index has never seen (canonical queries have none)
            continue
        w = np.float64(q_weights[j])  # float32 x uint8 would round to float32
        for x in range(term_entry_offsets[t], term_entry_offsets[t + 1]):
            first = term_entry_blocks[x] * block_size
            for p in range(term_entry_starts[x], term_entry_starts[x + 1]):
                scores[first + term_post_docs[p]] += w * term_post_impacts[p]


@njit(cache=True, nogil=True)
def _top_k(scores, k, live, out_docs, out_scores):
    """Write the top k positive scores of live docs into out_*; returns how many were written."""
    candidates = np.flatnonzero(scores > 0)
    if live.shape[0] > 0:
        candidates = candidates[live[candidates] != 0]
    m = candidates.shape[0]
    if m == 0 or k == 0:
        return 0
    cand_scores = scores[candidates]
    if m > k:
        # The k-th largest score; everything above it is in, ties at it go by doc id.
        threshold = np.partition(cand_scores, m - k)[m - k]
        above = cand_scores > threshold
        n_above = np.count_nonzero(above)
        at = np.flatnonzero(cand_scores == threshold)[: k - n_above]
        keep = np.concatenate((np.flatnonzero(above), at))
        keep.sort()
        candidates = candidates[keep]
        cand_scores = cand_scores[keep]
        m = k
    # Candidates are in doc order, so a stable sort on -score breaks ties by doc id.
    order = np.argsort(-cand_scores, kind="mergesort")
    for r in range(m):
        out_docs[r] = candidates[order[r]]
        out_scores[r] = cand_scores[order[r]]
    return m


@njit(cache=True, nogil=True)
def _search_one(q_terms, q_weights, num_docs, k, live, block_size, teo, teb, tes, tpd, tpi, out_docs, out_scores):
    scores = np.zeros(num_docs, dtype=np.float64)
    _accumulate(q_terms, q_weights, block_size, teo, teb, tes, tpd, tpi, scores)
    return _top_k(scores, k, live, out_docs, out_scores)


@njit(cache=True, nogil=True, parallel=True)
def _search_many(q_indptr, q_terms, q_weights, num_docs, k, live, block_size, teo, teb, tes, tpd, tpi,
                 out_docs, out_scores, counts):
    for q in prange(q_indptr.shape[0] - 1):
        start, end = q_indptr[q], q_indptr[q + 1]
        counts[q] = _search_one(q_terms[start:end], q_weights[start:end], num_docs, k, live, block_size,
                                teo, teb, tes, tpd, tpi, out_docs[q], out_scores[q])


# wrappers


@dataclass
class SearchResults:
    """Top-k results for a batch of queries.

    Attributes:
        docs: ``(num_queries, k)`` int64 internal doc ids, -1 past ``counts[q]``.
        scores: ``(num_queries, k)`` float64 scores in encoder units, 0 past ``counts[q]``.
        counts: ``(num_queries,)`` number of results of each query.
    """

    docs: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    def row(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.counts[q]
        return self.docs[q, :n], self.scores[q, :n]


def _postings(index: Segment) -> tuple:
    """The arrays the exhaustive kernels walk: the term-major postings."""
    b = index.postings
    return (b.block_size, b.term_entry_offsets, b.term_entry_blocks, b.term_entry_starts, b.term_post_docs,
            b.term_post_impacts)


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return int(k)


def segment_top_k(segment: Segment, terms: np.ndarray, weights: np.ndarray, k: int,
                  live: np.ndarray = NO_DELETES) -> tuple[np.ndarray, np.ndarray]:
    """The top k live docs of one segment for a canonical query (``index.scorers.query``)."""
    docs = np.full(k, -1, dtype=np.int64)
    scores = np.zeros(k, dtype=np.float64)
    n = _search_one(terms, weights, segment.num_docs, k, live, *_postings(segment), docs, scores)
    return docs[:n], scores[:n]


def segment_top_k_batch(segment: Segment, queries: SparseBatch, k: int, live: np.ndarray = NO_DELETES) -> SearchResults:
    """`segment_top_k` for a batch of canonical queries, in parallel over queries."""
    n = len(queries)
    docs = np.full((n, k), -1, dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    _search_many(queries.indptr, queries.indices, queries.values, segment.num_docs, k, live, *_postings(segment),
                 docs, scores, counts)
    return SearchResults(docs, scores, counts)


def search_batch(index: Segment, queries: SparseBatch, k: int = 10) -> SearchResults:
    """Score every query of the batch exhaustively over one segment, in parallel over queries.

    Args:
        index: an opened segment.
        queries: query vectors with float weights (``vocab_size`` must match the index).
        k: results per query.
    """
    k = _check_k(k)
    return segment_top_k_batch(index, canonical_batch(queries, index.term_scales), k)


def search(index: Segment, terms: np.ndarray, weights: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Score one query over one segment; returns internal doc ids (int64) and scores (float64,
    encoder units)."""
    k = _check_k(k)
    return segment_top_k(index, *canonical_query(terms, weights, index.term_scales), k)
