"""`lsr index CORPUS --out DIR` builds an index; `lsr index verify DIR` checks one."""

from __future__ import annotations

import argparse

from lsr.encoders.models import DEFAULT_MODEL


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "index",
        help="encode a corpus and write an index (or: lsr index verify|compact DIR)",
        description=(
            "Encode CORPUS (a BEIR folder, a JSONL file or a dataset id such as beir/scifact/test) "
            "and write a quantised inverted index to --out. `lsr index verify DIR` checks the "
            "sha256 of every array of an existing index; `lsr index compact DIR` folds the "
            "documents added and deleted through `lsr serve` into a new main index."
        ),
    )
    parser.add_argument("corpus", metavar="CORPUS", nargs="+", help="corpus to index, or: verify DIR, compact DIR")
    parser.add_argument("--out", help="index directory to create")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="a model saved by lsr train/export, or a Hugging Face SPLADE masked-LM name or directory")
    parser.add_argument("--doc-max-length", type=int, help="document token limit (default: the model's, else 256)")
    parser.add_argument("--query-max-length", type=int, help="recorded for searching (default: the model's, else 64)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quantization", choices=["per-term", "global"], default="per-term",
                        help="uint8 scale per term (default) or one for all terms")
    parser.add_argument("--scale-quantile", type=float, default=1.0,
                        help="with --quantization global: quantile of doc weights mapped to impact 255 "
                             "(1.0 = maximum, no clipping; lower clips, counted)")
    parser.add_argument("--reorder", choices=["bp", "none", "random"], default="bp",
                        help="doc order: recursive graph bisection (default), input order, or random")
    parser.add_argument("--block-size", type=int, default=8, help="docs per block-max pruning block (1-256)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index")
    parser.add_argument("--no-texts", action="store_true",
                        help="do not store document texts (no highlighting, and `compact` cannot rebuild them)")
    dense = parser.add_argument_group("dense index (hybrid search; needs lsr[dense])")
    dense.add_argument("--dense", action="store_true", help="also build a faiss index of dense vectors")
    dense.add_argument("--dense-model", help="dense encoder (default: the bundled all-MiniLM-L6-v2)")
    dense.add_argument("--dense-index", choices=["flat", "hnsw"], default="flat",
                       help="faiss IndexFlatIP (exact, default) or IndexHNSWFlat")
    dense.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node")
    dense.add_argument("--hnsw-ef-construction", type=int, default=200)
    dense.add_argument("--hnsw-ef-search", type=int, default=128)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.corpus[0] in ("verify", "compact"):
        if len(args.corpus) != 2:
            raise ValueError(f"usage: lsr index {args.corpus[0]} DIR")
        return verify(args.corpus[1]) if args.corpus[0] == "verify" else compact(args.corpus[1])
    if len(args.corpus) != 1:
        raise ValueError("give one CORPUS")
    if not args.out:
        raise ValueError("--out DIR is required")
    from lsr.data.sources import open_corpus
    from lsr.encoders.loading import load_encoder
    from lsr.indexing import index_corpus

    name, documents = open_corpus(args.corpus[0])
    encoder = load_encoder(args.model, args.batch_size, args.query_max_length, args.doc_max_length)
    dense_encoder, dense_options = _dense_arguments(args)
    out = index_corpus(documents, encoder, args.out, name, overwrite=args.overwrite,
                       quantization=args.quantization, scale_quantile=args.scale_quantile, reorder=args.reorder,
                       block_size=args.block_size, store_texts=not args.no_texts,
                       dense_encoder=dense_encoder, dense_options=dense_options)
    from index.format import read_meta

    meta = read_meta(out)
    print(f"indexed {meta['num_docs']} documents, {meta['num_postings']} postings "
          f"({meta['mean_doc_nnz']:.1f} terms/doc) into {out} in {meta['build_seconds']:.1f} s "
          f"(doc order {meta['doc_order']}: {meta['reorder_seconds']:.1f} s; {meta['num_blocks']} blocks of "
          f"{meta['block_size']})")
    return 0


def _dense_arguments(args: argparse.Namespace) -> tuple:
    if not args.dense:
        return None, None
    from index.dense import DenseOptions
    from lsr.encoders.dense import DenseEncoder

    options = DenseOptions(args.dense_index, args.hnsw_m, args.hnsw_ef_construction, args.hnsw_ef_search)
    return DenseEncoder(args.dense_model, batch_size=args.batch_size), options


def compact(directory: str) -> int:
    from index.live.compact import compact_index

    summary = compact_index(directory)
    print(f"compacted {directory}: {summary['num_docs']} documents ({summary['added']} added or replaced, "
          f"{summary['deleted']} deleted since the last build) in {summary['seconds']:.1f} s")
    return 0


def verify(directory: str) -> int:
    from index.dense import verify_dense
    from index.format import verify_checksums

    problems = verify_checksums(directory) + verify_dense(directory)
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"{directory}: all array checksums match meta.json")
    return 0
