"""Which block size: safe BMP latency and index size for several block sizes on one BP order.

Builds our index once (BP order, default block size), then rebuilds only its postings arrays
for each other block size from the same term-major postings (the doc order is the same), and
times safe BMP at k = 10 and 1000 on the same sampled queries, single thread.

Usage:
    python eval/bench_block_size.py /tmp/bench-1m --sizes 8,16,32,64 --out eval/results/bench_block_size.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from lsr.eval.bench_collection import build_or_open, load_docs, sample_queries, summary, time_queries, write_json
from lsr.eval.report import machine_description
from lsr.index.bmp_build import build_bmp_arrays
from lsr.index.format import POSTINGS_ARRAY_NAMES, Segment, describe_arrays
from lsr.index.scorers.bmp import bmp_search


def with_block_size(index: Segment, block_size: int, out_dir: Path) -> Segment:
    """A copy of ``index`` (hard links) whose postings arrays use another block size."""
    if (out_dir / "meta.json").is_file():
        return Segment.open(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in index.path.glob("*.npy"):
        if path.stem not in POSTINGS_ARRAY_NAMES:
            os.link(path, out_dir / path.name)
    by_term = index.to_scipy_docs().T.tocsr()
    by_term.sort_indices()
    impacts = by_term.data.astype(np.uint8)
    num_blocks = build_bmp_arrays(by_term.indptr.astype(np.int64), by_term.indices.astype(np.uint32), impacts,
                                  index.num_docs, block_size, out_dir)
    np.save(out_dir / "term_post_impacts.npy", impacts)
    arrays = {**index.meta["arrays"], **describe_arrays(out_dir, POSTINGS_ARRAY_NAMES)}
    meta = dict(index.meta, block_size=block_size, num_blocks=num_blocks, arrays=arrays)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return Segment.open(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", type=Path)
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/lsr-bench-block-size"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    base, _ = build_or_open(load_docs(args.collection), args.work_dir / f"b{sizes[0]}", reorder="bp",
                            block_size=sizes[0])
    _, queries = sample_queries(args.collection, args.queries)
    rows = []
    for size in sizes:
        index = base if size == sizes[0] else with_block_size(base, size, args.work_dir / f"b{size}")
        row = {"block_size": size, "index_mb": index.size_bytes() / 2**20}
        for k in (10, 1000):
            row[f"k{k}"] = summary(time_queries(lambda t, w: bmp_search(index, t, w, k), queries)[0])
        rows.append(row)
        print(f"b={size:>3}  index {row['index_mb']:7.0f} MB  safe BMP k=10 {row['k10']['mean_ms']:.3f} ms  "
              f"k=1000 {row['k1000']['mean_ms']:.3f} ms", flush=True)
    write_json(args.out, {"collection": str(args.collection), "docs": base.num_docs, "queries": len(queries),
                          "block_sizes": rows, "machine": machine_description(),
                          "command": "python eval/bench_block_size.py " + " ".join(sys.argv[1:] if argv is None else argv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
