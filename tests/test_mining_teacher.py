"""Hard-negative mining with our index and the normalised ensemble teacher."""

from __future__ import annotations

import numpy as np
import pytest

from lsr.training.data import TrainingExample, TrainingSet
from lsr.training.teacher import ensemble_scores, min_max

CORPUS = {
    "bone1": "Vitamin D supplements increase bone mineral density in older women.",
    "bone2": "Bone density and vitamin D levels in postmenopausal women.",
    "bone3": "Calcium intake, vitamin D and fractures of the hip.",
    "heart": "Statins lower the risk of heart attack in adults.",
    "sleep": "Sleep deprivation impairs memory consolidation.",
    "virus": "Influenza virus replication in lung epithelial cells.",
}


@pytest.fixture
def training_set() -> TrainingSet:
    examples = [TrainingExample("q1", "does vitamin D improve bone density", ["bone1"]),
                TrainingExample("q2", "statins and heart attack risk", ["heart"])]
    return TrainingSet("tiny-medical", examples, dict(CORPUS))


def test_min_max_and_ensemble_by_hand():
    np.testing.assert_allclose(min_max(np.array([1.0, 2.0, 3.0])), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(min_max(np.array([4.0, 4.0])), [0.0, 0.0])  # constant: ranks nothing
    # Teacher A [1, 2, 3] -> [0, 0.5, 1]; teacher B [10, 10, 20] -> [0, 0, 1]; sum [0, 0.5, 2].
    np.testing.assert_allclose(ensemble_scores([np.array([1.0, 2.0, 3.0]), np.array([10.0, 10.0, 20.0])]),
                               [0.0, 0.5, 2.0])


def test_mined_negatives_are_ranked_non_positives_and_cached(training_set, encoder, tmp_path, monkeypatch):
    from lsr.training import mining

    mined = mining.mine_hard_negatives(training_set, encoder, tmp_path, depth=4)
    assert set(mined) == {"q1", "q2"}
    for example in training_set.examples:
        negatives = mined[example.query_id]
        assert negatives and len(negatives) <= 4 and not set(negatives) & set(example.positives)
        assert set(negatives) <= set(CORPUS)
    # The float dot products agree on the hardest negative of the vitamin D query.
    docs = encoder.encode_documents(list(CORPUS.values())).to_scipy()
    query = encoder.encode_queries([training_set.examples[0].query]).to_scipy()
    scores = dict(zip(CORPUS, (docs @ query.T).toarray().ravel()))
    del scores["bone1"]
    assert mined["q1"][0] == max(scores, key=scores.get)
    # A second call reads the cache: no index is opened.
    monkeypatch.setattr(mining, "LiveIndex", lambda *a, **k: pytest.fail("cache not used"))
    assert mining.mine_hard_negatives(training_set, encoder, tmp_path, depth=4) == mined


def test_ensemble_teacher_scores_positives_first_and_caches(training_set, tmp_path, monkeypatch):
    from lsr.training import teacher

    candidates = {"q1": ["bone2", "sleep", "virus"], "q2": ["sleep", "bone3"]}
    scores = teacher.ensemble_teacher(training_set, candidates, tmp_path)
    assert set(scores["q1"]) == {"bone1", "bone2", "sleep", "virus"}
    for query_id, positive in (("q1", "bone1"), ("q2", "heart")):
        values = scores[query_id]
        assert max(values, key=values.get) == positive  # both teachers agree on the obvious one
        assert 0.0 <= min(values.values()) and max(values.values()) <= 2.0  # two [0, 1] teachers summed
    monkeypatch.setattr(teacher, "_dense_vectors", lambda *a: pytest.fail("cache not used"))
    assert teacher.ensemble_teacher(training_set, candidates, tmp_path) == scores


def test_teacher_vectors_score_any_pair_as_the_ensemble_does_on_random_vectors():
    """`TeacherVectors.scores` against the obvious loop: per query, each teacher's dot products
    with the documents asked for, min-max normalised over them, summed; random vectors, the
    documents in any order and repeated."""
    from scipy import sparse as sp

    from lsr.training.teacher import TeacherVectors

    rng = np.random.default_rng(5)
    query_ids, doc_ids = [f"q{i}" for i in range(4)], [f"d{i}" for i in range(9)]
    dense_q, dense_d = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(9, 6)).astype(np.float32)
    sparse_q = sp.random(4, 40, density=0.3, random_state=1, format="csr", dtype=np.float32)
    sparse_d = sp.random(9, 40, density=0.3, random_state=2, format="csr", dtype=np.float32)
    vectors = TeacherVectors(query_ids, doc_ids, dense_q, dense_d, sparse_q, sparse_d)
    asked_queries, asked_docs = ["q2", "q0"], ["d8", "d1", "d1", "d4", "d0"]
    got = vectors.scores(asked_queries, asked_docs)
    assert got.shape == (2, 5)
    for row, q in enumerate(asked_queries):
        i = query_ids.index(q)
        dense = np.array([float(dense_q[i] @ dense_d[doc_ids.index(d)]) for d in asked_docs])
        sparse = np.array([float(sparse_q[i].toarray().ravel() @ sparse_d[doc_ids.index(d)].toarray().ravel())
                           for d in asked_docs])
        normalised = [(s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.zeros_like(s)
                      for s in (dense, sparse)]
        np.testing.assert_allclose(got[row], normalised[0] + normalised[1], rtol=1e-5, atol=1e-6)


def test_teacher_vectors_are_cached_and_agree_with_the_group_scores(training_set, tmp_path, monkeypatch):
    """The in-batch teacher's vectors come back from the cache; scored over one query's own
    candidate list they give the group teacher's scores."""
    from lsr.training import teacher

    candidates = {"q1": ["bone2", "sleep", "virus"], "q2": ["sleep", "bone3"]}
    documents = sorted(CORPUS)
    vectors = teacher.teacher_vectors(training_set, documents, tmp_path)
    group = teacher.ensemble_teacher(training_set, candidates, tmp_path / "group")
    for query_id, docs in teacher.candidate_lists(training_set, candidates).items():
        np.testing.assert_allclose(vectors.scores([query_id], docs)[0], [group[query_id][d] for d in docs], atol=1e-6)
    monkeypatch.setattr(teacher, "_dense_vectors", lambda *a: pytest.fail("cache not used"))
    again = teacher.teacher_vectors(training_set, documents, tmp_path)
    np.testing.assert_array_equal(again.scores(["q1", "q2"], documents), vectors.scores(["q1", "q2"], documents))


def test_teacher_agreement_counts_the_pairs_where_a_candidate_beats_a_judged_positive():
    from lsr.eval.teacher_agreement import agreement

    examples = [TrainingExample("0:a", "qa", ["0:p1", "0:p2"]), TrainingExample("1:b", "qb", ["1:p"]),
                TrainingExample("1:c", "qc", ["1:p"])]
    scores = {"0:a": {"0:p1": 2.0, "0:p2": 0.5, "0:n1": 1.0, "0:n2": 0.1},  # n1 beats p2: 1 of 4 pairs
              "1:b": {"1:p": 0.2, "1:n": 0.9},  # 1 of 1
              "1:c": {"1:p": 1.0, "1:n": 1.0}}  # a tie is not "higher": 0 of 1
    counts = agreement(TrainingSet("t", examples, {}), scores, ["first", "second"])
    assert counts["first"] == {"queries": 1, "pairs": 4, "candidate_above": 1, "share_candidate_above": 0.25}
    assert counts["second"] == {"queries": 2, "pairs": 2, "candidate_above": 1, "share_candidate_above": 0.5}
    # One source: its ids carry no prefix, a colon in them is part of the id.
    alone = agreement(TrainingSet("t", [TrainingExample("doi:9", "q", ["p"])], {}), {"doi:9": {"p": 1.0, "n": 2.0}},
                      ["only"])
    assert alone == {"only": {"queries": 1, "pairs": 1, "candidate_above": 1, "share_candidate_above": 1.0}}
