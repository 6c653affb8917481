"""LiveIndex over segments, deletes and the write-ahead log, against a brute-force oracle."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr.eval.crash_sim import brute_force_top_k
from lsr.index.buffer import BufferRecordError
from lsr.index.build import build_index
from lsr.index.commit import SEGMENTS_DIR, read_newest_commit
from lsr.index.directory import IndexBusyError
from lsr.index.live import DocumentNotFound, LiveIndex
from lsr.index.sparse_batch import SparseBatch
from lsr.index.wal import WAL_DIR, WalCorruptError, WriteAheadLog, encode_body, wal_files

VOCAB = 300


def random_rows(rng, n: int, density: float = 0.05) -> sp.csr_matrix:
    matrix = sp.random(n, VOCAB, density=density, random_state=rng, format="csr", dtype=np.float32)
    matrix.data = np.abs(matrix.data) + 0.05
    return matrix


def initial_docs(n: int = 400, seed: int = 0) -> dict:
    docs = random_rows(np.random.default_rng(seed), n)
    return {f"d{i}": docs[i] for i in range(n)}


def make_index(path, n: int = 400, seed: int = 0, **options) -> dict:
    docs = initial_docs(n, seed)
    options = {"reorder": "bp", "block_size": 8, "store_texts": False, **options}
    batch = SparseBatch.from_scipy(sp.vstack(list(docs.values())).tocsr())
    build_index(path, [(list(docs), batch, [f"title {i}" for i in docs])], VOCAB, **options)
    return docs


@pytest.fixture
def index_dir(tmp_path):
    make_index(tmp_path / "idx")
    return tmp_path / "idx"


def oracle(live: LiveIndex, terms, weights, k: int) -> list[tuple[str, float]]:
    return brute_force_top_k(live.refresh(), terms, weights, k)


def assert_matches_oracle(live: LiveIndex, terms, weights, k: int, scorer: str) -> None:
    ids, scores = live.search_sparse(terms, weights, k, scorer=scorer)
    expected = oracle(live, terms, weights, k)
    assert len(ids) == len(expected)
    np.testing.assert_allclose(scores, [s for _, s in expected], rtol=1e-9)
    # Ids agree rank by rank, except inside a group of equal scores (summation order may differ
    # in the last bit between the buffer's float sums and the oracle's).
    for rank, (doc_id, score) in enumerate(expected):
        if ids[rank] != doc_id:
            tied = {d for d, s in expected if np.isclose(s, score, rtol=1e-9)}
            assert ids[rank] in tied or np.isclose(scores[rank], expected[-1][1], rtol=1e-9)


class Model:
    """The acknowledged state: id -> float vector."""

    def __init__(self, initial: dict) -> None:
        self.docs = dict(initial)
        self.ever_max = np.zeros(VOCAB)  # per term, the largest weight ever written (deleted docs too)
        for row in self.docs.values():
            np.maximum.at(self.ever_max, row.indices, row.data)

    def add(self, live: LiveIndex, doc_id: str, row: sp.csr_matrix) -> None:
        replaced = live.add(doc_id, f"title {doc_id}", f"text {doc_id}", row.indices, row.data)
        assert replaced == (doc_id in self.docs)
        self.docs[doc_id] = row
        np.maximum.at(self.ever_max, row.indices, row.data)

    def delete(self, live: LiveIndex, doc_id: str) -> None:
        if doc_id in self.docs:
            live.delete(doc_id)
            del self.docs[doc_id]
        else:
            with pytest.raises(DocumentNotFound):
                live.delete(doc_id)

    def check(self, live: LiveIndex) -> None:
        """The index holds exactly the acknowledged documents, with their vectors (to within
        quantisation: a segment's scale may come from a document deleted since, and a merge
        quantises dequantised impacts again, so allow a few levels of the largest scale)."""
        assert live.num_docs == len(self.docs)
        term_max = self.ever_max
        for doc_id, row in self.docs.items():
            terms, weights, _, _ = live.document_vector(doc_id)
            stored = np.zeros(VOCAB)
            stored[terms.astype(np.int64)] = weights
            expected = row.toarray()[0]
            assert np.all(np.abs(stored - expected) <= 3 * term_max / 255 + 1e-6), doc_id


def random_step(live: LiveIndex, model: Model, rng, step: int) -> None:
    action = rng.random()
    if action < 0.45:
        doc_id = f"d{rng.integers(400)}" if rng.random() < 0.4 else f"new{step}"
        model.add(live, doc_id, random_rows(rng, 1))
    elif action < 0.75:
        pool = list(model.docs)
        doc_id = pool[rng.integers(len(pool))] if pool and rng.random() < 0.9 else f"missing{step}"
        model.delete(live, doc_id)
    elif action < 0.9:
        live.flush()
    elif action < 0.97:
        live.merge(policy=_EagerPolicy())
    else:
        live.merge(max_segments=1)


class _EagerPolicy:
    """Merge the two smallest segments whenever there are three or more (exercises merges)."""

    def find_merge(self, segments):
        if len(segments) < 3:
            return None
        return [s.name for s in sorted(segments, key=lambda s: s.num_live)[:2]]


def test_random_writes_flushes_and_merges_match_the_oracle(index_dir):
    rng = np.random.default_rng(1)
    live = LiveIndex(index_dir)
    model = Model(initial_docs())
    for step in range(120):
        random_step(live, model, rng, step)
        if step % 10 == 9:
            for k in (1, 10, 50):
                query = random_rows(rng, 1, density=0.1)
                for scorer in ("exhaustive", "bmp"):
                    assert_matches_oracle(live, query.indices, query.data, k, scorer)
    model.check(live)
    assert len(live.refresh().segments) > 1 or live.refresh().segments[0].live_count() == len(model.docs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), block_size=st.sampled_from([1, 3, 8]), reorder=st.sampled_from(["none", "bp"]),
       concatenate=st.booleans())
def test_hypothesis_add_delete_merge_sequences(tmp_path_factory, seed, block_size, reorder, concatenate):
    from lsr.index import merge

    default = merge.REORDER_MAX_DOCS
    merge.REORDER_MAX_DOCS = 0 if concatenate else default  # merges keep their sources' orders, or reorder
    try:
        rng = np.random.default_rng(seed)
        path = tmp_path_factory.mktemp("h") / "idx"
        model = Model(make_index(path, n=60, seed=seed % 1000, block_size=block_size, reorder=reorder))
        with LiveIndex(path) as live:
            for step in range(int(rng.integers(5, 30))):
                random_step(live, model, rng, step)
            query = random_rows(rng, 1, density=0.2)
            for k in (1, 7, 100):
                for scorer in ("exhaustive", "bmp"):
                    assert_matches_oracle(live, query.indices, query.data, k, scorer)
            model.check(live)
    finally:
        merge.REORDER_MAX_DOCS = default


def test_bmp_seeds_stay_exact_when_the_top_documents_are_deleted(tmp_path):
    """The stored k-th impacts assume nothing is deleted; deleting the documents that hold a
    term's top impacts must not let the seed prune live documents."""
    rng = np.random.default_rng(5)
    docs = random_rows(rng, 3000, density=0.02).tolil()
    docs[:200, 7] = 10.0 + rng.random((200, 1))  # the 200 best documents for term 7
    docs = docs.tocsr()
    ids = [f"d{i}" for i in range(3000)]
    build_index(tmp_path / "ix", [(ids, SparseBatch.from_scipy(docs), None)], VOCAB, reorder="bp", block_size=4)
    with LiveIndex(tmp_path / "ix") as live, LiveIndex(tmp_path / "ix", writer="never") as reader:
        for round_ in range(3):  # each round's deletions in the buffer, then committed (counted anew or added)
            for i in range(65 * round_, 65 * (round_ + 1)):
                live.delete(f"d{i}")
            for flushed in (False, True):
                for index in (live, reader):
                    for k in (1, 10, 100):
                        assert_matches_oracle(index, [7], [1.0], k, "bmp")
                        assert_matches_oracle(index, [7, 9, 11], [1.0, 0.5, 0.2], k, "bmp")
                live.flush()


