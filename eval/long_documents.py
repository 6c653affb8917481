"""Long documents: the bundled SPLADE with document token limits of 256, 512 and 1024.

    python eval/long_documents.py [--datasets beir/scifact/test beir/nfcorpus/test]
        [--lengths 256 512 1024] [--work runs/long-documents] [--out eval/results/long_documents]

For each dataset and limit a fresh index is built (`lsr eval beir DATASET --doc-max-length N`,
sparse, default settings) and searched. Up to the model's window (512 tokens) a document is
cut at the limit; above it, it is read in overlapping windows, max-pooled
(`lsr.encoders.windows`). The report gives nDCG@10 and R@100, the encode time of the corpus
(one process, every core a torch thread, as `lsr index`), the mean postings per document, and
how many documents the limit cuts. Nothing is chosen from these test-split figures: the
default limit stays the model's own (256).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lsr.eval.report import publish


def token_counts(dataset: str) -> np.ndarray:
    """Text tokens of every document (title and text, as indexed), no special tokens, uncut."""
    from lsr.data.datasets import resolve_dataset
    from lsr.encoders.models import bundled_splade_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_splade_path())
    texts = [doc.full_text() for doc in resolve_dataset(dataset).iter_documents()]
    return np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["beir/scifact/test", "beir/nfcorpus/test"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 512, 1024])
    parser.add_argument("--work", type=Path, default=Path("runs/long-documents"))
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)

    from lsr.eval.beir_runner import BeirRunConfig, run_beir

    rows = []
    for dataset in args.datasets:
        tokens = token_counts(dataset)
        for length in args.lengths:
            name = f"{dataset.replace('/', '-')}-{length}"
            config = BeirRunConfig(dataset=dataset, index_dir=args.work / name / "index", out_dir=args.work / name,
                                   doc_max_length=length, command=f"lsr eval beir {dataset} --doc-max-length {length}")
            report = run_beir(config)
            system = report["systems"]["splade"]
            rows.append({"dataset": dataset, "doc_max_length": length,
                         "docs_cut": float(np.mean(tokens > length - 2)),
                         "docs_read_in_windows": float(np.mean(tokens > 510)) if length > 512 else 0.0,
                         "metrics": system["metrics"],
                         "encode_seconds": system["efficiency"]["encode_seconds"],
                         "mean_doc_nnz": system["efficiency"]["mean_doc_nnz"]})
            print(json.dumps(rows[-1]), flush=True)
    publish({"rows": rows}, markdown, "long_documents.py", argv, args.out)


def markdown(result: dict) -> str:
    lines = ["# Long documents: the bundled SPLADE-tiny at document limits of 256, 512 and 1024 tokens", "",
             "| dataset | doc tokens | docs cut | docs in windows | nDCG@10 | R@100 | encode s | encode vs 256 | postings/doc |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = {row["dataset"]: row["encode_seconds"] for row in result["rows"] if row["doc_max_length"] == 256}
    for row in result["rows"]:
        ratio = row["encode_seconds"] / base[row["dataset"]] if row["dataset"] in base else float("nan")
        lines.append(f"| {row['dataset']} | {row['doc_max_length']} | {row['docs_cut']:.1%} | "
                     f"{row['docs_read_in_windows']:.1%} | {row['metrics']['nDCG@10']:.4f} | "
                     f"{row['metrics']['Recall@100']:.4f} | {row['encode_seconds']:.0f} | {ratio:.2f}x | "
                     f"{row['mean_doc_nnz']:.0f} |")
    lines += ["", "docs cut: documents with more text tokens than the limit leaves room for; docs in windows: read "
              "as several overlapping 512-token windows (limits above the model's 512). Test splits; nothing was "
              "chosen from them.", "", f"Command: `{result['command']}`; machine: {result['machine']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
