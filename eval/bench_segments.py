"""Search over several segments and over deleted documents, against one segment with none.

    python eval/bench_segments.py /tmp/bench-1m --out eval/results/bench_segments_1m

The documents of a grown collection are indexed as one segment (graph bisection over all of
them), and then:

* **the same order, cut into 4 and 16 segments**: the documents in the one segment's order,
  each range a segment of its own (quantised on its own): what the search pays for segments,
  the blocks being the same (the targets: 16 segments at most 1.5x at k = 10, 1.3x at
  k = 1000);
* **as an indexing job writes them** (``--segments keep``): chunks in arrival order, each
  reordered on its own, as 4 and 16 segments, and the 16 merged into one keeping their orders:
  the difference between those two is again the search's cost of segments, the rest is what
  reordering small chunks apart costs the block bounds;
* **10% deleted**: one segment with a tenth of its documents, chosen at random, deleted (one
  committed delete file; target at most 1.1x).

Safe BMP answers the same sampled queries one at a time on one thread, through the
multi-segment search (``index.search``), at k = 10 and k = 1000; variants are timed in turn
query by query, so that the machine's drift falls on all of them alike. Every result is
checked against the exhaustive scorer over the same index (equal ids and scores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from lsr.eval.bench_build import read_chunks
from lsr.eval.bench_collection import _gather_rows, link_copy, sample_queries, summary
from lsr.eval.report import publish
from lsr.index.build import IndexBuild
from lsr.index.commit import generations
from lsr.index.live import LiveIndex, open_single_segment
from lsr.index.search import search_sparse
from lsr.index.sparse_batch import SparseBatch

VOCAB_SIZE = 30522


def build(out: Path, chunks, segment_docs: int | None, reorder: str) -> float:
    """Build once (kept in ``out``); returns the build seconds (0 when it already existed)."""
    if generations(out):
        return 0.0
    started = time.perf_counter()
    job = IndexBuild(out, VOCAB_SIZE, {}, segment_docs=segment_docs, merge=False, background=True, reorder=reorder,
                     block_size=8)
    for ids, batch, titles in chunks:
        job.add(ids, batch, titles)
    job.finish()
    return time.perf_counter() - started


def in_order(collection: Path, order: np.ndarray, chunk: int = 50_000):
    """The collection's documents in ``order`` (positions), as build chunks."""
    indptr = np.load(collection / "docs" / "indptr.npy")
    indices = np.load(collection / "docs" / "indices.npy", mmap_mode="r")
    values = np.load(collection / "docs" / "values.npy", mmap_mode="r")
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        nnz = int((indptr[rows + 1] - indptr[rows]).sum())
        out = (np.zeros(len(rows) + 1, np.int64), np.empty(nnz, np.uint32), np.empty(nnz, np.float32))
        _gather_rows(indptr, indices, values, rows, *out)
        yield [f"d{i}" for i in rows], SparseBatch(*out, VOCAB_SIZE), None


def merged_copy(source: Path, target: Path) -> None:
    """A copy of an index (hard links: segments never change) merged into one segment."""
    if generations(target):
        return
    link_copy(source, target)
    with LiveIndex(target, writer="required") as live:
        live.merge(max_segments=1)


def with_deletions(source: Path, target: Path, fraction: float, seed: int) -> int:
    """A copy of an index with ``fraction`` of its documents deleted in one commit; how many."""
    if target.exists():
        shutil.rmtree(target)
    link_copy(source, target)
    with LiveIndex(target, writer="required") as live:
        record = live.commit.segments[0]
        chosen = np.random.default_rng(seed).choice(record.num_docs, int(fraction * record.num_docs), replace=False)
        live.writer.delete_copies({record.name: np.sort(chosen)})
    return len(chosen)


