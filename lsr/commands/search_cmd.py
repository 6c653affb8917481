"""`lsr search DIR "query text"`: encode one query and print the top k documents."""

from __future__ import annotations

import argparse

from lsr.encoders.query_backends import add_query_backend_option


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
    add_precision_option(parser)
    add_query_backend_option(parser)
    parser.set_defaults(handler=run)


def add_precision_option(parser) -> None:
    """``--precision``: which stored impacts score a search (``index.search``)."""
    parser.add_argument("--precision", choices=["auto", "16-bit", "8-bit"], default="auto",
                        help="impacts that score the documents: 16-bit (exact over the index's 16-bit copy), "
                             "8-bit, or auto (16-bit where every segment has the copy)")


def run(args: argparse.Namespace) -> int:
    from lsr.index.sharded import open_index
    from lsr.encoders.loading import load_encoder
    from lsr.encoders.onnx_queries import with_sparse_query_backend

    with open_index(args.index, writer="never") as index:
        encoder_meta = index.meta["encoder"]
        encoder = load_encoder(encoder_meta["model"], query_max_length=encoder_meta["query_max_length"],
                               doc_max_length=encoder_meta["doc_max_length"])
        encoder = with_sparse_query_backend(encoder, args.query_backend)
        terms, weights = encoder.encode_queries([args.query]).row(0)
        ids, scores = index.search_sparse(terms, weights, args.k, args.scorer, args.alpha, args.beta, args.max_blocks,
                                          args.precision)
        titles = index.documents(ids)
    print(f"{'rank':>4}  {'doc id':<20} {'score':>8}  title")
    for rank, (doc_id, score) in enumerate(zip(ids, scores), start=1):
        title = titles.get(doc_id, {}).get("title", "")
        print(f"{rank:>4}  {doc_id:<20} {score:8.3f}  {title[:80]}")
    if len(ids) == 0:
        print("(no document shares a term with the query)")
    return 0
