"""Which 8-bit code loses least against exact float scoring: the measurement behind the default.

On a grown collection and sampled queries, each candidate code quantises the doc weights and
dequantises them back; recall@10 and recall@1000 of exact search over those values are
measured against exact search over the float weights (scipy, float64). Candidates: one global
linear scale (max, and high quantiles with clipping), a power and a log code, per-term linear
scales, and 16-bit linear for reference.

Usage:
    python eval/bench_quantization.py /tmp/bench-100k --out eval/results/quantization.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.eval.bench_collection import load_docs, sample_queries, write_json
from lsr.eval.report import machine_description


def linear(values, scale, levels=255):
    return np.clip(np.rint(values / scale), 0, levels) * scale


def candidates(docs: sp.csr_matrix) -> dict:
    values, top = docs.data.astype(np.float64), float(docs.data.max())
    term_max = np.asarray(docs.max(axis=0).todense()).ravel()[docs.indices]
    log_range = np.log1p(top)
    return {
        "global linear (max -> 255)": linear(values, top / 255),
        "global linear (99.99th percentile -> 255, clipped)": linear(values, np.quantile(values, 0.9999) / 255),
        "global linear (99.9th percentile -> 255, clipped)": linear(values, np.quantile(values, 0.999) / 255),
        "global power 0.5": (np.rint(np.sqrt(values / top) * 255) / 255) ** 2 * top,
        "global log": np.expm1(np.rint(np.log1p(values) / log_range * 255) / 255 * log_range),
        "per-term linear (term max -> 255)": linear(values, term_max / 255),
        "global linear 16-bit": linear(values, top / 65535, 65535),
    }


def top_sets(queries: sp.csr_matrix, docs_t: sp.csr_matrix, k: int) -> list[set]:
    scores = (queries @ docs_t).toarray()
    out = []
    for row in scores:
        best = np.argsort(-row, kind="stable")[:k]
        out.append(set(best[row[best] > 0].tolist()))
    return out


def recall(reference: list[set], found: list[set]) -> float:
    return float(np.mean([len(r & f) / max(len(r), 1) for r, f in zip(reference, found)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    docs = load_docs(args.collection).to_scipy().astype(np.float64)
    _, queries = sample_queries(args.collection, args.queries)
    q = queries.to_scipy().astype(np.float64)
    reference = {k: top_sets(q, docs.T.tocsr(), k) for k in (10, 1000)}
    rows = {}
    for name, values in candidates(docs).items():
        coded = docs.copy()
        coded.data = values
        zeroed = float(np.mean(values == 0))
        rows[name] = {f"recall@{k}": recall(reference[k], top_sets(q, coded.T.tocsr(), k)) for k in (10, 1000)}
        rows[name]["postings_zeroed"] = zeroed
        print(f"{name:<55} recall@10 {rows[name]['recall@10']:.4f}  recall@1000 {rows[name]['recall@1000']:.4f}"
              f"  zeroed {zeroed:.2%}")
    write_json(args.out, {
        "collection": str(args.collection), "docs": docs.shape[0], "queries": q.shape[0], "codes": rows,
        "machine": machine_description(),
        "command": "python eval/bench_quantization.py " + " ".join(sys.argv[1:] if argv is None else argv),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
