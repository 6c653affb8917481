"""Where block-max pruning beats the exhaustive scorer: the planner's two thresholds.

Builds our index (BP order) on prefixes of a grown collection, times both exact scorers on the
same sampled queries (single thread, k = 10 and 1000) and reports, per collection size, the
mean latency of each at both k, and the k = 10 latency by query length. The thresholds of
``index/scorers/planner.py`` are the crossovers read off this output: the smallest measured
size where BMP wins at each k, and the query length above which it loses at that size.

Usage:
    python ../shared/tools/make_bench_corpus.py --docs 1000000 --out /tmp/bench-1m
    python eval/bench_planner.py /tmp/bench-1m --sizes 100000,300000,1000000 --out eval/results/bench_planner.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lsr.eval.bench_collection import build_or_open, load_docs, sample_queries, summary, time_queries, write_json
from lsr.eval.report import machine_description
from lsr.index.scorers.bmp import bmp_search
from lsr.index.scorers.exhaustive import search

LENGTH_BUCKETS = (8, 16, 32, 64, 128, 100_000)


def measure(index, queries, k: int) -> dict[str, np.ndarray]:
    return {
        "exhaustive": time_queries(lambda t, w: search(index, t, w, k), queries)[0],
        "bmp": time_queries(lambda t, w: bmp_search(index, t, w, k), queries)[0],
    }


def by_length(latencies: dict, lengths: np.ndarray) -> list[dict]:
    rows, low = [], 0
    for high in LENGTH_BUCKETS:
        mask = (lengths > low) & (lengths <= high)
        if mask.any():
            rows.append({"terms": f"{low + 1}-{high}", "queries": int(mask.sum()),
                         **{name: float(lat[mask].mean()) for name, lat in latencies.items()}})
        low = high
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--block-size", type=int, default=8)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/lsr-bench-planner"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    _, queries = sample_queries(args.collection, args.queries)
    lengths = np.diff(queries.indptr)
    result = {"sizes": [], "command": "python eval/bench_planner.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_description(), "block_size": args.block_size, "queries": len(queries)}
    for size in (int(s) for s in args.sizes.split(",")):
        docs = load_docs(args.collection, size)
        index, _ = build_or_open(docs, args.work_dir / f"{size}-b{args.block_size}", reorder="bp",
                                 block_size=args.block_size)
        row = {"docs": size}
        for k in (10, 1000):
            latencies = measure(index, queries, k)
            row[f"k{k}"] = {name: summary(lat) for name, lat in latencies.items()}
            row[f"k{k}_by_query_terms"] = by_length(latencies, lengths)
        result["sizes"].append(row)
        print(f"{size:>9} docs  k=10 exhaustive {row['k10']['exhaustive']['mean_ms']:.3f} ms  bmp "
              f"{row['k10']['bmp']['mean_ms']:.3f} ms   k=1000 exhaustive {row['k1000']['exhaustive']['mean_ms']:.3f} "
              f"ms  bmp {row['k1000']['bmp']['mean_ms']:.3f} ms")
        for bucket in row["k10_by_query_terms"]:
            print(f"      k=10 {bucket['terms']:>10} terms ({bucket['queries']:>3} q): exhaustive "
                  f"{bucket['exhaustive']:.3f} ms  bmp {bucket['bmp']:.3f} ms")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
