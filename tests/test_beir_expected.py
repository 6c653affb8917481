"""Full BEIR runs against the figures recorded in eval/results (slow: several minutes each)."""

import json
from pathlib import Path

import pytest

from lsr.eval.brute_force import compare
from lsr.cli import main

RESULTS = Path(__file__).resolve().parents[1] / "eval" / "results"


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["scifact", "nfcorpus"])
def test_beir_run_matches_recorded_results_and_brute_force(tmp_path, dataset):
    expected = json.loads((RESULTS / f"beir-{dataset}-test.json").read_text())
    run_dir = tmp_path / "run"
    assert main(["eval", "beir", f"beir/{dataset}/test", "--out", str(run_dir)]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    for name, value in expected["systems"]["splade"]["metrics"].items():
        assert report["systems"]["splade"]["metrics"][name] == pytest.approx(value, abs=0.002)
    oracle = compare(run_dir)
    assert abs(oracle["ndcg10_ours_minus_float"]) <= 0.002
    assert oracle["queries_with_different_ranking_vs_quantised"] == 0
    assert oracle["max_metric_diff_ours_vs_quantised"] <= 1e-6
