"""Pick a scorer per query: exhaustive for small collections and very long queries, BMP otherwise.

Block-max pruning pays for its bucket sort and per-block lookups only when it can skip most
blocks: on small collections the exhaustive scorer's single pass over a few postings lists
is faster, and so it is for large k (the k-th score, the pruning threshold, stays low) and
for very long queries (loose block bounds, a binary search per term per block). The
thresholds are the measured crossovers of ``eval/bench_planner.py`` (block size 8, BP order,
``eval/results/bench_planner.json``), mean latency on 2 cores:

* k = 10: BMP won at 100k docs (0.63 against 1.54 ms) except for queries of more than 64
  terms (4.5 against 4.0 ms), and everywhere from 300k docs on;
* k = 1000: the exhaustive scorer won at 100k and 300k docs (4.7 against 6.3 ms at 300k),
  BMP at 1M (10.2 against 16.9 ms).

Sizes between the measured ones go to the exhaustive scorer; k up to 100 follows the k = 10 rule.
"""

from __future__ import annotations

import numpy as np

from index.format import SparseIndex
from index.scorers.bmp import bmp_search, bmp_search_batch
from index.scorers.exhaustive import SearchResults
from index.scorers.exhaustive import search as exhaustive_search
from index.scorers.exhaustive import search_batch as exhaustive_search_batch
from index.sparse_batch import SparseBatch

MIN_DOCS_FOR_BMP = 100_000  # small k
MIN_DOCS_FOR_BMP_LONG_QUERIES = 300_000  # small k, more than MAX_QUERY_TERMS_FOR_BMP terms
MAX_QUERY_TERMS_FOR_BMP = 64
MIN_DOCS_FOR_BMP_LARGE_K = 1_000_000
LARGE_K = 100  # k above this follows the k = 1000 measurements
SCORERS = ("auto", "exhaustive", "bmp")


def choose_scorer(index: SparseIndex, num_query_terms: int, alpha: float = 1.0, beta: float = 1.0,
                  k: int = 10, max_blocks: int | None = None) -> str:
    """``"bmp"`` or ``"exhaustive"`` for one query (approximate settings always need BMP)."""
    if _approximate(alpha, beta, max_blocks):
        return "bmp"
    docs = index.num_docs
    if k > LARGE_K:
        return "bmp" if docs >= MIN_DOCS_FOR_BMP_LARGE_K else "exhaustive"
    if docs < MIN_DOCS_FOR_BMP:
        return "exhaustive"
    if num_query_terms > MAX_QUERY_TERMS_FOR_BMP and docs < MIN_DOCS_FOR_BMP_LONG_QUERIES:
        return "exhaustive"
    return "bmp"


def _approximate(alpha: float, beta: float, max_blocks: int | None) -> bool:
    return alpha < 1 or beta < 1 or max_blocks is not None


def _check_exact(alpha: float, beta: float, max_blocks: int | None) -> None:
    if _approximate(alpha, beta, max_blocks):
        raise ValueError("the exhaustive scorer is exact: alpha and beta must be 1 and max_blocks None")


def search(index: SparseIndex, terms, weights, k: int = 10, scorer: str = "auto", alpha: float = 1.0,
           beta: float = 1.0, max_blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Search one query with the chosen scorer (``auto`` asks `choose_scorer`).

    Returns:
        Internal doc ids and scores, best first; every scorer gives the same result at
        ``alpha = beta = 1`` without ``max_blocks``.
    """
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
    if scorer == "auto":
        scorer = choose_scorer(index, len(terms), alpha, beta, k, max_blocks)
    if scorer == "exhaustive":
        _check_exact(alpha, beta, max_blocks)
        return exhaustive_search(index, terms, weights, k)
    return bmp_search(index, terms, weights, k, alpha, beta, max_blocks)


def search_batch(index: SparseIndex, queries: SparseBatch, k: int = 10, scorer: str = "auto",
                 alpha: float = 1.0, beta: float = 1.0, max_blocks: int | None = None) -> SearchResults:
    """Search a batch in parallel over queries; ``auto`` routes each query as `choose_scorer` does."""
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
    lengths = np.diff(queries.indptr)
    if scorer == "auto":
        use_bmp = np.array([choose_scorer(index, int(n), alpha, beta, k, max_blocks) == "bmp" for n in lengths],
                           dtype=bool)
    else:
        use_bmp = np.full(len(queries), scorer == "bmp")
    if use_bmp.all():
        return bmp_search_batch(index, queries, k, alpha, beta, max_blocks)
    if not use_bmp.any():
        _check_exact(alpha, beta, max_blocks)
        return exhaustive_search_batch(index, queries, k)
    matrix = queries.to_scipy()
    parts = {
        True: bmp_search_batch(index, SparseBatch.from_scipy(matrix[use_bmp]), k, alpha, beta, max_blocks),
        False: exhaustive_search_batch(index, SparseBatch.from_scipy(matrix[~use_bmp]), k),
    }
    merged = SearchResults(np.full((len(queries), k), -1, dtype=np.int64), np.zeros((len(queries), k)),
                           np.zeros(len(queries), dtype=np.int64))
    for flag, results in parts.items():
        rows = np.flatnonzero(use_bmp == flag)
        merged.docs[rows], merged.scores[rows], merged.counts[rows] = results.docs, results.scores, results.counts
    return merged
