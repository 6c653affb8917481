"""One name for any corpus: a JSONL file, a BEIR folder or a dataset id."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from lsr.data.datasets import resolve_dataset
from lsr.data.loaders import Document, iter_corpus


def open_corpus(name: str) -> tuple[str, Iterator[Document]]:
    """Returns a display name and a document stream for ``name``.

    A corpus that ir_datasets must fetch is opened here, before anything is written or shown:
    one that cannot be (no network) is a one-line `DatasetUnavailableError`."""
    path = Path(name)
    if path.is_file():
        return str(path), iter_corpus(path)
    dataset = resolve_dataset(name)
    documents = dataset.iter_documents()
    if dataset.corpus_path is None:
        first = next(documents, None)
        documents = itertools.chain([first] if first is not None else [], documents)
    return dataset.name, documents