def prepare(collection: Path, work: Path, limit: int | None) -> dict:
    total = limit or int(json.loads((collection / "meta.json").read_text())["docs"])
    seconds = {"1 segment": build(work / "one", read_chunks(collection, limit), None, "bp")}
    one = open_single_segment(work / "one", verify=False)
    order = np.array([int(one.doc_ids[i][1:]) for i in range(one.num_docs)], dtype=np.int64)
    for count in (4, 16):
        name = f"{count} segments, cut from one order"
        seconds[name] = build(work / f"cut-{count}", in_order(collection, order), -(-total // count), "none")
    for count in (4, 16):
        name = f"{count} segments as an indexing job writes them"
        seconds[name] = build(work / f"job-{count}", read_chunks(collection, limit), -(-total // count), "bp")
    merged_copy(work / "job-16", work / "job-16-merged")
    deleted = with_deletions(work / "one", work / "deleted-10pct", 0.10, seed=0)
    paths = {"1 segment": work / "one",
             "4 segments, cut from one order": work / "cut-4", "16 segments, cut from one order": work / "cut-16",
             "4 segments as an indexing job writes them": work / "job-4",
             "16 segments as an indexing job writes them": work / "job-16",
             "the job's 16 merged into one, orders kept": work / "job-16-merged",
             "1 segment, 10% deleted": work / "deleted-10pct"}
    return {"paths": paths, "build_seconds": seconds, "deleted": deleted, "docs": total}


def measure(paths: dict, queries, k: int) -> dict:
    """Each query on every variant in turn, after one untimed pass; then an exactness check."""
    indexes = {name: LiveIndex(path, writer="never", verify=False) for name, path in paths.items()}
    try:
        views = {name: index.refresh() for name, index in indexes.items()}
        for view in views.values():
            for q in range(len(queries)):
                search_sparse(view, *queries.row(q), k, scorer="bmp")
        times = {name: np.empty(len(queries)) for name in views}
        results = {name: [] for name in views}
        for q in range(len(queries)):
            for name, view in views.items():
                started = time.perf_counter()
                results[name].append(search_sparse(view, *queries.row(q), k, scorer="bmp"))
                times[name][q] = (time.perf_counter() - started) * 1000
        rows = {}
        for name, view in views.items():
            differing = sum(1 for q, (keys, scores) in enumerate(results[name])
                            if not all(np.array_equal(a, b) for a, b in
                                       zip((keys, scores), search_sparse(view, *queries.row(q), k, scorer="exhaustive"))))
            rows[name] = {**summary(times[name]), "not_exact": differing, "segments": len(view.segments),
                          "live_docs": view.num_docs}
        return rows
    finally:
        for index in indexes.values():
            index.close()


def run(collection: Path, work: Path, limit: int | None, num_queries: int) -> dict:
    _, queries = sample_queries(collection, num_queries)
    prepared = prepare(collection, work, limit)
    by_k = {k: measure(prepared["paths"], queries, k) for k in (10, 1000)}
    rows = {}
    for name in prepared["paths"]:
        row = {"build_seconds": round(prepared["build_seconds"].get(name, 0.0), 1)}
        for k in (10, 1000):
            measured = by_k[k][name]
            row.update(segments=measured["segments"], live_docs=measured["live_docs"])
            row[f"k{k}"] = {key: value for key, value in measured.items() if key not in ("segments", "live_docs")}
            row[f"k{k}_mean_ratio"] = measured["mean_ms"] / by_k[k]["1 segment"]["mean_ms"]
        rows[name] = row
        print(f"{name:>46}: k=10 {row['k10']['mean_ms']:.3f} ms ({row['k10_mean_ratio']:.2f}x), k=1000 "
              f"{row['k1000']['mean_ms']:.3f} ms ({row['k1000_mean_ratio']:.2f}x); not exact "
              f"{row['k10']['not_exact']} / {row['k1000']['not_exact']}", flush=True)
    return {"collection": str(collection), "docs": prepared["docs"], "queries": len(queries),
            "deleted": prepared["deleted"], "rows": rows}


def markdown(report: dict) -> str:
    lines = [f"# Segments and deletions: safe BMP on {report['docs']:,} documents, {report['queries']} queries",
             "", "One query at a time, one thread, through the multi-segment search; the variants timed in turn "
             "query by query. Ratio: mean latency over the one segment's. Targets: 16 segments (the same order) "
             "<= 1.5x at k = 10 and <= 1.3x at k = 1000; 10% deleted <= 1.1x at both.", "",
             "| index | segments | live docs | k=10 mean / p50 / p99 ms | ratio | k=1000 mean / p50 / p99 ms | ratio "
             "| not exact (k=10 / k=1000) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        cells = []
        for k in (10, 1000):
            s = r[f"k{k}"]
            cells += [f"{s['mean_ms']:.3f} / {s['p50_ms']:.3f} / {s['p99_ms']:.2f}", f"{r[f'k{k}_mean_ratio']:.2f}x"]
        lines.append(f"| {name} | {r['segments']} | {r['live_docs']:,} | {' | '.join(cells)} | "
                     f"{r['k10']['not_exact']} / {r['k1000']['not_exact']} |")
    lines += ["", f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs  ",
              f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--docs", type=int, help="the first N documents (default: all)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lsr-bench-segments"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = run(args.collection, args.work, args.docs, args.queries)
    publish(report, markdown, "bench_segments.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
