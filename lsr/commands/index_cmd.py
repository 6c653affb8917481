"""`lsr index CORPUS --out DIR` builds an index; `lsr index verify|merge|compact|upgrade DIR` maintain one."""

from __future__ import annotations

import argparse

from lsr.encoders.models import DEFAULT_MODEL

SUBCOMMANDS = ("verify", "merge", "compact", "upgrade")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "index",
        help="encode a corpus and write an index (or: lsr index verify|merge|compact|upgrade DIR)",
        description=(
            "Encode CORPUS (a BEIR folder, a JSONL file or a dataset id such as beir/scifact/test) "
            "and write a quantised inverted index of segments to --out. `lsr index verify DIR` checks "
            "every checksum and structure of an index; `lsr index merge DIR` flushes the writes made "
            "through `lsr serve` and merges the segments (into one with --max-segments 1, the default; "
            "`compact` is its alias); `lsr index upgrade DIR` converts an index of the previous format."
        ),
    )
    parser.add_argument("corpus", metavar="CORPUS", nargs="+", help="corpus to index, or: verify|merge|compact|upgrade DIR")
    parser.add_argument("--out", help="index directory to create")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="a model saved by lsr train/export, or a Hugging Face SPLADE masked-LM name or directory")
    parser.add_argument("--doc-max-length", type=int,
                        help="document token limit (default: the model's, else 256); above the model's window (512), "
                             "documents are read in overlapping windows, max-pooled")
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
    parser.add_argument("--segment-docs", type=int, default=None,
                        help="documents per segment while indexing (bounds the build's memory; default 1000000)")
    parser.add_argument("--segments", choices=["merge", "keep"], default="merge",
                        help="merge the segments into one at the end (default) or keep them as built")
    parser.add_argument("--max-segments", type=int, default=1, help="lsr index merge: segments to merge down to")
    parser.add_argument("--shards", type=int,
                        help="write a sharded index: documents partitioned by a hash of their id into this many "
                             "shards (each an index of segments; `lsr serve` searches all of them)")
    parser.add_argument("--duplicates", choices=["error", "last"], default="error",
                        help="a document id given twice: an error naming it (default), or the last one wins")
    parser.add_argument("--overwrite", action="store_true", help="replace every segment of an existing index")
    parser.add_argument("--no-texts", action="store_true",
                        help="do not store document texts (no highlighting, and merges cannot keep them)")
    ray = parser.add_argument_group("distributed indexing job on Ray Data (needs lsr-engine[ray])")
    ray.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="run on Ray: the cluster at ADDRESS (`auto` for the one `ray start` runs here), or "
                          "without ADDRESS a local Ray on this machine; a rerun resumes (blocks done are skipped)")
    ray.add_argument("--block-docs", type=int,
                     help="documents per corpus block, the unit of work and of resuming (default: about 64 blocks, "
                          "50 to 10000 documents each, from the corpus's size)")
    ray.add_argument("--actors", type=int, help="encoder actors (default: one per GPU, else one per CPU)")
    ray.add_argument("--cpus-per-actor", type=int, default=1, help="CPUs (torch threads) per actor (default 1)")
    dense = parser.add_argument_group("dense index (hybrid search; needs lsr-engine[dense])")
    dense.add_argument("--dense", action="store_true", help="also build a faiss index of dense vectors")
    dense.add_argument("--dense-model", help="dense encoder (default: the bundled all-MiniLM-L6-v2)")
    dense.add_argument("--dense-index", choices=["flat", "hnsw"], default="flat",
                       help="faiss IndexFlatIP (exact, default) or IndexHNSWFlat")
    dense.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node")
    dense.add_argument("--hnsw-ef-construction", type=int, default=200)
    dense.add_argument("--hnsw-ef-search", type=int, default=128)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.corpus[0] in SUBCOMMANDS:
        if len(args.corpus) != 2:
            raise ValueError(f"usage: lsr index {args.corpus[0]} DIR")
        directory = args.corpus[1]
        if args.corpus[0] == "verify":
            return verify(directory)
        if args.corpus[0] == "upgrade":
            return upgrade(directory)
        return merge(directory, args.max_segments)
    if len(args.corpus) != 1:
        raise ValueError("give one CORPUS")
    if not args.out:
        raise ValueError("--out DIR is required")
    from lsr.index.build import DEFAULT_SEGMENT_DOCS
    from lsr.data.sources import open_corpus
    from lsr.encoders.loading import load_encoder
    from lsr.indexing import index_corpus

    if args.ray is not None:
        return _run_on_ray(args)
    name, documents = open_corpus(args.corpus[0])
    encoder = load_encoder(args.model, args.batch_size, args.query_max_length, args.doc_max_length)
    dense_encoder, dense_options = _dense_arguments(args)
    out = index_corpus(documents, encoder, args.out, name, overwrite=args.overwrite,
                       quantization=args.quantization, scale_quantile=args.scale_quantile, reorder=args.reorder,
                       block_size=args.block_size, store_texts=not args.no_texts,
                       dense_encoder=dense_encoder, dense_options=dense_options,
                       segment_docs=args.segment_docs or DEFAULT_SEGMENT_DOCS, merge=args.segments == "merge",
                       shards=args.shards, duplicates=args.duplicates)
    print(_summary(out))
    return 0


def _index_directories(directory) -> list:
    """The index directories of DIR: its shards (``shards.json``), or DIR itself."""
    from lsr.index.shards import shard_directories

    return list(shard_directories(directory).values())


