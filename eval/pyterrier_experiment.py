"""A PyTerrier experiment on a BEIR dataset: pyserini's BM25 beside our sparse, dense and hybrid
pipelines (`lsr.pyterrier`), compared by ``pt.Experiment``.

Usage:
    python eval/pyterrier_experiment.py beir/scifact/test --out eval/results/pyterrier_scifact
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyterrier as pt
from ir_measures import RR, R, nDCG

from lsr.eval.baselines.pt_bm25 import PyseriniBM25
from lsr.data.datasets import resolve_dataset
from lsr.pyterrier import QueryEncoder, Retriever, SparseIndexer

METRICS = [nDCG @ 10, R @ 100, RR @ 10]


def pipelines(dataset, work_dir: Path, encoder=None) -> dict[str, pt.Transformer]:
    """The systems compared, by name (the index is built in ``work_dir``, sparse and dense)."""
    documents = list(dataset.iter_documents())
    index = SparseIndexer(work_dir / "index", encoder=encoder, dense=True).index(
        {"docno": d.doc_id, "title": d.title, "text": d.text} for d in documents)
    return {
        "BM25 (pyserini)": PyseriniBM25(((d.doc_id, d.title, d.text) for d in documents), work_dir / "bm25"),
        "SPLADE (lsr)": Retriever(index),
        "SPLADE, encoder >> retriever": QueryEncoder(index) >> Retriever(index),
        "dense (lsr)": Retriever(index, mode="dense"),
        "hybrid RRF (lsr)": Retriever(index, mode="hybrid", fusion="rrf"),
    }


def experiment(dataset_id: str, work_dir: Path, encoder=None) -> pd.DataFrame:
    """``pt.Experiment`` over the dataset's judged queries."""
    dataset = resolve_dataset(dataset_id)
    qrels = dataset.qrels()
    topics = pd.DataFrame([(qid, text) for qid, text in dataset.queries().items() if qid in qrels],
                          columns=["qid", "query"])
    qrels_frame = pd.DataFrame([(qid, doc, label) for qid, docs in qrels.items() for doc, label in docs.items()],
                               columns=["qid", "docno", "label"])
    systems = pipelines(dataset, work_dir, encoder)
    return pt.Experiment(list(systems.values()), topics, qrels_frame, eval_metrics=METRICS, names=list(systems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--out", type=Path, help="results prefix: writes .md and .csv")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        table = experiment(args.dataset, Path(work))
    text = table.to_markdown(index=False, floatfmt=".4f")
    print(text)
    if args.out:
        command = "python eval/pyterrier_experiment.py " + " ".join(sys.argv[1:] if argv is None else argv)
        args.out.with_suffix(".md").write_text(f"# PyTerrier experiment: {args.dataset}\n\n{text}\n\n"
                                               f"Command: `{command}`\n")
        table.to_csv(args.out.with_suffix(".csv"), index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
