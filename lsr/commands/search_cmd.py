"""`lsr search DIR "query text"`: encode one query and print the top k documents."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("search", help="search an index with a text query")
    parser.add_argument("index", metavar="DIR", help="index directory")
    parser.add_argument("query", help="query text")
    parser.add_argument("-k", type=int, default=10, help="number of results")
    parser.add_argument("--scorer", choices=["auto", "exhaustive", "bmp"], default="auto",
                        help="auto: exhaustive on small collections and long queries, block-max pruning otherwise")
    parser.add_argument("--alpha", type=float, default=1.0, help="BMP bound factor; below 1 is approximate")
    parser.add_argument("--beta", type=float, default=1.0, help="fraction of query terms kept; below 1 is approximate")
    parser.add_argument("--max-blocks", type=int, help="BMP stops after scoring this many blocks (approximate)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from index.format import SparseIndex, read_meta
    from index.scorers.planner import search
    from lsr.encoders.loading import load_encoder

    encoder_meta = read_meta(args.index)["encoder"]
    encoder = load_encoder(encoder_meta["model"], query_max_length=encoder_meta["query_max_length"],
                           doc_max_length=encoder_meta["doc_max_length"])
    index = SparseIndex.open(args.index, vocab_size=encoder.vocab_size)
    query = encoder.encode_queries([args.query])
    terms, weights = query.row(0)
    docs, scores = search(index, terms, weights, args.k, args.scorer, args.alpha, args.beta, args.max_blocks)
    print(f"{'rank':>4}  {'doc id':<20} {'score':>8}  title")
    for rank, (doc, score) in enumerate(zip(docs, scores), start=1):
        title = index.doc_titles[doc]
        print(f"{rank:>4}  {index.doc_ids[doc]:<20} {score:8.3f}  {title[:80]}")
    if len(docs) == 0:
        print("(no document shares a term with the query)")
    return 0
