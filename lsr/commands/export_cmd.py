"""`lsr export MODEL --out DIR [--onnx]`: a trained model as a Hugging Face directory (and ONNX)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a model as a Hugging Face directory, optionally with an ONNX graph",
        description="MODEL is a directory written by lsr train (final/, a checkpoint's model/) or any SPLADE "
                    "masked LM. --out gets the Hugging Face files, our lsr_encoder.json and the "
                    "sentence-transformers files; --onnx adds model.onnx (token ids in, the sparse vocabulary "
                    "vector out, pooling included) and query.onnx (the graph lsr search, lsr eval and lsr serve "
                    "encode queries with), both checked against PyTorch with onnxruntime.",
    )
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("--out", required=True, type=Path, help="directory to write (must not exist)")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx and query.onnx")
    parser.add_argument("--idf-corpus", metavar="CORPUS",
                        help="inference-free models: re-derive the IDF query weights from CORPUS "
                             "(the corpus the exported model will index)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lsr.encoders.loading import load_encoder

    if args.out.exists() and any(args.out.iterdir()):
        raise FileExistsError(f"{args.out} exists and is not empty; export into a new directory")
    encoder = load_encoder(args.model)
    if args.idf_corpus:
        if encoder.describe()["type"] != "inference-free":
            raise ValueError("--idf-corpus applies to inference-free models only")
        from lsr.data.sources import open_corpus

        _, documents = open_corpus(args.idf_corpus)
        encoder.set_idf(doc.full_text() for doc in documents)
    encoder.save(args.out)
    print(f"saved {encoder.describe()['type']} model to {args.out}")
    if args.onnx:
        from lsr.export.onnx import SAMPLE_TEXTS, export_onnx, onnx_max_difference

        path = export_onnx(encoder, args.out / "model.onnx")
        difference = onnx_max_difference(encoder, path, SAMPLE_TEXTS + ["a third, longer text " * 20])
        print(f"wrote {path}: max |onnx - pytorch| = {difference:.2e}")
        if difference > 1e-4:
            raise RuntimeError(f"{path}: the ONNX graph differs from PyTorch by {difference:.2e} (> 1e-4)")
        if encoder.describe()["type"] != "inference-free":  # whose queries are lookups, no graph
            from lsr.encoders.onnx_queries import GRAPH_NAME, open_sparse_graph
            from lsr.export.onnx import export_query_onnx

            export_query_onnx(encoder, args.out / GRAPH_NAME)
            open_sparse_graph(encoder, args.out / GRAPH_NAME)  # checks the graph against PyTorch
            print(f"wrote {args.out / GRAPH_NAME} (the query graph of --query-backend onnx)")
    return 0
