"""Block-Max Pruning search (Mallia, Suel and Tonellotto, SIGIR 2024), exact at alpha = beta = 1.

1. Upper bound per block: ``ub[j] = sum_t w_t * blockmax_t[j]`` over the query terms (float32,
   inflated by a margin that covers its rounding, so it is never below a true doc score).
2. A threshold seed: with non-negative weights, at least ``k`` docs score ``>= w_t * kth_t``
   for every query term, so docs and blocks below the largest such product cannot make the
   top k (``kth_t`` is the stored k-th largest impact of the term, for k = 10, 100, 1000).
3. Blocks above the seed are bucket-sorted by bound and visited best first; each is scored
   through the per-block forward index (a binary search per query term, then that term's
   postings in the block) into a block-local float64 accumulator (exact sums,
   see ``index.scorers.exhaustive``) and its docs offered to a top-k heap.
4. The search stops at the first bucket whose bound, times ``alpha``, is below the current
   k-th score. A block whose bound equals the k-th score is still scored, so a doc that ties
   with it and has a lower id comes in: ties break by doc id as in the exhaustive scorer,
   which makes the safe result identical to it.

``alpha < 1`` stops earlier and ``beta < 1`` keeps only the ``ceil(beta * n)`` highest-weighted
query terms (their scores stay exact for the terms kept): both approximate.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
from numba import njit, prange

from index.bmp_build import SEED_KS
from index.format import SparseIndex
from index.scorers.exhaustive import SearchResults, _check_k
from index.scorers.query import canonical_batch, canonical_query
from index.sparse_batch import SparseBatch

NUM_BUCKETS = 4096

# kernels


@njit(cache=True, nogil=True)
def _heap_less(score_a, doc_a, score_b, doc_b):
    """Whether (score_a, doc_a) ranks below (score_b, doc_b): lower score, or same score and higher id."""
    return score_a < score_b or (score_a == score_b and doc_a > doc_b)


@njit(cache=True, nogil=True)
def _sift_down(scores, docs, size, i):
    while True:
        smallest, left, right = i, 2 * i + 1, 2 * i + 2
        if left < size and _heap_less(scores[left], docs[left], scores[smallest], docs[smallest]):
            smallest = left
        if right < size and _heap_less(scores[right], docs[right], scores[smallest], docs[smallest]):
            smallest = right
        if smallest == i:
            return
        scores[i], scores[smallest] = scores[smallest], scores[i]
        docs[i], docs[smallest] = docs[smallest], docs[i]
        i = smallest


@njit(cache=True, nogil=True)
def _heap_offer(scores, docs, size, k, score, doc):
    """Offer a doc to a min-heap of the best k; returns the new size."""
    if size < k:
        i = size
        scores[i], docs[i] = score, doc
        while i > 0:
            parent = (i - 1) // 2
            if not _heap_less(scores[i], docs[i], scores[parent], docs[parent]):
                break
            scores[i], scores[parent] = scores[parent], scores[i]
            docs[i], docs[parent] = docs[parent], docs[i]
            i = parent
        return size + 1
    if _heap_less(scores[0], docs[0], score, doc):
        scores[0], docs[0] = score, doc
        _sift_down(scores, docs, size, 0)
    return size


@njit(cache=True, nogil=True)
def _upper_bounds(q_terms, q_weights, num_blocks, dense_slot, bm_dense, term_entry_offsets, term_entry_blocks,
                  term_entry_max, ub, present):
    """Per block, into ub and present: the score bound, and a bit mask of the query terms
    (first 64) it holds."""
    ub[:] = 0
    present[:] = 0
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        # A non-positive weight never raises a score: 0 is a valid bound for it.
        w = max(np.float32(q_weights[j]), np.float32(0.0))
        shift = np.uint64(min(j, 63))
        slot = dense_slot[t]
        if slot >= 0:
            row = bm_dense[slot]
            for blk in range(num_blocks):  # branch-free, so it vectorises
                ub[blk] += w * row[blk]
                present[blk] |= np.uint64(row[blk] > 0) << shift
        else:
            for x in range(term_entry_offsets[t], term_entry_offsets[t + 1]):
                blk = term_entry_blocks[x]
                ub[blk] += w * term_entry_max[x]
                present[blk] |= np.uint64(1) << shift


@njit(cache=True, nogil=True)
def _seed_threshold(q_terms, q_weights, kth_impacts, seed_column):
    if seed_column < 0:
        return 0.0
    for j in range(q_weights.shape[0]):
        if q_weights[j] < 0:  # other terms could pull a doc below the seed
            return 0.0
    seed = 0.0
    for j in range(q_terms.shape[0]):
        value = np.float64(q_weights[j]) * kth_impacts[q_terms[j], seed_column]
        seed = max(seed, value)
    return seed


@njit(cache=True, nogil=True)
def _order_blocks(ub, floor, order, bucket_of):
    """Blocks with a bound >= floor, bucket-sorted by bound descending, into order (and their
    bucket ids into bucket_of); returns how many, and the bucket scale."""
    top = 0.0
    for blk in range(ub.shape[0]):
        top = max(top, ub[blk])
    scale = (NUM_BUCKETS - 1) / top if top > 0 else 0.0
    counts = np.zeros(NUM_BUCKETS + 1, dtype=np.int64)
    for blk in range(ub.shape[0]):
        if ub[blk] > 0 and ub[blk] >= floor:
            counts[NUM_BUCKETS - 1 - int(ub[blk] * scale)] += 1
    starts = np.zeros(NUM_BUCKETS + 1, dtype=np.int64)
    for b in range(NUM_BUCKETS):
        starts[b + 1] = starts[b] + counts[b]
    for blk in range(ub.shape[0]):
        if ub[blk] > 0 and ub[blk] >= floor:
            b = NUM_BUCKETS - 1 - int(ub[blk] * scale)
            order[starts[b]] = blk
            bucket_of[starts[b]] = b
            starts[b] += 1
    return starts[NUM_BUCKETS - 1], scale


@njit(cache=True, nogil=True)
def _find(sorted_terms, lo, hi, term):
    """Index of term in sorted_terms[lo:hi], or -1 (binary search)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_terms[mid] < term:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _score_block(blk, present, q_terms, q_weights, block_term_offsets, block_terms, block_entry_starts,
                 block_post_offsets, block_post_docs, block_post_impacts, acc):
    lo, hi = block_term_offsets[blk], block_term_offsets[blk + 1]
    base = block_post_offsets[blk]
    block_end = block_post_offsets[blk + 1] - base
    for j in range(q_terms.shape[0]):  # query terms are sorted: search from the last hit on
        if j < 63 and not (present >> np.uint64(j)) & np.uint64(1):
            continue  # the block-max lists say this term is not in the block (bit 63: "maybe")
        e = _find(block_terms, lo, hi, q_terms[j])
        if e >= hi:
            break
        lo = e
        if block_terms[e] != q_terms[j]:
            continue
        w = np.float64(q_weights[j])
        end = block_entry_starts[e + 1] if e + 1 < block_term_offsets[blk + 1] else block_end
        for p in range(base + block_entry_starts[e], base + end):
            acc[block_post_docs[p]] += w * block_post_impacts[p]
        lo = e + 1


