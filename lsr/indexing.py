"""Indexing job: stream a corpus through an encoder into an index of segments (`index.build`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from lsr.index.build import DEFAULT_SEGMENT_DOCS, IndexBuild
from lsr.index.sharded_build import ShardedBuild
from lsr.data.loaders import Document, chunked

CHUNK_DOCS = 2048


def index_corpus(
    documents: Iterable[Document],
    encoder,
    out_dir: str | Path,
    corpus_name: str,
    overwrite: bool = False,
    show_progress: bool = True,
    float_vectors_dir: str | Path | None = None,
    dense_encoder=None,
    dense_options=None,
    store_texts: bool = True,
    segment_docs: int | None = DEFAULT_SEGMENT_DOCS,
    merge: bool = True,
    shards: int | None = None,
    chunk_docs: int = CHUNK_DOCS,
    **builder_options,
) -> Path:
    """Encode a document stream chunk by chunk and write the index.

    Encoding runs on this thread while the previous segment is finished on another one.

    Args:
        documents: the corpus, streamed.
        encoder: a `SpladeEncoder` (anything with ``encode_documents``, ``describe`` and
            ``vocab_size``).
        out_dir: the index directory to create.
        corpus_name: recorded in the index.
        overwrite: replace every segment of an existing index once the new ones are complete.
        show_progress: a progress bar over documents.
        float_vectors_dir: also keep the unquantised doc vectors there (merged indexes only).
        dense_encoder: a `DenseEncoder`: also build the dense (faiss) part in the same pass.
        dense_options: `index.dense.DenseOptions` (faiss index kind and parameters).
        store_texts: keep the document texts in the index (display, explain, merges).
        segment_docs: documents per segment (bounds the build's memory).
        merge: merge the segments into one at the end (``--segments merge``, the default).
        chunk_docs: documents encoded per call (the encoder sorts each chunk by length into
            batches, so this decides which documents share a batch).
        shards: write a sharded index of this many shards (`index.sharded_build`; each merged
            on its own), instead of one index.
        builder_options: passed to `IndexBuild` (quantisation, doc order, block size, duplicates).

    Returns:
        The index directory.
    """
    meta = {"encoder": encoder.describe(), "corpus": corpus_name}
    dense = None
    if dense_encoder is not None:
        meta["dense_encoder"] = dense_encoder.describe()
        dense = {"model": dense_encoder.model_name, "dim": dense_encoder.dim, "options": dense_options}
    encode_seconds = dense_seconds = 0.0
    if shards is not None:
        if float_vectors_dir is not None:
            raise ValueError("float_vectors_dir keeps one index's vectors: not with shards")
        build = ShardedBuild(out_dir, shards, encoder.vocab_size, meta, overwrite=overwrite, segment_docs=segment_docs,
                             merge=merge, dense=dense, store_texts=store_texts, **builder_options)
    else:
        build = IndexBuild(out_dir, encoder.vocab_size, meta, overwrite=overwrite, segment_docs=segment_docs,
                           merge=merge, float_vectors_dir=float_vectors_dir, dense=dense, store_texts=store_texts,
                           **builder_options)
    try:
        progress = tqdm(desc="indexing", unit="doc", disable=not show_progress)
        for chunk in chunked(documents, chunk_docs):
            texts = [doc.full_text() for doc in chunk]
            started = time.perf_counter()
            vectors = encoder.encode_documents(texts)
            encode_seconds += time.perf_counter() - started
            dense_vectors = None
            if dense_encoder is not None:
                started = time.perf_counter()
                dense_vectors = dense_encoder.encode_documents(texts)
                dense_seconds += time.perf_counter() - started
            build.add([d.doc_id for d in chunk], vectors, [d.title for d in chunk],
                      texts=[d.text for d in chunk] if store_texts else None, dense=dense_vectors)
            progress.update(len(chunk))
        progress.close()
    except BaseException:
        build.close()
        raise
    timings = {"encode_seconds": round(encode_seconds, 3)}
    if dense_encoder is not None:
        timings["dense_encode_seconds"] = round(dense_seconds, 3)
    return build.finish(timings)


def add_dense_index(index_dir: str | Path, documents: Iterable[Document], dense_encoder, options=None,
                    show_progress: bool = True) -> Path:
    """Give an existing sparse index its dense part: every segment is replaced by a copy that
    shares its files (hard links) and adds ``dense/``, in one commit.

    Every document of the index must be in ``documents`` (extra ones are ignored).
    """
    import numpy as np

    from lsr.index.live import LiveIndex

    with LiveIndex(index_dir, writer="required") as live:
        view = live.refresh()
        rows = {}
        for position, state in enumerate(view.segments):
            segment = state.segment
            for internal in range(segment.num_docs):
                rows[segment.doc_ids[internal]] = (position, internal)
        vectors = [np.zeros((s.segment.num_docs, dense_encoder.dim), dtype=np.float32) for s in view.segments]
        seen = [np.zeros(s.segment.num_docs, dtype=bool) for s in view.segments]
        progress = tqdm(desc="dense encoding", unit="doc", disable=not show_progress)
        for chunk in chunked(documents, CHUNK_DOCS):
            keep = [d for d in chunk if d.doc_id in rows]
            encoded = dense_encoder.encode_documents([d.full_text() for d in keep]) if keep else []
            for document, vector in zip(keep, encoded):
                position, internal = rows[document.doc_id]
                vectors[position][internal] = vector
                seen[position][internal] = True
            progress.update(len(chunk))
        progress.close()
        for position, state in enumerate(view.segments):
            if not seen[position].all():
                missing = state.segment.doc_ids[int(np.flatnonzero(~seen[position])[0])]
                raise ValueError(f"{index_dir}: document {missing!r} of the index is not in the corpus given")
        live.writer.add_dense_part([s.segment for s in view.segments], vectors,
                                   {"model": dense_encoder.model_name, "dim": dense_encoder.dim, "options": options},
                                   {"dense_encoder": dense_encoder.describe()})
    return Path(index_dir)