def test_batch_search_equals_single_searches(index_dir):
    rng = np.random.default_rng(4)
    live = LiveIndex(index_dir)
    model = Model(initial_docs())
    for step in range(40):
        random_step(live, model, rng, step)
    queries = random_rows(rng, 12, density=0.08)
    batch = live.search_sparse_batch(SparseBatch.from_scipy(queries), 10, scorer="bmp")
    for q in range(12):
        ids, scores = live.search_sparse(queries[q].indices, queries[q].data, 10, scorer="bmp")
        assert batch[q][0] == ids and np.array_equal(batch[q][1], scores)


def test_deleted_and_replaced_documents(index_dir):
    live = LiveIndex(index_dir)
    live.delete("d3")
    with pytest.raises(DocumentNotFound):
        live.document("d3")
    with pytest.raises(DocumentNotFound):
        live.delete("d3")
    assert live.add("d5", "new title", "new text", np.array([7]), np.array([2.0], np.float32)) is True
    assert live.document("d5") == {"id": "d5", "title": "new title", "text": "new text", "segment": "buffer"}
    ids, _ = live.search_sparse(np.array([7]), np.array([1.0], np.float32), 400, scorer="exhaustive")
    assert ids.count("d5") == 1 and "d3" not in ids
    assert live.num_docs == 399
    live.flush()
    assert live.document("d5")["segment"] != "buffer" and live.num_docs == 399
    ids, _ = live.search_sparse(np.array([7]), np.array([1.0], np.float32), 400, scorer="bmp")
    assert ids.count("d5") == 1 and "d3" not in ids


