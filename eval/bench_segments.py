"""Search over several segments and over deleted documents, against one segment with none.

    python eval/bench_segments.py /tmp/bench-1m --out eval/results/bench_segments_1m

The same documents of a grown collection are indexed as 1 segment (graph bisection over all
of them), and as 4 and 16 segments (each reordered on its own, kept apart); then 10% of the
documents of the one-segment index, chosen at random, are deleted (one committed delete
file). For each, safe BMP (the ``bmp`` scorer at alpha = beta = 1) answers the same sampled
queries one at a time on one thread, through the multi-segment search (``index.search``),
at k = 10 and k = 1000; the ratios to the one-segment index without deletions are the
targets (16 segments at most 1.5x at k = 10 and 1.3x at k = 1000; 10% deleted at most 1.1x).
Every result is checked against the exhaustive scorer over the same index (exact: equal ids
and scores).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from eval.bench_build import read_chunks
from eval.bench_collection import sample_queries, summary
from eval.report import machine_description
from index.build import IndexBuild
from index.commit import generations
from index.live import LiveIndex
from index.search import search_sparse

VOCAB_SIZE = 30522


def build(collection: Path, out: Path, limit: int | None, segment_docs: int | None) -> float:
    """Build once (kept in ``out``); returns the build seconds (0 when it already existed)."""
    if generations(out):
        return 0.0
    started = time.perf_counter()
    build_job = IndexBuild(out, VOCAB_SIZE, {"corpus": str(collection)}, segment_docs=segment_docs, merge=False,
                           background=True, reorder="bp", block_size=8)
    for ids, batch, titles in read_chunks(collection, limit):
        build_job.add(ids, batch, titles)
    build_job.finish()
    return time.perf_counter() - started


def with_deletions(source: Path, target: Path, fraction: float, seed: int) -> int:
    """A copy of an index (hard links: segments never change) with ``fraction`` of its
    documents deleted in one commit; returns how many."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, copy_function=os.link)
    with LiveIndex(target, writer="required") as live:
        record = live.commit.segments[0]
        chosen = np.random.default_rng(seed).choice(record.num_docs, int(fraction * record.num_docs), replace=False)
        live.writer.delete_copies({record.name: np.sort(chosen)})
    return len(chosen)


def latencies(view, queries, k: int) -> tuple[np.ndarray, list]:
    """One query at a time, safe BMP; after one untimed pass (page cache, JIT)."""
    for q in range(len(queries)):
        search_sparse(view, *queries.row(q), k, scorer="bmp")
    times, results = np.empty(len(queries)), []
    for q in range(len(queries)):
        started = time.perf_counter()
        results.append(search_sparse(view, *queries.row(q), k, scorer="bmp"))
        times[q] = (time.perf_counter() - started) * 1000
    return times, results


def exact(view, queries, k: int, results: list) -> int:
    """Queries whose BMP result differs from the exhaustive scorer's (0 expected)."""
    differing = 0
    for q, (keys, scores) in enumerate(results):
        expected_keys, expected_scores = search_sparse(view, *queries.row(q), k, scorer="exhaustive")
        if not (np.array_equal(keys, expected_keys) and np.array_equal(scores, expected_scores)):
            differing += 1
    return differing


def run(collection: Path, work: Path, limit: int | None, num_queries: int) -> dict:
    _, queries = sample_queries(collection, num_queries)
    total = limit or int(json.loads((collection / "meta.json").read_text())["docs"])
    variants = {}
    for count in (1, 4, 16):
        path = work / f"segments-{count}"
        seconds = build(collection, path, limit, None if count == 1 else -(-total // count))
        variants[f"{count} segment{'s' if count > 1 else ''}"] = (path, seconds)
    deleted = with_deletions(variants["1 segment"][0], work / "deleted-10pct", 0.10, seed=0)
    variants["1 segment, 10% deleted"] = (work / "deleted-10pct", 0.0)
    rows = {}
    for name, (path, seconds) in variants.items():
        with LiveIndex(path, writer="never") as live:
            view = live.refresh()
            row = {"segments": len(view.segments), "live_docs": view.num_docs, "build_seconds": round(seconds, 1)}
            for k in (10, 1000):
                times, results = latencies(view, queries, k)
                row[f"k{k}"] = summary(times)
                row[f"k{k}_not_exact"] = exact(view, queries, k, results)
            rows[name] = row
        print(f"{name:>24}: k=10 {row['k10']['mean_ms']:.3f} ms (p50 {row['k10']['p50_ms']:.3f}, p99 "
              f"{row['k10']['p99_ms']:.2f}), k=1000 {row['k1000']['mean_ms']:.3f} ms; not exact: "
              f"{row['k10_not_exact']} / {row['k1000_not_exact']}", flush=True)
    base = rows["1 segment"]
    for row in rows.values():
        for k in (10, 1000):
            row[f"k{k}_mean_ratio"] = row[f"k{k}"]["mean_ms"] / base[f"k{k}"]["mean_ms"]
            row[f"k{k}_p50_ratio"] = row[f"k{k}"]["p50_ms"] / base[f"k{k}"]["p50_ms"]
    return {"collection": str(collection), "docs": total, "queries": len(queries), "deleted": deleted, "rows": rows}


def markdown(report: dict) -> str:
    lines = [f"# Segments and deletions: safe BMP on {report['docs']:,} documents, {report['queries']} queries",
             "", "One query at a time, one thread, through the multi-segment search; ratios of the mean to one "
             "segment without deletions. Targets: 16 segments <= 1.5x (k = 10), <= 1.3x (k = 1000); "
             "10% deleted <= 1.1x at both.", "",
             "| index | segments | live docs | k=10 mean / p50 / p99 ms | ratio | k=1000 mean / p50 / p99 ms | ratio "
             "| not exact (k=10 / k=1000) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["rows"].items():
        cells = []
        for k in (10, 1000):
            s = r[f"k{k}"]
            cells += [f"{s['mean_ms']:.3f} / {s['p50_ms']:.3f} / {s['p99_ms']:.2f}", f"{r[f'k{k}_mean_ratio']:.2f}x"]
        lines.append(f"| {name} | {r['segments']} | {r['live_docs']:,} | {' | '.join(cells)} | "
                     f"{r['k10_not_exact']} / {r['k1000_not_exact']} |")
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
    report.update(machine=machine_description(),
                  command="python eval/bench_segments.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
