"""`lsr eval beir`: index a BEIR dataset (if needed), run its queries, score and report."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.report import machine_description, write_report
from eval.runfile import Run, drop_self_hits, write_trec_run
from index.format import read_meta
from index.sparse_batch import SparseBatch
from lsr.metrics import evaluate


@dataclass
class BeirRunConfig:
    """Everything that moves the numbers of one evaluation run."""

    dataset: str
    index_dir: Path | None = None
    out_dir: Path | None = None
    model: str | None = None
    baseline: str | None = None
    k: int = 1000
    drop_self_hits: bool = False
    batch_size: int = 32
    quantization: str = "per-term"
    reorder: str = "bp"
    block_size: int = 8
    scorer: str = "auto"
    command: str = ""


def run_beir(config: BeirRunConfig) -> dict:
    """Run one evaluation and write run files and the report; returns the report dict."""
    from lsr.data.datasets import resolve_dataset

    dataset = resolve_dataset(config.dataset)
    out_dir = config.out_dir or Path("runs") / dataset.slug
    index_dir = config.index_dir or out_dir / "index"
    out_dir.mkdir(parents=True, exist_ok=True)
    qrels = dataset.qrels()
    queries = {qid: text for qid, text in dataset.queries().items() if qid in qrels}
    if not queries:
        raise ValueError(f"{dataset.name}: no query has relevance judgments in split {dataset.split!r}")

    encoder = _index_if_needed(dataset, index_dir, out_dir, config)
    systems = {"splade": _run_sparse(encoder, index_dir, queries, qrels, out_dir, config)}
    if config.baseline == "bm25":
        systems["bm25 (pyserini)"] = _run_bm25(dataset, queries, qrels, out_dir, config)
    index_meta = read_meta(index_dir)
    report = {
        "dataset": dataset.name,
        "split": dataset.split,
        "num_queries": len(queries),
        "num_docs": index_meta["num_docs"],
        "systems": systems,
        "settings": {
            "model": index_meta["encoder"]["model"],
            "query_max_length": index_meta["encoder"]["query_max_length"],
            "doc_max_length": index_meta["encoder"]["doc_max_length"],
            "quantization": index_meta["quantization"]["method"],
            "clipped": index_meta["quantization"]["clipped"],
            "doc_order": index_meta["doc_order"],
            "block_size": index_meta["block_size"],
            "scorer": config.scorer,
            "k": config.k,
            "drop_self_hits": config.drop_self_hits,
        },
        "index_dir": str(index_dir),
        "machine": machine_description(),
        "command": config.command,
    }
    write_report(report, out_dir)
    return report


def _index_if_needed(dataset, index_dir: Path, out_dir: Path, config: BeirRunConfig):
    from lsr.encoders.loading import load_encoder
    from lsr.indexing import index_corpus

    if (index_dir / "meta.json").is_file():
        meta = read_meta(index_dir)
        recorded = meta["encoder"]
        if meta.get("corpus") != dataset.name:
            print(f"warning: {index_dir} was built from {meta.get('corpus')!r}, evaluating on "
                  f"{dataset.name!r}", file=sys.stderr)
        if config.model is not None and config.model != recorded["model"]:
            raise ValueError(
                f"{index_dir} was built with model {recorded['model']!r}, not {config.model!r}; "
                "pass another --index or remove it"
            )
        return load_encoder(recorded["model"], config.batch_size, recorded["query_max_length"],
                            recorded["doc_max_length"])
    encoder = load_encoder(config.model, batch_size=config.batch_size)
    index_corpus(
        dataset.iter_documents(), encoder, index_dir, dataset.name,
        float_vectors_dir=out_dir / "doc-vectors", quantization=config.quantization,
        reorder=config.reorder, block_size=config.block_size,
    )
    return encoder


def _run_sparse(encoder, index_dir: Path, queries: dict, qrels: dict, out_dir: Path, config: BeirRunConfig) -> dict:
    from lsr.evaluation import evaluate_index

    result = evaluate_index(encoder, index_dir, queries, qrels, config.k, config.scorer)
    run = result["run"]
    save_query_vectors(out_dir / "query-vectors.npz", list(queries), result["query_vectors"])
    if config.drop_self_hits:
        run = drop_self_hits(run)
        result["metrics"] = evaluate(run, qrels)
    write_trec_run(run, out_dir / "run.splade.trec", "splade")
    return {"metrics": result["metrics"], "run_file": str(out_dir / "run.splade.trec"),
            "efficiency": result["efficiency"]}


def save_query_vectors(path: Path, query_ids: list[str], vectors: SparseBatch) -> None:
    np.savez(path, ids=np.array(query_ids), indptr=vectors.indptr, indices=vectors.indices,
             values=vectors.values, vocab_size=vectors.vocab_size)


def load_query_vectors(path: Path) -> tuple[list[str], SparseBatch]:
    data = np.load(path)
    batch = SparseBatch(data["indptr"], data["indices"], data["values"], int(data["vocab_size"]))
    return [str(q) for q in data["ids"]], batch


def _run_bm25(dataset, queries: dict, qrels: dict, out_dir: Path, config: BeirRunConfig) -> dict:
    from eval.baselines.bm25 import bm25_run

    started = time.perf_counter()
    documents = ((d.doc_id, d.title, d.text) for d in dataset.iter_documents())
    run = bm25_run(documents, queries, out_dir / "bm25-lucene", k=config.k)
    if config.drop_self_hits:
        run = drop_self_hits(run)
    write_trec_run(run, out_dir / "run.bm25.trec", "bm25")
    return {
        "metrics": evaluate(run, qrels),
        "run_file": str(out_dir / "run.bm25.trec"),
        "efficiency": {"index_and_search_seconds": time.perf_counter() - started},
    }
