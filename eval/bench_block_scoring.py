"""How to find a query's terms in a block: a binary search per query term, or one pass over the
block's entries (``index.postings_view.score_block_float64``), by query length.

For every sampled query, at k = 10 and k = 1000, the blocks a safe BMP search scores (bound at
or above the final k-th score) are scored in bound order both ways, single thread, with the
presence masks the bounds pass makes (so the searches skip what BMP's searches skip), and the
two times are summed per query-length bucket. The length past which the pass is faster is
``SCAN_MIN_TERMS``. Run on the dev query sample (``--query-seed 1``, the default here), as
every choice is.

Usage:
    python eval/bench_block_scoring.py /tmp/bench-1m /tmp/lsr-bench-engines/bench-1m-1000000/ours-b8 \\
        --out eval/results/bench_block_scoring_1m
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

from lsr.eval.bench_collection import sample_queries
from lsr.eval.report import publish
from lsr.index.live import open_single_segment
from lsr.index.postings_view import MAX_POSITION, SCAN_MIN_TERMS, query_positions, score_block_float64
from lsr.index.scorers.bmp import _upper_bounds, bmp_search, kernel_segment
from lsr.index.scorers.query import canonical_query

NEVER = MAX_POSITION  # a minimum no query exceeds
BUCKETS = ((0, 12), (12, 16), (16, 20), (20, 24), (24, 28), (28, 32), (32, 48), (48, 1000))


@njit(cache=True, nogil=True)
def _score_blocks(view, blocks, q_terms, weights, sparse_mask, sparse_bits, positions):
    """Score ``blocks`` in the given order as BMP does (8-bit impacts); a checksum of the sums."""
    acc = np.zeros(256, dtype=np.float64)
    total = 0.0
    for block in blocks:
        score_block_float64(view, view.post_impacts, block, q_terms, weights, sparse_mask[block], sparse_bits,
                            positions, acc)
        for d in range(view.block_size):
            total += acc[d]
            acc[d] = 0.0
    return total


def run(collection: Path, index_dir: Path, num_queries: int, seed: int, rounds: int) -> dict:
    index = open_single_segment(index_dir)
    view = kernel_segment(index)
    num_blocks = view.blocks.term_offsets.shape[0] - 1
    ub, mask = np.empty(num_blocks, np.float32), np.empty(num_blocks, np.uint16)
    _, queries = sample_queries(collection, num_queries, seed=seed)
    report = {"collection": str(collection), "index": str(index_dir), "docs": index.num_docs,
              "queries": len(queries), "query_seed": seed, "rounds": rounds, "scan_min_terms": SCAN_MIN_TERMS,
              "k": {}}
    for k in (10, 1000):
        rows = {bucket: {"queries": 0, "blocks": 0, "search_ms": 0.0, "pass_ms": 0.0} for bucket in BUCKETS}
        for q in range(len(queries)):
            docs, scores = bmp_search(index, *queries.row(q), k)
            if len(docs) == 0:
                continue
            terms, weights = canonical_query(*queries.row(q), index.term_scales)
            terms, weights = terms.astype(np.uint32), weights.astype(np.float32)
            bits = np.empty(len(terms), np.int64)
            _upper_bounds(terms, weights, view, ub, mask, bits, 0.0)
            must = np.flatnonzero(ub.astype(np.float64) >= scores[-1])  # as eval/profile_bmp.py counts them
            blocks = must[np.argsort(-ub[must], kind="stable")]
            times = {}
            # every query both ways, whatever its length: searches (min NEVER), then a pass (min -1)
            for name, min_terms in (("search_ms", NEVER), ("pass_ms", -1)):
                positions = query_positions(terms, index.vocab_size, min_terms)
                best = np.inf
                for _ in range(rounds):
                    started = time.perf_counter()
                    _score_blocks(view.blocks, blocks, terms, weights, mask, bits, positions)
                    best = min(best, time.perf_counter() - started)
                times[name] = best * 1e3
            bucket = next(b for b in BUCKETS if b[0] < len(terms) <= b[1])
            row = rows[bucket]
            row["queries"] += 1
            row["blocks"] += len(blocks)
            row["search_ms"] += times["search_ms"]
            row["pass_ms"] += times["pass_ms"]
        report["k"][str(k)] = [
            {"terms": f"{lo + 1}-{hi}", "queries": r["queries"], "blocks_mean": r["blocks"] / r["queries"],
             "search_ms_mean": r["search_ms"] / r["queries"], "pass_ms_mean": r["pass_ms"] / r["queries"],
             "pass_over_search": r["pass_ms"] / r["search_ms"] if r["search_ms"] else None}
            for (lo, hi), r in rows.items() if r["queries"]]
    return report


def markdown(report: dict) -> str:
    lines = [f"# Finding query terms in a block: a search per term or one pass ({report['docs']:,} docs, "
             f"{report['queries']} dev queries (seed {report['query_seed']}), one thread)", "",
             "Blocks a safe BMP search scores, in bound order, scored both ways; mean per query, best of "
             f"{report['rounds']} rounds. `SCAN_MIN_TERMS` = {report['scan_min_terms']}: longer queries use "
             "the pass.", ""]
    for k, rows in report["k"].items():
        lines += [f"## k = {k}", "", "| query terms | queries | blocks | search ms | pass ms | pass / search |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['terms']} | {r['queries']} | {r['blocks_mean']:.0f} | {r['search_ms_mean']:.3f} | "
                  f"{r['pass_ms_mean']:.3f} | {r['pass_over_search']:.2f} |" for r in rows]
        lines.append("")
    machine = report["machine"]
    lines += [f"Machine: {machine['platform']}, {machine['cpus']} CPUs.", f"Command: `{report['command']}`"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("collection", type=Path)
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--query-seed", type=int, default=1, help="query sample (1: the dev sample)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    publish(run(args.collection, args.index, args.queries, args.query_seed, args.rounds), markdown,
            "bench_block_scoring.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
