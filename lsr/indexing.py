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
        builder_options: passed to `IndexBuilder` (quantisation, doc order, block size).

    Returns:
        The index directory.
    """
    meta = {"encoder": encoder.describe(), "corpus": corpus_name}
    encode_seconds = 0.0
    with IndexBuilder(
        out_dir, encoder.vocab_size, meta, overwrite=overwrite,
        float_vectors_dir=float_vectors_dir, **builder_options,
    ) as builder:
        progress = tqdm(desc="indexing", unit="doc", disable=not show_progress)
        for chunk in chunked(documents, CHUNK_DOCS):
            started = time.perf_counter()
            vectors = encoder.encode_documents([doc.full_text() for doc in chunk])
            encode_seconds += time.perf_counter() - started
            builder.add([d.doc_id for d in chunk], vectors, [d.title for d in chunk])
            progress.update(len(chunk))
        progress.close()
        builder.extra_meta["encode_seconds"] = round(encode_seconds, 3)
        return builder.finish()
