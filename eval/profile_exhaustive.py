"""Where the exhaustive scorer's time goes, one query at a time on one thread.

Times each stage of ``index.scorers.exhaustive`` separately (accumulation, the candidate pass,
the exact rescoring) at k = 10 and k = 1000, and, interleaved query by query so that a machine
whose speed drifts treats them alike: the accumulation over the stored term-major postings
(``_accumulate32``: low 16-bit doc ids chunk by chunk, uint8 impacts, segment format 2) and
over a flat int32/float32 CSR of the same postings held in memory (the layout splade-index
scans, 8 bytes a posting against our 3).

Usage (after ``eval/bench_engines.py`` built the index):
    python eval/profile_exhaustive.py /tmp/lsr-bench-engines/bench-1m-1000000/ours-b8 /tmp/bench-1m \\
        --out eval/results/profile_exhaustive_1m.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

from lsr.eval.bench_collection import sample_queries
from lsr.eval.report import machine_description
from lsr.index.live import open_single_segment
from lsr.index.postings_view import block_view, term_view
from lsr.index.scorers import exhaustive as ex
from lsr.index.scorers.query import canonical_query

KS = (10, 1000)


@njit(cache=True, nogil=True)
def _accumulate_flat(q_terms, q_weights, indptr, docs, values, scores):
    for j in range(q_terms.shape[0]):
        w = np.float32(q_weights[j])
        for p in range(indptr[q_terms[j]], indptr[q_terms[j] + 1]):
            scores[docs[p]] += w * values[p]


def flat_postings(index, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CSR (int64 offsets per term, int32 docs, float32 impacts) of the given terms' postings."""
    counts = np.zeros(index.vocab_size, dtype=np.int64)
    docs, values = [], []
    for term in terms.tolist():
        d, v = index.term_postings(term)
        counts[term] = len(d)
        docs.append(d.astype(np.int32))
        values.append(v.astype(np.float32))
    indptr = np.concatenate([[0], np.cumsum(counts)])
    # term_postings went term by term in increasing order, as indptr expects
    return indptr, np.concatenate(docs), np.concatenate(values)


def stages(index, queries, k: int) -> dict:
    b = index.postings
    terms, blocks = term_view(b), block_view(b)
    sums, maxima = (rows[0] for rows in ex._accumulator(1, b.num_blocks * b.block_size))
    times, candidates = [], []
    for q_terms, q_weights in queries:
        started = time.perf_counter()
        ex._accumulate32(q_terms, q_weights, terms, sums)
        accumulated = time.perf_counter()
        bound = ex._error_bound(q_weights)
        docs, n = ex._collect(sums, maxima, ex.NO_DELETES, k, bound, ex._ceiling(q_weights, bound))
        collected = time.perf_counter()
        ex._rank_exact(docs, n, q_terms, q_weights, blocks, False, k, np.empty(k, np.int64), np.empty(k))
        ranked = time.perf_counter()
        times.append((accumulated - started, collected - accumulated, ranked - collected))
        candidates.append(n)
    mean = np.mean(times[5:], axis=0) * 1e3
    return {"accumulate_ms": mean[0], "candidate_pass_ms": mean[1], "rescore_ms": mean[2],
            "total_ms": float(mean.sum()), "candidates_mean": float(np.mean(candidates))}


def accumulations(index, queries, rounds: int) -> dict:
    b = index.postings
    view = term_view(b)
    sums = np.zeros(b.num_blocks * b.block_size, dtype=np.float32)
    indptr, docs, values = flat_postings(index, np.unique(np.concatenate([t for t, _ in queries])))
    ways = {
        "chunked_low16": lambda t, w: ex._accumulate32(t, w, view, sums),
        "flat_csr_in_memory": lambda t, w: _accumulate_flat(t.astype(np.int64), w, indptr, docs, values, sums),
    }
    spent = {name: [] for name in ways}
    for run in ways.values():  # compile, untimed
        run(*queries[0])
        sums[:] = 0
    for _ in range(rounds):
        for q_terms, q_weights in queries:
            for name, run in ways.items():
                started = time.perf_counter()
                run(q_terms, q_weights)
                spent[name].append(time.perf_counter() - started)
                sums[:] = 0
    return {f"{name}_ms": float(np.mean(values) * 1e3) for name, values in spent.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("collection", type=Path)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    index = open_single_segment(args.index)
    _, batch = sample_queries(args.collection, args.queries)
    queries = [canonical_query(*batch.row(q), index.term_scales) for q in range(len(batch))]
    result = {"index": str(args.index), "queries": len(queries),
              "stages": {str(k): stages(index, queries, k) for k in KS},
              "accumulation_interleaved": accumulations(index, queries, args.rounds),
              "machine": machine_description(),
              "command": "python eval/profile_exhaustive.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
