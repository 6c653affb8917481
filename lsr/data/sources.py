"""One name for any corpus: a JSONL file, a BEIR folder or a dataset id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lsr.data.datasets import resolve_dataset
from lsr.data.loaders import Document, iter_corpus


def open_corpus(name: str) -> tuple[str, Iterator[Document]]:
    """Returns a display name and a document stream for ``name``."""
    path = Path(name)
    if path.is_file():
        return str(path), iter_corpus(path)
    dataset = resolve_dataset(name)
    return dataset.name, dataset.iter_documents()
