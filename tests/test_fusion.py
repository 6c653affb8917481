"""Fusion functions against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.index.fusion import convex_fusion, fuse, normalize_scores, reciprocal_rank_fusion


def test_rrf_hand_computed():
    sparse = (["a", "b", "c"], [9.0, 5.0, 1.0])
    dense = (["c", "a"], [0.9, 0.8])
    ids, scores = reciprocal_rank_fusion([sparse, dense])
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61}
    assert ids == ["a", "c", "b"]
    np.testing.assert_allclose(scores, [expected[i] for i in ids])


def test_rrf_weights_k_and_limit():
    ids, scores = reciprocal_rank_fusion([(["x", "y"], [0, 0]), (["y"], [0])], k=0, weights=[1.0, 3.0], limit=1)
    assert ids == ["y"] and scores.tolist() == [1 / 2 + 3 / 1]
    with pytest.raises(ValueError, match="2 weights for 1 lists"):
        reciprocal_rank_fusion([(["x"], [1.0])], weights=[1, 2])


def test_rrf_ties_keep_first_seen_order():
    ids, _ = reciprocal_rank_fusion([(["a"], [1.0]), (["b"], [1.0])])
    assert ids == ["a", "b"]


def test_minmax_convex_with_missing_documents_at_the_floor():
    sparse = (["a", "b", "c"], [10.0, 6.0, 2.0])  # normalised 1, 0.5, 0
    dense = (["b", "d"], [0.9, 0.5])  # normalised 1, 0
    ids, scores = convex_fusion(sparse, dense, alpha=0.3)
    expected = {"a": 0.3 * 1 + 0.7 * 0, "b": 0.3 * 0.5 + 0.7 * 1, "c": 0.0, "d": 0.0}
    assert ids[:2] == ["b", "a"]
    np.testing.assert_allclose(scores, [expected[i] for i in ids])


def test_zscore_normalisation_and_floor():
    normalised, floor = normalize_scores([3.0, 1.0], "zscore")  # mean 2, std 1
    assert normalised.tolist() == [1.0, -1.0] and floor == -1.0
    ids, scores = convex_fusion((["a", "b"], [3.0, 1.0]), (["c", "a"], [5.0, 1.0]), alpha=0.5,
                                normalization="zscore")
    expected = {"a": 0.5 * 1 + 0.5 * -1, "b": 0.5 * -1 + 0.5 * -1, "c": 0.5 * -1 + 0.5 * 1}
    np.testing.assert_allclose(scores, [expected[i] for i in ids])


def test_constant_lists_are_guarded():
    assert normalize_scores([4.0, 4.0], "minmax")[0].tolist() == [1.0, 1.0]
    assert normalize_scores([4.0], "zscore") [0].tolist() == [0.0]
    ids, scores = convex_fusion((["a"], [7.0]), (["b", "c"], [2.0, 1.0]), alpha=0.5)
    np.testing.assert_allclose(scores, [0.5, 0.5, 0.0])  # a: 0.5*1 + 0.5*0; b: 0.5*0 + 0.5*1
    assert set(ids[:2]) == {"a", "b"} and np.all(np.isfinite(scores))
    assert convex_fusion(([], []), ([], []))[0] == []


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        convex_fusion((["a"], [1.0]), (["a"], [1.0]), alpha=1.5)
    with pytest.raises(ValueError, match="normalization"):
        normalize_scores([1.0], "softmax")
    with pytest.raises(ValueError, match="finite"):
        normalize_scores([np.nan], "minmax")
    with pytest.raises(ValueError, match="fusion"):
        fuse((["a"], [1.0]), (["a"], [1.0]), method="sum")


ranked = st.lists(st.tuples(st.integers(0, 30), st.floats(-5, 5, allow_nan=False)), max_size=20,
                  unique_by=lambda pair: pair[0]).map(
    lambda pairs: ([p[0] for p in sorted(pairs, key=lambda p: -p[1])], sorted((p[1] for p in pairs), reverse=True)))


@settings(max_examples=200, deadline=None)
@given(ranked, ranked, st.floats(0, 1), st.sampled_from(["minmax", "zscore"]))
def test_fusion_properties_against_a_plain_loop(first, second, alpha, normalization):
    union = set(first[0]) | set(second[0])
    ids, scores = reciprocal_rank_fusion([first, second])
    assert set(ids) == union and len(ids) == len(union) and np.all(np.diff(scores) <= 0)
    for doc, score in zip(ids, scores):  # the definition, summed the slow way
        expected = sum(1 / (60 + lst[0].index(doc) + 1) for lst in (first, second) if doc in lst[0])
        assert score == pytest.approx(expected)
    ids, scores = convex_fusion(first, second, alpha, normalization)
    assert set(ids) == union and np.all(np.diff(scores) <= 1e-12)
    if normalization == "minmax":
        assert np.all((scores >= -1e-12) & (scores <= 1 + 1e-12))


@pytest.mark.parametrize("seed", range(5))
def test_rrf_and_minmax_convex_equal_ranx(seed):
    """ranx (the fusion library IR people use) as the oracle: RRF and the min-max weighted sum
    give the same fused score to every document, on random lists of distinct scores that
    overlap in part."""
    import random

    from ranx import Run, fuse as ranx_fuse

    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(80)]
    sparse_ids, dense_ids = rng.sample(docs, 40), rng.sample(docs, 40)
    sparse = (sparse_ids, sorted((rng.uniform(0, 30) for _ in sparse_ids), reverse=True))
    dense = (dense_ids, sorted((rng.uniform(-1, 1) for _ in dense_ids), reverse=True))
    runs = [Run({"q": dict(zip(ids, scores))}) for ids, scores in (sparse, dense)]

    ours = dict(zip(*reciprocal_rank_fusion([sparse, dense], k=60)))
    theirs = ranx_fuse(runs=runs, method="rrf", params={"k": 60}).to_dict()["q"]
    assert ours.keys() == theirs.keys()
    assert all(abs(ours[d] - theirs[d]) < 1e-12 for d in ours)

    alpha = rng.uniform(0.1, 0.9)
    ours = dict(zip(*convex_fusion(sparse, dense, alpha, "minmax")))
    theirs = ranx_fuse(runs=runs, norm="min-max", method="wsum", params={"weights": [alpha, 1 - alpha]}).to_dict()["q"]
    assert ours.keys() == theirs.keys()
    assert all(abs(ours[d] - theirs[d]) < 1e-9 for d in ours)


def test_standout_and_adaptive_weight_hand_computed():
    from lsr.index.fusion import adaptive_weight, standout

    assert standout([3.0, 1.0, 1.0, 1.0]) == pytest.approx((3 - 1.5) / np.std([3, 1, 1, 1]))
    assert standout([2.0, 2.0]) == 0 and standout([]) == 0
    assert standout([9.0, 1.0, 1.0, 1.0], depth=1) == 0  # one score: no spread
    sharp, flat = (["a", "b", "c", "d"], [3.0, 1.0, 1.0, 1.0]), (["e", "f"], [2.0, 2.0])
    assert adaptive_weight(sharp, flat) == 1.0 and adaptive_weight(flat, sharp) == 0.0
    assert adaptive_weight(flat, flat) == 0.5
    a, b = standout(sharp[1]), standout([5.0, 4.0, 0.0])
    assert adaptive_weight(sharp, (["x", "y", "z"], [5.0, 4.0, 0.0])) == pytest.approx(a / (a + b))


def test_adaptive_fusion_follows_the_list_that_found_something():
    """A flat list (a retriever that matched nothing in particular) gets weight 0 for the query:
    the fused ranking is the other list's, its documents below."""
    from lsr.index.fusion import adaptive_fusion

    found = (["d1", "d2", "d3", "d4"], [9.0, 3.0, 2.0, 1.0])
    flat = (["d4", "x1", "x2"], [0.5, 0.5, 0.5])
    ids, _ = adaptive_fusion(flat, found)
    assert ids[:4] == ["d1", "d2", "d3", "d4"] and set(ids[4:]) == {"x1", "x2"}
    assert fuse(flat, found, method="adaptive")[0] == ids


