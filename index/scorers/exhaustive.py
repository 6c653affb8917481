"""Exhaustive term-at-a-time scorer: float32 sums to find candidates, float64 to rank them.

1. Each query term's postings (``index.postings_view.TermView``) are added, weight x impact in
   float32, into a per-thread accumulator of every document, reused from query to query; the
   blocks an entry lands in are marked.
2. One pass over the marked blocks reads each document's sum, sets it back to zero (the next
   query starts from zeros without a full reset) and keeps the documents that may be in the
   top k, with a running k-th best sum as the threshold (a min-heap of k floats).
3. Those candidates are rescored exactly through the per-block forward index
   (``index.postings_view.score_block_float64``: float64, query terms in the same order as the
   oracle ``index.scorers.oracle``, so the very same sums) and ranked: score descending, doc id
   ascending on ties. The result is identical to the oracle's.

Why the candidates are enough. Let ``s(d)`` be the exact float64 sum of a document (the
oracle's) and ``f(d)`` the float32 one. Both add at most ``m`` products (``m`` query terms) of
a query weight and an impact, so by the standard bound on a recursive sum (Higham, *Accuracy
and Stability of Numerical Algorithms*, 3.1), ``|f(d) - s(d)| <= D`` with
``D = (gamma_m(2^-24) + gamma_m(2^-53)) * sum_j |w_j| * 255``, ``gamma_m(u) =
m u / (1 - m u)`` (plus ``m * 2^-149`` for float32 results below the normal range). Take the
documents with ``f(d) > D``: their exact score is positive. If at least ``k`` of them exist, let
``F`` be the k-th largest ``f`` among them; those ``k`` documents have ``s >= F - D > 0``, so the
k-th best exact score ``S_k >= F - D``, and every document of the exact top k has ``s >= S_k``,
hence ``f >= S_k - D >= F - 2D``. Otherwise every document with ``s > 0`` has ``f > -D``. So
keeping every live document with ``f >= F - 2D`` (or ``> -D`` while fewer than ``k`` have
``f > D``) keeps the whole exact top k. The running k-th best only grows, so a document dropped
against it would be dropped against the final one too. ``D`` is about ``m * 6e-8`` of the best
possible score, so the candidates are the top k and the few that tie with the k-th within it.

With 16-bit impacts (``fine``; ``index.quantize.fine_impacts``) the result is the exact top k
of the 16-bit scores ``g(d)`` (float64 sums of ``w_j / 256 x`` 16-bit impact, in the same
order). The float32 pass still sums the 8-bit impacts, and ``|f(d) - g(d)| <= D + E`` with
``E = sum_j |w_j| * FINE_ERROR_LEVELS``: each 16-bit impact, over 256, is within
``FINE_ERROR_LEVELS`` of its 8-bit one (``D`` already covers float64 rounding of ``g``, whose
terms are at most 255 levels too). The argument above holds word for word with ``D + E`` in
place of ``D``; the band of candidates is about ``2 E`` wide, a level's half for each query term.

Query weights so large that float32 sums could overflow (``sum_j |w_j| * 255 >= 2^120``) go to
the oracle instead (with 16-bit impacts: every live document is rescored). Deleted documents
(a ``uint8`` live mask, empty when nothing is deleted) never become candidates. Returned scores
are in the encoder's units (query weights are scaled per term, see ``index.scorers.query``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from lsr.index.bmp_build import SEED_KS
from lsr.index.format import Segment
from lsr.index.postings_view import block_view, score_block_float64, term_view
from lsr.index.quantize import FINE_ERROR_LEVELS, FINE_LEVELS
from lsr.index.scorers.oracle import oracle_top_k
from lsr.index.scorers.query import canonical_batch, canonical_query
from lsr.index.sparse_batch import SparseBatch

NO_DELETES = np.zeros(0, dtype=np.uint8)  # a live mask that says: nothing is deleted
NO_DELETE_COUNTS = np.zeros((0, len(SEED_KS)), dtype=np.int32)  # deleted docs per term and seed column: none
FLOAT32_SAFE_TOTAL = 2.0**120  # sum_j |w_j| * 255 below this: float32 sums cannot overflow
MIN_CANDIDATES = 256  # first capacity of the candidate list (it grows as needed)
NARROW_BLOCK = 8  # blocks up to this size (the default) take `_accumulate32_narrow`
CHUNK_ENTRIES = 4096  # entries decoded at a time by `_accumulate32_narrow` (128 KB of scratch)

# kernels


@njit(cache=True, nogil=True)
def _accumulate32(q_terms, q_weights, view, scores, touched):
    """Float32 sums of every document into ``scores``; marks the touched blocks."""
    num_terms = view.entry_offsets.shape[0] - 1
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        if t >= num_terms:  # canonical queries hold only terms of the vocabulary
            continue
        w = np.float32(q_weights[j])
        for x in range(view.entry_offsets[t], view.entry_offsets[t + 1]):
            blk = view.entry_blocks[x]
            touched[blk] = 1
            first = blk * view.block_size
            for p in range(view.entry_starts[x], view.entry_starts[x + 1]):
                scores[first + view.post_docs[p]] += w * np.float32(view.post_impacts[p])


@njit(cache=True, nogil=True)
def _accumulate32_narrow(q_terms, q_weights, view, scores, touched, firsts):
    """`_accumulate32` for blocks of at most `NARROW_BLOCK` docs, without a loop per entry.

    An entry holds one to `NARROW_BLOCK` postings (three on average here), so a loop per entry
    ends at an unpredictable branch. Instead, a chunk of entries first writes its block's first
    doc into `NARROW_BLOCK` slots from the entry's first posting on (a fixed-width store; the
    next entry overwrites the slots past this one's end), then one straight loop adds every
    posting of the chunk at ``firsts[i] + doc offset``. ``firsts``: int32 scratch of
    ``CHUNK_ENTRIES * NARROW_BLOCK + NARROW_BLOCK``."""
    num_terms = view.entry_offsets.shape[0] - 1
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        if t >= num_terms:
            continue
        w = np.float32(q_weights[j])
        lo, hi = view.entry_offsets[t], view.entry_offsets[t + 1]
        for x0 in range(lo, hi, CHUNK_ENTRIES):
            x1 = min(x0 + CHUNK_ENTRIES, hi)
            p0 = view.entry_starts[x0]
            for x in range(x0, x1):
                blk = view.entry_blocks[x]
                touched[blk] = 1
                first = np.int32(blk * view.block_size)
                s = view.entry_starts[x] - p0
                for i in range(NARROW_BLOCK):
                    firsts[s + i] = first
            for i in range(view.entry_starts[x1] - p0):
                scores[firsts[i] + view.post_docs[p0 + i]] += w * np.float32(view.post_impacts[p0 + i])


@njit(cache=True, nogil=True)
def _error_bound(q_weights):
    """``D`` of the module docstring, with 255 for every term's largest impact."""
    m = q_weights.shape[0]
    total = 0.0
    for j in range(m):
        total += abs(np.float64(q_weights[j])) * 255.0
    gamma32 = m * 2.0**-24 / (1.0 - m * 2.0**-24)
    gamma64 = m * 2.0**-53 / (1.0 - m * 2.0**-53)
    return (gamma32 + gamma64) * total * 1.001 + m * 2.0**-149


