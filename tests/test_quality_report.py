"""The issue-15 report's comparisons: matched-FLOPS interpolation and the acceptance checks."""

from __future__ import annotations

import pytest

from lsr.eval.quality_report import _log_interpolate, acceptance_checks, matched_flops, matched_flops_verdict


def _entry(family, flops, ndcg, dev_ndcg=0.5):
    test = {"metrics": {"nDCG@10": ndcg}, "efficiency": {"flops_per_query": flops, "mean_query_encode_ms": 0.02}}
    return {"family": family, "dev_mean": dev_ndcg,
            "dev": {"a": {"metrics": {"nDCG@10": ndcg}, "efficiency": {"flops_per_query": flops}}},
            "test": {"beir/scifact/test": test, "beir/nfcorpus/test": test}}


def test_interpolation_is_linear_in_log_flops_and_none_outside_the_curve():
    curve = [(100.0, 0.5), (10_000.0, 0.7)]
    assert _log_interpolate(1_000.0, curve) == pytest.approx(0.6)  # halfway in log FLOPS
    assert _log_interpolate(100.0, curve) == pytest.approx(0.5)
    assert _log_interpolate(99.0, curve) is None and _log_interpolate(10_001.0, curve) is None


def test_each_reference_point_meets_our_curve_at_its_own_flops():
    entries = {"ours_a": _entry("ours", 100.0, 0.50), "ours_b": _entry("ours", 10_000.0, 0.70),
               "ref_in": _entry("reference", 1_000.0, 0.64), "ref_out": _entry("reference", 50.0, 0.40),
               "splade": _entry("splade", 1_000.0, 0.9)}
    for where in ("dev", "beir/scifact/test"):
        rows = {row["run"]: row for row in matched_flops(entries, where)}
        assert set(rows) == {"ref_in", "ref_out"}
        assert rows["ref_in"]["difference"] == pytest.approx(0.04)
        assert rows["ref_out"]["difference"] is None


def test_the_verdict_is_decided_on_dev_with_a_tie_band():
    def rows(dev_differences, test_difference=0.1):
        dev = [{"run": f"r{i}", "difference": d} for i, d in enumerate(dev_differences)]
        return {"dev": dev, "beir/scifact/test": [{"run": "r0", "difference": test_difference}]}

    assert matched_flops_verdict(rows([None]))["text"].startswith("no verdict")
    tie = matched_flops_verdict(rows([0.004, -0.002]))
    assert tie["text"].startswith("a tie") and tie["mean_dev_difference"] == pytest.approx(0.001)
    assert tie["mean_test_difference"] == {"beir/scifact/test": pytest.approx(0.1)}  # reported, never deciding
    assert matched_flops_verdict(rows([0.02, None]))["text"].startswith("the reference is better")
    assert matched_flops_verdict(rows([-0.02], 0.3))["text"].startswith("ours (IDF-aware FLOPS) is better")


def test_checks_need_the_target_and_bm25_and_the_untrained_start():
    def system(value):
        return {"metrics": {"nDCG@10": value}}

    baselines = {d: {"BM25 (pyserini)": system(0.67 if "scifact" in d else 0.32),
                     "bundled documents + IDF queries (inference-free, untrained)": system(0.65 if "scifact" in d else 0.331)}
                 for d in ("beir/scifact/test", "beir/nfcorpus/test", "msmarco-dl19-mini")}
    entries = {"splade_scifact_nfcorpus": _entry("splade", 1.0, 0.695), "free": _entry("reference", 1.0, 0.69)}
    entries["splade_scifact_nfcorpus"]["test"]["beir/nfcorpus/test"] = {"metrics": {"nDCG@10": 0.329}}
    entries["free"]["test"]["beir/nfcorpus/test"] = {"metrics": {"nDCG@10": 0.330},
                                                     "efficiency": {"mean_query_encode_ms": 0.02}}
    hybrid = {"beir/scifact/test": {"test": {"sparse": 0.70, "dense": 0.65, "adaptive": 0.73}, "chosen_on_dev": "adaptive"},
              "msmarco-dl19-mini": {"test": {"sparse": 0.60, "dense": 0.62, "rrf k=60": 0.612},
                                    "applied_from_other_datasets": ["rrf k=60"]}}
    report = {"experiments": entries, "baselines": baselines, "hybrid": hybrid,
              "chosen_on_dev": {"best_splade": "splade_scifact_nfcorpus", "best_inference_free": "free"}}
    met = {c["check"]: c["met"] for c in acceptance_checks(report)}
    assert met["trained splade_scifact_nfcorpus beir/scifact/test"]
    assert not met["trained splade_scifact_nfcorpus beir/nfcorpus/test"]  # 0.329 < 0.330
    assert not met["inference_free free beir/nfcorpus/test"]  # above target and BM25, below its untrained start
    assert met["inference_free free beir/scifact/test"]
    assert met["inference_free free query encode ms"]
    assert met["hybrid adaptive beir/scifact/test"]  # 0.73 >= 0.720
    assert not met["hybrid rrf k=60 msmarco-dl19-mini"]  # 0.612 < 0.62 - 0.005


def test_an_unknown_experiment_name_is_an_error_not_an_empty_run(capsys):
    from lsr.eval.quality_experiments import main

    with pytest.raises(SystemExit):
        main(["--train-only", "--only", "splade_scifact_nfcorpus", "no_such_run"])
    assert "unknown experiment no_such_run" in capsys.readouterr().err
