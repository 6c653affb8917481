"""The write buffer's scores against scipy, and its snapshots against later writes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.index.buffer import NODE_SLOTS, BufferRecordError, WriteBuffer
from lsr.index.wal import WalRecord

VOCAB = 40  # few terms, so a term's postings fill several nodes


def random_records(rng, count: int, ids: int) -> list[WalRecord]:
    """Adds (some replacing an earlier id) and deletes, in log order."""
    records = []
    for seq in range(1, count + 1):
        doc_id = f"d{rng.integers(ids)}"
        if rng.random() < 0.15:
            records.append(WalRecord(seq, "delete", doc_id))
            continue
        nnz = int(rng.integers(0, 12))
        terms = np.sort(rng.choice(VOCAB, size=nnz, replace=False)).astype(np.uint32)
        weights = (rng.random(nnz) * 3).astype(np.float32)
        weights[rng.random(nnz) < 0.1] = 0.0
        records.append(WalRecord(seq, "add", doc_id, terms=terms, weights=weights))
    return records


def random_batches(rng, records: list[WalRecord]) -> list[list[WalRecord]]:
    """The records cut into consecutive batches of 1 to 20 (a replace and what it replaces
    often in one batch)."""
    batches, start = [], 0
    while start < len(records):
        end = start + int(rng.integers(1, 21))
        batches.append(records[start:end])
        start = end
    return batches


def oracle_scores(records: list[WalRecord], terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per buffered row (each add is a row), the float64 dot product with the query; 0 for a row
    a later record replaced or deleted."""
    adds = [r for r in records if r.op == "add"]
    rows = sp.csr_matrix((np.concatenate([r.weights for r in adds] + [np.zeros(0, np.float32)]).astype(np.float64),
                          np.concatenate([r.terms for r in adds] + [np.zeros(0, np.uint32)]),
                          np.concatenate([[0], np.cumsum([len(r.terms) for r in adds])])), shape=(len(adds), VOCAB))
    query = np.zeros(VOCAB)
    query[terms] = weights
    scores = rows @ query
    last_record = {r.doc_id: i for i, r in enumerate(records)}
    row_records = [i for i, r in enumerate(records) if r.op == "add"]
    for row, i in enumerate(row_records):
        if last_record[records[i].doc_id] != i:
            scores[row] = 0.0
    return scores


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(1, 400), ids=st.integers(1, 300))
def test_buffer_scores_equal_scipy_and_a_view_keeps_its_prefix(seed, count, ids):
    rng = np.random.default_rng(seed)
    records = random_records(rng, count, ids)
    buffer = WriteBuffer(VOCAB, None)
    cut = int(rng.integers(0, count + 1))
    for batch in random_batches(rng, records[:cut]):  # a refresh applies what it read at once
        buffer.apply_many(batch)
    early = buffer.view()  # taken before the rest: later writes (and array growth) must not show
    for batch in random_batches(rng, records[cut:]):
        buffer.apply_many(batch)
    late = buffer.view()
    one_by_one = WriteBuffer(VOCAB, None)
    for record in records:
        one_by_one.apply(record)
    single = one_by_one.view()
    for name in ("indptr", "indices", "values", "live", "shadow_hashes"):
        np.testing.assert_array_equal(getattr(late, name), getattr(single, name), err_msg=name)
    assert late.shadow_order == single.shadow_order and late.ids == single.ids
    for _ in range(3):
        terms = np.sort(rng.choice(VOCAB, size=int(rng.integers(1, 10)), replace=False)).astype(np.int64)
        weights = rng.random(len(terms)) * 2
        for view, seen in ((early, records[:cut]), (late, records)):
            expected = oracle_scores(seen, terms, weights)
            got = view.sparse_scores(terms, weights, VOCAB)
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_a_term_of_many_documents_spans_many_nodes():
    buffer = WriteBuffer(VOCAB, None)
    count = 5 * NODE_SLOTS + 3
    for seq in range(1, count + 1):
        buffer.apply(WalRecord(seq, "add", f"d{seq}", terms=np.array([7], np.uint32),
                               weights=np.array([seq], np.float32)))
    scores = buffer.view().sparse_scores(np.array([7]), np.array([0.5]), VOCAB)
    np.testing.assert_array_equal(scores, 0.5 * np.arange(1, count + 1))