@pytest.mark.parametrize("scorer", ["exhaustive", "bmp"])
def test_segment_documents_deleted_one_refresh_after_another_stay_hidden(index_dir, scorer):
    """Each refresh adds the buffer's newest deletions to a segment's live mask (built on the
    last one, not from scratch): every document deleted or replaced so far stays hidden, against
    a set the test keeps itself (not the view's own masks)."""
    live = LiveIndex(index_dir)
    expected = set(initial_docs())
    every_term = (np.arange(VOCAB), np.ones(VOCAB, np.float32))  # every live document scores > 0
    for step, doc_id in enumerate(sorted(expected)[:15]):
        if step % 3 == 2:
            live.add(doc_id, "", "", np.array([5]), np.array([0.01], np.float32))  # a replacement
        else:
            live.delete(doc_id)
            expected.discard(doc_id)
        ids, _ = live.search_sparse(*every_term, 500, scorer=scorer)
        assert sorted(ids) == sorted(expected) and live.num_docs == len(expected)


def test_reopen_replays_the_log_to_the_same_state(index_dir):
    rng = np.random.default_rng(2)
    live = LiveIndex(index_dir)
    model = Model(initial_docs())
    for step in range(40):
        random_step(live, model, rng, step)
    live.add("last", "", "", np.array([1]), np.array([1.0], np.float32))
    model.docs["last"] = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, VOCAB))
    live.close()
    reopened = LiveIndex(index_dir)
    model.check(reopened)
    query = random_rows(rng, 1)
    assert_matches_oracle(reopened, query.indices, query.data, 10, "bmp")


def test_a_second_process_sees_writes_and_commits(index_dir):
    first, second = LiveIndex(index_dir), LiveIndex(index_dir, writer="never")
    second.add("fresh", "", "", np.array([1]), np.array([1.0], np.float32))  # appended by the non-writer
    assert first.contains("fresh") and second.contains("fresh")
    first.flush()
    assert second.document("fresh")["segment"] != "buffer"  # the new commit, seen before answering
    first.merge(max_segments=1)
    assert len(second.refresh().segments) == 1 and second.contains("fresh")


