"""Query merging (``index.scorers.query.merge_query``) against a dictionary that sums weights."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.index.scorers.query import merge_query

VOCAB = 50


def merged_by_dict(terms, weights, vocab_size):
    sums: dict[int, float] = {}
    for t, w in zip(terms.tolist(), weights.tolist()):
        if t < vocab_size:
            sums[t] = sums.get(t, 0.0) + w
    kept = sorted(t for t, w in sums.items() if np.float32(w) != 0)
    return kept, [np.float32(sums[t]) for t in kept]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, VOCAB + 5), st.sampled_from([0.0, 0.5, -1.0, 1.25, 3.0])), max_size=30),
       st.booleans(), st.sampled_from([np.uint32, np.int64]), st.sampled_from([np.float32, np.float64]))
def test_merge_query_equals_a_dictionary_sum(pairs, as_csr_row, term_type, weight_type):
    """Unsorted, repeated, unknown (>= vocabulary) and zero-weight terms, and rows that are
    already sorted and unique (a CSR row, the fast path)."""
    if as_csr_row:
        pairs = sorted(dict(pairs).items())
    terms = np.array([t for t, _ in pairs], dtype=term_type)
    weights = np.array([w for _, w in pairs], dtype=weight_type)
    found_terms, found_weights = merge_query(terms, weights, VOCAB)
    expected_terms, expected_weights = merged_by_dict(terms, weights, VOCAB)
    assert found_terms.dtype == np.uint32 and found_weights.dtype == np.float32
    assert found_terms.tolist() == expected_terms
    assert found_weights.tolist() == expected_weights


def test_bad_queries_are_refused():
    with pytest.raises(ValueError, match="3 terms but 2 weights"):
        merge_query(np.array([1, 2, 3]), np.array([1.0, 2.0]), VOCAB)
    with pytest.raises(ValueError, match="non-negative ids and weights finite"):
        merge_query(np.array([-1, 2]), np.array([1.0, 2.0]), VOCAB)
    with pytest.raises(ValueError, match="non-negative ids and weights finite"):
        merge_query(np.array([1, 2]), np.array([1.0, np.nan]), VOCAB)
