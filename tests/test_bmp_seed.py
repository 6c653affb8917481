"""BMP's combined threshold seed over several segments, against its definition computed plainly."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.typed import List

from lsr.index.bmp_build import SEED_KS
from lsr.index.scorers.bmp import _combined_seed


class SeedSegment(NamedTuple):
    """What `_combined_seed` reads of a kernel segment."""

    kth_impacts: np.ndarray  # uint8 (terms, seed columns)
    kth_deleted: np.ndarray  # int32 (terms, seed columns), or empty
    extra_deleted: np.int64


def plain_seed(segments, terms, weights, k, slack) -> float:
    """The largest value v = w x (kth - slack) of any (segment, column) such that the segments'
    live counts at v add up to k: each segment counts its largest column at or above v."""
    if np.any(weights < 0):
        return 0.0
    best = 0.0
    for j, t in enumerate(terms):
        entries = []  # (segment, value, live)
        for s, seg in enumerate(segments):
            for c, count in enumerate(SEED_KS):
                if seg.kth_impacts[t, c] == 0:
                    break
                live = count - int(seg.extra_deleted)
                if len(seg.kth_deleted):
                    live -= int(seg.kth_deleted[t, c])
                entries.append((s, float(np.float64(weights[s, j]) * (seg.kth_impacts[t, c] - slack)), max(live, 0)))
        for _, v, _ in entries:
            if v <= best:
                continue
            reached = {}
            for s, value, live in entries:
                if value >= v:
                    reached[s] = max(reached.get(s, 0), live)
            if sum(reached.values()) >= k:
                best = v
    return best


def random_segment(rng, vocab: int) -> SeedSegment:
    columns = len(SEED_KS)
    kth = np.zeros((vocab, columns), dtype=np.uint8)
    for t in range(vocab):
        depth = int(rng.integers(0, columns + 1))  # columns the term has enough postings for
        if depth:
            kth[t, :depth] = np.sort(rng.integers(1, 256, size=depth))[::-1]
    deleted = rng.integers(0, 60, size=(vocab, columns)).astype(np.int32) if rng.random() < 0.5 else np.zeros(
        (0, 0), dtype=np.int32)
    return SeedSegment(kth, deleted, np.int64(rng.integers(0, 30) if rng.random() < 0.3 else 0))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(1, 12), k=st.sampled_from([1, 10, 25, 100, 150, 1000, 3000]),
       fine=st.booleans())
def test_combined_seed_equals_its_definition(seed, count, k, fine):
    rng = np.random.default_rng(seed)
    vocab = 20
    segments = [random_segment(rng, vocab) for _ in range(count)]
    terms = np.sort(rng.choice(vocab, size=int(rng.integers(1, 8)), replace=False)).astype(np.uint32)
    weights = (rng.random((count, len(terms))) * 3).astype(np.float32)
    if rng.random() < 0.05:
        weights[:, 0] = -1.0
    slack = 0.5 + 0.5 / 256 if fine else 0.0
    typed = List()
    for segment in segments:
        typed.append(segment)
    assert _combined_seed(typed, terms, weights, k, slack) == plain_seed(segments, terms, weights, k, slack)
