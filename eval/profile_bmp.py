"""Where a BMP query's time goes, and how much of it an approximate search can save.

On a built index and its grown collection (``make_bench_corpus.py`` output; the index made by
`eval/bench_engines.py`), single thread, k = 10 by default:

- the *fixed cost* of a query: `bmp_search` with ``max_blocks=1`` (bounds of every block, the
  candidate pass and sort, one block scored, the Python wrapper). The rest of a search's time
  is scoring blocks;
- per setting (safe, ``alpha`` values, ``max_blocks`` budgets): mean latency, the part above
  the fixed cost, recall@10 against the exact float reference and against safe BMP, and the
  ratio of its scoring time to safe BMP's (what the latency ratio would be with no fixed cost);
- per query, from the block bounds: how many blocks a safe search must score (bound >= the
  final k-th score, so it cannot stop before), and how many of those come, in visiting order,
  before the block of the last top-k doc (after that block, the safe search only proves);
- where a safe query's time goes at the median and in the slowest 1%: fixed cost, scoring,
  and the blocks such queries must score;
- per approximate setting, the largest fixed cost that would let it run in half of safe
  search's time (``F + a <= (F + s) / 2`` for scoring times ``a`` and ``s``: ``F <= s - 2a``).

``--precision 16-bit`` runs the approximate settings (and a second safe row) over the 16-bit
impacts; the baseline stays safe 8-bit search. ``--query-seed`` draws another query sample:
seed 1 is the dev sample the budgets are chosen on, seed 0 (the default) the one reported.

Usage:
    python eval/profile_bmp.py /tmp/bench-1m /tmp/lsr-bench-engines/bench-1m-1000000/ours-b8 \\
        --out eval/results/profile_bmp_1m.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lsr.eval.bench_collection import doc_order, load_docs, sample_queries, time_queries, write_json
from lsr.eval.bench_engines import exact_float_reference, recall
from lsr.eval.report import machine_description
from lsr.index.format import Segment
from lsr.index.live import open_single_segment
from lsr.index.scorers.bmp import block_upper_bounds, bmp_search
from lsr.index.scorers.query import canonical_query
from lsr.index.sparse_batch import SparseBatch

ALPHAS = (0.99, 0.97, 0.95, 0.9)
BUDGETS = (2000, 1000, 500, 300, 250, 100)


def must_score_profile(index: Segment, queries: SparseBatch, k: int) -> tuple[np.ndarray, dict]:
    """The must-score count of every query (-1 where fewer than k docs match), and a summary:
    blocks a safe search must score, and how many of them it visits before its last hit."""
    p = index.postings
    must, until_last_hit = [], []
    per_query = np.full(len(queries), -1, dtype=np.int64)
    for q in range(len(queries)):
        docs, scores = bmp_search(index, *queries.row(q), k)
        if len(docs) < k:
            continue
        terms, weights = canonical_query(*queries.row(q), index.term_scales)
        bound = block_upper_bounds(index, terms, weights).astype(np.float64)
        needed = bound >= scores[-1]
        hit_blocks = np.unique(docs // p.block_size)
        must.append(int(needed.sum()))
        per_query[q] = must[-1]
        # visiting order is by bound, best first: blocks visited no later than the weakest hit block
        until_last_hit.append(int((needed & (bound >= bound[hit_blocks].min())).sum()))
    must, until_last_hit = np.array(must), np.array(until_last_hit)
    return per_query, {
        "queries": int(len(must)),
        "must_score_mean": float(must.mean()), "must_score_p50": float(np.median(must)),
        "must_score_p99": float(np.percentile(must, 99)),
        "before_last_hit_mean": float(until_last_hit.mean()),
        "before_last_hit_p50": float(np.median(until_last_hit)),
        "share_after_last_hit": float(1 - until_last_hit.sum() / max(must.sum(), 1)),
    }


def where_time_goes(safe: np.ndarray, fixed: np.ndarray, must: np.ndarray) -> dict:
    """Safe latency split into the fixed cost (the same query with a budget of one block) and
    the rest (scoring blocks), for the queries around the median safe latency (45th to 55th
    percentile) and for the slowest 1%, with the blocks those queries must score."""
    groups = {"p50": (safe >= np.percentile(safe, 45)) & (safe <= np.percentile(safe, 55)),
              "p99": safe >= np.percentile(safe, 99)}
    out = {}
    for name, chosen in groups.items():
        known = chosen & (must >= 0)
        out[name] = {"queries": int(chosen.sum()), "safe_ms": float(safe[chosen].mean()),
                     "fixed_ms": float(fixed[chosen].mean()), "scoring_ms": float((safe - fixed)[chosen].mean()),
                     "must_score_blocks": float(must[known].mean()) if known.any() else None}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--precision", choices=["8-bit", "16-bit"], default="8-bit",
                        help="impacts the approximate settings score (safe 8-bit stays the baseline)")
    parser.add_argument("--query-seed", type=int, default=0, help="query sample (1: the dev sample)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    index = open_single_segment(args.index)
    _, queries = sample_queries(args.collection, args.queries, seed=args.query_seed)
    float_docs = SparseBatch.from_scipy(load_docs(args.collection).to_scipy()[doc_order(index)])
    reference = exact_float_reference(float_docs, queries, args.k)
    del float_docs

    approximate = {f"alpha={a}": {"alpha": a} for a in ALPHAS} | {f"max_blocks={b}": {"max_blocks": b} for b in BUDGETS}
    if args.precision == "16-bit":
        approximate = {"safe 16-bit": {}} | {f"{name} 16-bit": options for name, options in approximate.items()}
        approximate = {name: {**options, "precision": "16-bit"} for name, options in approximate.items()}
    settings = {"safe": {}, **approximate}
    for q in range(len(queries)):  # one untimed pass: the index pages and the kernels start warm
        bmp_search(index, *queries.row(q), args.k)
    fixed, _ = time_queries(lambda t, w: bmp_search(index, t, w, args.k, max_blocks=1), queries)
    rows, safe = {}, None  # "safe" runs first: the others are compared with it
    safe_latencies = None
    for name, options in settings.items():
        latencies, results = time_queries(lambda t, w, o=options: bmp_search(index, t, w, args.k, **o), queries)
        docs = [r[0] for r in results]
        mean, scoring = latencies.mean(), latencies.mean() - fixed.mean()
        if safe is None:
            safe = {"docs": docs, "mean": mean, "scoring": scoring}
            safe_latencies = latencies
        rows[name] = {"mean_ms": float(mean), "scoring_ms": float(scoring),
                      "recall_float": recall(docs, reference, args.k), "recall_safe": recall(docs, safe["docs"], args.k),
                      "latency_ratio_to_safe": float(mean / safe["mean"]),
                      "scoring_ratio_to_safe": float(scoring / safe["scoring"]),
                      "fixed_ms_allowing_half_of_safe": float(max(0.0, safe["scoring"] - 2 * scoring))}
        print(f"{name:>16}: {mean:.3f} ms (scoring {scoring:.3f}), R@{args.k} float "
              f"{rows[name]['recall_float']:.4f}, x safe {rows[name]['latency_ratio_to_safe']:.3f}, "
              f"scoring x safe {rows[name]['scoring_ratio_to_safe']:.3f}", flush=True)
    must_per_query, blocks = must_score_profile(index, queries, args.k)
    result = {
        "collection": str(args.collection), "index": str(args.index), "docs": index.num_docs,
        "queries": len(queries), "k": args.k,
        "fixed_ms": {"mean": float(fixed.mean()), "p50": float(np.median(fixed))},
        "settings": rows, "blocks": blocks,
        "where_time_goes": where_time_goes(safe_latencies, fixed, must_per_query),
        "machine": machine_description(),
        "command": "python eval/profile_bmp.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    print(f"fixed cost {result['fixed_ms']['mean']:.3f} ms mean; blocks {result['blocks']}")
    print(f"where a safe query's time goes: {result['where_time_goes']}")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
