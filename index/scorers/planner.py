"""Pick a scorer per query: exhaustive for small collections and very long queries, BMP otherwise.

Block-max pruning pays for its bucket sort and per-block lookups only when it can skip most
blocks: on small collections the exhaustive scorer's single pass over a few postings lists
is faster, and so it is for large k (the k-th score, the pruning threshold, stays low) and
for very long queries (loose block bounds, a binary search per term per block). The
thresholds are the measured crossovers of ``eval/bench_planner.py`` (block size 8, BP order,
``eval/results/bench_planner.json``), mean latency on 2 cores:

* k = 10 (refit on 2026-12-01 after the exhaustive scorer's second rebuild, segment format 2):
  at 100k docs the exhaustive scorer won on the mean (0.35 against 0.67 ms) and for every
  query length but the shortest (1-8 terms: 0.24 against 0.19 ms, 12 of 500 queries); at
  300k BMP won for queries of up to 32 terms (17-32 terms: 0.74 against 0.80 ms) and lost
  above (33-64 terms: 2.50 against 1.57 ms); at 1M it won up to 64 terms (3.84 against 4.73),
  tied at 65-128 (8.11 against 8.03) and lost on the two longest queries (11.8 against 10.0);
* k = 1000: the exhaustive scorer won at every measured size, 1M included (3.77 against
  10.58 ms; 1.51 against 4.43 at 100k, 2.18 against 7.16 at 300k), and at 4M in the engine
  benchmark too (``eval/results/bench_engines_4m_chunked.md``, 200 queries: 15.39 against
  17.78 ms). From 1M to 4M it grew 4.2x and BMP 1.7x, so the two cross near 5-6M docs; the
  k = 1000 threshold is put at 6M: an extrapolation of that trend, not a measurement.

Sizes between the measured ones go to the exhaustive scorer; k up to 100 follows the k = 10 rule.
"""

from __future__ import annotations

import numpy as np

from lsr.index.format import Segment
from lsr.index.scorers.exhaustive import SearchResults
from lsr.index.sparse_batch import SparseBatch

MIN_DOCS_FOR_BMP = 300_000  # small k
MIN_DOCS_FOR_BMP_LONG_QUERIES = 1_000_000  # small k, more than MAX_QUERY_TERMS_FOR_BMP terms
MAX_QUERY_TERMS_FOR_BMP = 32
MIN_DOCS_FOR_BMP_LARGE_K = 6_000_000
LARGE_K = 100  # k above this follows the k = 1000 measurements
SCORERS = ("auto", "exhaustive", "bmp")


def choose_scorer(num_docs: int, num_query_terms: int, alpha: float = 1.0, beta: float = 1.0,
                  k: int = 10, max_blocks: int | None = None) -> str:
    """``"bmp"`` or ``"exhaustive"`` for one query over an index of ``num_docs`` live documents
    (all its segments together; approximate settings always need BMP)."""
    if alpha < 1 or beta < 1 or max_blocks is not None:
        return "bmp"
    if k > LARGE_K:
        return "bmp" if num_docs >= MIN_DOCS_FOR_BMP_LARGE_K else "exhaustive"
    if num_docs < MIN_DOCS_FOR_BMP:
        return "exhaustive"
    if num_query_terms > MAX_QUERY_TERMS_FOR_BMP and num_docs < MIN_DOCS_FOR_BMP_LONG_QUERIES:
        return "exhaustive"
    return "bmp"


def search(index: Segment, terms, weights, k: int = 10, scorer: str = "auto", alpha: float = 1.0,
           beta: float = 1.0, max_blocks: int | None = None, precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Search one segment with the chosen scorer (``auto`` asks `choose_scorer`) over the
    impacts ``precision`` chooses (``index.search``).

    Returns:
        Internal doc ids and scores, best first; every scorer gives the same result at
        ``alpha = beta = 1`` without ``max_blocks``.
    """
    from lsr.index.search import search_sparse, single_segment_view

    return search_sparse(single_segment_view(index), terms, weights, k, scorer, alpha, beta, max_blocks, precision)


def search_batch(index: Segment, queries: SparseBatch, k: int = 10, scorer: str = "auto",
                 alpha: float = 1.0, beta: float = 1.0, max_blocks: int | None = None,
                 precision: str = "auto") -> SearchResults:
    """Search a batch over one segment in parallel over queries; ``auto`` routes each query as
    `choose_scorer` does."""
    from lsr.index.search import search_sparse_batch, single_segment_view

    return search_sparse_batch(single_segment_view(index), queries, k, scorer, alpha, beta, max_blocks, precision)
