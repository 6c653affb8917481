"""Document encoding throughput by layout: processes x torch threads, on this machine's CPUs.

    python eval/bench_encode_layout.py --docs 192 --out eval/results/bench_encode_layout

Why: `lsr index` encodes in one process with every CPU as a torch thread; `lsr index --ray`
runs one encoder actor per CPU with one thread each. Which layout encodes faster decides what
Ray's actors can gain or lose before any of Ray's own overhead. Each layout runs fresh child
processes (the bundled SPLADE model, the first ``--docs`` SciFact documents, title and text as
`lsr index` joins them); a child loads the model, encodes one warm-up batch, then times
encoding all its documents (wall and its own CPU time). Layouts run ``--rounds`` times,
interleaved, because this machine's speed drifts within minutes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lsr.eval.report import publish


def scifact_texts(docs: int) -> list[str]:
    from lsr.data.datasets import data_dir
    from lsr.data.loaders import Document

    texts = []
    with gzip.open(data_dir() / "beir" / "scifact" / "corpus.jsonl.gz", "rt") as handle:
        for _, line in zip(range(docs), handle):
            row = json.loads(line)
            texts.append(Document(str(row["_id"]), row.get("title") or "", row.get("text") or "").full_text())
    return texts


def child(docs: int, threads: int) -> None:
    """Encode ``docs`` documents with ``threads`` torch threads; print one JSON line."""
    import torch

    torch.set_num_threads(threads)
    from lsr.encoders.loading import load_encoder

    encoder, texts = load_encoder(None), scifact_texts(docs)
    encoder.encode_documents(texts[: encoder.batch_size])  # warm-up: first-call allocations
    started, cpu = time.perf_counter(), time.process_time()
    encoder.encode_documents(texts)
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}))


def run_layout(docs: int, processes: int, threads: int) -> dict:
    """``processes`` children at once, each encoding the same ``docs`` documents."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    children = [subprocess.Popen([sys.executable, "-m", "lsr.eval.bench_encode_layout", "--child", str(docs), str(threads)],
                                 stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    results = []
    for process in children:
        out, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"an encoding child failed (exit code {process.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    seconds = max(r["seconds"] for r in results)
    return {"processes": processes, "threads": threads, "docs_per_second": processes * docs / seconds,
            "cpu_seconds_per_doc": sum(r["cpu_seconds"] for r in results) / (processes * docs),
            "children": results}


def layouts(cpus: int) -> list[tuple[int, int]]:
    """One process with every CPU, one process per CPU, and one process with one thread."""
    return list(dict.fromkeys([(1, cpus), (cpus, 1), (1, 1)]))


def markdown(report: dict) -> str:
    lines = ["# Encoding throughput by layout (processes x torch threads)", "",
             f"The first {report['docs']} SciFact documents, bundled SPLADE model, encoded by each child after "
             f"loading the model and one warm-up batch; {report['rounds']} round(s), layouts interleaved.", "",
             "| processes x threads | docs/s (each round) | CPU-s a document (each round) |", "|---|---|---|"]
    for name, runs in report["layouts"].items():
        rates = " / ".join(f"{run['docs_per_second']:.2f}" for run in runs)
        costs = " / ".join(f"{run['cpu_seconds_per_doc']:.3f}" for run in runs)
        lines.append(f"| {name} | {rates} | {costs} |")
    lines += ["", f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs  ",
              f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, type=int, metavar=("DOCS", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.docs < 1 or args.rounds < 1:
        parser.error("--docs and --rounds must be at least 1")
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for processes, threads in layouts(os.cpu_count() or 1):
            run = run_layout(args.docs, processes, threads)
            results.setdefault(f"{processes} x {threads}", []).append(run)
            print(f"{processes} x {threads}: {run['docs_per_second']:.2f} docs/s", flush=True)
    publish({"docs": args.docs, "rounds": args.rounds, "layouts": results}, markdown, "bench_encode_layout.py",
            argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