@njit(cache=True, nogil=True)
def _bmp_search(q_terms, q_weights, k, alpha, block_size, num_docs, kth_impacts, seed_column,
                dense_slot, bm_dense, term_entry_offsets, term_entry_blocks, term_entry_max,
                block_term_offsets, block_terms, block_entry_starts, block_post_offsets, block_post_docs,
                block_post_impacts, ub, present, order, bucket_of, out_docs, out_scores):
    num_blocks = block_term_offsets.shape[0] - 1
    _upper_bounds(q_terms, q_weights, num_blocks, dense_slot, bm_dense, term_entry_offsets,
                  term_entry_blocks, term_entry_max, ub, present)
    # float32 sums of float32 products: relative error below (n + 1) * 2^-24; inflate by twice that.
    margin = np.float32(1.0 + (q_terms.shape[0] + 2) * 2.0 ** -23)
    for blk in range(num_blocks):
        ub[blk] *= margin
    seed = _seed_threshold(q_terms, q_weights, kth_impacts, seed_column)
    num_ordered, scale = _order_blocks(ub, seed, order, bucket_of)
    heap_scores = np.empty(k, dtype=np.float64)
    heap_docs = np.empty(k, dtype=np.int64)
    size = 0
    acc = np.zeros(block_size, dtype=np.float64)
    for i in range(num_ordered):
        threshold = heap_scores[0] if size == k else seed
        # Everything from this bucket on is bounded by its upper edge.
        edge = (NUM_BUCKETS - bucket_of[i]) / scale * (1.0 + 1e-9)  # covers rounding of the division
        if alpha * edge < threshold:
            break
        blk = order[i]
        if alpha * ub[blk] < threshold:
            continue
        _score_block(blk, present[blk], q_terms, q_weights, block_term_offsets, block_terms, block_entry_starts,
                     block_post_offsets, block_post_docs, block_post_impacts, acc)
        first = blk * block_size
        for d in range(min(block_size, num_docs - first)):
            score = acc[d]
            acc[d] = 0.0
            if score > 0 and score >= seed:
                size = _heap_offer(heap_scores, heap_docs, size, k, score, first + d)
    # Heap to ranked list: score descending, doc id ascending.
    ranked = np.argsort(heap_docs[:size], kind="mergesort")
    ranked = ranked[np.argsort(-heap_scores[:size][ranked], kind="mergesort")]
    for r in range(size):
        out_docs[r] = heap_docs[ranked[r]]
        out_scores[r] = heap_scores[ranked[r]]
    return size


