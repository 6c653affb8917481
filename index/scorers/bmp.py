"""Block-Max Pruning search (Mallia, Suel and Tonellotto, SIGIR 2024), exact at alpha = beta = 1.

1. Upper bound per block: ``ub[j] = sum_t w_t * blockmax_t[j]`` over the query terms (float32,
   inflated by a margin that covers its rounding, so it is never below a true doc score).
2. A threshold seed: with non-negative weights, at least ``k`` docs score ``>= w_t * kth_t``
   for every query term, so docs and blocks below the largest such product cannot make the
   top k (``kth_t`` is the stored k'-th largest impact of the term, for k' = 10, 100, 1000,
   2000, 5000; deleted documents at or above it do not count; over several segments, the
   counts of every segment add up: `_combined_seed`).
3. Blocks above the seed are bucket-sorted by bound and visited best first (one pass over all
   blocks collects them; the sort runs over those alone); each is scored through the per-block
   forward index (a binary search per query term, then that term's postings in the block; a
   query of more than ``SCAN_MIN_TERMS`` terms makes one pass over the block's entries instead,
   ``index.postings_view.score_block_float64``) into a block-local float64 accumulator (exact
   sums, see ``index.scorers.exhaustive``) and its docs offered to a top-k heap. A term the
   block-max data says is absent from the block (a zero in its dense row, or a clear bit in a
   16-bit mask kept for the sparse ones) costs no search. (A 64-bit mask of every query term,
   set while summing the bounds, cost 0.11 ms of a 1M-doc k=10 query; the dense rows and a
   small mask give most of its skips for less.)
4. The search stops at the first bucket whose bound, times ``alpha``, is below the current
   k-th score. A block whose bound equals the k-th score is still scored, so a doc that ties
   with it and has a lower id comes in: ties break by doc id as in the exhaustive scorer,
   which makes the safe result identical to it. ``alpha`` applies only once k documents are
   held: before that, only the seed (exact) prunes, so any ``alpha`` finds k documents when
   k documents match.

Exact over 16-bit impacts (``fine``, the default precision where a segment has them,
``index.search``). A segment keeps beside each 8-bit impact ``c`` a 16-bit one ``f``
(``index.quantize.fine_impacts``) with ``|f / 256 - c| <= e`` for ``e = FINE_ERROR_LEVELS``
(0.502 levels). The search scores blocks by the 16-bit impacts (query weights over 256, exact
in float64) and keeps the 8-bit block maxima for its bounds, widened so that they still bound
16-bit scores: a doc ``d`` of block ``j`` scores ``sum_t w_t f_td / 256 <= sum_t w_t (c_td + e)
<= sum_{t in j} w_t (max_j c_t + e)``, which is the bound with ``e`` added to the block maximum
of every query term present in the block (`_upper_bounds`'s ``slack``); and the seed becomes
``w_t (kth_t - e)``, since the k docs whose 8-bit impact reaches ``kth_t`` have 16-bit ones of
at least ``kth_t - e``. Every other step is the same, so the result is the exact top k of the
16-bit scores (ties by doc id): the block-by-block candidate list is the blocks the widened
bounds cannot rule out. On the 1M benchmark 16-bit safe search costs 1.01x (k = 10) and 0.97x
(k = 1000) 8-bit safe search, and reaches recall@10 0.9996 and recall@1000 0.9999 against float
(``eval/results/bench_engines_1m_precision``).

An index is several segments: one heap (``index.scorers.heap``) is carried from segment to
segment, so a later segment starts from the k-th score found so far and skips every block
below it; deleted documents (a ``uint8`` live mask) are never offered to the heap.

``alpha < 1`` stops earlier, ``beta < 1`` keeps only the ``ceil(beta * n)`` highest-weighted
query terms (their scores stay exact for the terms kept) and ``max_blocks`` stops after scoring
that many blocks (anytime ranking: best bounds first, so what is cut is the blocks least likely
to hold a top-k doc): all approximate. On the 1M-doc benchmark collection, which is rich in
near-duplicate documents, a block budget kept recall@10 better than ``alpha`` at equal speed.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange
from numba.typed import List

from lsr.index.bmp_build import MAX_BLOCK_SIZE, SEED_KS
from lsr.index.format import Segment
from lsr.index.quantize import FINE_ERROR_LEVELS, FINE_LEVELS
from lsr.index.postings_view import (BlockView, TermView, block_entry_postings, block_view, query_positions,
                                 readonly, score_block_float64, term_view)
from lsr.index.scorers.exhaustive import NO_DELETES, NO_DELETE_COUNTS, SearchResults
from lsr.index.scorers.heap import heap_offer, heap_ranked
from lsr.index.sparse_batch import SparseBatch

NUM_BUCKETS = 4096
SPARSE_MASK_BITS = 16  # sparse_mask is uint16

# kernels


@njit(cache=True, nogil=True)
def _upper_bounds(q_terms, q_weights, seg, ub, sparse_mask, sparse_bit, slack):
    """Per block, into ub: the sum of query weight x (block maximum + ``slack`` where the term
    is present) (before the margin); into sparse_mask: which of the first `SPARSE_MASK_BITS`
    query terms without a dense row it holds (query term j has bit sparse_bit[j], or -1). A
    dense row answers that question by itself. ``slack``: 0 for 8-bit scores,
    ``FINE_ERROR_LEVELS`` for 16-bit ones (a 16-bit impact is at most that above its 8-bit
    one; ``maximum + slack`` is exact in float32)."""
    tv = seg.terms
    ub[:] = 0
    sparse_mask[:] = 0
    bits = 0
    slack = np.float32(slack)
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        # A non-positive weight never raises a score: 0 is a valid bound for it.
        w = max(np.float32(q_weights[j]), np.float32(0.0))
        slot = seg.blocks.dense_slot[t]
        sparse_bit[j] = -1
        if slot >= 0:
            row = seg.blocks.bm_dense[slot]
            if slack == 0:
                for blk in range(ub.shape[0]):  # branch-free, so it vectorises
                    ub[blk] += w * row[blk]
            else:
                for blk in range(ub.shape[0]):  # a select, so it still vectorises
                    level = np.float32(row[blk])
                    ub[blk] += w * (level + (slack if level > 0 else np.float32(0.0)))
        elif bits < SPARSE_MASK_BITS:
            sparse_bit[j] = bits
            bit = np.uint16(1 << bits)
            bits += 1
            for x in range(tv.entry_offsets[t], tv.entry_offsets[t + 1]):
                ub[tv.entry_blocks[x]] += w * (np.float32(tv.entry_max[x]) + slack)
                sparse_mask[tv.entry_blocks[x]] |= bit
        else:
            for x in range(tv.entry_offsets[t], tv.entry_offsets[t + 1]):
                ub[tv.entry_blocks[x]] += w * (np.float32(tv.entry_max[x]) + slack)


@njit(cache=True, nogil=True)
def _combined_seed(segments, q_terms, weights, k, slack):
    """The largest ``w_t x (impact - slack)`` that at least k live documents reach for one query
    term t, counting over every segment: a score no lower than the k-th best (with non-negative
    weights; ``slack`` as in `_upper_bounds`: a 16-bit impact is at least its 8-bit one less it).

    A segment says, per term and seed column c, that ``SEED_KS[c]`` documents have an impact of
    at least ``kth[t, c]``, less its deleted ones among them (``kth_deleted``) and those deleted
    since its commit (``extra_deleted``, anywhere). At a value v, segment s contributes the
    largest count of its columns whose value is at least v; a term's seed is the largest value
    at which the contributions add up to k (`_term_seed`).
    """
    count, nq, columns = len(segments), q_terms.shape[0], len(SEED_KS)
    for j in range(nq):
        if weights[0, j] < 0:  # another term could pull a document below the seed
            return 0.0
    values = np.zeros((nq, count * columns), dtype=np.float64)
    lives = np.zeros((nq, count * columns), dtype=np.int64)
    for s in range(count):  # segment by segment: fetching a segment from the list has a cost
        seg = segments[s]
        kth, kth_deleted, extra = seg.kth_impacts, seg.kth_deleted, seg.extra_deleted
        for j in range(nq):
            t = q_terms[j]
            for c in range(columns):
                if kth[t, c] == 0:  # fewer postings than the column's count
                    break
                live = SEED_KS[c] - extra
                if kth_deleted.shape[0] > 0:
                    live -= kth_deleted[t, c]
                values[j, s * columns + c] = np.float64(weights[s, j]) * (kth[t, c] - slack)
                lives[j, s * columns + c] = max(live, 0)
                if live >= k:  # later columns hold lower values: this one already beats them
                    break
    seed = 0.0
    reached = np.zeros(count, dtype=np.int64)
    for j in range(nq):
        seed = _term_seed(values[j], lives[j], columns, k, seed, reached)
    return seed


@njit(cache=True, nogil=True)
def _term_seed(values, lives, columns, k, seed, reached):
    """``max(seed, v)`` for the largest value v in ``values`` at which the segments' counts add
    up to k (entry i belongs to segment ``i // columns``; ``reached``: scratch, one per segment).

    Two cheap passes settle almost every term without a sort: an entry whose own count reaches
    k is a candidate by itself, so the answer is at least the largest such value; and if the
    counts of the entries above that (each segment's largest) do not add up to k, no larger
    value can. Only otherwise are those entries sorted and walked down.
    """
    for i in range(values.shape[0]):
        if lives[i] >= k and values[i] > seed:
            seed = values[i]
    reached[:] = 0
    total = 0
    for i in range(values.shape[0]):
        s = i // columns
        if values[i] > seed and lives[i] > reached[s]:
            total += lives[i] - reached[s]
            reached[s] = lives[i]
    if total < k:
        return seed
    order = np.argsort(-values)
    reached[:] = 0
    total = 0
    for i in order:
        if values[i] <= seed:  # this term cannot raise the seed any more
            break
        s = i // columns
        if lives[i] > reached[s]:
            total += lives[i] - reached[s]
            reached[s] = lives[i]
        if total >= k:
            return values[i]
    return seed


@njit(cache=True, nogil=True)
def _order_blocks(ub, margin, floor, order, scratch):
    """Blocks whose bound ``ub * margin`` is >= floor, bucket-sorted by bound descending into
    order; returns how many, and the bucket scale (bucket of a bound v: `_bucket`)."""
    # One pass over every block collects the candidates (few, with a seed) and their top bound;
    # the counting sort then runs over the candidates alone.
    # Branch-free (every block written, the count advanced past candidates only): about one
    # block in eight passes, unpredictably, and a branch on it took 3 times as long. For a
    # float32 v, ``v > 0 and v >= floor`` is ``v >= lowest``: the smallest positive float32 at
    # or above floor.
    lowest = np.float32(floor)
    if np.float64(lowest) < floor:
        lowest = np.nextafter(lowest, np.float32(np.inf))
    lowest = max(lowest, np.nextafter(np.float32(0.0), np.float32(1.0)))
    num_candidates = 0
    for blk in range(ub.shape[0]):
        scratch[num_candidates] = blk
        num_candidates += ub[blk] * margin >= lowest
    top = np.float32(0.0)
    for i in range(num_candidates):
        top = max(top, ub[scratch[i]] * margin)
    scale = (NUM_BUCKETS - 1) / top if top > 0 else 0.0
    starts = np.zeros(NUM_BUCKETS + 1, dtype=np.int64)
    for i in range(num_candidates):
        starts[_bucket(ub[scratch[i]] * margin, scale) + 1] += 1
    for b in range(NUM_BUCKETS):
        starts[b + 1] += starts[b]
    for i in range(num_candidates):
        blk = scratch[i]
        b = _bucket(ub[blk] * margin, scale)
        order[starts[b]] = blk
        starts[b] += 1
    return num_candidates, scale


@njit(cache=True, nogil=True)
def _bucket(bound, scale):
    """Bucket of a bound: 0 holds the largest bounds."""
    return NUM_BUCKETS - 1 - int(bound * scale)


@njit(cache=True, nogil=True)
def _segment_of(offsets, block):
    """The segment holding global block ``block`` (``offsets``: first global block of each segment)."""
    lo, hi = 0, offsets.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if offsets[mid] <= block:
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _bmp_multi(segments, q_terms, q_merged, k, alpha, budget, fine, ub, sparse_mask, order, scratch, heap_scores,
               heap_keys, size):
    """Search segments together into the running heap: their blocks in one bound order.

    ``segments``: a typed list of `KernelSegment` views; ``q_merged``: the merged query
    weights, scaled here by each segment's term scales. Returns (heap size, blocks scored);
    ``budget`` < 0 means no block budget; ``fine``: score the 16-bit impacts (every segment
    has them), with bounds and seeds widened by `FINE_ERROR_LEVELS`.
    """
    count = len(segments)
    nq = q_terms.shape[0]
    offsets = np.zeros(count + 1, dtype=np.int64)
    for s in range(count):
        offsets[s + 1] = offsets[s] + segments[s].blocks.term_offsets.shape[0] - 1
    weights = np.empty((count, nq), dtype=np.float32)
    # A 16-bit level weighs 1/256 of an 8-bit one; dividing in float64 is exact.
    fine_weights = np.empty((count, nq), dtype=np.float64)
    sparse_bits = np.empty((count, nq), dtype=np.int64)
    slack = FINE_ERROR_LEVELS if fine else 0.0
    for s in range(count):
        seg = segments[s]
        for j in range(nq):
            weights[s, j] = np.float32(q_merged[j] * seg.term_scales[q_terms[j]])
            fine_weights[s, j] = np.float64(weights[s, j]) / FINE_LEVELS
        lo, hi = offsets[s], offsets[s + 1]
        _upper_bounds(q_terms, weights[s], seg, ub[lo:hi], sparse_mask[lo:hi], sparse_bits[s], slack)
    seed = _combined_seed(segments, q_terms, weights, k, slack)
    # float32 sums of float32 products: relative error below (n + 1) * 2^-24; inflate by twice that.
    margin = np.float32(1.0 + (nq + 2) * 2.0 ** -23)
    floor = max(seed, heap_scores[0]) if size == k else seed
    num_ordered, scale = _order_blocks(ub[: offsets[count]], margin, floor, order, scratch)
    acc = np.zeros(MAX_BLOCK_SIZE, dtype=np.float64)
    vocab_size = 0
    for s in range(count):
        vocab_size = max(vocab_size, segments[s].blocks.dense_slot.shape[0])
    positions = query_positions(q_terms, vocab_size)
    used = 0
    current = 0
    seg = segments[0]
    for i in range(num_ordered):
        block = order[i]
        bound = ub[block] * margin
        # Everything from this bucket on is bounded by its upper edge.
        edge = (NUM_BUCKETS - _bucket(bound, scale)) / scale * (1.0 + 1e-9)  # covers rounding of the division
        if size == k:
            if alpha * edge < heap_scores[0]:
                break
            if alpha * bound < heap_scores[0]:
                continue
        elif edge < seed:  # not yet k docs: only the (exact) seed prunes
            break
        elif bound < seed:
            continue
        if used == budget:
            break
        used += 1
        # The sort is stable over blocks in segment order, so a bucket's blocks come segment by
        # segment: the segment's view is fetched from the list only when it changes (a fetch
        # takes a reference to each of its arrays).
        if not offsets[current] <= block < offsets[current + 1]:
            current = _segment_of(offsets, block)
            seg = segments[current]
        blk = block - offsets[current]
        if fine:
            score_block_float64(seg.blocks, seg.blocks.post_impacts16, blk, q_terms, fine_weights[current],
                                sparse_mask[block], sparse_bits[current], positions, acc)
        else:
            score_block_float64(seg.blocks, seg.blocks.post_impacts, blk, q_terms, weights[current],
                                sparse_mask[block], sparse_bits[current], positions, acc)
        num_docs, block_size, live, base = seg.num_docs, seg.blocks.block_size, seg.live, seg.base
        has_deletes = live.shape[0] > 0
        first = blk * block_size
        for d in range(min(block_size, num_docs - first)):
            score = acc[d]
            acc[d] = 0.0
            if score > 0 and score >= seed and (not has_deletes or live[first + d]):
                size = heap_offer(heap_scores, heap_keys, size, k, score, base + first + d)
    return size, used


@njit(cache=True, nogil=True, parallel=True)
def _bmp_multi_many(segments, total_blocks, q_indptr, q_terms, q_merged, k, alpha, budgets, fine, workers,
                    heap_scores, heap_keys, sizes):
    """`_bmp_multi` for every query of a batch (one heap row each), in parallel over queries."""
    num_queries = q_indptr.shape[0] - 1
    for w in prange(workers):  # one workspace per worker, reused for its queries
        ub = np.empty(total_blocks, dtype=np.float32)
        sparse_mask = np.empty(total_blocks, dtype=np.uint16)
        order = np.empty(total_blocks, dtype=np.int64)
        scratch = np.empty(total_blocks, dtype=np.int64)
        for q in range(w, num_queries, workers):
            start, end = q_indptr[q], q_indptr[q + 1]
            sizes[q], used = _bmp_multi(segments, q_terms[start:end], q_merged[start:end], k, alpha, budgets[q], fine,
                                        ub, sparse_mask, order, scratch, heap_scores[q], heap_keys[q], sizes[q])
            if budgets[q] >= 0:
                budgets[q] -= used


# wrappers


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


def _block_budget(max_blocks: int | None) -> int:
    """The kernel's block budget: -1 for none."""
    if max_blocks is None:
        return -1
    if isinstance(max_blocks, bool) or not isinstance(max_blocks, (int, np.integer)) or max_blocks < 1:
        raise ValueError(f"max_blocks must be a positive integer or None, got {max_blocks!r}")
    return int(max_blocks)


_workspaces = threading.local()


def _workspace(num_blocks: int) -> tuple:
    """This thread's scratch arrays for one search (reused, grown to the largest index seen:
    large fresh allocations cost page faults)."""
    cached = getattr(_workspaces, "arrays", None)
    if cached is None or cached[0].shape[0] < num_blocks:
        cached = (np.empty(num_blocks, np.float32), np.empty(num_blocks, np.uint16),
                  np.empty(num_blocks, np.int64), np.empty(num_blocks, np.int64))
        _workspaces.arrays = cached
    return tuple(array[:num_blocks] for array in cached)


class KernelSegment(NamedTuple):
    """One segment as `_bmp_multi` reads it: its postings views, block maxima, seeds and deletes."""

    num_docs: np.int64
    base: np.int64  # global key of its doc 0
    extra_deleted: np.int64  # docs deleted since its commit (the seeds discount them)
    live: np.ndarray  # uint8 per doc, or empty when none is deleted
    kth_impacts: np.ndarray  # term_kth_impacts
    kth_deleted: np.ndarray  # int32 (terms, seed columns), or empty
    term_scales: np.ndarray
    terms: TermView
    blocks: BlockView


def kernel_segment(segment: Segment, live: np.ndarray = NO_DELETES, kth_deleted: np.ndarray = NO_DELETE_COUNTS,
                   extra_deleted: int = 0, base: int = 0) -> KernelSegment:
    """The view `_bmp_multi` reads a segment from."""
    b = segment.postings
    return KernelSegment(np.int64(segment.num_docs), np.int64(base), np.int64(extra_deleted), readonly(live),
                         readonly(b.term_kth_impacts), readonly(np.asarray(kth_deleted, dtype=np.int32)),
                         readonly(segment.term_scales), term_view(b), block_view(b))


class KernelGroup:
    """Segments whose arrays share dtypes, as one typed list for `_bmp_multi` (built once per view)."""

    def __init__(self, views: list[KernelSegment]) -> None:
        self.segments = List()
        for item in views:
            self.segments.append(item)
        self.total_blocks = sum(item.blocks.term_offsets.shape[0] - 1 for item in views)


def kernel_groups(views: list[KernelSegment]) -> list[KernelGroup]:
    """Segments grouped by Numba type (one group unless a segment's offsets are wider), in
    segment order within a group: a typed list holds items of one type."""
    groups: dict = {}
    for item in views:
        groups.setdefault(_numba_type_key(item), []).append(item)
    return [KernelGroup(items) for items in groups.values()]


def _numba_type_key(value) -> tuple | type:
    """Everything `numba.typeof` tells apart in a `KernelSegment` (per array: dtype, dimensions,
    layout, read-only, aligned), read from the flags: ``numba.typeof`` walked its 20 arrays
    at about 0.2 ms a segment, on every view whose deletions changed."""
    if isinstance(value, np.ndarray):
        flags = value.flags
        return value.dtype.str, value.ndim, flags.c_contiguous, flags.f_contiguous, flags.writeable, flags.aligned
    if isinstance(value, tuple):
        return (type(value),) + tuple(_numba_type_key(member) for member in value)
    return type(value)


def bmp_into(groups: list[KernelGroup], terms: np.ndarray, merged: np.ndarray, k: int, alpha: float, budget: int,
             heap, fine: bool = False) -> int:
    """Search the segments of ``groups`` with a merged query (``index.scorers.query.merge_query``)
    into ``heap`` (an ``index.scorers.heap.TopK``); returns the blocks scored (``budget`` -1: none).
    ``fine``: by the 16-bit impacts (every segment must have them)."""
    used_total = 0
    for group in groups:
        heap.size, used = _bmp_multi(group.segments, terms, merged, k, float(alpha), budget, bool(fine),
                                     *_workspace(group.total_blocks), heap.scores, heap.keys, heap.size)
        used_total += used
        if budget >= 0:
            budget -= used
    return used_total


def bmp_into_batch(groups: list[KernelGroup], queries: SparseBatch, k: int, alpha: float, budgets: np.ndarray,
                   heaps, fine: bool = False) -> None:
    """`bmp_into` for a batch of merged queries, one heap row each (``heaps``: scores, keys, sizes
    arrays); ``budgets`` are decremented by the blocks each query scored."""
    workers = max(1, min(numba.get_num_threads(), len(queries)))
    scores, keys, sizes = heaps
    for group in groups:
        _bmp_multi_many(group.segments, group.total_blocks, queries.indptr, queries.indices, queries.values, k,
                        float(alpha), budgets, bool(fine), workers, scores, keys, sizes)


def block_upper_bounds(segment: Segment, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Every block's bound (float32, before the rounding margin) for query ``terms`` with
    ``weights`` already scaled by the segment's term scales, as a search computes them (for
    profiles and tests)."""
    view = kernel_segment(segment)
    num_blocks = view.blocks.term_offsets.shape[0] - 1
    ub = np.empty(num_blocks, np.float32)
    terms = np.ascontiguousarray(terms, dtype=np.uint32)
    _upper_bounds(terms, np.ascontiguousarray(weights, dtype=np.float32), view, ub, np.empty(num_blocks, np.uint16),
                  np.empty(len(terms), np.int64), 0.0)
    return ub


def bmp_search(index: Segment, terms, weights, k: int = 10, alpha: float = 1.0,
               beta: float = 1.0, max_blocks: int | None = None, precision: str = "8-bit") -> tuple[np.ndarray, np.ndarray]:
    """Block-max pruning search of one query over one segment (nothing deleted).

    Args:
        index: an opened segment.
        terms: query term ids; weights: their float weights (any order, duplicates merged).
        k: results wanted.
        alpha: 1 is safe (exact); below 1 stops once the k-th score reaches alpha x the bound.
        beta: 1 keeps every query term; below 1 keeps the highest-weighted fraction.
        max_blocks: None scores every block the bounds require; a number stops after scoring
            that many (best bound first: an anytime search with a fixed cost ceiling).
        precision: ``8-bit`` or ``16-bit`` (the segment's 16-bit impacts; module docstring).

    Returns:
        Internal doc ids (int64) and scores (float64, encoder units), best first, ties by
        doc id; at alpha = beta = 1 and no max_blocks identical to
        ``index.scorers.exhaustive.search``. The scores are always exact for the docs returned.
    """
    from lsr.index.search import search_sparse, single_segment_view

    _check_alpha_beta(alpha, beta)
    return search_sparse(single_segment_view(index), terms, weights, k, "bmp", alpha, beta, max_blocks, precision)


def bmp_search_batch(index: Segment, queries: SparseBatch, k: int = 10, alpha: float = 1.0,
                     beta: float = 1.0, max_blocks: int | None = None, precision: str = "8-bit") -> SearchResults:
    """`bmp_search` for every query of a batch, in parallel over queries (numba threads)."""
    from lsr.index.search import search_sparse_batch, single_segment_view

    return search_sparse_batch(single_segment_view(index), queries, k, "bmp", alpha, beta, max_blocks, precision)


def keep_top_terms_batch(queries: SparseBatch, beta: float) -> SparseBatch:
    """`_keep_top_terms` on every row of a canonical batch."""
    if beta >= 1:
        return queries
    rows = [_keep_top_terms(*queries.row(q), beta) for q in range(len(queries))]
    return SparseBatch(
        np.concatenate([[0], np.cumsum([len(t) for t, _ in rows])]),
        np.concatenate([t for t, _ in rows] or [np.empty(0, np.uint32)]),
        np.concatenate([w for _, w in rows] or [np.empty(0, np.float32)]),
        queries.vocab_size,
    )


def ranked_results(heaps) -> SearchResults:
    """Batch heaps (scores, keys, sizes) as `SearchResults`, each row ranked."""
    scores, keys, sizes = heaps
    for q in range(len(sizes)):
        heap_ranked(scores[q], keys[q], sizes[q])
        keys[q, sizes[q]:] = -1
        scores[q, sizes[q]:] = 0.0
    return SearchResults(keys, scores, sizes)


@njit(cache=True, nogil=True)
def _deleted_seed_counts(deleted, num_docs, bv, kth, out):
    for blk in range(bv.term_offsets.shape[0] - 1):
        first = blk * bv.block_size
        hit = False
        for d in range(first, min(first + bv.block_size, num_docs)):
            if deleted[d]:
                hit = True
                break
        if not hit:
            continue
        for e in range(bv.term_offsets[blk], bv.term_offsets[blk + 1]):
            t = bv.terms[e]
            start, end = block_entry_postings(bv, blk, e)
            for p in range(start, end):
                if deleted[first + bv.post_docs[p]]:
                    impact = bv.post_impacts[p]
                    for c in range(kth.shape[1]):
                        if kth[t, c] > 0 and impact >= kth[t, c]:
                            out[t, c] += 1


def deleted_seed_counts(segment: Segment, deleted: np.ndarray) -> np.ndarray:
    """For the threshold seed: per term and seed column, the deleted docs whose impact is at
    least the stored k-th impact (int32 ``(vocab, columns)``)."""
    b = segment.postings
    out = np.zeros(b.term_kth_impacts.shape, dtype=np.int32)
    _deleted_seed_counts(np.asarray(deleted, dtype=np.bool_), segment.num_docs, block_view(b), b.term_kth_impacts, out)
    return out
