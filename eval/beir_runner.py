"""`lsr eval beir`: index a BEIR dataset (if needed), run its queries, score and report."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsr.eval.report import machine_description, write_report
from lsr.eval.runfile import drop_self_hits, write_trec_run
from lsr.index.commit import generations, read_newest_commit
from lsr.index.sparse_batch import SparseBatch
from lsr.metrics import evaluate, measures_for


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
    doc_max_length: int | None = None  # a new index's document token limit (default: the model's); above
    # the model's window, documents are read in overlapping windows (lsr.encoders.windows)
    quantization: str = "per-term"
    reorder: str = "bp"
    block_size: int = 8
    scorer: str = "auto"
    mode: str = "sparse"  # sparse | dense | hybrid (all three side by side)
    dense_model: str | None = None  # default: the bundled all-MiniLM-L6-v2
    fusion: str = "adaptive"  # adaptive | rrf | convex (adaptive: chosen on dev, eval/fusion_sweep.py)
    rrf_k: int = 60
    fusion_alpha: float = 0.5  # convex: weight of the sparse scores
    normalization: str = "minmax"  # convex: minmax | zscore
    query_backend: str = "auto"  # lsr.encoders.onnx_queries: auto | torch | onnx | onnx-int8
    command: str = ""
    measures: dict | None = None  # report name -> ir_measures name; default: the dataset's (lsr.metrics.measures_for)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


MODES = ("sparse", "dense", "hybrid")


def run_beir(config: BeirRunConfig) -> dict:
    """Run one evaluation and write run files and the report; returns the report dict."""
    from lsr.data.datasets import resolve_dataset

    dataset = resolve_dataset(config.dataset)
    if config.measures is None:
        config.measures = measures_for(dataset.name)
    out_dir = config.out_dir or Path("runs") / dataset.slug
    index_dir = config.index_dir or out_dir / "index"
    out_dir.mkdir(parents=True, exist_ok=True)
    qrels = dataset.qrels()
    queries = {qid: text for qid, text in dataset.queries().items() if qid in qrels}
    if not queries:
        raise ValueError(f"{dataset.name}: no query has relevance judgments in split {dataset.split!r}")

    from lsr.encoders.onnx_queries import with_sparse_query_backend

    encoder = with_sparse_query_backend(_index_if_needed(dataset, index_dir, out_dir, config), config.query_backend)
    systems, runs = {}, {}
    if config.mode in ("sparse", "hybrid"):
        systems["splade"], runs["sparse"] = _run_sparse(encoder, index_dir, queries, qrels, out_dir, config)
    if config.mode in ("dense", "hybrid"):
        systems["dense"], runs["dense"] = _run_dense(dataset, index_dir, queries, qrels, out_dir, config)
    if config.mode == "hybrid":
        systems[f"hybrid ({config.fusion})"] = _run_hybrid(systems, runs, qrels, out_dir, config)
    if config.baseline == "bm25":
        systems["bm25 (pyserini)"] = _run_bm25(dataset, queries, qrels, out_dir, config)
    commit = read_newest_commit(index_dir)
    index_meta, build = commit.settings["meta"], commit.settings["build"]
    report = {
        "dataset": dataset.name,
        "split": dataset.split,
        "num_queries": len(queries),
        "num_docs": commit.num_docs,
        "systems": systems,
        "settings": {
            "model": index_meta["encoder"]["model"],
            "query_max_length": index_meta["encoder"]["query_max_length"],
            "doc_max_length": index_meta["encoder"]["doc_max_length"],
            "quantization": f"uint8-{build['quantization']}",
            "clipped": _clipped(index_dir, commit),
            "doc_order": build["reorder"],
            "block_size": build["block_size"],
            "segments": len(commit.segments),
            "scorer": config.scorer,
            "k": config.k,
            "drop_self_hits": config.drop_self_hits,
            "mode": config.mode,
            "query_backend": config.query_backend,  # asked for; each system's efficiency says what ran
            **(_dense_settings(index_dir, config) if config.mode != "sparse" else {}),
        },
        "index_dir": str(index_dir),
        "machine": machine_description(),
        "command": config.command,
    }
    write_report(report, out_dir)
    return report


def _index_if_needed(dataset, index_dir: Path, out_dir: Path, config: BeirRunConfig):
    from lsr.encoders.loading import load_encoder
    from lsr.index.upgrade import upgrade_if_needed
    from lsr.indexing import index_corpus

    if generations(index_dir):
        upgrade_if_needed(index_dir)  # a run directory kept from an older build of this project
        meta = read_newest_commit(index_dir).settings["meta"]
        recorded = meta["encoder"]
        if meta.get("corpus") != dataset.name:
            print(f"warning: {index_dir} was built from {meta.get('corpus')!r}, evaluating on "
                  f"{dataset.name!r}", file=sys.stderr)
        if config.model is not None and config.model != recorded["model"]:
            raise ValueError(
                f"{index_dir} was built with model {recorded['model']!r}, not {config.model!r}; "
                "pass another --index or remove it"
            )
        if config.doc_max_length is not None and config.doc_max_length != recorded["doc_max_length"]:
            raise ValueError(f"{index_dir} was built with doc_max_length {recorded['doc_max_length']}, not "
                             f"{config.doc_max_length}; pass another --index or remove it")
        return load_encoder(recorded["model"], config.batch_size, recorded["query_max_length"],
                            recorded["doc_max_length"])
    encoder = load_encoder(config.model, batch_size=config.batch_size, doc_max_length=config.doc_max_length)
    dense_encoder = None
    if config.mode != "sparse":  # one indexing pass builds both parts
        from lsr.encoders.dense import DenseEncoder

        dense_encoder = DenseEncoder(config.dense_model, batch_size=config.batch_size)
    index_corpus(
        dataset.iter_documents(), encoder, index_dir, dataset.name,
        float_vectors_dir=out_dir / "doc-vectors", quantization=config.quantization,
        reorder=config.reorder, block_size=config.block_size, dense_encoder=dense_encoder,
        store_texts=False,  # index MB measures the retrieval structures, as the peers' sizes do
    )
    return encoder


def _run_sparse(encoder, index_dir: Path, queries: dict, qrels: dict, out_dir: Path, config: BeirRunConfig) -> dict:
    from lsr.evaluation import evaluate_index

    result = evaluate_index(encoder, index_dir, queries, qrels, config.k, config.scorer, config.measures)
    run = result["run"]
    save_query_vectors(out_dir / "query-vectors.npz", list(queries), result["query_vectors"])
    if config.drop_self_hits:
        run = drop_self_hits(run)
        result["metrics"] = evaluate(run, qrels, config.measures)
    write_trec_run(run, out_dir / "run.splade.trec", "splade")
    efficiency = {**result["efficiency"], "query_backend": getattr(encoder, "query_backend", "torch")}
    efficiency["stages_ms"] = {"sparse_encode": efficiency["mean_query_encode_ms"],
                               "sparse_search": efficiency["mean_search_ms"]}
    return {"metrics": result["metrics"], "run_file": str(out_dir / "run.splade.trec"), "efficiency": efficiency}, run


def _run_dense(dataset, index_dir: Path, queries: dict, qrels: dict, out_dir: Path, config: BeirRunConfig):
    from lsr.index.live import LiveIndex
    from lsr.encoders.dense import DenseEncoder
    from lsr.encoders.onnx_queries import with_dense_query_backend
    from lsr.hybrid import retrieve_dense
    from lsr.indexing import add_dense_index

    dense = read_newest_commit(index_dir).settings["build"].get("dense")
    if dense is not None:
        if config.dense_model is not None and config.dense_model != dense["model"]:
            raise ValueError(f"{index_dir} has a dense index of {dense['model']!r}, not {config.dense_model!r}")
        encoder = DenseEncoder(dense["model"], batch_size=config.batch_size)
    else:
        encoder = DenseEncoder(config.dense_model, batch_size=config.batch_size)
        add_dense_index(index_dir, dataset.iter_documents(), encoder)
    encoder = with_dense_query_backend(encoder, config.query_backend)
    with LiveIndex(index_dir, writer="never") as index:
        result = retrieve_dense(encoder, index, queries, config.k)
        dense_bytes = sum(p.stat().st_size for state in index.refresh().segments
                          for p in (state.segment.path / "dense").iterdir())
    run = drop_self_hits(result["run"]) if config.drop_self_hits else result["run"]
    write_trec_run(run, out_dir / "run.dense.trec", "dense")
    stages = {"dense_encode": result["encode"]["mean_query_encode_ms"], "dense_search": float(np.mean(result["search_ms"]))}
    efficiency = {**result["encode"], "query_backend": getattr(encoder, "query_backend", "torch"),
                  "mean_search_ms": stages["dense_search"],
                  "p50_search_ms": float(np.percentile(result["search_ms"], 50)),
                  "index_mb": dense_bytes / 2**20, "stages_ms": stages}
    return {"metrics": evaluate(run, qrels, config.measures), "run_file": str(out_dir / "run.dense.trec"), "efficiency": efficiency}, run


def _run_hybrid(systems: dict, runs: dict, qrels: dict, out_dir: Path, config: BeirRunConfig) -> dict:
    from lsr.hybrid import fuse_runs, stage_summary

    options = {"rrf": {"rrf_k": config.rrf_k}, "adaptive": {}}.get(config.fusion) or {
        "alpha": config.fusion_alpha, "normalization": config.normalization}
    run, fusion_ms = fuse_runs(runs["sparse"], runs["dense"], config.k, config.fusion, **options)
    name = f"hybrid-{config.fusion}"
    write_trec_run(run, out_dir / f"run.{name}.trec", name)
    stages = {**systems["splade"]["efficiency"]["stages_ms"], **systems["dense"]["efficiency"]["stages_ms"],
              "fusion": float(np.mean(fusion_ms))}
    summary = stage_summary(stages)
    efficiency = {"mean_query_encode_ms": summary["sparse_encode"] + summary["dense_encode"],
                  "mean_search_ms": summary["sparse_search"] + summary["dense_search"] + summary["fusion"],
                  "stages_ms": summary}
    return {"metrics": evaluate(run, qrels, config.measures), "run_file": str(out_dir / f"run.{name}.trec"),
            "fusion": {"method": config.fusion, **options}, "efficiency": efficiency}


def _clipped(index_dir: Path, commit) -> int:
    """Weights clipped by quantisation, over every segment."""
    from lsr.index.format import read_segment_meta

    return sum(int(read_segment_meta(index_dir / "segments" / s.name)["quantization"]["clipped"])
               for s in commit.segments)


def _dense_settings(index_dir: Path, config: BeirRunConfig) -> dict:
    from lsr.index.dense import DenseOptions

    dense = read_newest_commit(index_dir).settings["build"]["dense"]
    options = DenseOptions(**(dense.get("options") or {}))
    settings = {"dense_model": dense["model"], "dense_index": options.kind}
    if options.kind == "hnsw":
        settings.update(hnsw_m=options.hnsw_m, ef_construction=options.ef_construction, ef_search=options.ef_search)
    if config.mode == "hybrid":
        settings["fusion"] = config.fusion
        settings.update({"rrf_k": config.rrf_k} if config.fusion == "rrf" else
                        {"fusion_alpha": config.fusion_alpha, "normalization": config.normalization})
    return settings


def save_query_vectors(path: Path, query_ids: list[str], vectors: SparseBatch) -> None:
    np.savez(path, ids=np.array(query_ids), indptr=vectors.indptr, indices=vectors.indices,
             values=vectors.values, vocab_size=vectors.vocab_size)


def load_query_vectors(path: Path) -> tuple[list[str], SparseBatch]:
    data = np.load(path)
    batch = SparseBatch(data["indptr"], data["indices"], data["values"], int(data["vocab_size"]))
    return [str(q) for q in data["ids"]], batch


def _run_bm25(dataset, queries: dict, qrels: dict, out_dir: Path, config: BeirRunConfig) -> dict:
    from lsr.eval.baselines.bm25 import bm25_run

    started = time.perf_counter()
    documents = ((d.doc_id, d.title, d.text) for d in dataset.iter_documents())
    run = bm25_run(documents, queries, out_dir / "bm25-lucene", k=config.k)
    if config.drop_self_hits:
        run = drop_self_hits(run)
    write_trec_run(run, out_dir / "run.bm25.trec", "bm25")
    return {
        "metrics": evaluate(run, qrels, config.measures),
        "run_file": str(out_dir / "run.bm25.trec"),
        "efficiency": {"index_and_search_seconds": time.perf_counter() - started},
    }