def test_a_log_reader_follows_appends_rolls_and_trims(index_dir):
    """`WriteAheadLog.read` against the seqs appended: a read that ends in the newest file
    answers the next from one read of that file (kept open: nothing new, or its new bytes), a roll or a
    trim sends it back to the listing, and a read from another position (a flush's) moves the
    cursor without losing the reader's place."""
    LiveIndex(index_dir).close()  # makes the log's first file
    appender, reader = WriteAheadLog(index_dir), WriteAheadLog(index_dir)
    body = encode_body("add", "x", "", "", [1], [1.0])
    seqs, applied, trimmed = [], 0, 0
    for step in range(40):
        action = step % 5
        if action == 3:
            appender.roll()
        elif action == 4 and seqs:
            appender.trim(applied)  # only what the reader has read (as a commit would cover)
            trimmed = applied
        else:
            seqs += appender.append([body] * (1 + step % 3))
        if step % 7 == 6:  # someone else reads from what the last trim left (a flush)
            assert [r.seq for r in reader.read(trimmed)] == [s for s in seqs if s > trimmed]
        got = [r.seq for r in reader.read(applied)]
        assert got == [s for s in seqs if s > applied]
        applied = seqs[-1] if seqs else 0
        assert reader.read(applied) == []
    seqs += appender.append([body] * 3)
    fresh = WriteAheadLog(index_dir)
    assert [r.seq for r in fresh.read(trimmed)] == [s for s in seqs if s > trimmed]
    assert [r.seq for r in reader.read(applied)] == seqs[-3:]
    for log in (appender, reader, fresh):
        log.close()