def _run_on_ray(args: argparse.Namespace) -> int:
    """`lsr index CORPUS --out DIR --ray [ADDRESS]`: the job of ``lsr.scaleout.ray_indexing``."""
    from lsr.index.writer import index_settings
    from lsr.data.blocks import CorpusBlocks
    from lsr.encoders.loading import load_encoder
    from lsr.scaleout.block_indexer import EncoderSpec
    from lsr.scaleout.ray_indexing import ray_index, while_ray_starts

    if args.overwrite:
        raise ValueError("--overwrite does not apply to --ray: give a new directory (a rerun resumes the job)")
    source = CorpusBlocks.open(args.corpus[0], args.block_docs)
    # The driver loads the encoders once too (the index records what they are), while Ray starts.
    encoder, (dense_encoder, dense_options) = while_ray_starts(args.ray or None, lambda: (
        load_encoder(args.model, args.batch_size, args.query_max_length, args.doc_max_length),
        _dense_arguments(args)))
    meta = {"encoder": encoder.describe(), "corpus": source.name}
    dense = None
    if dense_encoder is not None:
        meta["dense_encoder"] = dense_encoder.describe()
        dense = {"model": dense_encoder.model_name, "dim": dense_encoder.dim, "options": dense_options}
    settings = index_settings(encoder.vocab_size, meta, dense, quantization=args.quantization,
                              scale_quantile=args.scale_quantile, reorder=args.reorder, block_size=args.block_size,
                              store_texts=not args.no_texts)
    spec = EncoderSpec(args.model, args.batch_size, encoder.query_max_length, encoder.doc_max_length,
                       dense_model=args.dense_model or "", dense=args.dense)
    done = ray_index(source, args.out, args.shards or 1, settings, spec, address=args.ray or None,
                     actors=args.actors, cpus_per_actor=args.cpus_per_actor, merge=args.segments == "merge",
                     duplicates=args.duplicates)
    print(_summary(args.out))
    print(f"on Ray: {done['blocks_indexed']} of {done['blocks']} blocks indexed by {done['actors']} actors in "
          f"{done['seconds']:.1f} s (encoding {done['encode_seconds']:.1f} actor-seconds)")
    return 0


def _summary(directory) -> str:
    """From the commits and the segments' meta.json (nothing else is read)."""
    from lsr.index.commit import SEGMENTS_DIR, read_newest_commit
    from lsr.index.format import read_segment_meta
    from lsr.index.shards import is_sharded

    shards = _index_directories(directory)
    segments = [read_segment_meta(shard / SEGMENTS_DIR / s.name, s.meta)
                for shard in shards for s in read_newest_commit(shard).segments]
    postings = sum(int(s["num_postings"]) for s in segments)
    docs = sum(int(s["num_docs"]) for s in segments)
    blocks = sum(int(s["num_blocks"]) for s in segments)
    reorder = sum(float(s["reorder_seconds"]) for s in segments)
    build = sum(float(s["build_seconds"]) for s in segments)
    block_size = segments[0]["block_size"] if segments else 0
    doc_order = segments[0]["doc_order"] if segments else "none"
    where = f"{directory} ({len(shards)} shards)" if is_sharded(directory) else directory
    return (f"indexed {docs} documents, {postings} postings ({postings / max(1, docs):.1f} terms/doc) into {where}: "
            f"{len(segments)} segment{'s' if len(segments) != 1 else ''}, built in {build:.1f} s (doc order "
            f"{doc_order}: {reorder:.1f} s; {blocks} blocks of {block_size})")


def _dense_arguments(args: argparse.Namespace) -> tuple:
    if not args.dense:
        return None, None
    from lsr.index.dense import DenseOptions
    from lsr.encoders.dense import DenseEncoder

    options = DenseOptions(args.dense_index, args.hnsw_m, args.hnsw_ef_construction, args.hnsw_ef_search)
    return DenseEncoder(args.dense_model, batch_size=args.batch_size), options


def merge(directory: str, max_segments: int) -> int:
    import time

    from lsr.index.live import LiveIndex

    for path in _index_directories(directory):
        started = time.perf_counter()
        with LiveIndex(path, writer="required") as index:
            before = index.stats()
            index.merge(max_segments=max_segments)
            after = index.stats()
        print(f"merged {path}: {len(before['segments'])} segments and {before['buffered_writes']} logged writes "
              f"into {len(after['segments'])} segment{'s' if len(after['segments']) != 1 else ''} of "
              f"{after['documents']} documents in {time.perf_counter() - started:.1f} s")
    return 0


def upgrade(directory: str) -> int:
    """Upgrade an index, or each shard of a sharded one."""
    from lsr.index.shards import is_sharded
    from lsr.index.upgrade import upgrade_index

    for path in _index_directories(directory) if is_sharded(directory) else [directory]:
        summary = upgrade_index(path)
        if summary["documents"] is None:  # already version 3: older segments, if any, rewritten
            print(f"{path} is at format version 3: {summary['upgraded_segments']} segment(s) of an older segment "
                  "format rewritten")
            continue
        print(f"upgraded {path} to format version {summary['format_version']}: one segment of "
              f"{summary['documents']} documents, {summary['logged_writes']} writes of its update log carried over")
    return 0


def verify(directory: str) -> int:
    from lsr.index.check import verify_index

    from lsr.index.format import IndexFormatError

    try:
        paths = _index_directories(directory)
    except IndexFormatError as error:  # a damaged manifest
        print(error)
        return 1
    failed = False
    for path in paths:
        problems, checked = verify_index(path)
        for line in problems:
            print(line)
        failed = failed or bool(problems)
        if not problems:
            print(f"{path}: {checked['commits']} commit(s), {checked['segments']} segment(s), {checked['files']} "
                  f"segment files and {checked['delete_files']} delete file(s): every checksum and structure check "
                  f"passed")
    return 1 if failed else 0