def test_views_searched_while_another_thread_writes_see_exactly_their_prefix():
    """A view is searched without a lock while writes go on (kernels release the GIL): each
    view's scores equal the oracle's over the records applied when it was taken."""
    import threading

    rng = np.random.default_rng(11)
    records = random_records(rng, 3000, 1500)
    buffer = WriteBuffer(VOCAB, None)
    lock = threading.Lock()
    done = threading.Event()

    def write() -> None:
        for record in records:
            with lock:  # as LiveIndex applies records under its lock
                buffer.apply(record)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    checked = 0
    query_rng = np.random.default_rng(12)
    while not done.is_set() or checked < 5:
        with lock:
            view, seen = buffer.view(), len(buffer.records)
        terms = np.sort(query_rng.choice(VOCAB, size=6, replace=False)).astype(np.int64)
        weights = query_rng.random(6)
        got = view.sparse_scores(terms, weights, VOCAB)  # while the writer appends
        np.testing.assert_allclose(got, oracle_scores(records[:seen], terms, weights), rtol=1e-12, atol=0)
        checked += 1
    writer.join()
    assert checked >= 5, checked


def test_a_record_that_does_not_fit_stops_a_batch_after_the_records_before_it():
    records = [WalRecord(1, "add", "a", terms=np.array([3], np.uint32), weights=np.array([1.0], np.float32)),
               WalRecord(2, "delete", "x"),
               WalRecord(3, "add", "b", terms=np.array([VOCAB], np.uint32), weights=np.array([1.0], np.float32)),
               WalRecord(4, "add", "c", terms=np.array([5], np.uint32), weights=np.array([1.0], np.float32))]
    buffer = WriteBuffer(VOCAB, None)
    with pytest.raises(BufferRecordError, match=r"log record 3 \('b'\): term id 40 is outside the vocabulary of 40"):
        buffer.apply_many(records)
    assert [r.seq for r in buffer.records] == [1, 2]
    assert buffer.view().ids == ["a"] and buffer.touched("x") and not buffer.touched("c")
    nan = WalRecord(5, "add", "d", terms=np.array([1], np.uint32), weights=np.array([np.nan], np.float32))
    with pytest.raises(BufferRecordError, match=r"log record 5 \('d'\): weights must be finite"):
        buffer.apply_many([nan])
    assert len(buffer) == 2


def test_a_dense_vector_of_the_wrong_size_stops_a_batch_and_leaves_the_buffer_whole():
    def add(seq, doc_id, term, dense):
        return WalRecord(seq, "add", doc_id, terms=np.array([term], np.uint32), weights=np.array([1.0], np.float32),
                         dense=np.array(dense, np.float32))

    buffer = WriteBuffer(VOCAB, 2)
    with pytest.raises(BufferRecordError, match=r"log record 2 \('b'\): dense vector of 3 values, the index needs 2"):
        buffer.apply_many([add(1, "a", 3, [1, 0]), add(2, "b", 3, [1, 0, 0]), add(3, "c", 3, [0, 1])])
    buffer.apply_many([add(4, "c", 3, [0, 2]), add(5, "a", 4, [3, 4])])  # the failed batch left nothing half-linked
    view = buffer.view()
    assert view.ids == ["a", "c", "a"] and view.live.tolist() == [False, True, True]
    np.testing.assert_array_equal(view.sparse_scores(np.array([3, 4]), np.array([1.0, 2.0]), VOCAB), [0.0, 1.0, 2.0])
    np.testing.assert_allclose(view.dense, [[1, 0], [0, 1], [0.6, 0.8]])


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@pytest.mark.parametrize("terms, weights, message", [
    (np.array([3], np.int64), np.array([1e39]), r"log record 1 \('a'\): weights must be finite"),  # inf in float32
    (np.array([-1], np.int64), np.array([1.0]), r"log record 1 \('a'\): term id 4294967295 is outside"),
])
def test_vectors_are_judged_as_they_would_be_stored(terms, weights, message):
    """A record built in Python (not read from the log) with other dtypes: its vector is
    judged after the conversion to uint32 term ids and float32 weights the buffer stores."""
    buffer = WriteBuffer(VOCAB, None)
    with pytest.raises(BufferRecordError, match=message):
        buffer.apply_many([WalRecord(1, "add", "a", terms=terms, weights=weights)])
    assert len(buffer) == 0 and buffer.view().num_rows == 0
