"""`lsr index compact DIR`: fold the update log into a new main index, atomically.

The new index is built from the live documents (main-index documents without tombstones, read
back block range by block range, then the segment's) with the same build options (doc order,
block size, quantisation, dense index kind), in a temporary directory renamed over the old one
(`IndexBuilder`); the old directory, its update log included, goes only once the new one is in
place. Main-index weights are the dequantised impacts; requantising gives back the same
impacts for every term whose largest weight did not grow through the added documents.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from index.builder import IndexBuilder
from index.dense import DenseOptions
from index.format import read_meta
from index.forward import block_range_impacts
from index.live.live_index import LiveIndex
from index.live.lock import exclusive
from index.sparse_batch import SparseBatch

BLOCKS_PER_STEP = 512
SEGMENT_DOCS_PER_STEP = 4096
KEPT_META = ("encoder", "corpus", "dense_encoder", "encode_seconds", "dense_encode_seconds")


def compact_index(directory: str | Path) -> dict:
    """Rebuild ``directory`` with its live changes folded in.

    Returns:
        ``{"num_docs", "added", "deleted", "seconds"}``; nothing is rewritten when the update
        log is empty.
    """
    directory = Path(directory)
    read_meta(directory)  # a clear error for a directory that is not an index
    started = time.perf_counter()
    with exclusive(directory):
        live = LiveIndex(directory)
        view = live.view()
        summary = {"added": live.segment.num_added, "deleted": live.segment.num_deleted}
        if live.log.path.stat().st_size == 0:
            return {"num_docs": live.main.num_docs, **summary, "seconds": time.perf_counter() - started}
        with _builder_like(live) as builder:
            _add_main_documents(live, view.tombstones, builder)
            _add_segment_documents(live, builder)
            builder.extra_meta["compacted"] = {**summary, "from_documents": live.main.num_docs}
            builder.finish()
        num_docs = builder.num_docs
    return {"num_docs": num_docs, **summary, "seconds": time.perf_counter() - started}


def _builder_like(live: LiveIndex) -> IndexBuilder:
    meta = live.main.meta
    quantization = meta["quantization"]
    method = quantization["method"].removeprefix("uint8-")
    options = {}
    if method == "global" and quantization.get("scale_quantile") is None:
        options["scale"] = quantization["scale"]
    elif method == "global":
        options["scale_quantile"] = quantization["scale_quantile"]
    dense = None
    if live.dense is not None:
        d = live.dense.meta
        dense = {"model": d["model"], "dim": d["dim"],
                 "options": DenseOptions(d["kind"], d["hnsw_m"], d["ef_construction"], d["ef_search"])}
    return IndexBuilder(
        live.directory, live.main.vocab_size, {k: meta[k] for k in KEPT_META if k in meta},
        quantization=method, overwrite=True, reorder=meta["doc_order"], block_size=meta["block_size"],
        bp_options=meta.get("bp_options") or {}, store_texts=live.main.doc_texts is not None, dense=dense, **options,
    )


def _add_main_documents(live: LiveIndex, tombstones: np.ndarray, builder: IndexBuilder) -> None:
    main = live.main
    num_blocks = main.postings.num_blocks
    for first in range(0, num_blocks, BLOCKS_PER_STEP):
        end = min(first + BLOCKS_PER_STEP, num_blocks)
        impacts = block_range_impacts(main, first, end)
        first_doc = first * main.postings.block_size
        docs = np.arange(first_doc, first_doc + impacts.shape[0])
        keep = ~np.isin(docs, tombstones)
        rows = impacts[np.flatnonzero(keep)]
        rows.data = rows.data * main.term_scales[rows.indices]
        kept = docs[keep]
        texts = [main.doc_texts[int(d)] for d in kept] if main.doc_texts is not None else None
        dense = live.dense.vectors(first_doc, first_doc + len(docs))[keep] if live.dense is not None else None
        builder.add([main.doc_ids[int(d)] for d in kept], SparseBatch.from_scipy(rows),
                    [main.doc_titles[int(d)] for d in kept], texts=texts, dense=dense)


def _add_segment_documents(live: LiveIndex, builder: IndexBuilder) -> None:
    documents = list(live.segment.documents.values())
    vocab_size = live.main.vocab_size
    for start in range(0, len(documents), SEGMENT_DOCS_PER_STEP):
        chunk = documents[start : start + SEGMENT_DOCS_PER_STEP]
        indptr = np.concatenate([[0], np.cumsum([len(d.terms) for d in chunk])]).astype(np.int64)
        batch = SparseBatch(indptr, np.concatenate([d.terms for d in chunk]).astype(np.uint32),
                            np.concatenate([d.weights for d in chunk]).astype(np.float32), vocab_size)
        dense = np.stack([d.dense for d in chunk]) if live.dense is not None else None
        builder.add([d.doc_id for d in chunk], batch, [d.title for d in chunk],
                    texts=[d.text for d in chunk] if builder.store_texts else None, dense=dense)
