"""`lsr eval ...` subcommands, registered into `lsr` through the ``lsr.commands`` entry point."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from lsr.encoders.query_backends import add_query_backend_option


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate on BEIR, MS MARCO and TREC DL")
    kinds = parser.add_subparsers(dest="eval_kind", metavar="KIND", required=True)
    beir = kinds.add_parser(
        "beir",
        help="index (if needed), search and score a BEIR dataset",
        description="DATASET is an id such as beir/scifact/test or a BEIR folder.",
    )
    _add_run_arguments(beir)
    msmarco = kinds.add_parser(
        "msmarco",
        help="index (if needed), search and score MS MARCO passage dev or TREC Deep Learning",
        description=("DATASET is msmarco-passage/dev/small (MRR@10, R@1000), msmarco-passage/trec-dl-2019/judged or "
                     "msmarco-passage/trec-dl-2020/judged (nDCG@10, R@1000 counting relevance >= 2), downloaded by "
                     "ir_datasets where the network allows, or the local DL19 subset msmarco-dl19-mini (5,000 "
                     "passages: a smoke test, not DL19's figures)."),
    )
    _add_run_arguments(msmarco)


def _add_run_arguments(beir: argparse.ArgumentParser) -> None:
    """The options of one evaluation run (`lsr eval beir` and `lsr eval msmarco` alike; the
    measures follow the dataset, ``lsr.metrics.measures_for``)."""
    beir.add_argument("dataset", metavar="DATASET")
    beir.add_argument("--index", type=Path, help="index directory (built there if missing)")
    beir.add_argument("--out", type=Path, help="run directory (default runs/<dataset>)")
    beir.add_argument("--model", help="encoder for a new index (default: the bundled SPLADE-tiny)")
    beir.add_argument("--baseline", choices=["bm25"], help="also run a baseline beside the model")
    beir.add_argument("-k", type=int, default=1000, help="results per query")
    beir.add_argument("--batch-size", type=int, default=32)
    beir.add_argument("--doc-max-length", type=int,
                      help="document token limit of a new index (default: the model's); above the model's window "
                           "(512) documents are read in overlapping windows, max-pooled")
    beir.add_argument("--quantization", choices=["per-term", "global"], default="per-term",
                      help="uint8 scale per term or one for all (a new index)")
    beir.add_argument("--reorder", choices=["bp", "none", "random"], default="bp", help="doc order of a new index")
    beir.add_argument("--block-size", type=int, default=8, help="block size of a new index")
    beir.add_argument("--scorer", choices=["auto", "exhaustive", "bmp"], default="auto")
    beir.add_argument("--drop-self-hits", action="store_true",
                      help="drop a retrieved doc whose id equals the query id (BEIR's option)")
    beir.add_argument("--mode", choices=["sparse", "dense", "hybrid"], default="sparse",
                      help="sparse (default), dense (faiss; needs lsr-engine[dense]), or hybrid: all three side by side")
    beir.add_argument("--dense-model", help="dense encoder for the index's dense part (default: bundled all-MiniLM-L6-v2)")
    beir.add_argument("--fusion", choices=["adaptive", "rrf", "convex"], default="adaptive",
                      help="hybrid: z-scores weighted per query by how far each list's best score stands out "
                           "(default, chosen on dev splits), reciprocal rank fusion, or a fixed convex combination")
    beir.add_argument("--rrf-k", type=int, default=60, help="RRF constant")
    beir.add_argument("--fusion-alpha", type=float, default=0.5, help="convex: weight of the sparse scores")
    beir.add_argument("--normalization", choices=["minmax", "zscore"], default="minmax", help="convex: score normalisation")
    add_query_backend_option(beir, note="; the sparse and the dense model alike")
    beir.set_defaults(handler=run_beir_command)


def run_beir_command(args: argparse.Namespace) -> int:
    from lsr.eval.beir_runner import BeirRunConfig, run_beir
    from lsr.eval.report import markdown_table, stage_table

    config = BeirRunConfig(
        dataset=args.dataset, index_dir=args.index, out_dir=args.out, model=args.model,
        baseline=args.baseline, k=args.k, drop_self_hits=args.drop_self_hits,
        batch_size=args.batch_size, doc_max_length=args.doc_max_length, quantization=args.quantization,
        reorder=args.reorder,
        block_size=args.block_size, scorer=args.scorer, mode=args.mode, dense_model=args.dense_model,
        fusion=args.fusion, rrf_k=args.rrf_k, fusion_alpha=args.fusion_alpha, normalization=args.normalization,
        query_backend=args.query_backend,
        command="lsr " + shlex.join(args.argv),
    )
    report = run_beir(config)
    print(f"\n{report['dataset']} ({report['num_queries']} queries, {report['num_docs']} docs)\n")
    print(markdown_table(report["systems"]))
    if args.mode != "sparse":
        print("\nLatency per stage (ms per query, one query at a time)\n")
        print(stage_table(report["systems"]))
    return 0
