"""The acceptance checks, tables and plot of eval/train_report.py on hand-made rows."""

from __future__ import annotations

import pytest

from lsr.eval.train_report import acceptance_checks, markdown, plot


def row(ndcg, flops, ms=1.0, **extra):
    return {"metrics": {"nDCG@10": ndcg, "Recall@100": 0.9},
            "efficiency": {"flops_per_query": flops, "mean_search_ms": ms, "mean_doc_nnz": 100.0,
                           "mean_query_nnz": 20.0, "mean_query_encode_ms": 2.0}, **extra}


def trained(ndcg, flops, overrides=(), **extra):
    return row(ndcg, flops, config="c.yaml", overrides=list(overrides), step=150, train_seconds=600.0, **extra)


@pytest.fixture
def datasets():
    return {"beir/scifact/test": {
        "bundled SPLADE-tiny (siamese)": row(0.64, 40000),
        "BM25 (pyserini)": row(0.68, 5000, 3.0),
        "splade_scifact_finetune": trained(0.67, 45000),
        "splade_scifact_lambda_d_0.1": trained(0.60, 2000, ["regularizer.document_weight=0.1"]),
        "inference_free_scifact_idf_flops": trained(0.55, 2400, postings_by_idf={
            "mean_idf_of_postings": 3.8, "share_in_lowest_idf_decile": 0.54}),
        "inference_free_scifact_flops": trained(0.56, 2500),
    }}


def test_checks_by_hand(datasets):
    checks = acceptance_checks(datasets)
    # Fine-tune: 0.67 - 0.64 = +0.03 >= 0.02 and 45000 / 40000 = 1.125 <= 1.25.
    assert checks["finetune"]["ndcg_gain"] == pytest.approx(0.03)
    assert checks["finetune"]["flops_ratio"] == pytest.approx(1.125) and checks["finetune"]["met"]
    # IDF-aware: 0.55 - 0.56 = -0.01 (not better) at 2400 / 2500 = 0.96 of the FLOPS.
    idf = checks["idf_flops_vs_flops beir/scifact/test"]
    assert idf["ndcg_gain"] == pytest.approx(-0.01) and idf["flops_ratio"] == pytest.approx(0.96)
    assert not idf["met"]
    datasets["beir/scifact/test"]["splade_scifact_finetune"] = trained(0.67, 60000)  # 1.5x the FLOPS
    assert not acceptance_checks(datasets)["finetune"]["met"]


def test_markdown_and_plot(datasets, tmp_path):
    results = {"datasets": datasets, "checks": acceptance_checks(datasets),
               "machine": {"platform": "test", "cpus": 2}, "command": "python eval/train_experiments.py"}
    text = markdown(results)
    assert "| splade_scifact_finetune | 0.6700 |" in text
    assert "regularizer.document_weight=0.1" in text and "54.0% in the lowest-IDF decile" in text
    assert "finetune: nDCG@10 gain +0.0300, FLOPS ratio 1.12, met" in text
    plot(datasets["beir/scifact/test"], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