@njit(cache=True, nogil=True)
def _offer_value(heap, size, k, value):
    """Offer a value to a min-heap of the k largest; returns the new size."""
    if size < k:
        i = size
        heap[i] = value
        while i > 0:
            parent = (i - 1) >> 1
            if heap[parent] <= heap[i]:
                break
            heap[i], heap[parent] = heap[parent], heap[i]
            i = parent
        return size + 1
    if value <= heap[0]:
        return size
    heap[0] = value
    i = 0
    while True:
        smallest, left, right = i, 2 * i + 1, 2 * i + 2
        if left < size and heap[left] < heap[smallest]:
            smallest = left
        if right < size and heap[right] < heap[smallest]:
            smallest = right
        if smallest == i:
            return size
        heap[i], heap[smallest] = heap[smallest], heap[i]
        i = smallest


@njit(cache=True, nogil=True)
def _keep_above(docs, sums, n, floor):
    """Compact the first ``n`` candidates to those with a sum >= floor (order kept); returns how many."""
    kept = 0
    for i in range(n):
        if np.float64(sums[i]) >= floor:
            docs[kept] = docs[i]
            sums[kept] = sums[i]
            kept += 1
    return kept


@njit(cache=True, nogil=True)
def _collect(scores, touched, num_docs, block_size, live, k, bound, heap):
    """Read and reset the sums of the touched blocks; returns the candidates in doc order as
    (docs, float32 sums, count), cut at the final floor of the module docstring."""
    docs = np.empty(max(2 * k, MIN_CANDIDATES), dtype=np.int64)
    sums = np.empty(docs.shape[0], dtype=np.float32)
    n = 0
    size = 0
    floor = -bound
    for blk in range(touched.shape[0]):
        if touched[blk] == 0:
            continue
        touched[blk] = 0
        first = blk * block_size
        for d in range(first, min(first + block_size, num_docs)):
            s = scores[d]
            scores[d] = 0
            if np.float64(s) < floor or (live.shape[0] > 0 and live[d] == 0):
                continue
            if n == docs.shape[0]:
                n = _keep_above(docs, sums, n, floor)
                if n > docs.shape[0] // 2:  # still crowded: grow
                    docs = np.concatenate((docs, np.empty(docs.shape[0], dtype=np.int64)))
                    sums = np.concatenate((sums, np.empty(sums.shape[0], dtype=np.float32)))
            docs[n] = d
            sums[n] = s
            n += 1
            if np.float64(s) > bound:
                size = _offer_value(heap, size, k, s)
                if size == k:
                    floor = max(floor, np.float64(heap[0]) - 2.0 * bound)
    return docs, sums, _keep_above(docs, sums, n, floor)


