"""The on-disk index directory: ``meta.json`` plus ``.npy`` arrays opened with ``mmap_mode="r"``.

Arrays of format version 2 (version 1 had no doc reordering and no BMP arrays):

* the postings, as a per-block forward index with a term view of it, block maxima and
  top-k seeds (``POSTINGS_ARRAY_NAMES``, layout in ``index.bmp_build``); impacts are uint8
  quantised weights (see ``index.quantize``);
* ``term_scales`` float32 (vocab_size): the weight of one impact level of each term.
* ``doc_id_offsets`` int64 / ``doc_id_bytes`` uint8: the external id table (UTF-8).
* ``doc_title_offsets`` int64 / ``doc_title_bytes`` uint8: document titles, for display.

Internal doc ids follow the doc order recorded in ``meta.json`` (``doc_order``: ``none`` keeps
the input order, ``bp`` is recursive graph bisection, ``random`` a seeded shuffle); the id
and title tables are in that order, so external ids are unaffected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_NAME = "lsr-index"
FORMAT_VERSION = 2
META_FILE = "meta.json"
ARRAY_NAMES = (
    "term_scales",
    "doc_id_offsets",
    "doc_id_bytes",
    "doc_title_offsets",
    "doc_title_bytes",
)
POSTINGS_ARRAY_NAMES = (
    "term_entry_offsets",
    "term_entry_blocks",
    "term_entry_max",
    "term_entry_starts",
    "term_post_docs",
    "term_post_impacts",
    "block_term_offsets",
    "block_terms",
    "block_entry_starts",
    "block_post_offsets",
    "block_post_docs",
    "block_post_impacts",
    "bm_dense_slot",
    "bm_dense",
    "term_kth_impacts",
)
ALL_ARRAY_NAMES = ARRAY_NAMES + POSTINGS_ARRAY_NAMES
# Optional: the document texts, kept when the index is built with ``store_texts``.
TEXT_ARRAY_NAMES = ("doc_text_offsets", "doc_text_bytes")


class IndexFormatError(RuntimeError):
    """The directory is not an index this version can read."""


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def read_meta(directory: Path) -> dict:
    """Read and check ``meta.json``: the format name and version must be ours."""
    meta_path = Path(directory) / META_FILE
    if not meta_path.is_file():
        raise IndexFormatError(f"{directory} is not an index: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise IndexFormatError(f"{meta_path}: invalid JSON ({error})") from error
    if meta.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{meta_path}: format is {meta.get('format')!r}, not {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{directory}: index format version {version}, but this build reads version "
            f"{FORMAT_VERSION}; rebuild it with `lsr index`"
        )
    return meta


def describe_arrays(directory: Path, names=ALL_ARRAY_NAMES) -> dict:
    """The ``meta.json`` entries (file, dtype, shape, sha256) of the named ``.npy`` arrays."""
    entries = {}
    for name in names:
        path = Path(directory) / f"{name}.npy"
        array = load_array(path)
        entries[name] = {"file": path.name, "dtype": str(array.dtype), "shape": list(array.shape),
                         "sha256": sha256_file(path)}
    return entries


def verify_checksums(directory: Path) -> list[str]:
    """Compare every array file with the sha256 recorded in ``meta.json``.

    Returns:
        One line per problem (empty when the index is intact).
    """
    meta = read_meta(directory)
    problems = []
    for name, info in meta["arrays"].items():
        path = Path(directory) / info["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif (actual := sha256_file(path)) != info["sha256"]:
            problems.append(f"{path}: sha256 {actual} does not match meta.json {info['sha256']}")
    return problems


class StringTable:
    """Strings stored as one UTF-8 byte array and int64 offsets, read lazily from mmap."""

    def __init__(self, offsets: np.ndarray, data: np.ndarray) -> None:
        self.offsets = offsets
        self.data = data

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        start, end = self.offsets[i], self.offsets[i + 1]
        return bytes(self.data[start:end]).decode("utf-8")


@dataclass
class PostingsArrays:
    """The postings of an index: forward index, term view, block maxima (``index.bmp_build``)."""

    block_size: int
    term_entry_offsets: np.ndarray
    term_entry_blocks: np.ndarray
    term_entry_max: np.ndarray
    term_entry_starts: np.ndarray
    term_post_docs: np.ndarray
    term_post_impacts: np.ndarray
    block_term_offsets: np.ndarray
    block_terms: np.ndarray
    block_entry_starts: np.ndarray
    block_post_offsets: np.ndarray
    block_post_docs: np.ndarray
    block_post_impacts: np.ndarray
    bm_dense_slot: np.ndarray
    bm_dense: np.ndarray
    term_kth_impacts: np.ndarray

    @property
    def num_blocks(self) -> int:
        return len(self.block_term_offsets) - 1


@dataclass
class SparseIndex:
    """An opened index: memory-mapped arrays plus the metadata that describes them."""

    path: Path
    meta: dict
    term_scales: np.ndarray
    doc_ids: StringTable
    doc_titles: StringTable
    postings: PostingsArrays
    doc_texts: StringTable | None = None

    @classmethod
    def open(cls, directory: str | Path, vocab_size: int | None = None) -> "SparseIndex":
        """Open an index for reading.

        Args:
            directory: the index directory.
            vocab_size: the query encoder's vocabulary size; a different one is refused.
        """
        directory = Path(directory)
        meta = read_meta(directory)
        if vocab_size is not None and meta["vocab_size"] != vocab_size:
            raise IndexFormatError(
                f"{directory}: index vocabulary has {meta['vocab_size']} terms but the query "
                f"encoder has {vocab_size}; search it with the model it was built with "
                f"({meta['encoder'].get('model')})"
            )
        names = ALL_ARRAY_NAMES + (TEXT_ARRAY_NAMES if "doc_text_offsets" in meta["arrays"] else ())
        arrays = {name: _open_array(directory, meta, name) for name in names}
        if len(arrays["term_entry_offsets"]) != meta["vocab_size"] + 1:
            raise IndexFormatError(f"{directory}: term_entry_offsets does not match vocab_size")
        return cls(
            path=directory,
            meta=meta,
            term_scales=arrays["term_scales"],
            doc_ids=StringTable(arrays["doc_id_offsets"], arrays["doc_id_bytes"]),
            doc_titles=StringTable(arrays["doc_title_offsets"], arrays["doc_title_bytes"]),
            postings=PostingsArrays(int(meta["block_size"]), **{n: arrays[n] for n in POSTINGS_ARRAY_NAMES}),
            doc_texts=StringTable(arrays["doc_text_offsets"], arrays["doc_text_bytes"]) if "doc_text_offsets" in arrays else None,
        )

    @property
    def num_docs(self) -> int:
        return int(self.meta["num_docs"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def internal_ids(self) -> dict[str, int]:
        """External id -> internal id, for every document (built on each call: keep it)."""
        return {self.doc_ids[i]: i for i in range(self.num_docs)}

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())

    def to_scipy_docs(self):
        """The uint8 impacts (not scaled) as a doc-major ``(num_docs, vocab_size)`` scipy CSR
        matrix (materialised: for tests, oracles and small indexes)."""
        import scipy.sparse as sp

        b = self.postings
        entry_lengths = np.diff(b.term_entry_starts.astype(np.int64))
        docs = np.repeat(b.term_entry_blocks.astype(np.int64) * b.block_size, entry_lengths) + b.term_post_docs
        per_term = np.diff(b.term_entry_starts[b.term_entry_offsets].astype(np.int64))
        terms = np.repeat(np.arange(self.vocab_size), per_term)
        return sp.csr_matrix((b.term_post_impacts.astype(np.float32), (docs, terms)),
                             shape=(self.num_docs, self.vocab_size))

    def term_postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """One term's postings: internal doc ids (uint32, increasing) and uint8 impacts."""
        b = self.postings
        entries = slice(b.term_entry_offsets[term], b.term_entry_offsets[term + 1])
        starts = b.term_entry_starts[b.term_entry_offsets[term] : b.term_entry_offsets[term + 1] + 1].astype(np.int64)
        postings = slice(starts[0], starts[-1]) if len(starts) else slice(0, 0)
        first_docs = np.repeat(b.term_entry_blocks[entries].astype(np.int64) * b.block_size, np.diff(starts))
        return (first_docs + b.term_post_docs[postings]).astype(np.uint32), np.asarray(b.term_post_impacts[postings])


def new_array_file(directory: Path, name: str, dtype, shape) -> np.ndarray:
    """A writable ``name.npy`` memmap; an empty array has nothing to map, so it is saved directly."""
    path = Path(directory) / f"{name}.npy"
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    if int(np.prod(shape)) == 0:
        array = np.empty(shape, dtype=dtype)
        np.save(path, array)
        return array
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def load_array(path: Path) -> np.ndarray:
    """``np.load`` memory-mapped; an empty array has no bytes to map, so it is read directly."""
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:
        return np.load(path)


def _open_array(directory: Path, meta: dict, name: str) -> np.ndarray:
    info = meta["arrays"].get(name)
    if info is None:
        raise IndexFormatError(f"{directory}: meta.json lists no array {name!r}")
    array = load_array(directory / info["file"])
    if str(array.dtype) != info["dtype"] or list(array.shape) != info["shape"]:
        raise IndexFormatError(
            f"{directory / info['file']}: dtype {array.dtype} shape {list(array.shape)} "
            f"differ from meta.json ({info['dtype']}, {info['shape']})"
        )
    return array
