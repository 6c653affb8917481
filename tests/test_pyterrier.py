"""PyTerrier pipelines over our index (real pyterrier, real pyserini BM25, bundled models) on a
SciFact subset: one small ``pt.Experiment``."""

from __future__ import annotations

import pandas as pd
import pytest

from lsr.eval.pyterrier_experiment import experiment
from lsr.metrics import evaluate


def test_a_small_experiment_compares_every_pipeline(tmp_path, scifact_subset, encoder):
    table = experiment(str(scifact_subset), tmp_path, encoder)
    assert list(table["name"]) == ["BM25 (pyserini)", "SPLADE (lsr)", "SPLADE, encoder >> retriever", "dense (lsr)",
                                   "hybrid RRF (lsr)"]
    scores = dict(zip(table["name"], table["nDCG@10"]))
    assert all(0.3 < value <= 1.0 for value in scores.values()), scores
    # the two-stage pipeline searches the same vector as the one-stage one
    assert scores["SPLADE, encoder >> retriever"] == pytest.approx(scores["SPLADE (lsr)"], abs=1e-9)


def test_retriever_frames_and_the_same_metrics_as_lsr_eval(tmp_path, scifact_subset, encoder):
    import pyterrier as pt
    from ir_measures import nDCG

    from lsr.data.datasets import resolve_dataset
    from lsr.pyterrier import QueryEncoder, Retriever, SparseIndexer

    dataset = resolve_dataset(str(scifact_subset))
    index = SparseIndexer(tmp_path / "ix", encoder=encoder).index(
        {"docno": d.doc_id, "title": d.title, "text": d.text} for d in dataset.iter_documents())
    qrels = dataset.qrels()
    topics = pd.DataFrame([(q, t) for q, t in dataset.queries().items() if q in qrels], columns=["qid", "query"])
    results = Retriever(index, k=100)(topics)
    assert list(results.columns) == ["qid", "query", "docno", "score", "rank"]
    assert results.groupby("qid")["rank"].min().eq(0).all()
    encoded = QueryEncoder(index)(topics.head(2))
    assert all(isinstance(t, dict) and t and all(w > 0 for w in t.values()) for t in encoded["query_toks"])
    # a token outside the vocabulary changes nothing (it is not searched as the unknown token)
    with_unknown = encoded.assign(query_toks=[{**t, "no-such-token-xyz": 5.0} for t in encoded["query_toks"]])
    plain, extra = Retriever(index, k=10)(encoded), Retriever(index, k=10)(with_unknown)
    assert plain[["qid", "docno", "score"]].equals(extra[["qid", "docno", "score"]])
    run = {qid: dict(zip(group["docno"], group["score"])) for qid, group in results.groupby("qid")}
    ours = evaluate(run, qrels)["nDCG@10"]
    qrels_frame = pd.DataFrame([(q, d, l) for q, docs in qrels.items() for d, l in docs.items()],
                               columns=["qid", "docno", "label"])
    theirs = pt.Experiment([Retriever(index, k=100)], topics, qrels_frame, eval_metrics=[nDCG @ 10])
    assert theirs["nDCG@10"][0] == pytest.approx(ours, abs=1e-9)
    index.close()
