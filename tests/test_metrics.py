import pytest

from lsr.metrics import evaluate
from lsr.eval.runfile import drop_self_hits, read_trec_run, write_trec_run


def test_metrics_hand_computed():
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"x": 1.0}}
    qrels = {"q1": {"b": 1}, "q2": {"y": 1}}
    result = evaluate(run, qrels)
    # q1: the only relevant doc at rank 2 -> nDCG = 1/log2(3), RR = 1/2; q2 finds nothing.
    assert result["nDCG@10"] == pytest.approx((1 / 1.5849625007211562) / 2)
    assert result["MRR@10"] == pytest.approx(0.25)
    assert result["Recall@100"] == pytest.approx(0.5)


def test_a_judged_query_without_results_counts_as_zero():
    assert evaluate({}, {"q1": {"d": 1}})["nDCG@10"] == 0.0


def test_trec_run_round_trip_and_self_hits(tmp_path):
    run = {"q1": {"q1": 5.0, "d2": 4.0}}
    write_trec_run(run, tmp_path / "run.trec", "test")
    assert read_trec_run(tmp_path / "run.trec") == run
    assert drop_self_hits(run) == {"q1": {"d2": 4.0}}


def _ndcg_at_10(ranked: list[str], judged: dict[str, int]) -> float:
    """trec_eval's ndcg_cut.10, written out: gain = the graded label, discount log2(rank + 1)."""
    import math

    dcg = sum(judged.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:10]))
    ideal = sorted(judged.values(), reverse=True)[:10]
    best = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal) if gain > 0)
    return dcg / best if best else 0.0


def test_trec_dl_measures_are_the_official_ones():
    """nDCG@10 over graded labels and recall@1000 counting only labels >= 2, against a plain
    implementation of the track's definitions on a random run with 0-3 judgements."""
    import random

    from lsr.metrics import TREC_DL_MEASURES, measures_for

    rng = random.Random(7)
    qrels, run = {}, {}
    for q in range(30):
        docs = [f"d{i}" for i in range(60)]
        qrels[f"q{q}"] = {d: rng.choice([0, 0, 1, 1, 2, 3]) for d in rng.sample(docs, 25)}
        run[f"q{q}"] = {d: rng.random() for d in rng.sample(docs, 40)}
    found = evaluate(run, qrels, TREC_DL_MEASURES)
    ndcg = recall = 0.0
    for q, judged in qrels.items():
        ranked = sorted(run[q], key=lambda d: -run[q][d])
        ndcg += _ndcg_at_10(ranked, judged)
        relevant = {d for d, label in judged.items() if label >= 2}
        recall += len(relevant & set(ranked[:1000])) / len(relevant) if relevant else 0.0
    assert found["nDCG@10"] == pytest.approx(ndcg / len(qrels), abs=1e-9)
    assert found["Recall@1000 (rel>=2)"] == pytest.approx(recall / len(qrels), abs=1e-9)
    assert measures_for("msmarco-passage/trec-dl-2019/judged") is TREC_DL_MEASURES
    assert measures_for("msmarco-dl19-mini") is TREC_DL_MEASURES
    assert set(measures_for("msmarco-passage/dev/small")) == {"MRR@10", "Recall@1000"}
    assert "Recall@100" in measures_for("beir/scifact/test")
