"""Our scorers against the peer engines, side by side on the same vectors in the same doc order.

Builds our index (BP order) from a grown collection (``../shared/tools/make_bench_corpus.py``),
hands the same docs in that order to every peer, runs the same sampled queries one at a time
on one thread, and reports per engine: mean / p50 / p99 latency at k = 10 and k = 1000,
recall@10 and @1000 against the exact float reference and against the engine's own quantised
reference, build time (our reordering separately), index size on disk and build peak memory.
Peers over our uint8 impacts (PISA, BMP's Rust reference, Lucene through pyserini) get the
query weights scaled per term as our scorers use them; Seismic and splade-index get the float weights. A peer
whose build fails (out of memory on a large collection, say) is reported as failed and the run
goes on. Then the acceptance ratios of issue 3, the two-thread batch speed-up, a
latency/recall plot, and JSON + markdown results.

Usage:
    python ../shared/tools/make_bench_corpus.py --docs 1000000 --out /tmp/bench-1m
    python eval/bench_engines.py /tmp/bench-1m --out eval/results/bench_engines_1m
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np
import scipy.sparse as sp

from lsr.eval.bench_collection import (build_or_open, collection_from_run, doc_order, impact_docs, load_docs,
                                   reordered_docs, sample_queries, summary, write_json)
from lsr.eval.bench_engines_report import acceptance, markdown, plot
from lsr.eval.peers.base import run_build_child
from lsr.eval.report import machine_description
from lsr.index.format import Segment
from lsr.index.live import open_single_segment
from lsr.index.scorers.bmp import bmp_search, bmp_search_batch
from lsr.index.scorers.exhaustive import search
from lsr.index.scorers.query import canonical_batch
from lsr.index.search import search_sparse, single_segment_view
from lsr.index.sparse_batch import SparseBatch

KS = (10, 1000)
APPROXIMATE = ((0.99, 1.0), (0.98, 1.0), (0.97, 1.0), (0.95, 1.0), (0.9, 1.0), (0.8, 1.0), (0.7, 1.0), (0.9, 0.8))
REFERENCE_CHUNK = 500_000  # docs scored at a time by the float reference
BLOCK_BUDGETS = (2000, 1000, 500, 250)  # max_blocks: anytime search
BLOCK_BUDGETS_16 = (500, 250)  # the same over the 16-bit impacts (chosen on dev queries, see our_engines)
# Seismic (query_cut, heap_factor): from fast and loose to slow and near-exact.
SEISMIC_SEARCHES = ((10, 0.9), (20, 0.8), (40, 0.7), (60, 0.6), (100, 0.5), (200, 0.4))


def build_ours(docs: SparseBatch, out_dir: Path, block_size: int) -> dict:
    """Build our index (in a measured child process, see `run_build_child`)."""
    index, _ = build_or_open(docs, out_dir, reorder="bp", block_size=block_size)
    return {key: index.meta[key] for key in ("reorder_seconds", "bmp_seconds", "build_seconds")}


def exact_float_reference(docs: SparseBatch, queries: SparseBatch, k: int,
                          chunk: int = REFERENCE_CHUNK) -> list[np.ndarray]:
    """Top-k doc ids (rows of ``docs``) of exact float64 scoring (scipy), positive scores only,
    ties by doc id. Docs go in chunks, so a 4M-doc collection needs no full float64 copy."""
    query_rows = [sp.csr_matrix((w.astype(np.float64), t.astype(np.int64), [0, len(t)]), shape=(1, docs.vocab_size))
                  for t, w in (queries.row(q) for q in range(len(queries)))]
    best_ids = [np.empty(0, np.int64) for _ in query_rows]
    best_scores = [np.empty(0, np.float64) for _ in query_rows]
    for start in range(0, len(docs), chunk):
        end = min(start + chunk, len(docs))
        a, b = docs.indptr[start], docs.indptr[end]
        part = sp.csr_matrix((np.asarray(docs.values[a:b], np.float64), np.asarray(docs.indices[a:b], np.int64),
                              docs.indptr[start:end + 1] - a), shape=(end - start, docs.vocab_size))
        by_term = part.T.tocsr()
        for q, row in enumerate(query_rows):
            hits = row @ by_term
            ids = np.concatenate([best_ids[q], hits.indices.astype(np.int64) + start])
            scores = np.concatenate([best_scores[q], hits.data])
            # earlier chunks hold lower ids, so keeping k after each chunk keeps the right ties
            keep = np.lexsort((ids, -scores))[:k]
            best_ids[q], best_scores[q] = ids[keep], scores[keep]
    return [ids[scores > 0] for ids, scores in zip(best_ids, best_scores)]


def recall(found: list[np.ndarray], reference: list[np.ndarray], k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(r[:k].tolist())) / max(min(len(r), k), 1)
                         for f, r in zip(found, reference)]))


def run_engine(name: str, fn, queries: SparseBatch, refs: dict, own: str) -> dict:
    """Latency and recall of ``fn(terms, weights, k)`` at each k. Each k's queries run once
    untimed first: memory-mapped indexes (ours, PISA's) then start from the page cache, as
    in-memory ones (BMP's, Seismic's) do, and the JVM has compiled Lucene's hot code."""
    row = {"engine": name, "own_reference": own}
    for k in KS:
        for q in range(len(queries)):
            fn(*queries.row(q), k)
        latencies, results = np.empty(len(queries)), []
        for q in range(len(queries)):
            started = time.perf_counter()
            docs, _ = fn(*queries.row(q), k)
            latencies[q] = (time.perf_counter() - started) * 1000
            results.append(np.asarray(docs, dtype=np.int64))
        row[f"k{k}"] = {**summary(latencies),
                        "recall_float": recall(results, refs["float"], k),
                        "recall_own": recall(results, refs[own], k)}
    print(f"{name:<42} k=10 {row['k10']['mean_ms']:8.3f} ms R {row['k10']['recall_float']:.4f}   "
          f"k=1000 {row['k1000']['mean_ms']:8.3f} ms R {row['k1000']['recall_float']:.4f}", flush=True)
    return row


def batch_speedup(index: Segment, queries: SparseBatch, k: int = 10, repeats: int = 3) -> dict:
    """Queries per second of our safe BMP batch search with 1 and with 2 numba threads."""
    qps = {}
    for threads in (1, 2):
        numba.set_num_threads(threads)
        bmp_search_batch(index, queries, k)
        best = min(_timed(lambda: bmp_search_batch(index, queries, k)) for _ in range(repeats))
        qps[threads] = len(queries) / best
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return {"qps_1_thread": qps[1], "qps_2_threads": qps[2], "speedup": qps[2] / qps[1]}


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def our_engines(index: Segment) -> list[tuple[str, object]]:
    view = single_segment_view(index)
    engines = [
        # the exact search a user gets: the planner picks the scorer per query (index.scorers.planner)
        ("ours auto", lambda t, w, k: search_sparse(view, t, w, k, precision="8-bit")),
        ("ours auto 16-bit", lambda t, w, k: search_sparse(view, t, w, k, precision="16-bit")),
        ("ours exhaustive", lambda t, w, k: search(index, t, w, k)),
        ("ours bmp safe", lambda t, w, k: bmp_search(index, t, w, k)),
        # exact over the 16-bit copy (issue 13, item 4): the default precision of a search
        ("ours exhaustive 16-bit", lambda t, w, k: search(index, t, w, k, "16-bit")),
        ("ours bmp safe 16-bit", lambda t, w, k: bmp_search(index, t, w, k, precision="16-bit")),
    ]
    for alpha, beta in APPROXIMATE:
        engines.append((f"ours bmp alpha={alpha} beta={beta}",
                        lambda t, w, k, a=alpha, b=beta: bmp_search(index, t, w, k, a, b)))
    for budget in BLOCK_BUDGETS:
        engines.append((f"ours bmp max_blocks={budget}",
                        lambda t, w, k, m=budget: bmp_search(index, t, w, k, max_blocks=m)))
    # The approximate settings over the 16-bit impacts that eval/profile_bmp.py chose on the dev
    # query sample (--query-seed 1; eval/results/profile_bmp_1m_16bit_dev.json): the smallest
    # budget with recall@10 >= 0.99 there, and the next one up.
    for budget in BLOCK_BUDGETS_16:
        engines.append((f"ours bmp max_blocks={budget} 16-bit",
                        lambda t, w, k, m=budget: bmp_search(index, t, w, k, max_blocks=m, precision="16-bit")))
    return engines


class PeerBuildFailed(NamedTuple):
    """A peer whose build failed (out of memory, say): the run goes on and reports it."""

    engine: str
    error: str


def peer_engines(args, index: Segment, float_docs: SparseBatch, work_dir: Path):
    """Yield ``(name, search fn, own reference, build report)`` for each peer asked for, or a
    `PeerBuildFailed` for a build that failed."""
    impacts = impact_docs(index, work_dir / "impact-docs")  # our uint8 impacts, in our order
    if "splade-index" in args.peers:
        from lsr.eval.peers.splade_index import SpladeIndexEngine

        splade_index = SpladeIndexEngine(build_threads=args.build_threads)
        report = yield from _build("splade-index", lambda: splade_index.build(float_docs, work_dir / "splade-index"))
        if report is not None:
            yield "splade-index", splade_index.search, "float", report
        del splade_index
    if "pisa" in args.peers:
        from lsr.eval.peers.pisa import PisaEngine

        pisa = PisaEngine("maxscore", build_threads=args.build_threads)
        report = yield from _build("pisa", lambda: pisa.build(impacts, work_dir / "pisa"))
        if report is not None:
            for algorithm in ("maxscore", "block_max_wand"):
                yield f"pisa {algorithm}", pisa.with_algorithm(algorithm).search, "quantised", report
        del pisa  # each engine is dropped once measured: on 4M docs they do not all fit in memory
    if "bmp" in args.peers:
        from lsr.eval.peers.bmp import BmpEngine

        for block_size in args.bmp_block_sizes:
            engine = BmpEngine(block_size=block_size)
            name = f"bmp b={block_size}"
            report = yield from _build(name, lambda: engine.build_from_index(index, work_dir / f"bmp-{block_size}"))
            if report is not None:
                yield name, engine.search, "quantised", report
            del engine
    if "seismic" in args.peers:
        from lsr.eval.peers.seismic import SeismicEngine

        for n_postings in args.seismic_postings:  # its posting-list cap bounds recall at large k
            seismic = SeismicEngine(n_postings=n_postings, build_threads=args.build_threads)
            report = yield from _build(f"seismic np={n_postings}",
                                       lambda: seismic.build(float_docs, work_dir / f"seismic-{n_postings}"))
            for query_cut, heap_factor in SEISMIC_SEARCHES if report is not None else ():
                yield (f"seismic np={n_postings} qc={query_cut} hf={heap_factor}",
                       seismic.with_search(query_cut, heap_factor).search, "float", report)
            del seismic
    if "pyserini" in args.peers:
        from lsr.eval.peers.pyserini_impact import PyseriniImpactEngine

        lucene = PyseriniImpactEngine(build_threads=args.build_threads)
        report = yield from _build("pyserini impact", lambda: lucene.build(impacts, work_dir / "pyserini"))
        if report is not None:
            yield "pyserini impact", lucene.search, "quantised", report
        del lucene


def _build(name: str, build):
    """Run one peer build (a generator step of `peer_engines`): its report, or None after
    yielding a `PeerBuildFailed` (a build child that died raises RuntimeError)."""
    try:
        return build()
    except RuntimeError as err:
        print(f"{name}: build failed: {err}", flush=True)
        yield PeerBuildFailed(name, str(err)[-2000:])
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path,
                        help="output folder of make_bench_corpus.py, or with --beir-run a folder to create")
    parser.add_argument("--beir-run", type=Path,
                        help="take docs and queries from a `lsr eval beir` run directory (real encoded BEIR data)")
    parser.add_argument("--docs", type=int, help="use the first N docs")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--block-size", type=int, default=8)
    parser.add_argument("--peers", default="splade-index,pisa,bmp,seismic,pyserini")
    parser.add_argument("--bmp-block-sizes", default="8,16,32,64")
    parser.add_argument("--seismic-postings", default="3000,10000",
                        help="Seismic builds, one per posting-list cap (comma-separated)")
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/lsr-bench-engines"))
    parser.add_argument("--out", type=Path, help="results prefix: writes .json, .md and .png")
    args = parser.parse_args(argv)
    args.peers = args.peers.split(",") if args.peers else []
    args.bmp_block_sizes = [int(b) for b in args.bmp_block_sizes.split(",")]
    args.seismic_postings = [int(n) for n in args.seismic_postings.split(",")]
    command = "python eval/bench_engines.py " + " ".join(sys.argv[1:] if argv is None else argv)

    if args.beir_run is not None:
        collection_from_run(args.beir_run, args.collection)
    docs = load_docs(args.collection, args.docs)
    work_dir = args.work_dir / f"{args.collection.name}-{len(docs)}"
    ours_dir = work_dir / f"ours-b{args.block_size}"
    child = run_build_child("lsr.eval.bench_engines:build_ours", ours_dir, {"block_size": args.block_size},
                            docs=docs, threads=args.build_threads)
    index = open_single_segment(ours_dir)
    order = doc_order(index)
    float_docs = reordered_docs(docs, order, work_dir / "float-docs")
    _, queries = sample_queries(args.collection, args.queries)
    scaled = canonical_batch(queries, index.term_scales)  # what our scorers (and impact peers) see
    started = time.perf_counter()
    refs = {"float": exact_float_reference(float_docs, queries, max(KS)),
            "quantised": [search(index, *queries.row(q), max(KS))[0] for q in range(len(queries))]}
    print(f"references in {time.perf_counter() - started:.1f} s", flush=True)

    fine = index.postings.block_post_impacts16
    ours_build = {"seconds": child.result["build_seconds"], "reorder_seconds": child.result["reorder_seconds"],
                  "bytes_on_disk": index.size_bytes(), "peak_rss_mb": child.peak_rss_mb,
                  "postings": int(len(index.postings.block_post_impacts)),
                  "fine_bytes": int(fine.nbytes) if fine is not None else 0}
    rows = []
    for name, fn in our_engines(index):
        rows.append({**run_engine(name, fn, queries, refs, "quantised"), "build": ours_build})
    failures = []
    for peer in peer_engines(args, index, float_docs, work_dir):
        if isinstance(peer, PeerBuildFailed):
            failures.append(peer._asdict())
            continue
        name, fn, own, report = peer
        query_set = queries if own == "float" else scaled
        build = {"seconds": report.seconds, "bytes_on_disk": report.bytes_on_disk,
                 "peak_rss_mb": report.peak_rss_mb, "notes": report.notes}
        rows.append({**run_engine(name, fn, query_set, refs, own), "build": build})
        del fn, peer
        gc.collect()
    result = {
        "collection": str(args.collection), "docs": len(docs), "queries": len(queries),
        "block_size": args.block_size, "engines": rows, "failed_builds": failures,
        "batch": batch_speedup(index, queries),
        "machine": machine_description(), "command": command,
    }
    result["acceptance"] = acceptance(result)
    if args.out:
        write_json(args.out.with_suffix(".json"), result)
        args.out.with_suffix(".md").write_text(markdown(result))
        plot(result, args.out.with_suffix(".png"))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
