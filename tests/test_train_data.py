"""Training examples (`lsr.training.data`) and deterministic batches (`lsr.training.batches`).

JSONL and triples-TSV parsing with their error messages, the real SciFact train split,
`TrainingSet.split_holdout`, `BatchSampler` (shape, determinism per micro-batch index,
epoch coverage, teacher alignment) and `given_scores`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lsr.data.loaders import DataFormatError
from lsr.training.batches import BatchSampler, given_scores
from lsr.training.data import TrainingExample, TrainingSet, load_training_set


def write_jsonl(tmp_path: Path, records: list, name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# ---------------------------------------------------------------- loading


def test_jsonl_parsing_and_shared_ids(tmp_path):
    path = write_jsonl(tmp_path, [
        {"query": "what is a cat", "positive": "a cat is a pet", "negatives": ["dogs bark", "fish swim"],
         "scores": [9, 2.5, 1]},
        "",  # blank lines are skipped
        {"query": "what barks", "positive": "dogs bark"},
    ])
    training = load_training_set(str(path))
    first, second = training.examples
    assert first.query == "what is a cat" and first.scores == [9.0, 2.5, 1.0]
    assert [training.corpus[d] for d in first.positives + first.negatives] == \
        ["a cat is a pet", "dogs bark", "fish swim"]
    assert second.negatives == [] and second.scores is None
    # the same text is one document, whether positive or negative
    assert second.positives == [first.negatives[0]]
    assert len(training.corpus) == 3
    assert first.query_id != second.query_id


@pytest.mark.parametrize("record, field", [
    ({"query": "q", "positive": ""}, "positive"),
    ({"query": "q"}, "positive"),
    ({"positive": "p"}, "query"),
    ({"query": "q", "positive": "p", "negatives": "n"}, "negatives"),
    ({"query": "q", "positive": "p", "negatives": ["n", 3]}, "negatives"),
    ({"query": "q", "positive": "p", "negatives": ["n"], "scores": [1.0]}, "scores"),
    ({"query": "q", "positive": "p", "scores": [True]}, "scores"),
])
def test_jsonl_errors_name_file_line_and_field(tmp_path, record, field):
    path = write_jsonl(tmp_path, [{"query": "ok", "positive": "fine"}, "", record])
    with pytest.raises(DataFormatError) as error:
        load_training_set(str(path))
    assert f"{path}:3" in str(error.value) and f"'{field}'" in str(error.value)


def test_triples_merge_negatives(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("q1\tp1\tn1\nq1\tp1\tn2\nq2\tp2\tn1\n\nq1\tp3\tn3\n")
    training = load_training_set(str(path))
    assert len(training.examples) == 3  # (q1, p1), (q2, p2), (q1, p3)
    merged = training.examples[0]
    assert merged.query == "q1" and [training.corpus[d] for d in merged.negatives] == ["n1", "n2"]
    assert training.examples[1].negatives == [merged.negatives[0]]  # n1 shared
    assert len(training.corpus) == 6  # p1 n1 n2 p2 p3 n3


def test_triples_with_two_fields(tmp_path):
    path = tmp_path / "triples.tsv"
    path.write_text("q1\tp1\tn1\nq2\tp2\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: ") + ".*found 2 fields"):
        load_training_set(str(path))


def test_scifact_train_split():
    training = load_training_set("beir/scifact/train")
    assert len(training.examples) > 700  # 809 train queries with a relevant document
    assert len(training.corpus) == 5183
    assert all(e.positives and all(d in training.corpus for d in e.positives) for e in training.examples)


def test_split_holdout():
    examples = [TrainingExample(f"q{i}", f"query {i}", [f"d{i}"]) for i in range(5)]
    training = TrainingSet("toy", examples, {f"d{i}": f"doc {i}" for i in range(5)})
    rest, queries, qrels = training.split_holdout(2)
    assert [e.query_id for e in rest.examples] == ["q0", "q1", "q2"]
    assert queries == {"q3": "query 3", "q4": "query 4"}
    assert qrels == {"q3": {"d3": 1}, "q4": {"d4": 1}}
    assert rest.corpus is training.corpus
    assert training.split_holdout(0) == (training, {}, {})
    with pytest.raises(ValueError, match="dev_holdout"):
        training.split_holdout(5)


# ---------------------------------------------------------------- batches


def toy_set(n: int = 12):
    """n queries, each with positive ``p{i}`` and a pool of four negatives ``n{i}_{k}``."""
    corpus = {f"p{i}": f"positive {i}" for i in range(n)}
    corpus.update({f"n{i}_{k}": f"negative {i} {k}" for i in range(n) for k in range(4)})
    examples = [TrainingExample(f"q{i}", f"query {i}", [f"p{i}"]) for i in range(n)]
    negatives = {f"q{i}": [f"n{i}_{k}" for k in range(4)] for i in range(n)}
    return TrainingSet("toy", examples, corpus), negatives


def test_batch_shape_and_groups():
    training, negatives = toy_set()
    batch = BatchSampler(training, negatives, batch_size=4, num_negatives=2, seed=1).batch(0)
    assert len(batch.queries) == 4 and len(batch.documents) == 4 * 3 and batch.group_size == 3
    for i, query in enumerate(batch.queries):
        number = query.split()[1]
        group = batch.documents[i * 3:(i + 1) * 3]
        assert group[0] == f"positive {number}"
        assert all(doc.startswith(f"negative {number} ") for doc in group[1:])


def test_batches_are_a_function_of_the_index():
    training, negatives = toy_set()
    first = BatchSampler(training, negatives, batch_size=4, num_negatives=2, seed=1)
    second = BatchSampler(training, negatives, batch_size=4, num_negatives=2, seed=1)
    later = first.batch(7)  # drawn out of order, as after a resume
    assert second.batch(7) == later == first.batch(7)
    assert first.batch(0).queries != first.batch(1).queries
    other_seed = BatchSampler(training, negatives, batch_size=4, num_negatives=2, seed=2)
    assert [other_seed.batch(i).queries for i in range(3)] != [first.batch(i).queries for i in range(3)]


def test_each_example_once_per_epoch():
    training, negatives = toy_set(12)
    sampler = BatchSampler(training, negatives, batch_size=4, num_negatives=1, seed=3)
    epoch0 = [q for i in range(3) for q in sampler.batch(i).queries]
    epoch1 = [q for i in range(3, 6) for q in sampler.batch(i).queries]
    assert sorted(epoch0) == sorted(epoch1) == sorted(e.query for e in training.examples)
    assert sampler.epoch_of(3) == 1.0


def test_examples_without_negatives_and_small_sets():
    training, negatives = toy_set(6)
    del negatives["q0"]
    assert len(BatchSampler(training, negatives, 2, num_negatives=1, seed=0).examples) == 5
    in_batch_only = BatchSampler(training, {}, 2, num_negatives=0, seed=0)
    assert len(in_batch_only.examples) == 6 and len(in_batch_only.batch(0).documents) == 2
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(training, negatives, 6, num_negatives=1, seed=0)


def test_teacher_scores_follow_the_group():
    training, negatives = toy_set()
    text_to_id = {text: doc for doc, text in training.corpus.items()}
    score_of = {doc: float(index) for index, doc in enumerate(training.corpus)}
    teacher = {e.query_id: score_of for e in training.examples}
    batch = BatchSampler(training, negatives, 4, num_negatives=3, seed=5, teacher=teacher).batch(2)
    assert batch.teacher.shape == (4, 4)
    expected = [[score_of[text_to_id[d]] for d in batch.documents[i * 4:(i + 1) * 4]] for i in range(4)]
    assert batch.teacher.tolist() == expected


def test_given_scores(tmp_path):
    path = write_jsonl(tmp_path, [{"query": "a", "positive": "pa", "negatives": ["x", "y"], "scores": [3, 2, 1]}])
    training = load_training_set(str(path))
    example = training.examples[0]
    table = given_scores(training)
    assert table == {example.query_id: dict(zip(example.positives + example.negatives, [3.0, 2.0, 1.0]))}
    missing = write_jsonl(tmp_path, [{"query": "a", "positive": "pa"}], "missing.jsonl")
    with pytest.raises(ValueError, match="scores"):
        given_scores(load_training_set(str(missing)))
