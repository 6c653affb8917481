"""An approximate search tried for issue 13 and not adopted: superblocks first, then blocks.

The approximate target (recall@10 >= 0.99 against float at half of safe BMP's time) is out of
reach of ``max_blocks`` because every query first bounds all 125,000 blocks of the 1M
benchmark (``eval/profile_bmp.py``). This measures the way around it that superblocks suggest
(Carlson et al., SIGIR 2025): bound only superblocks of ``--superblock`` blocks (maxima derived
from the block maxima once per segment), take the best ``S`` superblocks, bound the blocks
inside them alone, and score the best ``B`` of those blocks over the 16-bit impacts (scores
exact). Recall is against safe 16-bit BMP's top 10 (itself 0.9996 against float), on the dev
query sample. One thread, one query at a time; the kernel is this script's own.

Usage:
    python eval/try_superblock_anytime.py /tmp/bench-1m /tmp/lsr-bench-engines/bench-1m-1000000/ours-b8 \\
        --out eval/results/try_superblock_anytime_1m.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

from lsr.eval.bench_collection import sample_queries, write_json
from lsr.eval.report import command_line, machine_description
from lsr.index.live import open_single_segment
from lsr.index.postings_view import find_sorted, score_block_float64
from lsr.index.quantize import FINE_LEVELS
from lsr.index.scorers.bmp import bmp_search, kernel_segment
from lsr.index.scorers.heap import heap_offer
from lsr.index.scorers.query import canonical_query

SETTINGS = ((16, 250), (32, 250), (64, 250), (64, 400), (128, 400), (256, 400))


@njit(cache=True)
def _sparse_superblock_maxima(entry_offsets, entry_blocks, entry_max, dense_slot, size):
    """Per term without a dense row: its superblocks (ascending) and the largest block maximum
    in each, as offsets, ids and maxima."""
    terms = entry_offsets.shape[0] - 1
    offsets = np.zeros(terms + 1, np.int64)
    n = 0
    for t in range(terms):
        offsets[t] = n
        if dense_slot[t] >= 0:
            continue
        last = -1
        for x in range(entry_offsets[t], entry_offsets[t + 1]):
            if entry_blocks[x] // size != last:
                n += 1
                last = entry_blocks[x] // size
    offsets[terms] = n
    ids, maxima = np.empty(n, np.int64), np.zeros(n, np.uint8)
    for t in range(terms):
        if dense_slot[t] >= 0:
            continue
        i, last = offsets[t] - 1, -1
        for x in range(entry_offsets[t], entry_offsets[t + 1]):
            if entry_blocks[x] // size != last:
                i += 1
                last = entry_blocks[x] // size
                ids[i] = last
            maxima[i] = max(maxima[i], entry_max[x])
    return offsets, ids, maxima


@njit(cache=True)
def _search(q_terms, weights, fine_weights, blocks, terms, sb_offsets, sb_ids, sb_maxima, sb_dense, size, top_s,
            budget, k, sb_bounds, block_ids, block_bounds, heap_scores, heap_keys):
    num_blocks = blocks.term_offsets.shape[0] - 1
    sb_bounds[:] = 0
    for j in range(q_terms.shape[0]):
        t = q_terms[j]
        slot = blocks.dense_slot[t]
        if slot >= 0:
            for s in range(sb_bounds.shape[0]):
                sb_bounds[s] += weights[j] * sb_dense[slot, s]
        else:
            for x in range(sb_offsets[t], sb_offsets[t + 1]):
                sb_bounds[sb_ids[x]] += weights[j] * sb_maxima[x]
    best = np.argsort(-sb_bounds)[: min(top_s, sb_bounds.shape[0])]
    n = 0
    for s in best:
        lo, hi = s * size, min((s + 1) * size, num_blocks)
        for b in range(lo, hi):
            block_ids[n + b - lo] = b
            block_bounds[n + b - lo] = 0.0
        for j in range(q_terms.shape[0]):
            t = q_terms[j]
            slot = blocks.dense_slot[t]
            if slot >= 0:
                for b in range(lo, hi):
                    block_bounds[n + b - lo] += weights[j] * blocks.bm_dense[slot, b]
            else:
                x = find_sorted(terms.entry_blocks, terms.entry_offsets[t], terms.entry_offsets[t + 1], lo)
                while x < terms.entry_offsets[t + 1] and terms.entry_blocks[x] < hi:
                    block_bounds[n + terms.entry_blocks[x] - lo] += weights[j] * terms.entry_max[x]
                    x += 1
        n += hi - lo
    order = np.argsort(-block_bounds[:n])
    acc = np.zeros(blocks.block_size, np.float64)
    unknown = np.full(q_terms.shape[0], -1, np.int64)
    no_positions = np.empty(0, np.int16)
    held = 0
    for i in range(min(budget, n)):
        b = block_ids[order[i]]
        score_block_float64(blocks, blocks.post_impacts16, b, q_terms, fine_weights, np.uint16(0), unknown,
                            no_positions, acc)
        for d in range(blocks.block_size):
            if acc[d] > 0:
                held = heap_offer(heap_scores, heap_keys, held, k, acc[d], b * blocks.block_size + d)
            acc[d] = 0.0
    return held


def run(collection: Path, index_dir: Path, num_queries: int, seed: int, size: int, k: int) -> dict:
    index = open_single_segment(index_dir)
    view = kernel_segment(index)
    blocks, terms = view.blocks, view.terms
    num_blocks = blocks.term_offsets.shape[0] - 1
    started = time.perf_counter()
    sb_offsets, sb_ids, sb_maxima = _sparse_superblock_maxima(terms.entry_offsets, terms.entry_blocks,
                                                              terms.entry_max, blocks.dense_slot, size)
    num_sb = -(-num_blocks // size)
    dense = np.asarray(blocks.bm_dense)
    sb_dense = np.pad(dense, ((0, 0), (0, num_sb * size - num_blocks))).reshape(len(dense), num_sb, size).max(axis=2)
    derive_seconds = time.perf_counter() - started
    _, queries = sample_queries(collection, num_queries, seed=seed)
    canonical = [canonical_query(*queries.row(q), index.term_scales) for q in range(len(queries))]
    safe = [set(bmp_search(index, *queries.row(q), k, precision="16-bit")[0].tolist()) for q in range(len(queries))]
    sb_bounds, block_ids = np.empty(num_sb, np.float32), np.empty(num_blocks, np.int64)
    block_bounds = np.empty(num_blocks, np.float32)
    rows = []
    for top_s, budget in SETTINGS:
        latencies, recalls = [], []
        for q in range(-1, len(queries)):  # query 0 once untimed first (compilation)
            t, w = canonical[max(q, 0)]
            t, w = t.astype(np.uint32), w.astype(np.float32)
            heap_scores, heap_keys = np.zeros(k), np.full(k, -1, np.int64)
            began = time.perf_counter()
            held = _search(t, w, w.astype(np.float64) / FINE_LEVELS, blocks, terms, sb_offsets, sb_ids, sb_maxima,
                           sb_dense, size, top_s, budget, k, sb_bounds, block_ids, block_bounds, heap_scores,
                           heap_keys)
            if q >= 0:
                latencies.append((time.perf_counter() - began) * 1e3)
                recalls.append(len(set(heap_keys[:held].tolist()) & safe[q]) / max(len(safe[q]), 1))
        rows.append({"superblocks": top_s, "max_blocks": budget, "mean_ms": float(np.mean(latencies)),
                     "recall_vs_safe_16bit": float(np.mean(recalls))})
        print(rows[-1], flush=True)
    safe_ms = []
    for q in range(len(queries)):
        began = time.perf_counter()
        bmp_search(index, *queries.row(q), k, precision="16-bit")
        safe_ms.append((time.perf_counter() - began) * 1e3)
    return {"collection": str(collection), "index": str(index_dir), "queries": len(queries), "query_seed": seed,
            "k": k, "superblock_blocks": size, "superblocks": num_sb, "derive_seconds": derive_seconds,
            "derived_mb": (sb_ids.nbytes + sb_maxima.nbytes + sb_dense.nbytes) / 1e6,
            "safe_16bit_mean_ms": float(np.mean(safe_ms)), "settings": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("collection", type=Path)
    parser.add_argument("index", type=Path)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--query-seed", type=int, default=1, help="query sample (1: the dev sample)")
    parser.add_argument("--superblock", type=int, default=64, help="blocks per superblock")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = run(args.collection, args.index, args.queries, args.query_seed, args.superblock, args.k)
    report["machine"] = machine_description()
    report["command"] = command_line("try_superblock_anytime.py", argv)
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