@njit(cache=True, nogil=True)
def _rank_exact(docs, n, q_terms, q_weights, view, fine, k, out_docs, out_scores):
    """Rescore ``n`` candidates (doc order) in float64 block by block (``fine``: by the 16-bit
    impacts); the top k positive ones, score descending then doc ascending, into ``out_*``;
    returns how many."""
    exact = np.zeros(n, dtype=np.float64)
    acc = np.zeros(view.block_size, dtype=np.float64)
    unknown_bits = np.full(q_terms.shape[0], -1, dtype=np.int64)  # only the dense rows skip terms
    fine_weights = np.empty(q_terms.shape[0], dtype=np.float64)
    for j in range(q_terms.shape[0]):
        fine_weights[j] = np.float64(q_weights[j]) / FINE_LEVELS  # exact in float64
    i = 0
    while i < n:
        blk = docs[i] // view.block_size
        acc[:] = 0.0
        if fine:
            score_block_float64(view, view.post_impacts16, blk, q_terms, fine_weights, np.uint16(0), unknown_bits, acc)
        else:
            score_block_float64(view, view.post_impacts, blk, q_terms, q_weights, np.uint16(0), unknown_bits, acc)
        while i < n and docs[i] // view.block_size == blk:
            exact[i] = acc[docs[i] - blk * view.block_size]
            i += 1
    positive = np.flatnonzero(exact > 0)
    order = positive[np.argsort(-exact[positive], kind="mergesort")]  # stable: ties stay in doc order
    m = min(k, order.shape[0])
    for r in range(m):
        out_docs[r] = docs[order[r]]
        out_scores[r] = exact[order[r]]
    return m


@njit(cache=True, nogil=True)
def _live_docs(num_docs, live):
    """Every live document, in doc order."""
    if live.shape[0] == 0:
        return np.arange(num_docs)
    return np.flatnonzero(live)


@njit(cache=True, nogil=True)
def _search_one(q_terms, q_weights, num_docs, k, live, terms, blocks, fine, scores, touched, out_docs, out_scores):
    total = 0.0
    for j in range(q_weights.shape[0]):
        total += abs(np.float64(q_weights[j])) * 255.0
    if total >= FLOAT32_SAFE_TOTAL:
        if fine:
            everyone = _live_docs(num_docs, live)
            return _rank_exact(everyone, everyone.shape[0], q_terms, q_weights, blocks, fine, k, out_docs, out_scores)
        return oracle_top_k(q_terms, q_weights, num_docs, k, live, terms, out_docs, out_scores)
    if terms.block_size <= NARROW_BLOCK and touched.shape[0] * terms.block_size < 2**31:
        firsts = np.empty(CHUNK_ENTRIES * NARROW_BLOCK + NARROW_BLOCK, dtype=np.int32)
        _accumulate32_narrow(q_terms, q_weights, terms, scores, touched, firsts)
    else:
        _accumulate32(q_terms, q_weights, terms, scores, touched)
    bound = _error_bound(q_weights)
    if fine:
        bound += total / 255.0 * FINE_ERROR_LEVELS * 1.001  # E of the module docstring
    heap = np.empty(k, dtype=np.float32)
    docs, _, n = _collect(scores, touched, num_docs, terms.block_size, live, k, bound, heap)
    return _rank_exact(docs, n, q_terms, q_weights, blocks, fine, k, out_docs, out_scores)


