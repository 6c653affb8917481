"""Indexing job: stream a corpus through an encoder into an `IndexBuilder`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from index.builder import IndexBuilder
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
    **builder_options,
) -> Path:
    """Encode a document stream chunk by chunk and write the index.

    Args:
        documents: the corpus, streamed.
        encoder: a `SpladeEncoder` (anything with ``encode_documents``, ``describe`` and
            ``vocab_size``).
        out_dir: the index directory to create.
        corpus_name: recorded in ``meta.json``.
        overwrite: replace an existing index once the new one is complete.
        show_progress: a progress bar over documents.
        float_vectors_dir: also keep the unquantised doc vectors there.
        dense_encoder: a `DenseEncoder`: also build the dense (faiss) part in the same pass.
        dense_options: `index.dense.DenseOptions` (faiss index kind and parameters).
        store_texts: keep the document texts in the index (display, explain, compaction).
        builder_options: passed to `IndexBuilder` (quantisation, doc order, block size).

    Returns:
        The index directory.
    """
    meta = {"encoder": encoder.describe(), "corpus": corpus_name}
    dense = None
    if dense_encoder is not None:
        meta["dense_encoder"] = dense_encoder.describe()
        dense = {"model": dense_encoder.model_name, "dim": dense_encoder.dim, "options": dense_options}
    encode_seconds = dense_seconds = 0.0
    with IndexBuilder(
        out_dir, encoder.vocab_size, meta, overwrite=overwrite,
        float_vectors_dir=float_vectors_dir, store_texts=store_texts, dense=dense, **builder_options,
    ) as builder:
        progress = tqdm(desc="indexing", unit="doc", disable=not show_progress)
        for chunk in chunked(documents, CHUNK_DOCS):
            texts = [doc.full_text() for doc in chunk]
            started = time.perf_counter()
            vectors = encoder.encode_documents(texts)
            encode_seconds += time.perf_counter() - started
            dense_vectors = None
            if dense_encoder is not None:
                started = time.perf_counter()
                dense_vectors = dense_encoder.encode_documents(texts)
                dense_seconds += time.perf_counter() - started
            builder.add([d.doc_id for d in chunk], vectors, [d.title for d in chunk],
                        texts=[d.text for d in chunk] if store_texts else None, dense=dense_vectors)
            progress.update(len(chunk))
        progress.close()
        builder.extra_meta["encode_seconds"] = round(encode_seconds, 3)
        if dense_encoder is not None:
            builder.extra_meta["dense_encode_seconds"] = round(dense_seconds, 3)
        return builder.finish()


def add_dense_index(index_dir: str | Path, documents: Iterable[Document], dense_encoder, options=None,
                    show_progress: bool = True) -> Path:
    """Give an existing sparse index its dense part (``index_dir/dense``), rows in internal order.

    Every document of the index must be in ``documents`` (extra ones are ignored).
    """
    import numpy as np

    from index.dense import write_dense_index
    from index.format import SparseIndex

    index = SparseIndex.open(index_dir)
    internal = index.internal_ids()
    vectors = np.zeros((index.num_docs, dense_encoder.dim), dtype=np.float32)
    seen = np.zeros(index.num_docs, dtype=bool)
    progress = tqdm(desc="dense encoding", unit="doc", disable=not show_progress)
    for chunk in chunked(documents, CHUNK_DOCS):
        rows = [internal.get(d.doc_id, -1) for d in chunk]
        keep = [j for j, row in enumerate(rows) if row >= 0]
        encoded = dense_encoder.encode_documents([chunk[j].full_text() for j in keep])
        vectors[[rows[j] for j in keep]] = encoded
        seen[[rows[j] for j in keep]] = True
        progress.update(len(chunk))
    progress.close()
    if not seen.all():
        missing = index.doc_ids[int(np.flatnonzero(~seen)[0])]
        raise ValueError(f"{index_dir}: document {missing!r} of the index is not in the corpus given")
    return write_dense_index(index_dir, vectors, dense_encoder.model_name, options)
