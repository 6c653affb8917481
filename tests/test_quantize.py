import numpy as np
import pytest

from lsr.index.quantize import MAX_IMPACT, WeightSample, quantize, scale_for


def test_rounds_to_nearest_level():
    impacts, stats = quantize(np.array([0.0, 0.04, 0.06, 1.0, 2.55]), scale=0.01)
    assert impacts.tolist() == [0, 4, 6, 100, 255]
    assert (stats.clipped, stats.zeroed, stats.kept) == (0, 1, 4)


def test_values_above_range_are_clipped_and_counted_not_wrapped():
    impacts, stats = quantize(np.array([2.56, 3.0, 1000.0, 1.0]), scale=0.01)
    assert impacts.tolist() == [255, 255, 255, 100]
    assert stats.clipped == 3
    assert impacts.dtype == np.uint8


def test_small_values_round_to_zero_and_are_counted():
    _, stats = quantize(np.array([0.004, 0.0049, 0.006]), scale=0.01)
    assert stats.zeroed == 2 and stats.kept == 1


def test_scale_maps_reference_to_top_level():
    assert scale_for(2.55) == pytest.approx(0.01)
    impacts, _ = quantize(np.array([2.55]), scale_for(2.55))
    assert impacts[0] == MAX_IMPACT
    with pytest.raises(ValueError, match="every document weight is zero"):
        scale_for(0.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        quantize(np.ones(2), 0.0)


def test_weight_sample_maximum_is_exact_and_quantile_close():
    rng = np.random.default_rng(0)
    values = rng.exponential(size=300_000).astype(np.float32)
    sample = WeightSample(capacity=50_000)
    for chunk in np.array_split(values, 7):
        sample.update(chunk)
    assert sample.maximum == values.max()
    assert sample.seen == values.size
    assert sample.quantile(0.99) == pytest.approx(np.quantile(values, 0.99), rel=0.03)
    assert sample.quantile(1.0) == values.max()


def test_16_bit_impacts_stay_within_the_stated_error_of_the_8_bit_ones():
    """The bound the 16-bit scorers rest on: |fine / 256 - impact| <= FINE_ERROR_LEVELS, for
    rounding near every half level, clipping, and per-value scales."""
    from lsr.index.quantize import FINE_ERROR_LEVELS, FINE_LEVELS, MAX_FINE_IMPACT, fine_impacts

    rng = np.random.default_rng(4)
    levels = np.concatenate([rng.uniform(0, 300, 200_000), np.arange(0, 300) + 0.5,
                             np.arange(0, 300) + 0.5 - 1 / 512, np.arange(0, 300) + 0.5 + 1 / 512])
    scale = rng.uniform(1e-4, 10, levels.size)
    values = (levels * scale).astype(np.float32)
    impacts, _ = quantize(values, scale)
    fine = fine_impacts(values, scale)
    kept = impacts > 0
    assert fine.dtype == np.uint16 and fine.max() <= MAX_FINE_IMPACT
    assert np.all(np.abs(fine[kept] / FINE_LEVELS - impacts[kept]) <= FINE_ERROR_LEVELS)
    assert np.all(fine[kept] >= FINE_LEVELS // 2)  # a kept posting never has a 16-bit zero
    assert np.all(fine[values / scale > MAX_IMPACT + 0.5] == MAX_FINE_IMPACT)  # clipped alike
    assert np.abs(fine / FINE_LEVELS - np.minimum(values / scale, MAX_IMPACT)).max() <= 0.5 / FINE_LEVELS + 1e-6
