"""`SparseBatch` refuses arrays that break its layout, each with an error naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from lsr.index.sparse_batch import SparseBatch


@pytest.mark.parametrize(("indptr", "indices", "values", "message"), [
    ([1, 2], [3], [1.0], "start at 0"),
    ([0, 2, 1], [3, 4], [1.0, 1.0], "non-decreasing"),
    ([0, 2, 1, 2], [3, 4], [1.0, 1.0], "non-decreasing"),  # the last offset agrees with nnz
    ([0, 2], [3], [1.0], "indptr\\[-1\\]=2 but 1 indices"),
    ([0, 1], [10], [1.0], "outside the vocabulary of size 10"),
    ([0, 2], [3, 4], [1.0, np.nan], "NaN or infinite"),
    ([0, 1], [3], [np.inf], "NaN or infinite"),
])
def test_a_broken_layout_is_refused_by_name(indptr, indices, values, message):
    with pytest.raises(ValueError, match=message):
        SparseBatch(np.array(indptr), np.array(indices), np.array(values), 10)


def test_a_valid_batch_keeps_its_rows_with_the_stored_dtypes():
    batch = SparseBatch(np.array([0, 0, 2]), np.array([1, 9]), np.array([0.5, 2.0]), 10)
    assert len(batch) == 2 and batch.nnz == 2
    assert (batch.indptr.dtype, batch.indices.dtype, batch.values.dtype) == (np.int64, np.uint32, np.float32)
    assert batch.row(0)[0].size == 0 and list(batch.row(1)[0]) == [1, 9]
