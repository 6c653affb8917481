"""Corpora cut into numbered blocks that any process can read on its own (distributed
indexing jobs: a block is the unit of work, of progress and of resuming).

Block ``i`` holds documents ``i * block_docs`` to ``(i + 1) * block_docs - 1`` in corpus
order, so the same corpus and block size always give the same blocks. A plain JSONL file is
scanned once for the byte offset of each block's first line, and a block is then one seek
and one read; a gzipped file or an ir_datasets corpus is read from its start, skipping the
lines before the block (unparsed).

Without a block size, one follows from the corpus's size alone (`auto_block_docs`: about
``TARGET_BLOCKS`` blocks, between ``MIN_BLOCK_DOCS`` and ``MAX_BLOCK_DOCS`` documents each), so a
rerun on another cluster finds the same blocks, a small corpus still gives every actor several
blocks (the last block to finish is what idles the others), and a large one is not cut into
more blocks than commits are worth.

`VectorBlocks` does the same for a pre-encoded collection (``make_bench_corpus.py``'s
``docs/indptr.npy``, ``indices.npy``, ``values.npy``; document ``i`` has id ``d{i}``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from lsr.data.loaders import Document, corpus_document, open_text, parse_object_line


TARGET_BLOCKS = 64
MIN_BLOCK_DOCS = 50
MAX_BLOCK_DOCS = 10_000


def auto_block_docs(num_docs: int) -> int:
    """The block size for a corpus of ``num_docs`` documents: a multiple of ``MIN_BLOCK_DOCS``
    giving about ``TARGET_BLOCKS`` blocks, at most ``MAX_BLOCK_DOCS``."""
    grains = -(-num_docs // (TARGET_BLOCKS * MIN_BLOCK_DOCS))
    return MIN_BLOCK_DOCS * min(max(1, grains), MAX_BLOCK_DOCS // MIN_BLOCK_DOCS)


def _check_block_docs(block_docs: int) -> int:
    if not isinstance(block_docs, int) or block_docs < 1:
        raise ValueError(f"block size must be a positive number of documents, got {block_docs!r}")
    return block_docs


@dataclass
class CorpusBlocks:
    """A text corpus (a JSONL file, a BEIR folder or a dataset id) in blocks.

    Attributes:
        name: what the user gave (recorded in the index).
        block_docs: documents per block.
        num_docs: documents in the corpus (one scan when opened).
        path: the JSONL file, or None for an ir_datasets corpus.
        offsets: byte offset and line number (1-based) of each block's first line (plain
            files only).
    """

    name: str
    block_docs: int
    num_docs: int = 0
    path: Path | None = None
    offsets: list[tuple[int, int]] | None = None
    ir_datasets_id: str | None = field(default=None, repr=False)

    @classmethod
    def open(cls, name: str, block_docs: int | None = None) -> "CorpusBlocks":
        """Resolve ``name`` as ``lsr index`` does and scan it once (counts, offsets).

        Args:
            name: a JSONL file, a BEIR folder or a dataset id.
            block_docs: documents per block (None: `auto_block_docs` of the corpus's size).

        Raises:
            FileNotFoundError, lsr.data.datasets.UnknownDatasetError: nothing by that name.
        """
        from lsr.data.datasets import resolve_dataset

        if block_docs is not None:
            _check_block_docs(block_docs)
        path = Path(name)
        if not path.is_file():
            dataset = resolve_dataset(name)
            path = dataset.corpus_path
            if path is None:
                blocks = cls(dataset.name, block_docs or 0, ir_datasets_id=dataset.ir_datasets_id or dataset.name)
                blocks.num_docs = sum(1 for _ in dataset.iter_documents())
                blocks.block_docs = block_docs or auto_block_docs(blocks.num_docs)
                return blocks
            name = dataset.name
        blocks = cls(str(name), block_docs or 0, path=Path(path))
        blocks._scan(block_docs)
        return blocks

    def _scan(self, block_docs: int | None) -> None:
        """Count the documents (non-blank lines) and, in a plain file, note where blocks start
        (every ``MIN_BLOCK_DOCS``-th document's place while the block size is not yet known)."""
        grain = block_docs or MIN_BLOCK_DOCS
        count, offsets = 0, []
        if self.path.suffix == ".gz":
            with open_text(self.path) as handle:
                count = sum(1 for line in handle if line.strip())
        else:
            with open(self.path, "rb") as handle:
                position = 0
                for line_number, line in enumerate(handle, start=1):
                    if line.strip():
                        if count % grain == 0:
                            offsets.append((position, line_number))
                        count += 1
                    position += len(line)
        self.num_docs = count
        self.block_docs = block_docs or auto_block_docs(count)
        if self.path.suffix != ".gz":
            self.offsets = offsets[:: self.block_docs // grain]

    @property
    def num_blocks(self) -> int:
        return -(-self.num_docs // self.block_docs)

    def fingerprint(self) -> str:
        """What a resumed job must find unchanged: the corpus, its size and the block size."""
        stat = self.path.stat() if self.path is not None else None
        key = [self.name, self.block_docs, self.num_docs, stat.st_size if stat else None,
               stat.st_mtime_ns if stat else None]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]

    def read(self, block: int) -> list[Document]:
        """The documents of one block, in corpus order."""
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} of a corpus of {self.num_blocks} blocks")
        want = min(self.block_docs, self.num_docs - block * self.block_docs)
        if self.path is None:
            from lsr.data.datasets import Dataset

            stream = Dataset(self.name, "", ir_datasets_id=self.ir_datasets_id).iter_documents()
            return list(islice(stream, block * self.block_docs, block * self.block_docs + want))
        first = block * self.block_docs
        if self.offsets is not None:
            offset, line_number = self.offsets[block]
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                lines = list(islice(((n, l.decode("utf-8")) for n, l in enumerate(handle, start=line_number)
                                     if l.strip()), want))
        else:
            with open_text(self.path) as handle:
                lines = list(islice(((n, l) for n, l in enumerate(handle, start=1) if l.strip()), first, first + want))
        return [corpus_document(parse_object_line(line, self.path, n), self.path, n) for n, line in lines]


@dataclass
class VectorBlocks:
    """A pre-encoded collection (``docs/{indptr,indices,values}.npy``) in blocks."""

    path: Path
    block_docs: int
    num_docs: int = 0
    vocab_size: int = 0

    @classmethod
    def open(cls, path: str | Path, block_docs: int) -> "VectorBlocks":
        path = Path(path)
        indptr = np.load(path / "docs" / "indptr.npy", mmap_mode="r")
        meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
        return cls(path, _check_block_docs(block_docs), len(indptr) - 1, int(meta.get("vocab_size", 30522)))

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def num_blocks(self) -> int:
        return -(-self.num_docs // self.block_docs)

    def fingerprint(self) -> str:
        stat = (self.path / "docs" / "indices.npy").stat()
        key = [str(self.path), self.block_docs, self.num_docs, stat.st_size, stat.st_mtime_ns]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]

    def read_vectors(self, block: int):
        """``(doc_ids, SparseBatch)`` of one block."""
        from lsr.index.npy_stream import NpyReader
        from lsr.index.sparse_batch import SparseBatch

        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} of a collection of {self.num_blocks} blocks")
        start, end = block * self.block_docs, min(self.num_docs, (block + 1) * self.block_docs)
        indptr = np.load(self.path / "docs" / "indptr.npy", mmap_mode="r")[start : end + 1].astype(np.int64)
        low, high = int(indptr[0]), int(indptr[-1])
        indices = NpyReader(self.path / "docs" / "indices.npy").read(low, high)
        values = NpyReader(self.path / "docs" / "values.npy").read(low, high)
        return [f"d{i}" for i in range(start, end)], SparseBatch(indptr - low, indices, values, self.vocab_size)
