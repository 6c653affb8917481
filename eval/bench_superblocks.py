"""Safe BMP by superblock size: what sets `index.postings_view.SUPERBLOCK_BLOCKS`.

    python eval/bench_superblocks.py /tmp/bench-1m /tmp/lsr-bench-engines/bench-1m-1000000/ours-b8 \\
        [--queries 500] [--sizes 1,16,32,64,128,256] [--rounds 3] [--out eval/results/bench_superblocks_1m]

On a built index and its grown collection (the benchmark queries, a dev choice: no test set is
involved), one thread, safe search (exact) at k = 10 and k = 1000. A superblock of one block is
plain BMP's order: every block's bound summed for every query term, all blocks above the seed
sorted best first. Rounds rotate the sizes' order so drift hits all alike; each size's results
are checked equal to the first size's (all are exact).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from eval.bench_collection import sample_queries, time_queries
from eval.report import publish
from index.live import open_single_segment
from index.postings_view import SUPERBLOCK_BLOCKS, make_block_view
from index.search import search_sparse, single_segment_view

KS = (10, 1000)


def run(collection: Path, index_dir: Path, num_queries: int, sizes: list[int], rounds: int) -> dict:
    index = open_single_segment(index_dir)
    _, queries = sample_queries(collection, num_queries)
    views = {}
    for size in sizes:  # each view keeps the kernel segments made from its own block view
        index.postings._block_view = make_block_view(index.postings, size)
        views[size] = single_segment_view(index)
        views[size].kernel_groups()
    latencies = {(size, k): [] for size in sizes for k in KS}
    first_results = {}
    for round_number in range(rounds):
        shift = round_number % len(sizes)
        for size in sizes[shift:] + sizes[:shift]:
            for k in KS:
                times, results = time_queries(lambda t, w: search_sparse(views[size], t, w, k, "bmp"), queries)
                latencies[size, k].append(times)
                ids = [r[0].tolist() for r in results]
                if first_results.setdefault(k, ids) != ids:
                    raise AssertionError(f"superblocks of {size} blocks changed a safe result at k={k}")
    rows = []
    for size in sizes:
        row = {"superblock_blocks": size}
        for k in KS:
            times = np.concatenate(latencies[size, k])
            row[f"k{k}"] = {"mean_ms": float(times.mean()), "p50_ms": float(np.percentile(times, 50)),
                            "p99_ms": float(np.percentile(times, 99))}
        rows.append(row)
    base = next((r for r in rows if r["superblock_blocks"] == 1), rows[0])
    for row in rows:
        for k in KS:
            row[f"k{k}"]["mean_ratio_to_plain"] = row[f"k{k}"]["mean_ms"] / base[f"k{k}"]["mean_ms"]
    return {"collection": str(collection), "index": str(index_dir), "docs": int(index.num_docs),
            "blocks": int(index.postings.num_blocks), "queries": len(queries), "rounds": rounds,
            "default_superblock_blocks": SUPERBLOCK_BLOCKS, "rows": rows}


def markdown(result: dict) -> str:
    lines = [f"# Safe BMP by superblock size ({result['docs']:,} docs, {result['blocks']:,} blocks, "
             f"{result['queries']} queries x {result['rounds']} rounds, one thread)", "",
             "A superblock of 1 block is plain BMP (every block's bound, all blocks above the seed sorted).", "",
             "| blocks per superblock | k=10 mean / p50 / p99 ms | vs plain | k=1000 mean / p50 / p99 ms | vs plain |",
             "|---|---|---|---|---|"]
    for row in result["rows"]:
        cells = []
        for k in KS:
            r = row[f"k{k}"]
            cells += [f"{r['mean_ms']:.3f} / {r['p50_ms']:.3f} / {r['p99_ms']:.3f}", f"{r['mean_ratio_to_plain']:.2f}x"]
        lines.append(f"| {row['superblock_blocks']} | " + " | ".join(cells) + " |")
    lines += ["", f"Default: {result['default_superblock_blocks']} blocks.", "",
              f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs.",
              f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("collection", type=Path)
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--sizes", default="1,16,32,64,128,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    publish(run(args.collection, args.index, args.queries, sizes, args.rounds), markdown, "bench_superblocks.py",
            argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
