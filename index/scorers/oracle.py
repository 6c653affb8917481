"""The obvious exhaustive scorer: a fresh float64 score per document, then partial selection.

Kept as the oracle that every fast scorer is tested against, and as the exhaustive scorer's
fallback for query weights whose float32 sums it cannot bound (``index.scorers.exhaustive``).
Each query term's postings (``index.postings_view.TermView``) are accumulated into a dense
float64 array (query weight x uint8 impact), then the top k are taken. float64 makes the sums
exact in practice: a float32 weight times a uint8 impact has at most 32 significant bits, so a
sum of such products has no rounding unless the query's weights span more than about 2^13, and
then the sums are the ones of this order of accumulation (query terms ascending), which is the
order every scorer uses. Results hold only live documents with a positive score, ordered by
score descending and, on equal scores, by internal doc id ascending.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lsr.index.format import CHUNK_BITS
from lsr.index.postings_view import chunk_postings

# kernels


@njit(cache=True, nogil=True)
def _accumulate(q_terms, q_weights, view, scores):
    """Term at a time: each query term's postings, one sequential sweep, into the dense scores."""
    num_terms = view.entry_offsets.shape[0] - 1
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        if t >= num_terms:  # a term the index has never seen (canonical queries have none)
            continue
        w = np.float64(q_weights[j])  # float32 x uint8 would round to float32
        for c in range(view.chunks):
            start, end = chunk_postings(view, t, c)
            base = c << CHUNK_BITS
            for p in range(start, end):
                scores[base + view.post_docs[p]] += w * view.post_impacts[p]


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
def oracle_top_k(q_terms, q_weights, num_docs, k, live, view, out_docs, out_scores):
    """The top k of one canonical query over a segment's `TermView` into ``out_*``; returns the
    number written (``live``: uint8 per doc, or empty when nothing is deleted)."""
    scores = np.zeros(num_docs, dtype=np.float64)
    _accumulate(q_terms, q_weights, view, scores)
    return _top_k(scores, k, live, out_docs, out_scores)