@settings(max_examples=200, deadline=None)
@given(ranked, ranked)
def test_adaptive_fusion_equals_its_definition(first, second):
    """Against a plain implementation: the standouts, the weight, then z-scores with floors."""
    from lsr.index.fusion import adaptive_fusion

    def standout(scores):
        top = list(scores[:100])
        if not top:
            return 0.0
        mean = sum(top) / len(top)
        std = (sum((s - mean) ** 2 for s in top) / len(top)) ** 0.5
        return (top[0] - mean) / std if std > 0 else 0.0

    a, b = standout(first[1]), standout(second[1])
    alpha = a / (a + b) if a + b > 0 else 0.5

    def zscores(scores):
        mean = sum(scores) / len(scores) if scores else 0.0
        std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5 if scores else 0.0
        z = [(s - mean) / std if std > 0 else 0.0 for s in scores]
        return z, (min(z) if z and std > 0 else 0.0)

    (z1, floor1), (z2, floor2) = zscores(first[1]), zscores(second[1])
    one, two = dict(zip(first[0], z1)), dict(zip(second[0], z2))
    ids, scores = adaptive_fusion(first, second)
    assert set(ids) == set(first[0]) | set(second[0])
    for doc, score in zip(ids, scores):
        expected = alpha * one.get(doc, floor1) + (1 - alpha) * two.get(doc, floor2)
        assert score == pytest.approx(expected, abs=1e-9)
