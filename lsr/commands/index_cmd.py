"""`lsr index CORPUS --out DIR` builds an index; `lsr index verify DIR` checks one."""

from __future__ import annotations

import argparse

from lsr.encoders.models import DEFAULT_MODEL


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "index",
        help="encode a corpus and write an index (or: lsr index verify DIR)",
        description=(
            "Encode CORPUS (a BEIR folder, a JSONL file or a dataset id such as beir/scifact/test) "
            "and write a quantised inverted index to --out. `lsr index verify DIR` checks the "
            "sha256 of every array of an existing index."
        ),
    )
    parser.add_argument("corpus", metavar="CORPUS", nargs="+", help="corpus to index, or: verify DIR")
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
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.corpus[0] == "verify":
        if len(args.corpus) != 2:
            raise ValueError("usage: lsr index verify DIR")
        return verify(args.corpus[1])
    if len(args.corpus) != 1:
        raise ValueError("give one CORPUS")
    if not args.out:
        raise ValueError("--out DIR is required")
    from lsr.data.sources import open_corpus
    from lsr.encoders.loading import load_encoder
    from lsr.indexing import index_corpus

    name, documents = open_corpus(args.corpus[0])
    encoder = load_encoder(args.model, args.batch_size, args.query_max_length, args.doc_max_length)
    out = index_corpus(documents, encoder, args.out, name, overwrite=args.overwrite,
                       quantization=args.quantization, scale_quantile=args.scale_quantile, reorder=args.reorder, block_size=args.block_size)
    from index.format import read_meta

    meta = read_meta(out)
    print(f"indexed {meta['num_docs']} documents, {meta['num_postings']} postings "
          f"({meta['mean_doc_nnz']:.1f} terms/doc) into {out} in {meta['build_seconds']:.1f} s "
          f"(doc order {meta['doc_order']}: {meta['reorder_seconds']:.1f} s; {meta['num_blocks']} blocks of "
          f"{meta['block_size']})")
    return 0


def verify(directory: str) -> int:
    from index.format import verify_checksums

    problems = verify_checksums(directory)
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"{directory}: all array checksums match meta.json")
    return 0
