"""Query encoding one query at a time: PyTorch against ONNX Runtime (float and int8), sparse and dense.

    python eval/bench_query_encode.py INDEX_DIR [--dataset beir/scifact/test] [--rounds 3] [--out eval/results/query_encode_scifact]

INDEX_DIR: an index with a dense part (``lsr index beir/scifact/test --dense``); its recorded
models are the ones timed, and its search gives each backend's effectiveness (nDCG@10, R@100 over
the dataset's judged queries) so the cost of int8 weights is measured, not guessed.

Each query is encoded alone (a batch of one, as the service does), torch and ONNX Runtime on one
thread. Rounds alternate the backends' order so drift hits all alike; latencies are over all
queries of all rounds. The ONNX graphs are exported into the cache first if missing (not timed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lsr.eval.report import publish

BACKENDS = ("torch", "onnx", "onnx-int8")


def run(index_dir: Path, dataset: str, rounds: int) -> dict:
    import torch

    from lsr.index.commit import read_newest_commit
    from lsr.index.live import LiveIndex
    from lsr.data.datasets import resolve_dataset
    from lsr.encoders.dense import DenseEncoder
    from lsr.encoders.loading import load_encoder
    from lsr.encoders.onnx_queries import with_dense_query_backend, with_sparse_query_backend
    from lsr.evaluation import encode_latencies_ms, retrieve
    from lsr.hybrid import retrieve_dense
    from lsr.metrics import evaluate

    torch.set_num_threads(1)
    settings = read_newest_commit(index_dir).settings
    recorded = settings["meta"]["encoder"]
    if settings["build"].get("dense") is None:
        raise ValueError(f"{index_dir} has no dense part: build it with lsr index ... --dense")
    sparse = load_encoder(recorded["model"], query_max_length=recorded["query_max_length"],
                          doc_max_length=recorded["doc_max_length"])
    dense = DenseEncoder(settings["build"]["dense"]["model"])
    encoders = {"sparse": {b: with_sparse_query_backend(sparse, b, threads=1) for b in BACKENDS},
                "dense": {b: with_dense_query_backend(dense, b, threads=1) for b in BACKENDS}}
    data = resolve_dataset(dataset)
    qrels = data.qrels()
    queries = {qid: text for qid, text in data.queries().items() if qid in qrels}
    texts = list(queries.values())

    latencies = {side: {b: [] for b in BACKENDS} for side in encoders}
    for round_number in range(rounds):
        order = BACKENDS[round_number % 3:] + BACKENDS[:round_number % 3]
        for side in encoders:
            for backend in order:
                latencies[side][backend].append(encode_latencies_ms(encoders[side][backend].encode_queries, texts))

    result = {"dataset": dataset, "queries": len(texts), "rounds": rounds, "index_dir": str(index_dir),
              "models": {"sparse": recorded["model"], "dense": dense.model_name}, "sides": {}}
    with LiveIndex(index_dir, writer="never") as index:
        for side in encoders:
            reference = _vectors(side, encoders[side]["torch"], texts)
            rows = {}
            for backend in BACKENDS:
                times = np.concatenate(latencies[side][backend])
                if side == "sparse":
                    run_, _, _ = retrieve(encoders[side][backend], index, queries, 100)
                else:
                    run_ = retrieve_dense(encoders[side][backend], index, queries, 100)["run"]
                metrics = evaluate(run_, qrels)
                rows[backend] = {"p50_ms": float(np.percentile(times, 50)), "mean_ms": float(times.mean()),
                                 "p99_ms": float(np.percentile(times, 99)),
                                 "max_abs_difference": float(np.abs(_vectors(side, encoders[side][backend], texts)
                                                                    - reference).max()),
                                 "ndcg@10": metrics["nDCG@10"], "recall@100": metrics["Recall@100"]}
            for backend in BACKENDS[1:]:
                rows[backend]["speedup_p50"] = rows["torch"]["p50_ms"] / rows[backend]["p50_ms"]
            result["sides"][side] = rows
    onnx = [result["sides"][side]["onnx"] for side in encoders]
    result["acceptance"] = {
        "onnx at least 2x faster than torch (p50), sparse and dense": all(r["speedup_p50"] >= 2 for r in onnx),
        "onnx vectors equal torch within 1e-4": all(r["max_abs_difference"] <= 1e-4 for r in onnx),
    }
    return result


def _vectors(side: str, encoder, texts: list[str]) -> np.ndarray:
    if side == "sparse":
        return encoder.encode_queries(texts).to_scipy().toarray()
    return encoder.encode_queries(texts)


def markdown(result: dict) -> str:
    lines = [f"# Query encoding, one query at a time ({result['dataset']}, {result['queries']} queries x "
             f"{result['rounds']} rounds, one thread)", "",
             f"Models: sparse `{result['models']['sparse']}`, dense `{result['models']['dense']}`. Effectiveness: "
             "the index's search with each backend's query vectors.", "",
             "| side | backend | p50 ms | mean ms | p99 ms | speed-up (p50) | max abs difference | nDCG@10 | R@100 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for side, rows in result["sides"].items():
        for backend, row in rows.items():
            speedup = f"{row['speedup_p50']:.2f}x" if "speedup_p50" in row else "-"
            lines.append(f"| {side} | {backend} | {row['p50_ms']:.3f} | {row['mean_ms']:.3f} | {row['p99_ms']:.3f} | "
                         f"{speedup} | {row['max_abs_difference']:.1e} | {row['ndcg@10']:.4f} | {row['recall@100']:.4f} |")
    lines += ["", "Acceptance (issue 13):", ""]
    lines += [f"- {name}: {'met' if met else 'NOT met'}" for name, met in result["acceptance"].items()]
    lines += ["", f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} CPUs.",
              f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("--dataset", default="beir/scifact/test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    publish(run(args.index, args.dataset, args.rounds), markdown, "bench_query_encode.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
