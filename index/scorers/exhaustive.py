"""Exhaustive term-at-a-time scorer: float32 sums to find candidates, float64 to rank them.

1. Each query term's postings (``index.postings_view.TermView``: low 16-bit doc ids chunk by
   chunk, one sequential sweep a term) are added, weight x impact in float32, into a
   per-thread accumulator of every document, reused from query to query.
2. One pass over the whole accumulator takes the largest sum of every eight (a loop the
   compiler vectorises) and keeps a histogram of them, whose running k-th largest is a floor
   below which a group is set back to zero at once (the next query starts from zeros without a
   separate reset); then the sums of the groups above the final floor give the exact k-th best
   sum (a selection over a few times k values), and the documents that may be in the top k
   are kept (`_collect`).
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
hence ``f >= S_k - D >= F - 2D``. And every document with ``s > 0`` has ``f > 0``: the pass
runs only when every query weight is positive, so each product of a weight and an impact (at
least 1) rounds to at least the smallest float32 and a float32 sum of such products is at
least its largest one. So keeping every live document with ``f > 0`` and ``f >= F - 2D`` keeps
the whole exact top k. The running k-th best only grows, so a document dropped against it
would be dropped against the final one too. ``D`` is about ``m * 6e-8`` of the best
possible score, so the candidates are the top k and the few that tie with the k-th within it.

With 16-bit impacts (``fine``; ``index.quantize.fine_impacts``) the result is the exact top k
of the 16-bit scores ``g(d)`` (float64 sums of ``w_j / 256 x`` 16-bit impact, in the same
order). The float32 pass still sums the 8-bit impacts, and ``|f(d) - g(d)| <= D + E`` with
``E = sum_j |w_j| * FINE_ERROR_LEVELS``: each 16-bit impact, over 256, is within
``FINE_ERROR_LEVELS`` of its 8-bit one (``D`` already covers float64 rounding of ``g``, whose
terms are at most 255 levels too). The argument above holds word for word with ``D + E`` in
place of ``D``; the band of candidates is about ``2 E`` wide, a level's half for each query term.

Queries with a weight below zero (a document's score could then be positive while its float32
sum is not; our encoders never give one) or with weights so large that float32 sums could
overflow (``sum_j |w_j| * 255 >= 2^120``) go to the oracle instead (with 16-bit impacts: every
live document is rescored). Deleted documents
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
from lsr.index.format import CHUNK_BITS, Segment
from lsr.index.postings_view import block_view, chunk_postings, query_positions, score_block_float64, term_view
from lsr.index.quantize import FINE_ERROR_LEVELS, FINE_LEVELS
from lsr.index.scorers.oracle import oracle_top_k
from lsr.index.scorers.query import canonical_batch, canonical_query
from lsr.index.sparse_batch import SparseBatch

NO_DELETES = np.zeros(0, dtype=np.uint8)  # a live mask that says: nothing is deleted
NO_DELETE_COUNTS = np.zeros((0, len(SEED_KS)), dtype=np.int32)  # deleted docs per term and seed column: none
FLOAT32_SAFE_TOTAL = 2.0**120  # sum_j |w_j| * 255 below this: float32 sums cannot overflow
GROUP = 8  # sums read at a time by `_collect`: one vector compare skips a group below the floor
LEVELS = 4096  # histogram levels of `_group_maxima`

# kernels


@njit(cache=True, nogil=True)
def _accumulate32(q_terms, q_weights, view, scores):
    """Float32 sums of every document into ``scores``: each query term's postings in one
    sequential sweep, chunk by chunk (a doc id is the chunk's base plus the stored low bits)."""
    num_terms = view.entry_offsets.shape[0] - 1
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        if t >= num_terms:  # canonical queries hold only terms of the vocabulary
            continue
        w = np.float32(q_weights[j])
        for c in range(view.chunks):
            start, end = chunk_postings(view, t, c)
            base = c << CHUNK_BITS
            for p in range(start, end):
                scores[base + view.post_docs[p]] += w * np.float32(view.post_impacts[p])


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
def _ceiling(q_weights, bound):
    """A number above every float32 sum: each is within ``bound`` of an exact one, at most
    ``sum_j |w_j| * 255``."""
    total = 0.0
    for j in range(q_weights.shape[0]):
        total += abs(np.float64(q_weights[j])) * 255.0
    return total * (1.0 + 2.0**-20) + bound


@njit(cache=True, nogil=True)
def _group_maxima(scores, live, maxima, k, bound, ceiling):
    """Pass 1 of `_collect`: ``maxima[g]``, the largest sum of a live document in group ``g``
    of `GROUP` sums, or 0 where the group cannot hold a candidate, which is then reset (while
    its sums are in cache). Returns a value ``G`` that k of the maxima above ``bound`` reach
    (0.0 when fewer than k are above it), close below the k-th largest of them.

    ``G`` comes from a histogram of the maxima in `LEVELS` levels from 0 to ``ceiling`` (no sum
    is above it), kept as they are made: ``level`` is the highest level with at least k maxima
    at or above it, and ``G`` the bottom of the level below (a value's level may be one too high
    by rounding, never lower). Once k maxima are in, ``G - 2 bound`` is a floor no candidate
    falls below (k documents reach ``G``), so it already skips groups during the pass."""
    per_level = LEVELS / ceiling
    counts = np.zeros(LEVELS, dtype=np.int64)
    level = 0
    at_or_above = 0  # maxima above bound at levels >= level
    lowest = np.float32(0.0)
    for g in range(maxima.shape[0]):
        first = g * GROUP
        if live.shape[0] == 0:
            top = scores[first]
            for i in range(1, GROUP):
                top = max(top, scores[first + i])
        else:
            top = np.float32(0.0)
            for d in range(first, first + GROUP):
                if d < live.shape[0] and live[d] != 0:
                    top = max(top, scores[d])
        if not (top > 0 and top >= lowest):
            for i in range(GROUP):
                scores[first + i] = 0
            maxima[g] = 0
            continue
        maxima[g] = top
        if np.float64(top) > bound:
            at = min(int(np.float64(top) * per_level), LEVELS - 1)
            counts[at] += 1
            if at >= level:
                at_or_above += 1
                if at_or_above - counts[level] >= k:
                    while at_or_above - counts[level] >= k:
                        at_or_above -= counts[level]
                        level += 1
                    lowest = _float32_at_or_above(max(level - 1, 0) / per_level - 2.0 * bound)
    return max(level - 1, 0) / per_level if at_or_above >= k else 0.0


@njit(cache=True, nogil=True)
def _collect(scores, maxima, live, k, bound, ceiling):
    """Read and reset every sum (``scores``: a multiple of `GROUP` long); returns the
    candidates in doc order as (docs, count), cut at the final floor of the
    module docstring. Only positive sums of live documents are candidates (see `_search_one`).

    1. The largest sum of each group of `GROUP` (`_group_maxima`: ``maxima``, float32 scratch;
       a loop the compiler vectorises), and a value ``G`` that k of those maxima reach: k
       documents have a sum of at least ``G``, so the final ``F >= G`` and nothing below
       ``G - 2 bound`` can be a candidate. ``ceiling``: no sum is above it.
    2. The sums at or above that first floor (in the groups that reach it; the others are
       reset) are gathered, and the exact ``F`` is the k-th largest of those above ``bound``
       (a selection, not a heap: a few times k values).
    3. The gathered sums at or above the final floor ``F - 2 bound`` are the candidates.
    """
    floor = max(0.0, _group_maxima(scores, live, maxima, k, bound, ceiling) - 2.0 * bound)  # and above 0
    lowest = _float32_at_or_above(floor)
    reaching = 0
    for g in range(maxima.shape[0]):
        reaching += maxima[g] > 0 and maxima[g] >= lowest
    docs = np.empty(reaching * GROUP, dtype=np.int64)
    sums = np.empty(reaching * GROUP, dtype=np.float32)
    n = 0
    above = 0  # gathered sums above bound
    for g in range(maxima.shape[0]):
        if maxima[g] <= 0:  # reset by pass 1
            continue
        reaches = maxima[g] >= lowest
        for d in range(g * GROUP, (g + 1) * GROUP):
            s = scores[d]
            scores[d] = 0
            if reaches and s > 0 and s >= lowest and (live.shape[0] == 0 or live[d] != 0):
                docs[n] = d
                sums[n] = s
                n += 1
                above += np.float64(s) > bound
    if above >= k:
        pool = np.empty(above, dtype=np.float32)
        i = 0
        for x in range(n):
            if np.float64(sums[x]) > bound:
                pool[i] = sums[x]
                i += 1
        kth = np.partition(pool, above - k)[above - k]
        floor = max(floor, np.float64(kth) - 2.0 * bound)
    kept = 0
    for x in range(n):
        if np.float64(sums[x]) >= floor:
            docs[kept] = docs[x]
            sums[kept] = sums[x]
            kept += 1
    return docs, kept


@njit(cache=True, nogil=True)
def _float32_at_or_above(value):
    """The smallest float32 that is >= ``value`` (a float64), so float32 tests match float64 ones."""
    low = np.float32(value)
    if np.float64(low) < value:
        low = np.nextafter(low, np.float32(np.inf))
    return low


@njit(cache=True, nogil=True)
def _rank_exact(docs, n, q_terms, q_weights, view, fine, k, out_docs, out_scores):
    """Rescore ``n`` candidates (doc order) in float64 block by block (``fine``: by the 16-bit
    impacts); the top k positive ones, score descending then doc ascending, into ``out_*``;
    returns how many."""
    exact = np.zeros(n, dtype=np.float64)
    acc = np.zeros(view.block_size, dtype=np.float64)
    unknown_bits = np.full(q_terms.shape[0], -1, dtype=np.int64)  # only the dense rows skip terms
    positions = query_positions(q_terms, view.dense_slot.shape[0])
    fine_weights = np.empty(q_terms.shape[0], dtype=np.float64)
    for j in range(q_terms.shape[0]):
        fine_weights[j] = np.float64(q_weights[j]) / FINE_LEVELS  # exact in float64
    i = 0
    while i < n:
        blk = docs[i] // view.block_size
        acc[:] = 0.0
        if fine:
            score_block_float64(view, view.post_impacts16, blk, q_terms, fine_weights, np.uint16(0), unknown_bits,
                                positions, acc)
        else:
            score_block_float64(view, view.post_impacts, blk, q_terms, q_weights, np.uint16(0), unknown_bits, positions,
                                acc)
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
def _search_one(q_terms, q_weights, num_docs, k, live, terms, blocks, fine, scores, maxima, out_docs, out_scores):
    if q_terms.shape[0] == 0:
        return 0
    total = 0.0
    positive = True
    for j in range(q_weights.shape[0]):
        total += abs(np.float64(q_weights[j])) * 255.0
        positive = positive and q_weights[j] > 0
    # With every weight positive, a doc with a positive exact score has a positive float32 sum
    # (each product of a weight and an impact, at least 1, is at least the smallest float32, and
    # adding products never lowers a sum), so only positive sums need reading. Negative weights
    # (never from our encoders) or sums that could overflow go to the oracle (16-bit: every live
    # doc is rescored).
    if total >= FLOAT32_SAFE_TOTAL or not positive:
        if fine:
            everyone = _live_docs(num_docs, live)
            return _rank_exact(everyone, everyone.shape[0], q_terms, q_weights, blocks, fine, k, out_docs, out_scores)
        return oracle_top_k(q_terms, q_weights, num_docs, k, live, terms, out_docs, out_scores)
    _accumulate32(q_terms, q_weights, terms, scores)
    bound = _error_bound(q_weights)
    if fine:
        bound += total / 255.0 * FINE_ERROR_LEVELS * 1.001  # E of the module docstring
    docs, n = _collect(scores, maxima, live, k, bound, _ceiling(q_weights, bound))
    return _rank_exact(docs, n, q_terms, q_weights, blocks, fine, k, out_docs, out_scores)


@njit(cache=True, nogil=True, parallel=True)
def _search_many(q_indptr, q_terms, q_weights, num_docs, k, live, terms, blocks, fine, scores, maxima, workers,
                 out_docs, out_scores, counts):
    """Queries split over ``workers`` threads; worker ``w`` owns accumulator and scratch row ``w``."""
    num_queries = q_indptr.shape[0] - 1
    for w in prange(workers):
        for q in range(w, num_queries, workers):
            start, end = q_indptr[q], q_indptr[q + 1]
            counts[q] = _search_one(q_terms[start:end], q_weights[start:end], num_docs, k, live, terms, blocks, fine,
                                    scores[w], maxima[w], out_docs[q], out_scores[q])


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


def _accumulator(rows: int, num_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's zeroed float32 sums, ``rows`` of them, each `GROUP`-aligned and at least
    ``num_docs`` long (the kernels leave them zeroed), and as many rows of group maxima scratch
    for `_collect`; grown to the largest segment seen: a fresh array per query would cost its
    page faults and a reset."""
    need = -(-max(num_docs, 1) // GROUP) * GROUP
    cached = getattr(_accumulators, "arrays", None)
    if cached is None or cached[0].shape[0] < rows or cached[0].shape[1] < need:
        cached = _accumulators.arrays = (np.zeros((rows, need), dtype=np.float32),
                                         np.zeros((rows, need // GROUP), dtype=np.float32))
    sums, maxima = cached
    return sums[:rows, :need], maxima[:rows, : need // GROUP]


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
    sums, maxima = _accumulator(1, b.num_blocks * b.block_size)
    with _dropped_on_error():
        n = _search_one(terms, weights, segment.num_docs, k, live, term_view(b), block_view(b), bool(fine), sums[0],
                        maxima[0], docs, scores)
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
    sums, maxima = _accumulator(workers, b.num_blocks * b.block_size)
    with _dropped_on_error():
        _search_many(queries.indptr, queries.indices, queries.values, segment.num_docs, k, live, term_view(b),
                     block_view(b), bool(fine), sums, maxima, workers, docs, scores, counts)
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
