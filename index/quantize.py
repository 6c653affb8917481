"""Linear `uint8` quantisation of document weights.

An impact is ``round(weight / scale)`` clipped to ``[0, 255]``: ``scale`` is the weight of one
impact level, one per term (``per-term``: the term's largest weight maps to 255) or one for
all (``global``). Weights above ``255 * scale`` are clipped (and counted), never wrapped.
Weights that round to 0 are dropped from the postings (and counted). Scorers multiply each
query weight by its term's scale, so scores come out in the encoder's units.

Beside the 8-bit impact, a segment keeps a 16-bit one (`fine_impacts`) for exact rescoring:
``round(256 * weight / scale)``, so one 16-bit level is 1/256 of an 8-bit level, clipped
where the 8-bit impact clips (at 255 levels) and kept only for the postings the 8-bit impacts
keep. Both codes come from the same ``weight / scale``, so they differ by at most
`FINE_ERROR_LEVELS` 8-bit levels: ``|fine / 256 - impact| <= |fine / 256 - x| + |x - impact|
<= 1/512 + 1/2`` for ``x = weight / scale`` (multiplying by 256 is exact in floating point, so
both roundings see the same ``x``). The scorers' 16-bit bounds rest on that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_IMPACT = 255
FINE_LEVELS = 256  # 16-bit levels per 8-bit level
MAX_FINE_IMPACT = MAX_IMPACT * FINE_LEVELS  # 65,280: clipped where the 8-bit impact clips
FINE_ERROR_LEVELS = 0.5 + 0.5 / FINE_LEVELS  # |fine / 256 - impact| is at most this (module docstring)
RESERVOIR_SIZE = 1 << 20


@dataclass
class QuantizationStats:
    """What quantisation did to the postings; recorded in ``meta.json``."""

    clipped: int = 0
    zeroed: int = 0
    kept: int = 0

    def add(self, other: "QuantizationStats") -> None:
        self.clipped += other.clipped
        self.zeroed += other.zeroed
        self.kept += other.kept


def quantize(values: np.ndarray, scale: float) -> tuple[np.ndarray, QuantizationStats]:
    """Quantise float weights to uint8 impacts.

    Args:
        values: float weights, any shape.
        scale: weight of one impact level (> 0): a number, or one per value.

    Returns:
        The uint8 impacts (same shape) and the counts of clipped, zeroed and kept values.
    """
    if not np.all(np.asarray(scale) > 0):
        raise ValueError(f"quantisation scale must be positive, got {np.min(scale)}")
    levels = np.rint(np.asarray(values, dtype=np.float64) / scale)
    clipped = int(np.count_nonzero(levels > MAX_IMPACT))
    zeroed = int(np.count_nonzero(levels <= 0))
    impacts = np.clip(levels, 0, MAX_IMPACT).astype(np.uint8)
    return impacts, QuantizationStats(clipped, zeroed, impacts.size - zeroed)


def fine_impacts(values: np.ndarray, scale) -> np.ndarray:
    """The 16-bit impacts (uint16) of float weights quantised by `quantize` with the same
    ``scale``: ``round(256 * weight / scale)`` clipped to ``[0, MAX_FINE_IMPACT]``. Kept only
    where `quantize` keeps the posting (there they are at least 128)."""
    levels = np.rint(np.asarray(values, dtype=np.float64) / scale * FINE_LEVELS)
    return np.clip(levels, 0, MAX_FINE_IMPACT).astype(np.uint16)


def scale_for(reference_weight: float, default: float | None = None) -> float:
    """The scale that maps ``reference_weight`` to the top impact level 255; when it is zero
    (no document has a weight), ``default``, or an error without one."""
    if not reference_weight > 0:
        if default is not None:
            return default
        raise ValueError("cannot choose a quantisation scale: every document weight is zero")
    return float(reference_weight) / MAX_IMPACT


class WeightSample:
    """Streaming maximum and a uniform reservoir sample of weights, for choosing a scale.

    The scale is taken from a quantile of all weights seen (1.0 = the maximum, exact); lower
    quantiles clip the few largest weights to gain resolution for the many small ones.
    """

    def __init__(self, seed: int = 0, capacity: int = RESERVOIR_SIZE) -> None:
        self.maximum = 0.0
        self.seen = 0
        self._capacity = capacity
        self._sample = np.empty(0, dtype=np.float32)
        self._rng = np.random.default_rng(seed)

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32).ravel()
        if values.size == 0:
            return
        self.maximum = max(self.maximum, float(values.max()))
        room = max(self._capacity - self._sample.size, 0)
        head, tail = values[:room], values[room:]
        if head.size:
            self._sample = np.concatenate([self._sample, head])
            self.seen += head.size
        if tail.size:
            # Algorithm R, vectorised: the n-th item of the stream replaces a random slot
            # with probability capacity / n.
            numbers = self.seen + np.arange(1, tail.size + 1)
            slots = (self._rng.random(tail.size) * numbers).astype(np.int64)
            keep = slots < self._capacity
            self._sample[slots[keep]] = tail[keep]
            self.seen += tail.size

    def quantile(self, q: float) -> float:
        if not 0 < q <= 1:
            raise ValueError(f"scale quantile must be in (0, 1], got {q}")
        if q == 1 or self._sample.size == 0:
            return self.maximum
        return float(np.quantile(self._sample, q))