def test_log_reads_from_several_threads_while_appends_and_rolls_go_on(index_dir):
    """A writer's flush reads the log from its thread while searches refresh from theirs, all
    through one kept-open newest file: every read returns exactly the records after its seq,
    at least those acknowledged before it began."""
    import threading

    LiveIndex(index_dir).close()
    appender, reader = WriteAheadLog(index_dir), WriteAheadLog(index_dir)
    body = encode_body("add", "x", "", "", [1], [1.0])
    acknowledged = [0]
    done = threading.Event()
    failures = []

    def append() -> None:
        for step in range(300):
            if step % 10 == 9:
                appender.roll()  # a new newest file: readers reopen it
            acknowledged[0] = appender.append([body] * (1 + step % 3))[-1]
        done.set()

    def read(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not done.is_set():
            known = acknowledged[0]
            after = int(rng.integers(0, known + 1))
            try:
                got = [r.seq for r in reader.read(after)]
            except Exception as error:  # a thread's exception would only be a warning
                failures.append(repr(error))
                return
            expected = list(range(after + 1, after + 1 + len(got)))
            if got != expected or len(got) < known - after:
                failures.append((after, known, got[:5]))

    threads = [threading.Thread(target=append)] + [threading.Thread(target=read, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert [r.seq for r in reader.read(0)] == list(range(1, acknowledged[0] + 1))
    appender.close()
    reader.close()


def test_only_one_writer(index_dir):
    first = LiveIndex(index_dir)
    second = LiveIndex(index_dir)  # auto: the role is taken
    assert first.writer is not None and second.writer is None
    with pytest.raises(IndexBusyError):
        LiveIndex(index_dir, writer="required")
    first.close()
    assert second.try_become_writer()


def test_torn_tail_is_cut_and_damage_before_it_is_named(index_dir):
    live = LiveIndex(index_dir)
    live.add("kept", "", "", np.array([1]), np.array([1.0], np.float32))
    _, path = wal_files(index_dir)[-1]
    good = path.read_bytes()
    path.write_bytes(good + b"LSRW\x40\x00\x00\x00\x00\x00")  # an append cut short by a crash
    reopened = LiveIndex(index_dir, writer="never")
    assert reopened.contains("kept")
    reopened.add("after", "", "", np.array([2]), np.array([1.0], np.float32))  # cuts the torn tail first
    assert LiveIndex(index_dir, writer="never").contains("after")
    data = bytearray(path.read_bytes())
    data[len(good) - 5] ^= 0x55  # inside the record of "kept", with a valid record after it
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError, match=r"\.wal: record at byte \d+ is damaged"):
        LiveIndex(index_dir, writer="never")


def test_merge_keeps_deletions_committed_while_it_ran(index_dir, monkeypatch):
    from lsr.index import merge as merge_module

    live = LiveIndex(index_dir)
    live.add("extra", "", "", np.array([3]), np.array([1.0], np.float32))
    live.flush()  # two segments now
    original = merge_module._add_live_documents
    done = []

    def add_then_delete(writer, record, deleted, builder, floats=None):
        out = original(writer, record, deleted, builder, floats)
        if not done:  # while the merge reads its sources, a delete is flushed and committed
            done.append(True)
            live.delete("d7")
            live.flush()
        return out

    monkeypatch.setattr(merge_module, "_add_live_documents", add_then_delete)
    live.merge(max_segments=1)
    assert not live.contains("d7") and live.contains("extra") and live.num_docs == 400
    segments = live.refresh().segments
    assert len(segments) == 1 and segments[0].live_count() == 400


def test_segments_are_deleted_only_when_no_reader_uses_them(index_dir):
    writer = LiveIndex(index_dir)
    reader = LiveIndex(index_dir, writer="never")
    old_view = reader.refresh()
    old_paths = [s.segment.path for s in old_view.segments]
    writer.add("x", "", "", np.array([1]), np.array([1.0], np.float32))
    writer.flush()
    writer.merge(max_segments=1)
    assert all(p.is_dir() for p in old_paths)  # the reader's commit is pinned
    del old_view
    reader.refresh()  # moves on: the old pin is released
    writer.add("y", "", "", np.array([1]), np.array([1.0], np.float32))
    writer.flush()  # the next commit cleans up
    assert not any(p.exists() for p in old_paths)


def test_flush_when_the_buffer_is_full(index_dir):
    live = LiveIndex(index_dir)
    live.flush_policy.max_docs = 5
    for i in range(12):
        live.add(f"n{i}", "", "", np.array([i]), np.array([1.0], np.float32))
    assert read_newest_commit(index_dir).wal_seq == 10  # flushed at 5 and 10 writes
    assert len(list((index_dir / WAL_DIR).iterdir())) == 1  # the flushed log files are gone


def test_group_commit_from_threads(index_dir):
    live = LiveIndex(index_dir)
    errors = []

    def adder(t: int) -> None:
        try:
            for i in range(25):
                live.add(f"t{t}-{i}", "", "", np.array([t]), np.array([1.0], np.float32))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=adder, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and live.num_docs == 400 + 200
    reopened = LiveIndex(index_dir, writer="never")
    assert all(reopened.contains(f"t{t}-{i}") for t in range(8) for i in range(25))


def test_bad_writes_are_refused_before_the_log(index_dir):
    live = LiveIndex(index_dir)
    with pytest.raises(ValueError, match="term ids must be in"):
        live.add("x", "", "", np.array([VOCAB]), np.array([1.0], np.float32))
    with pytest.raises(ValueError, match="finite and non-negative"):
        live.add("x", "", "", np.array([1]), np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match="non-empty string"):
        live.add("", "", "", np.array([1]), np.array([1.0], np.float32))
    with pytest.raises(ValueError):
        live.add("x", "\ud800", "", np.array([1]), np.array([1.0], np.float32))
    assert live.stats()["buffered_writes"] == 0


@pytest.mark.parametrize("terms, weights, message", [
    ([1, VOCAB], [1.0, 1.0], f"term id {VOCAB} is outside the vocabulary of {VOCAB}"),
    ([1, 2], [1.0, float("nan")], "weights must be finite"),
    ([1, 2], [float("inf"), 1.0], "weights must be finite"),
    ([1, 2], [1.0, -0.5], "weights must be finite"),
])
def test_a_log_record_that_does_not_fit_the_index_is_named(index_dir, terms, weights, message):
    # Another process (or an older version) logged what this index cannot hold.
    LiveIndex(index_dir, writer="never").wal.append([encode_body("add", "bad", "", "", terms, weights)])
    with pytest.raises(BufferRecordError, match=rf"log record 1 \('bad'\): {message}"):
        LiveIndex(index_dir)


def test_segments_of_documents_without_weights_flush_and_merge(index_dir):
    # Documents with empty texts encode to no terms: their segments flush and merge like any
    # other (a background merge of them once failed forever).
    live = LiveIndex(index_dir)
    live.flush_policy.max_docs = 10_000
    for round_ in range(3):
        for i in range(5):
            live.add(f"empty-{round_}-{i}", "", "", np.array([], np.uint32), np.array([], np.float32))
        live.flush()
    live.delete("d0")
    assert live.merge(max_segments=1) is not None and len(live.commit.segments) == 1
    assert live.contains("empty-2-4") and not live.contains("d0")
    terms, weights = np.array([3, 7]), np.array([1.0, 0.5], np.float32)
    assert_matches_oracle(live, terms, weights, 10, "bmp")
    # Only the empty documents left: a merge of them is still a segment.
    for doc_id in [d for d in initial_docs() if d != "d0"]:
        live.delete(doc_id)
    assert live.merge(max_segments=1) is not None and live.num_docs == 15
    assert live.search_sparse(terms, weights, 10)[0] == []


def test_a_flush_does_not_wait_for_another_when_asked_not_to(index_dir, monkeypatch):
    live = LiveIndex(index_dir)
    live.add("x", "", "", np.array([1]), np.array([1.0], np.float32))
    writer, inside, release = live.writer, threading.Event(), threading.Event()
    real_flush = writer._flush

    def slow_flush(force):
        inside.set()
        release.wait(10)
        return real_flush(force)

    monkeypatch.setattr(writer, "_flush", slow_flush)
    first = threading.Thread(target=writer.flush)
    first.start()
    assert inside.wait(10)
    assert writer.flush(wait=False) is None  # the running flush takes what was logged
    release.set()
    first.join()
    assert live.commit.wal_seq == 1 and live.contains("x")


def test_ids_of_many_keys_equal_the_one_key_lookup(index_dir):
    """`View.doc_ids` (a search's hits, grouped by segment) against `View.doc_id` key by key:
    two segments, the buffer, and keys in any order."""
    live = LiveIndex(index_dir)
    live.add("new-1", "", "", np.array([3]), np.array([1.0], np.float32))
    live.flush()
    live.add("new-2", "", "", np.array([4]), np.array([1.0], np.float32))
    view = live.refresh()
    assert len(view.segments) == 2 and view.buffer is not None and view.buffer.num_live == 1
    keys = np.random.default_rng(0).permutation(view.buffer_base + 1)
    assert view.doc_ids(keys) == [view.doc_id(int(key)) for key in keys]
    assert view.doc_ids(np.empty(0, np.int64)) == []
    assert {"new-1", "new-2"} <= set(view.doc_ids(keys))


def test_small_arrays_read_whole_equal_the_memory_maps_and_damage_is_named(index_dir):
    """A verified open reads the small array files whole (one read for the checksum and the
    array): the arrays equal those of an unverified open (memory maps), read-only as those are;
    a file longer than its record is named without being read."""
    import lsr.index.format as fmt

    commit = read_newest_commit(index_dir)
    record = commit.segments[0]
    directory = index_dir / SEGMENTS_DIR / record.name
    read_whole, mapped = fmt.Segment.open(directory, record.meta), fmt.Segment.open(directory, record.meta, verify=False)
    whole = {n for n, info in read_whole.meta["arrays"].items() if info["bytes"] <= fmt.SMALL_FILE_BYTES}
    assert "term_scales" in whole and len(whole) >= 10
    pairs = [(read_whole.term_scales, mapped.term_scales), (read_whole.doc_id_hashes, mapped.doc_id_hashes),
             *[(getattr(read_whole.postings, n), getattr(mapped.postings, n)) for n in fmt.POSTINGS_ARRAY_NAMES]]
    for got, expected in pairs:
        assert got.dtype == expected.dtype and np.array_equal(got, expected)
        assert not got.flags.writeable and got.flags.aligned and got.flags.c_contiguous
    assert read_whole.doc_ids[3] == mapped.doc_ids[3]

    path = directory / read_whole.meta["arrays"]["term_scales"]["file"]
    with open(path, "ab") as handle:  # grown past its record (and past the size read whole)
        handle.write(b"\0" * (fmt.SMALL_FILE_BYTES + 1))
    with pytest.raises(fmt.IndexFormatError, match=r"term_scales\.npy: \d+ bytes, but \d+ were written"):
        fmt.Segment.open(directory, record.meta)