@njit(cache=True, nogil=True, parallel=True)
def _bmp_search_many(q_indptr, q_terms, q_weights, k, alpha, block_size, num_docs, kth_impacts, seed_column,
                     dense_slot, bm_dense, term_entry_offsets, term_entry_blocks, term_entry_max,
                     block_term_offsets, block_terms, block_entry_starts, block_post_offsets, block_post_docs,
                     block_post_impacts, workers, out_docs, out_scores, counts):
    num_blocks = block_term_offsets.shape[0] - 1
    num_queries = q_indptr.shape[0] - 1
    for w in prange(workers):  # one workspace per worker, reused for its queries
        ub = np.empty(num_blocks, dtype=np.float32)
        present = np.empty(num_blocks, dtype=np.uint64)
        order = np.empty(num_blocks, dtype=np.int64)
        bucket_of = np.empty(num_blocks, dtype=np.int64)
        for q in range(w, num_queries, workers):
            start, end = q_indptr[q], q_indptr[q + 1]
            counts[q] = _bmp_search(
                q_terms[start:end], q_weights[start:end], k, alpha, block_size, num_docs, kth_impacts,
                seed_column, dense_slot, bm_dense, term_entry_offsets, term_entry_blocks, term_entry_max,
                block_term_offsets, block_terms, block_entry_starts, block_post_offsets, block_post_docs,
                block_post_impacts, ub, present, order, bucket_of, out_docs[q], out_scores[q],
            )


# wrappers


def _seed_column(k: int) -> int:
    """The stored k-th-impact column usable for this k (the smallest seed k' >= k), or -1."""
    return next((i for i, seed_k in enumerate(SEED_KS) if seed_k >= k), -1)


