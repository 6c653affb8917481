"""One canonical form for query vectors, shared by every scorer.

Terms sorted and unique, terms outside the index vocabulary dropped (no document has them),
duplicate terms merged by summing their weights (in float64, then float32), zero weights
dropped; then each weight is multiplied by its term's quantisation scale (float32), so that
weight x uint8 impact is in the encoder's units. Every scorer sees the same float32 weights in
the same order, so every scorer adds the same products in the same order and they agree to
the last bit.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lsr.index.sparse_batch import SparseBatch


def canonical_query(terms, weights, term_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical ``(terms uint32, scaled weights float32)`` of one query."""
    terms, merged = merge_query(terms, weights, len(term_scales))
    return terms, scale_query(terms, merged, term_scales)


def scale_query(terms: np.ndarray, merged: np.ndarray, term_scales: np.ndarray) -> np.ndarray:
    """Merged weights (`merge_query`) times each term's scale: what a segment's kernels take."""
    return merged * term_scales[terms]


def merge_query(terms, weights, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Terms sorted and unique (uint32, unknown ones dropped), weights summed (float32, zeros
    dropped), before scaling: the part of `canonical_query` shared by every segment."""
    terms = np.asarray(terms).ravel()
    weights = np.asarray(weights).ravel()
    if terms.shape != weights.shape:
        raise ValueError(f"query has {terms.size} terms but {weights.size} weights")
    if terms.size and (terms.min() < 0 or not np.all(np.isfinite(weights))):
        raise ValueError("query terms must be non-negative ids and weights finite")
    known = terms < vocab_size
    if terms.size < 2 or np.all(terms[1:] > terms[:-1]):  # sorted and unique already (a CSR row is)
        summed = weights[known].astype(np.float32)
        keep = summed != 0
        return terms[known][keep].astype(np.uint32), summed[keep]
    unique, inverse = np.unique(terms[known].astype(np.int64), return_inverse=True)
    summed = np.zeros(len(unique), dtype=np.float64)
    np.add.at(summed, inverse, weights[known].astype(np.float64))
    summed = summed.astype(np.float32)
    keep = summed != 0
    return unique[keep].astype(np.uint32), summed[keep]


def canonical_batch(queries: SparseBatch, term_scales: np.ndarray) -> SparseBatch:
    """Canonical form of every row of a query batch."""
    return scale_batch(merge_batch(queries, len(term_scales)), term_scales)


def scale_batch(merged: SparseBatch, term_scales: np.ndarray) -> SparseBatch:
    """`scale_query` on every row of a `merge_batch` result."""
    return SparseBatch(merged.indptr, merged.indices, merged.values * term_scales[merged.indices], merged.vocab_size)


def merge_batch(queries: SparseBatch, vocab_size: int) -> SparseBatch:
    """`merge_query` on every row of a batch."""
    if queries.vocab_size != vocab_size:
        raise ValueError(f"query vocabulary {queries.vocab_size} differs from the index's {vocab_size}")
    matrix = sp.csr_matrix(
        (queries.values.astype(np.float64), queries.indices.astype(np.int64), queries.indptr),
        shape=(len(queries), vocab_size),
    )
    matrix.sum_duplicates()  # also sorts the terms of each row
    matrix.data = matrix.data.astype(np.float32).astype(np.float64)
    matrix.eliminate_zeros()
    return SparseBatch(matrix.indptr, matrix.indices, matrix.data.astype(np.float32), vocab_size)
