"""Brute-force oracle for an evaluation run: scipy ``Q @ D.T`` over the same vectors.

Given a run directory written by ``lsr eval beir`` (its report, query vectors, float doc
vectors, index and run file), this computes two brute-force runs and compares them with ours:

* float: the unquantised doc vectors, scored exactly in float64;
* quantised: the index's impacts that the run's search scored (its 16-bit ones where the index
  has them, as a search at ``precision="auto"`` does, else the uint8 ones), with the query
  weights scaled per term exactly as the scorers scale them, scored in float64.

Our run must match the quantised one (same ranking; metrics equal to 1e-6) and stay within
0.002 nDCG@10 of the float one. The comparison is written as JSON.

Usage:
    python eval/brute_force.py runs/beir-scifact-test --out eval/results/brute_force_scifact.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.eval.beir_runner import load_query_vectors
from lsr.metrics import evaluate
from lsr.eval.report import machine_description
from lsr.eval.runfile import Run, drop_self_hits, read_trec_run
from lsr.index.format import load_array
from lsr.index.live import open_single_segment
from lsr.index.postings_view import has_fine_impacts
from lsr.index.scorers.query import canonical_batch


def top_k_rows(scores: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: doc indices with positive score, by score descending then doc id ascending."""
    out = []
    for row in scores:
        positive = np.flatnonzero(row > 0)
        order = np.lexsort((positive, -row[positive]))[:k]
        out.append((positive[order], row[positive[order]]))
    return out


def brute_force_run(queries: sp.csr_matrix, docs: sp.csr_matrix, query_ids, doc_ids, k: int) -> Run:
    """Exact top-k of ``queries @ docs.T`` in float64."""
    run: Run = {}
    for start in range(0, queries.shape[0], 256):  # query blocks keep the dense scores small
        block = (queries[start : start + 256] @ docs.T).toarray()
        for offset, (ranked, scores) in enumerate(top_k_rows(block, k)):
            run[query_ids[start + offset]] = {doc_ids[d]: float(s) for d, s in zip(ranked, scores)}
    return run


def load_float_docs(directory: Path) -> sp.csr_matrix:
    meta = json.loads((directory / "meta.json").read_text())
    arrays = [load_array(directory / f"{name}.npy") for name in ("values", "indices", "indptr")]
    return sp.csr_matrix(tuple(np.asarray(a) for a in arrays), shape=(meta["num_docs"], meta["vocab_size"]))


def same_ranking(ours: Run, theirs: Run) -> tuple[int, float]:
    """Number of queries whose ranked doc lists differ, and the largest score difference."""
    differing, max_diff = 0, 0.0
    for qid in theirs.keys() | ours.keys():
        a, b = ours.get(qid, {}), theirs.get(qid, {})
        if list(a) != list(b):
            differing += 1
        common = a.keys() & b.keys()
        if common:
            max_diff = max(max_diff, max(abs(a[d] - b[d]) for d in common))
    return differing, max_diff


def compare(run_dir: Path) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    from lsr.data.datasets import resolve_dataset

    qrels = resolve_dataset(report["dataset"]).qrels()
    k = report["settings"]["k"]
    index = open_single_segment(report["index_dir"])
    query_ids, queries = load_query_vectors(run_dir / "query-vectors.npz")
    doc_ids = [index.doc_ids[i] for i in range(index.num_docs)]
    q = queries.to_scipy().astype(np.float64)
    scaled = canonical_batch(queries, index.term_scales).to_scipy().astype(np.float64)
    fine = has_fine_impacts(index.postings)
    runs = {
        "float": brute_force_run(q, load_float_docs(run_dir / "doc-vectors").astype(np.float64), query_ids, doc_ids, k),
        "quantised": brute_force_run(scaled, index.to_scipy_docs(fine=fine).astype(np.float64), query_ids, doc_ids, k),
    }
    if report["settings"]["drop_self_hits"]:
        runs = {name: drop_self_hits(run) for name, run in runs.items()}
    ours = read_trec_run(report["systems"]["splade"]["run_file"])
    metrics = {name: evaluate(run, qrels) for name, run in runs.items()}
    metrics["ours"] = evaluate(ours, qrels)
    differing, max_diff = same_ranking(ours, runs["quantised"])
    return {
        "dataset": report["dataset"],
        "precision": "16-bit" if fine else "8-bit",
        "metrics": metrics,
        "ndcg10_ours_minus_float": metrics["ours"]["nDCG@10"] - metrics["float"]["nDCG@10"],
        "max_metric_diff_ours_vs_quantised": max(
            abs(metrics["ours"][m] - metrics["quantised"][m]) for m in metrics["ours"]
        ),
        "queries_with_different_ranking_vs_quantised": differing,
        "max_score_diff_vs_quantised": max_diff,
        "num_queries": len(query_ids),
        "k": k,
        "machine": machine_description(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by `lsr eval beir`")
    parser.add_argument("--out", type=Path, help="write the comparison JSON here")
    args = parser.parse_args(argv)
    result = compare(args.run_dir)
    result["command"] = "python eval/brute_force.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    ok = (
        abs(result["ndcg10_ours_minus_float"]) <= 0.002
        and result["max_metric_diff_ours_vs_quantised"] <= 1e-6
        and result["queries_with_different_ranking_vs_quantised"] == 0
    )
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
