"""The running top-k of a search: a min-heap of (score, doc) kept across segments.

Documents carry global keys (a segment's base position plus the internal id), so that ties
break the same way everywhere: on equal scores the lower key ranks first. A search offers
every segment's candidates to one heap; the k-th best score so far is the heap's root, which
is what lets a later segment skip the blocks and documents that cannot beat it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# kernels


@njit(cache=True, nogil=True)
def heap_less(score_a, doc_a, score_b, doc_b):
    """Whether (score_a, doc_a) ranks below (score_b, doc_b): lower score, or same score and higher key."""
    return score_a < score_b or (score_a == score_b and doc_a > doc_b)


@njit(cache=True, nogil=True)
def _sift_down(scores, docs, size, i):
    while True:
        smallest, left, right = i, 2 * i + 1, 2 * i + 2
        if left < size and heap_less(scores[left], docs[left], scores[smallest], docs[smallest]):
            smallest = left
        if right < size and heap_less(scores[right], docs[right], scores[smallest], docs[smallest]):
            smallest = right
        if smallest == i:
            return
        scores[i], scores[smallest] = scores[smallest], scores[i]
        docs[i], docs[smallest] = docs[smallest], docs[i]
        i = smallest


@njit(cache=True, nogil=True)
def heap_offer(scores, docs, size, k, score, doc):
    """Offer a doc to a min-heap of the best k; returns the new size."""
    if size < k:
        i = size
        scores[i], docs[i] = score, doc
        while i > 0:
            parent = (i - 1) // 2
            if not heap_less(scores[i], docs[i], scores[parent], docs[parent]):
                break
            scores[i], scores[parent] = scores[parent], scores[i]
            docs[i], docs[parent] = docs[parent], docs[i]
            i = parent
        return size + 1
    if heap_less(scores[0], docs[0], score, doc):
        scores[0], docs[0] = score, doc
        _sift_down(scores, docs, size, 0)
    return size


@njit(cache=True, nogil=True)
def heap_offer_many(scores, docs, size, k, new_scores, new_docs, base):
    """Offer ``n`` (score, internal doc) pairs with keys ``base + doc``; returns the new size."""
    for i in range(new_scores.shape[0]):
        size = heap_offer(scores, docs, size, k, new_scores[i], base + new_docs[i])
    return size


@njit(cache=True, nogil=True)
def heap_offer_positive(scores, docs, size, k, row_scores, base):
    """Offer every row whose score is positive, with key ``base + row``; returns the new size."""
    for row in range(row_scores.shape[0]):
        if row_scores[row] > 0:
            size = heap_offer(scores, docs, size, k, row_scores[row], base + row)
    return size


@njit(cache=True, nogil=True)
def heap_ranked(scores, docs, size):
    """The heap's entries ranked: score descending, key ascending (sorts in place, returns size)."""
    ranked = np.argsort(docs[:size], kind="mergesort")
    ranked = ranked[np.argsort(-scores[:size][ranked], kind="mergesort")]
    sorted_docs = docs[:size][ranked].copy()
    sorted_scores = scores[:size][ranked].copy()
    docs[:size] = sorted_docs
    scores[:size] = sorted_scores
    return size


# wrappers


class TopK:
    """The heap of one query: ``k`` slots, filled as segments are searched."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.scores = np.zeros(k, dtype=np.float64)
        self.keys = np.full(k, -1, dtype=np.int64)
        self.size = 0

    def offer(self, scores: np.ndarray, docs: np.ndarray, base: int) -> None:
        self.size = heap_offer_many(self.scores, self.keys, self.size, self.k, np.asarray(scores, np.float64),
                                    np.asarray(docs, np.int64), np.int64(base))

    def offer_positive(self, row_scores: np.ndarray, base: int) -> None:
        """Offer the rows of ``row_scores`` that score above 0 (keys ``base + row``)."""
        self.size = heap_offer_positive(self.scores, self.keys, self.size, self.k, row_scores, np.int64(base))

    def ranked(self) -> tuple[np.ndarray, np.ndarray]:
        """Keys and scores, best first (the heap is consumed)."""
        n = heap_ranked(self.scores, self.keys, self.size)
        return self.keys[:n].copy(), self.scores[:n].copy()