def _keep_top_terms(terms: np.ndarray, weights: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """beta < 1: keep the ceil(beta * n) highest-weighted terms (ties by term id), in term order."""
    if beta >= 1 or len(terms) == 0:
        return terms, weights
    keep = max(1, math.ceil(beta * len(terms)))
    chosen = np.sort(np.lexsort((terms, -weights))[:keep])
    return terms[chosen], weights[chosen]


def _check_alpha_beta(alpha: float, beta: float) -> None:
    if not 0 < alpha <= 1 or not 0 < beta <= 1:
        raise ValueError(f"alpha and beta must be in (0, 1], got alpha={alpha}, beta={beta}")


_workspaces = threading.local()


def _workspace(num_blocks: int) -> tuple:
    """This thread's scratch arrays for one search (reused: large fresh allocations cost page faults)."""
    cached = getattr(_workspaces, "arrays", None)
    if cached is None or cached[0].shape[0] != num_blocks:
        cached = (np.empty(num_blocks, np.float32), np.empty(num_blocks, np.uint64),
                  np.empty(num_blocks, np.int64), np.empty(num_blocks, np.int64))
        _workspaces.arrays = cached
    return cached


def _index_arrays(index: SparseIndex) -> tuple:
    bmp = index.postings
    return (
        bmp.block_size, index.num_docs, bmp.term_kth_impacts,
    ), (
        bmp.bm_dense_slot, bmp.bm_dense, bmp.term_entry_offsets, bmp.term_entry_blocks, bmp.term_entry_max,
        bmp.block_term_offsets, bmp.block_terms, bmp.block_entry_starts, bmp.block_post_offsets,
        bmp.block_post_docs, bmp.block_post_impacts,
    )


def bmp_search(index: SparseIndex, terms, weights, k: int = 10, alpha: float = 1.0,
               beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Block-max pruning search of one query.

    Args:
        index: an opened index.
        terms: query term ids; weights: their float weights (any order, duplicates merged).
        k: results wanted.
        alpha: 1 is safe (exact); below 1 stops once the k-th score reaches alpha x the bound.
        beta: 1 keeps every query term; below 1 keeps the highest-weighted fraction.

    Returns:
        Internal doc ids (int64) and scores (float64, encoder units), best first, ties by
        doc id; at alpha = beta = 1 identical to ``index.scorers.exhaustive.search``.
    """
    k = _check_k(k)
    _check_alpha_beta(alpha, beta)
    terms, weights = _keep_top_terms(*canonical_query(terms, weights, index.term_scales), beta)
    head, arrays = _index_arrays(index)
    docs = np.empty(k, dtype=np.int64)
    scores = np.empty(k, dtype=np.float64)
    n = _bmp_search(terms, weights, k, float(alpha), *head, _seed_column(k), *arrays,
                    *_workspace(index.postings.num_blocks), docs, scores)
    return docs[:n], scores[:n]


def bmp_search_batch(index: SparseIndex, queries: SparseBatch, k: int = 10, alpha: float = 1.0,
                     beta: float = 1.0) -> SearchResults:
    """`bmp_search` for every query of a batch, in parallel over queries (numba threads)."""
    k = _check_k(k)
    _check_alpha_beta(alpha, beta)
    queries = canonical_batch(queries, index.term_scales)
    if beta < 1:
        rows = [_keep_top_terms(*queries.row(q), beta) for q in range(len(queries))]
        queries = SparseBatch(
            np.concatenate([[0], np.cumsum([len(t) for t, _ in rows])]),
            np.concatenate([t for t, _ in rows] or [np.empty(0, np.uint32)]),
            np.concatenate([w for _, w in rows] or [np.empty(0, np.float32)]),
            index.vocab_size,
        )
    head, arrays = _index_arrays(index)
    n = len(queries)
    docs = np.full((n, k), -1, dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    workers = max(1, min(numba.get_num_threads(), n))
    _bmp_search_many(queries.indptr, queries.indices, queries.values, k, float(alpha), *head,
                     _seed_column(k), *arrays, workers, docs, scores, counts)
    return SearchResults(docs, scores, counts)
