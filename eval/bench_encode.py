"""Encoding throughput: our `SpladeEncoder` against sentence-transformers' `SparseEncoder`.

Same bundled model, same texts (SciFact documents, title + text), same batch size and max
length, same process and threads; each encoder is warmed up, then timed ``--repeats`` times
in alternation and the median is kept. Also checks that both give the same vectors.

Usage:
    python eval/bench_encode.py --docs 512 --out eval/results/bench_encode.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lsr.eval.report import machine_description
from lsr.data.datasets import resolve_dataset
from lsr.encoders.models import bundled_splade_path
from lsr.encoders.splade import SpladeEncoder


def load_texts(dataset: str, count: int) -> list[str]:
    docs = itertools.islice(resolve_dataset(dataset).iter_documents(), count)
    return [doc.full_text() for doc in docs]


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="beir/scifact/test")
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from sentence_transformers import SparseEncoder

    texts = load_texts(args.dataset, args.docs)
    ours = SpladeEncoder(batch_size=args.batch_size, doc_max_length=args.max_length)
    theirs = SparseEncoder(str(bundled_splade_path()), device="cpu")
    theirs.max_seq_length = args.max_length

    def run_ours():
        return ours.encode_documents(texts)

    def run_theirs():
        return theirs.encode(texts, batch_size=args.batch_size, convert_to_tensor=True)

    run_ours(), run_theirs()  # warm-up
    times = {"lsr SpladeEncoder": [], "sentence-transformers SparseEncoder": []}
    for _ in range(args.repeats):
        seconds, ours_vectors = timed(run_ours)
        times["lsr SpladeEncoder"].append(seconds)
        seconds, theirs_vectors = timed(run_theirs)
        times["sentence-transformers SparseEncoder"].append(seconds)

    max_abs_diff = float(np.abs(ours_vectors.to_scipy().toarray() - theirs_vectors.to_dense().numpy()).max())
    rates = {name: len(texts) / statistics.median(t) for name, t in times.items()}
    ratio = rates["lsr SpladeEncoder"] / rates["sentence-transformers SparseEncoder"]
    result = {
        "passages_per_second": rates,
        "ratio_ours_over_sentence_transformers": ratio,
        "max_abs_vector_difference": max_abs_diff,
        "seconds": times,
        "texts": len(texts),
        "dataset": args.dataset,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "torch_threads": torch.get_num_threads(),
        "machine": machine_description(),
        "command": "python eval/bench_encode.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    for name, rate in rates.items():
        print(f"{name:<40} {rate:8.1f} passages/s")
    print(f"ratio (ours / sentence-transformers): {ratio:.2f}x; max |difference| {max_abs_diff:.2e}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
