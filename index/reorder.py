"""Document reordering by recursive graph bisection (BP).

Dhulipala et al. (KDD 2016), with the speed-ups of Mackenzie et al. (2019/2021): the docs are
split in two halves, then docs are swapped between the halves while that lowers the
log-gap cost of the postings, ``sum_t d1_t log2(n1 / (d1_t + 1)) + d2_t log2(n2 / (d2_t + 1))``
(``d_t`` the number of docs of a half holding term ``t``); each half is then bisected in turn.
Docs sharing terms end up next to each other, which is what makes block maxima tight.

Per iteration a doc's move gain is the sum of per-term gains that depend only on the term's
degrees, so they are computed once per term and summed per doc: one pass over the postings.
The partitions of one level are independent and are processed in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# kernels


@njit(cache=True, nogil=True)
def _cost(degree, size):
    if degree <= 0:
        return 0.0
    return degree * np.log2(size / (degree + 1.0))


@njit(cache=True, nogil=True)
def _count_degrees(order, lo, mid, hi, indptr, terms, deg_left, deg_right, touched):
    """Fill the per-term degrees of both halves; returns how many distinct terms were touched."""
    count = 0
    for i in range(lo, hi):
        d = order[i]
        for p in range(indptr[d], indptr[d + 1]):
            t = terms[p]
            if deg_left[t] == 0 and deg_right[t] == 0:
                touched[count] = t
                count += 1
            if i < mid:
                deg_left[t] += 1
            else:
                deg_right[t] += 1
    return count


@njit(cache=True, nogil=True)
def _term_gains(touched, count, deg_left, deg_right, n1, n2, gain_left, gain_right):
    for j in range(count):
        t = touched[j]
        dl, dr = deg_left[t], deg_right[t]
        before = _cost(dl, n1) + _cost(dr, n2)
        gain_left[t] = before - _cost(dl - 1, n1) - _cost(dr + 1, n2)  # a left doc moves right
        gain_right[t] = before - _cost(dl + 1, n1) - _cost(dr - 1, n2)  # a right doc moves left


@njit(cache=True, nogil=True)
def _doc_gains(order, lo, mid, hi, indptr, terms, gain_left, gain_right, gains):
    for i in range(lo, hi):
        d = order[i]
        table = gain_left if i < mid else gain_right
        total = 0.0
        for p in range(indptr[d], indptr[d + 1]):
            total += table[terms[p]]
        gains[i - lo] = total


@njit(cache=True, nogil=True)
def _move(d, indptr, terms, deg_from, deg_to):
    for p in range(indptr[d], indptr[d + 1]):
        t = terms[p]
        deg_from[t] -= 1
        deg_to[t] += 1


@njit(cache=True, nogil=True)
def _swap_round(order, lo, mid, hi, indptr, terms, deg_left, deg_right, gains):
    """Swap the best-gaining pairs across the halves; returns the number of swaps."""
    left = np.argsort(-gains[: mid - lo]) + lo
    right = np.argsort(-gains[mid - lo : hi - lo]) + mid
    left_docs = order[left].copy()
    right_docs = order[right].copy()
    swaps = 0
    for j in range(min(left.shape[0], right.shape[0])):
        if gains[left[j] - lo] + gains[right[j] - lo] <= 0.0:
            break
        order[left[j]] = right_docs[j]
        order[right[j]] = left_docs[j]
        _move(left_docs[j], indptr, terms, deg_left, deg_right)
        _move(right_docs[j], indptr, terms, deg_right, deg_left)
        swaps += 1
    return swaps


@njit(cache=True, nogil=True)
def _bisect(order, lo, hi, indptr, terms, max_iterations, deg_left, deg_right, touched, gain_left, gain_right):
    mid = lo + (hi - lo) // 2
    n1, n2 = float(mid - lo), float(hi - mid)
    count = _count_degrees(order, lo, mid, hi, indptr, terms, deg_left, deg_right, touched)
    gains = np.empty(hi - lo, dtype=np.float64)
    for _ in range(max_iterations):
        _term_gains(touched, count, deg_left, deg_right, n1, n2, gain_left, gain_right)
        _doc_gains(order, lo, mid, hi, indptr, terms, gain_left, gain_right, gains)
        if _swap_round(order, lo, mid, hi, indptr, terms, deg_left, deg_right, gains) == 0:
            break
    for j in range(count):  # leave the buffers all-zero for the next partition
        t = touched[j]
        deg_left[t] = 0
        deg_right[t] = 0


@njit(cache=True, nogil=True, parallel=True)
def _bisect_level(order, starts, ends, indptr, terms, vocab_size, max_iterations, workers):
    """Bisect every partition ``[starts[i], ends[i])`` of one level, in parallel."""
    parts = starts.shape[0]
    for w in prange(workers):
        deg_left = np.zeros(vocab_size, dtype=np.int32)
        deg_right = np.zeros(vocab_size, dtype=np.int32)
        touched = np.empty(vocab_size, dtype=np.uint32)
        gain_left = np.zeros(vocab_size, dtype=np.float64)
        gain_right = np.zeros(vocab_size, dtype=np.float64)
        for p in range(w, parts, workers):
            _bisect(order, starts[p], ends[p], indptr, terms, max_iterations,
                    deg_left, deg_right, touched, gain_left, gain_right)


# wrappers


def bp_order(
    indptr: np.ndarray,
    terms: np.ndarray,
    vocab_size: int,
    leaf_size: int = 16,
    max_iterations: int = 20,
    workers: int | None = None,
) -> np.ndarray:
    """Recursive graph bisection over a doc-major CSR collection.

    Args:
        indptr: int64 doc offsets (num_docs + 1).
        terms: uint32 term ids of each doc's postings.
        vocab_size: number of distinct term ids.
        leaf_size: partitions of at most this many docs are not split further.
        max_iterations: swap rounds per bisection (fewer when no swap gains).
        workers: parallel workers (default: numba's thread count).

    Returns:
        ``order``, an int64 permutation: position ``i`` of the new order holds old doc ``order[i]``.
    """
    import numba

    num_docs = len(indptr) - 1
    order = np.arange(num_docs, dtype=np.int64)
    workers = workers or numba.get_num_threads()
    bounds = np.array([0, num_docs], dtype=np.int64)
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    terms = np.ascontiguousarray(terms, dtype=np.uint32)
    while True:
        splittable = np.diff(bounds) > leaf_size
        if not splittable.any():
            return order
        starts, ends = bounds[:-1][splittable], bounds[1:][splittable]
        _bisect_level(order, starts, ends, indptr, terms, vocab_size, max_iterations, workers)
        bounds = np.unique(np.concatenate([bounds, starts + (ends - starts) // 2]))


def random_order(num_docs: int, seed: int = 0) -> np.ndarray:
    """A random permutation (the worst case for block maxima; a baseline for BP)."""
    return np.random.default_rng(seed).permutation(num_docs).astype(np.int64)
