"""LiveIndex: segment and tombstones against a brute-force oracle, log replay, compaction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from index.builder import build_index
from index.format import SparseIndex
from index.live.compact import compact_index
from index.live.live_index import DocumentNotFound, LiveIndex
from index.live.lock import IndexBusyError, hold_shared
from index.live.log import LOG_FILE, UpdateLogError
from index.scorers.query import canonical_query
from index.sparse_batch import SparseBatch

VOCAB = 300


def _random_docs(rng, n: int) -> sp.csr_matrix:
    matrix = sp.random(n, VOCAB, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    matrix.data = np.abs(matrix.data) + 0.05
    return matrix


@pytest.fixture
def index_dir(tmp_path):
    rng = np.random.default_rng(0)
    docs = _random_docs(rng, 400)
    ids = [f"d{i}" for i in range(400)]
    build_index(tmp_path / "idx", [(ids, SparseBatch.from_scipy(docs), [f"title {i}" for i in ids])], VOCAB,
                reorder="bp", block_size=8, store_texts=False)
    return tmp_path / "idx"


def _oracle(live: LiveIndex, terms, weights, k: int) -> dict[str, float]:
    """Brute force: main docs by quantised impacts, segment docs by float weights, minus tombstones."""
    main = live.main
    q_terms, q_scaled = canonical_query(terms, weights, main.term_scales)
    query = np.zeros(VOCAB)
    query[q_terms] = q_scaled
    main_scores = main.to_scipy_docs() @ query
    view = live.view()
    scores = {main.doc_ids[d]: main_scores[d] for d in range(main.num_docs)
              if d not in set(view.tombstones.tolist()) and main_scores[d] > 0}
    raw = np.zeros(VOCAB)
    np.add.at(raw, terms, weights)
    for doc_id, doc in live.segment.documents.items():
        s = float(raw[doc.terms.astype(np.int64)] @ doc.weights)
        if s > 0:
            scores[doc_id] = s
    best = sorted(scores.items(), key=lambda item: -item[1])[:k]
    return dict(best)


def _random_updates(live: LiveIndex, rng, count: int) -> None:
    for step in range(count):
        if rng.random() < 0.3:
            candidates = [f"d{i}" for i in rng.choice(400, 5)] + list(live.segment.documents)
            doc_id = candidates[rng.integers(len(candidates))]
            if live.contains(doc_id):
                live.delete(doc_id)
        else:
            doc_id = f"d{rng.integers(400)}" if rng.random() < 0.5 else f"new{step}"
            row = _random_docs(rng, 1)
            live.add(doc_id, f"title {doc_id}", f"text of {doc_id}", row.indices, row.data)


def test_search_matches_brute_force_after_random_updates(index_dir):
    rng = np.random.default_rng(1)
    live = LiveIndex(index_dir)
    _random_updates(live, rng, 60)
    assert live.segment.documents and len(live.view().tombstones)
    for _ in range(20):
        query = _random_docs(rng, 1)
        ids, scores = live.search_sparse(query.indices, query.data, 10, scorer="exhaustive")
        expected = _oracle(live, query.indices, query.data, 10)
        assert len(ids) == len(expected)
        np.testing.assert_allclose(scores, sorted(expected.values(), reverse=True), rtol=1e-5)
        for doc_id, score in zip(ids, scores):
            assert doc_id in expected or np.isclose(score, min(expected.values()), rtol=1e-5)
        bmp_ids, bmp_scores = live.search_sparse(query.indices, query.data, 10, scorer="bmp")
        np.testing.assert_allclose(bmp_scores, scores, rtol=1e-5)


def test_deleted_and_replaced_documents(index_dir):
    live = LiveIndex(index_dir)
    live.delete("d3")
    with pytest.raises(DocumentNotFound):
        live.document("d3")
    with pytest.raises(DocumentNotFound):
        live.delete("d3")
    assert live.add("d5", "new title", "new text", np.array([7]), np.array([2.0], np.float32)) is True
    assert live.document("d5") == {"id": "d5", "title": "new title", "text": "new text", "segment": "live"}
    ids, _ = live.search_sparse(np.array([7]), np.array([1.0], np.float32), 400, scorer="exhaustive")
    assert ids.count("d5") == 1 and "d3" not in ids
    assert live.num_docs == 399


def test_replay_after_restart_gives_the_same_state(index_dir):
    rng = np.random.default_rng(2)
    live = LiveIndex(index_dir)
    _random_updates(live, rng, 40)
    reopened = LiveIndex(index_dir)
    assert list(reopened.segment.documents) == list(live.segment.documents)
    assert np.array_equal(reopened.view().tombstones, live.view().tombstones)
    query = _random_docs(rng, 1)
    assert reopened.search_sparse(query.indices, query.data, 10)[0] == live.search_sparse(query.indices, query.data, 10)[0]


def test_second_process_sees_appended_records(index_dir):
    first, second = LiveIndex(index_dir), LiveIndex(index_dir)
    first.add("fresh", "", "", np.array([1]), np.array([1.0], np.float32))
    assert second.contains("fresh")  # read from the shared log before answering


def test_torn_last_line_is_cut_and_a_bad_line_is_named(index_dir):
    live = LiveIndex(index_dir)
    live.add("kept", "", "", np.array([1]), np.array([1.0], np.float32))
    log = index_dir / LOG_FILE
    with open(log, "a") as handle:
        handle.write('{"op": "add", "id": "torn", "ter')  # a crash in the middle of a write
    reopened = LiveIndex(index_dir)
    assert reopened.contains("kept") and not reopened.contains("torn")
    assert log.read_text().endswith("}\n")
    with open(log, "a") as handle:
        handle.write("not json\n")
    with pytest.raises(UpdateLogError, match=r"updates.log, line 2"):
        LiveIndex(index_dir)


def test_compaction_folds_the_log(index_dir):
    rng = np.random.default_rng(3)
    live = LiveIndex(index_dir)
    _random_updates(live, rng, 50)
    expected_ids = {live.main.doc_ids[d] for d in range(live.main.num_docs)} - {
        live.main.doc_ids[int(d)] for d in live.view().tombstones} | set(live.segment.documents)
    query = _random_docs(rng, 1)
    before = live.search_sparse(query.indices, query.data, 5, scorer="exhaustive")
    summary = compact_index(index_dir)
    compacted = SparseIndex.open(index_dir)
    assert summary["num_docs"] == compacted.num_docs == len(expected_ids)
    assert {compacted.doc_ids[d] for d in range(compacted.num_docs)} == expected_ids
    assert not (index_dir / LOG_FILE).exists()
    after = LiveIndex(index_dir).search_sparse(query.indices, query.data, 5, scorer="exhaustive")
    # Segment weights are quantised now: scores move by at most half an impact level per term.
    np.testing.assert_allclose(after[1], before[1], rtol=0.05)
    meta = json.loads((index_dir / "meta.json").read_text())
    assert meta["compacted"]["from_documents"] == 400


def test_compaction_refuses_a_served_index(index_dir):
    LiveIndex(index_dir).add("x", "", "", np.array([1]), np.array([1.0], np.float32))
    handle = hold_shared(index_dir)
    try:
        with pytest.raises(IndexBusyError, match="being served"):
            compact_index(index_dir)
    finally:
        handle.close()
    compact_index(index_dir)
