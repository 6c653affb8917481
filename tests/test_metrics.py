import pytest

from lsr.metrics import evaluate
from eval.runfile import drop_self_hits, read_trec_run, write_trec_run


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