@njit(cache=True, nogil=True, parallel=True)
def _search_many(q_indptr, q_terms, q_weights, num_docs, k, live, terms, blocks, fine, scores, touched, workers,
                 out_docs, out_scores, counts):
    """Queries split over ``workers`` threads; worker ``w`` owns accumulator row ``w``."""
    num_queries = q_indptr.shape[0] - 1
    for w in prange(workers):
        for q in range(w, num_queries, workers):
            start, end = q_indptr[q], q_indptr[q + 1]
            counts[q] = _search_one(q_terms[start:end], q_weights[start:end], num_docs, k, live, terms, blocks, fine,
                                    scores[w], touched[w], out_docs[q], out_scores[q])


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


_accumulators = threading.local()


def _accumulator(rows: int, num_blocks: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's zeroed float32 sums and block marks (the kernels leave them zeroed), grown
    to the largest segment seen: a fresh array per query would cost its page faults and a reset."""
    need = num_blocks * block_size
    cached = getattr(_accumulators, "arrays", None)
    if cached is None or cached[0].shape[0] < rows or cached[0].shape[1] < need or cached[1].shape[1] < num_blocks:
        cached = (np.zeros((rows, need), dtype=np.float32), np.zeros((rows, num_blocks), dtype=np.uint8))
        _accumulators.arrays = cached
    return cached[0][:rows, :need], cached[1][:rows, :num_blocks]


@contextmanager
def _dropped_on_error():
    """A kernel that stopped half-way leaves sums behind: the next query gets fresh arrays."""
    try:
        yield
    except BaseException:
        _accumulators.arrays = None
        raise


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return int(k)


def segment_top_k(segment: Segment, terms: np.ndarray, weights: np.ndarray, k: int,
                  live: np.ndarray = NO_DELETES, fine: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The top k live docs of one segment for a canonical query (``index.scorers.query``);
    ``fine``: exact by its 16-bit impacts (the segment must have them)."""
    docs = np.full(k, -1, dtype=np.int64)
    scores = np.zeros(k, dtype=np.float64)
    b = segment.postings
    sums, touched = _accumulator(1, b.num_blocks, b.block_size)
    with _dropped_on_error():
        n = _search_one(terms, weights, segment.num_docs, k, live, term_view(b), block_view(b), bool(fine), sums[0],
                        touched[0], docs, scores)
    return docs[:n], scores[:n]


def segment_top_k_batch(segment: Segment, queries: SparseBatch, k: int, live: np.ndarray = NO_DELETES,
                        fine: bool = False) -> SearchResults:
    """`segment_top_k` for a batch of canonical queries, in parallel over queries."""
    n = len(queries)
    docs = np.full((n, k), -1, dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    b = segment.postings
    workers = max(1, min(numba.get_num_threads(), n))
    sums, touched = _accumulator(workers, b.num_blocks, b.block_size)
    with _dropped_on_error():
        _search_many(queries.indptr, queries.indices, queries.values, segment.num_docs, k, live, term_view(b),
                     block_view(b), bool(fine), sums, touched, workers, docs, scores, counts)
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


def search(index: Segment, terms: np.ndarray, weights: np.ndarray, k: int = 10,
           precision: str = "8-bit") -> tuple[np.ndarray, np.ndarray]:
    """Score one query over one segment; returns internal doc ids (int64) and scores (float64,
    encoder units). ``precision``: ``8-bit`` or ``16-bit`` (``index.search``)."""
    from lsr.index.search import single_segment_view

    k = _check_k(k)
    fine = single_segment_view(index).fine(precision)
    return segment_top_k(index, *canonical_query(terms, weights, index.term_scales), k, fine=fine)
