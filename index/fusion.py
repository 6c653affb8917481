"""Fusion of ranked lists (sparse and dense) as pure functions.

A ranked list is ``(ids, scores)``, best first; ids are anything hashable (external doc ids
or internal ints). Every function returns a new ``(ids, scores)`` list, best first, ties
broken by the order in which an id was first seen (first list first).

* Reciprocal rank fusion (Cormack et al. 2009): ``sum_lists weight / (k + rank)`` with ranks
  from 1; needs no score scales, so it is the default when they are unknown.
* Convex combination of normalised scores: ``alpha * norm(first) + (1 - alpha) * norm(second)``
  with min-max or z-score normalisation per list. A document absent from one list gets that
  list's floor: the lowest normalised score in it (its true score is at most that, the list
  being a top-k cut). A constant list (one result, or all scores equal) carries no ranking
  information: min-max gives its documents 1 and the floor 0 (membership still counts), and
  z-score gives them 0 and the floor 0 (the list adds nothing).
* Adaptive: the convex combination of z-scores with a weight per query from each list's own
  score distribution: a list whose best score stands far above the rest of its top
  ``ADAPTIVE_DEPTH`` (in standard deviations) is one that found something; its weight is that
  distance over the sum of both lists' distances. A retriever that fails on a query (a flat
  list) then gives way to the other on that query, where a fixed weight would dilute it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

RankedList = tuple[Sequence[Hashable], Sequence[float]]
RRF_K = 60
NORMALIZATIONS = ("minmax", "zscore")
ADAPTIVE_DEPTH = 100
FUSIONS = ("rrf", "convex", "adaptive")


def _sorted(scores: dict) -> tuple[list, np.ndarray]:
    ids = list(scores)
    values = np.array([scores[i] for i in ids], dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    return [ids[i] for i in order], values[order]


def reciprocal_rank_fusion(lists: Sequence[RankedList], k: int = RRF_K, weights: Sequence[float] | None = None,
                           limit: int | None = None) -> tuple[list, np.ndarray]:
    """Reciprocal rank fusion.

    Args:
        lists: ranked lists, best first (their scores are ignored).
        k: the RRF constant (60 in the paper); larger flattens the rank discount.
        weights: one per list (default 1 each).
        limit: keep this many fused results (default all).
    """
    if k < 0:
        raise ValueError(f"the RRF constant k must be non-negative, got {k}")
    weights = [1.0] * len(lists) if weights is None else list(weights)
    if len(weights) != len(lists):
        raise ValueError(f"{len(weights)} weights for {len(lists)} lists")
    fused: dict = {}
    for (ids, _), weight in zip(lists, weights):
        for rank, doc in enumerate(ids, start=1):
            fused[doc] = fused.get(doc, 0.0) + weight / (k + rank)
    ids, scores = _sorted(fused)
    return ids[:limit], scores[:limit]


def normalize_scores(scores: Sequence[float], method: str = "minmax") -> tuple[np.ndarray, float]:
    """Normalised scores of one list and the floor a missing document gets.

    Returns:
        ``(normalised float64 array, floor)``.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {method!r}")
    values = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("scores to fuse must be finite")
    if len(values) == 0:
        return values, 0.0
    spread = values.max() - values.min()
    if method == "minmax":
        if spread == 0:
            return np.ones_like(values), 0.0
        return (values - values.min()) / spread, 0.0
    std = values.std()
    if std == 0:
        return np.zeros_like(values), 0.0
    normalised = (values - values.mean()) / std
    return normalised, float(normalised.min())


def convex_fusion(first: RankedList, second: RankedList, alpha: float = 0.5, normalization: str = "minmax",
                  limit: int | None = None) -> tuple[list, np.ndarray]:
    """``alpha * norm(first) + (1 - alpha) * norm(second)``, missing documents at the floor.

    Args:
        first: a ranked list (the sparse one, by the service's convention).
        second: another ranked list (the dense one).
        alpha: weight of ``first``, in [0, 1].
        normalization: ``minmax`` or ``zscore``.
        limit: keep this many fused results (default all).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    norm_first, floor_first = normalize_scores(first[1], normalization)
    norm_second, floor_second = normalize_scores(second[1], normalization)
    by_first = dict(zip(first[0], norm_first))
    by_second = dict(zip(second[0], norm_second))
    fused = {}
    for doc in list(first[0]) + list(second[0]):
        if doc not in fused:
            fused[doc] = alpha * by_first.get(doc, floor_first) + (1 - alpha) * by_second.get(doc, floor_second)
    ids, scores = _sorted(fused)
    return ids[:limit], scores[:limit]


def standout(scores: Sequence[float], depth: int = ADAPTIVE_DEPTH) -> float:
    """How far a list's best score stands above its top ``depth``: ``(s_1 - mean) / std``, 0 for
    an empty or flat list."""
    values = np.asarray(scores[:depth], dtype=np.float64)
    if len(values) == 0 or values.std() == 0:
        return 0.0
    return float((values[0] - values.mean()) / values.std())


def adaptive_weight(first: RankedList, second: RankedList, depth: int = ADAPTIVE_DEPTH) -> float:
    """The weight of ``first`` for this query: its `standout` over both lists' (0.5 if both are flat)."""
    a, b = standout(first[1], depth), standout(second[1], depth)
    return a / (a + b) if a + b > 0 else 0.5


def adaptive_fusion(first: RankedList, second: RankedList, depth: int = ADAPTIVE_DEPTH,
                    limit: int | None = None) -> tuple[list, np.ndarray]:
    """z-score convex fusion weighted per query by `adaptive_weight`."""
    return convex_fusion(first, second, adaptive_weight(first, second, depth), "zscore", limit=limit)


def fuse(sparse: RankedList, dense: RankedList, method: str = "rrf", rrf_k: int = RRF_K, alpha: float = 0.5,
         normalization: str = "minmax", limit: int | None = None) -> tuple[list, np.ndarray]:
    """The fusion the service and the evaluation runner use: ``rrf``, ``convex`` or ``adaptive``."""
    if method == "rrf":
        return reciprocal_rank_fusion([sparse, dense], k=rrf_k, limit=limit)
    if method == "convex":
        return convex_fusion(sparse, dense, alpha, normalization, limit=limit)
    if method == "adaptive":
        return adaptive_fusion(sparse, dense, limit=limit)
    raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {method!r}")
