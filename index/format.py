"""One segment on disk: ``meta.json`` plus ``.npy`` arrays, memory-mapped (read whole when small).

An index directory (``index.commit``) is a set of immutable segments named by a commit point;
each segment is a directory in this format (segment format version 2):

* the postings, as a per-block forward index with a term view of it, block maxima and
  top-k seeds (``POSTINGS_ARRAY_NAMES``, layout in ``index.bmp_build``); impacts are uint8
  quantised weights (see ``index.quantize``), quantised per segment;
* ``term_scales`` float32 (vocab_size): the weight of one impact level of each term;
* ``doc_id_offsets`` int64 / ``doc_id_bytes`` uint8: the external id table (UTF-8);
* ``doc_id_hashes`` uint64 / ``doc_id_hash_docs`` uint32: the FNV-1a hash of every external
  id, sorted, with the doc it belongs to (finding a doc by id is a binary search);
* ``doc_title_offsets`` int64 / ``doc_title_bytes`` uint8: document titles, for display;
* optionally ``doc_text_*`` (texts), ``block_post_impacts16`` (16-bit impacts for exact
  rescoring, ``index.quantize``) and ``dense/`` (a faiss index, ``index.dense``).

``meta.json`` records every file's dtype, shape, size and CRC32; the commit that names the
segment records the CRC32 of ``meta.json`` itself, so every byte of a segment is covered.
Opening a segment checks those checksums (unless told not to) and the arrays' cheap structure
(``index.validate``): a damaged segment is an `IndexFormatError` naming the file, never a
crash in a kernel.

Internal doc ids follow the doc order recorded in ``meta.json`` (``doc_order``: ``none`` keeps
the input order, ``bp`` is recursive graph bisection, ``random`` a seeded shuffle).
"""

from __future__ import annotations

import io
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEGMENT_FORMAT = "lsr-segment"
SEGMENT_FORMAT_VERSION = 2
UPGRADABLE_VERSIONS = (1,)  # 1 kept term postings as entry starts and in-block offsets (``index.upgrade``)
META_FILE = "meta.json"
ARRAY_NAMES = (
    "term_scales",
    "doc_id_offsets",
    "doc_id_bytes",
    "doc_id_hashes",
    "doc_id_hash_docs",
    "doc_title_offsets",
    "doc_title_bytes",
)
POSTINGS_ARRAY_NAMES = (
    "term_entry_offsets",
    "term_entry_blocks",
    "term_entry_max",
    "term_chunk_starts",
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
# Optional: the 16-bit impacts beside ``block_post_impacts`` (``index.quantize.fine_impacts``),
# kept when the index is built with ``fine_impacts`` (the default).
FINE_ARRAY_NAMES = ("block_post_impacts16",)
OPTIONAL_ARRAY_NAMES = TEXT_ARRAY_NAMES + FINE_ARRAY_NAMES
CRC_BLOCK = 1 << 22
# A verified array file up to this size is read whole, checked and parsed from the one read: a
# reader opens each new flushed segment (23 small files), and a memory map of each plus a
# second pass for its CRC cost it most of the open.
SMALL_FILE_BYTES = 1 << 20
CHUNK_BITS = 16  # term-major doc ids are stored as their low 16 bits, chunk by chunk
CHUNK_MASK = (1 << CHUNK_BITS) - 1


class IndexFormatError(RuntimeError):
    """A file of the index is missing, damaged or of a format this version cannot read."""


def crc32_file(path: Path) -> int:
    """CRC32 of a whole file (zlib's; about 1.4 GB/s here)."""
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CRC_BLOCK):
            crc = zlib.crc32(chunk, crc)
    return crc


def describe_file(path: Path) -> dict:
    """The checksum record of one file: size and CRC32 (hex)."""
    return {"bytes": path.stat().st_size, "crc32": f"{crc32_file(path):08x}"}


def check_file(path: Path, record: dict) -> str | None:
    """The problem with a file against its checksum record, or None when it matches."""
    if not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if size != record.get("bytes"):
        return _size_problem(path, size, record)
    return _crc_problem(path, crc32_file(path), record)


def read_checked(path: Path, record: dict) -> tuple[bytes | None, str | None]:
    """A small file's bytes, or None and the problem with them against its checksum record
    (`check_file`'s, from the one read)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size != record.get("bytes"):  # not read: it may be far larger than recorded
                return None, _size_problem(path, size, record)
            data = handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None, f"{path}: missing"
    if len(data) != size:
        return None, _size_problem(path, len(data), record)
    if problem := _crc_problem(path, zlib.crc32(data), record):
        return None, problem
    return data, None


def _size_problem(path: Path, size: int, record: dict) -> str:
    return f"{path}: {size} bytes, but {record.get('bytes')} were written (truncated or damaged)"


def _crc_problem(path: Path, crc: int, record: dict) -> str | None:
    actual = f"{crc:08x}"
    if actual != record.get("crc32"):
        return f"{path}: CRC32 {actual} does not match the recorded {record.get('crc32')} (damaged)"
    return None


def describe_arrays(directory: Path, names=ALL_ARRAY_NAMES) -> dict:
    """The ``meta.json`` entries (file, dtype, shape, bytes, crc32) of the named ``.npy`` arrays."""
    entries = {}
    for name in names:
        path = Path(directory) / f"{name}.npy"
        array = load_array(path)
        entries[name] = {"file": path.name, "dtype": str(array.dtype), "shape": list(array.shape),
                         **describe_file(path)}
    return entries


def read_segment_meta(directory: Path, expected: dict | None = None,
                      versions: tuple[int, ...] = (SEGMENT_FORMAT_VERSION,)) -> dict:
    """Read and check a segment's ``meta.json``.

    Args:
        directory: the segment directory.
        expected: the commit's checksum record of ``meta.json`` (``bytes``, ``crc32``), checked
            before the file is parsed.
        versions: the segment format versions accepted (``index.upgrade`` reads older ones).
    """
    path = Path(directory) / META_FILE
    data = None
    if expected is not None:  # the bytes checked are the bytes parsed: one read
        data, problem = read_checked(path, expected)
        if problem:
            raise IndexFormatError(problem)
    elif not path.is_file():
        raise IndexFormatError(f"{directory} is not a segment: {META_FILE} is missing")
    try:
        meta = json.loads(path.read_bytes() if data is None else data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"{path}: invalid JSON ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != SEGMENT_FORMAT:
        raise IndexFormatError(f"{path}: not a segment of format {SEGMENT_FORMAT!r}")
    if meta.get("format_version") not in versions:
        how = " (run `lsr index upgrade` on the index)" if meta.get("format_version") in UPGRADABLE_VERSIONS else ""
        raise IndexFormatError(f"{path}: segment format version {meta.get('format_version')}, but this build "
                               f"reads version {SEGMENT_FORMAT_VERSION}{how}")
    return meta


def verify_segment_files(directory: Path, meta: dict, skip: frozenset[str] = frozenset()) -> list[str]:
    """Compare every file of a segment with the checksums in its ``meta.json``.

    Args:
        skip: file names (relative to ``directory``) checked already.

    Returns:
        One line per problem (empty when the segment is intact).
    """
    problems = []
    for info in meta.get("arrays", {}).values():
        if info["file"] not in skip and (problem := check_file(Path(directory) / info["file"], info)):
            problems.append(problem)
    for relative, info in (meta.get("files") or {}).items():
        if relative not in skip and (problem := check_file(Path(directory) / relative, info)):
            problems.append(problem)
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
        return bytes(self.data[start:end]).decode("utf-8", errors="replace")

    def take(self, rows: np.ndarray) -> list[str]:
        """The strings of many rows (one offsets lookup for all: a search's 1,000 hits)."""
        rows = np.asarray(rows, dtype=np.int64)
        data = self.data
        return [data[start:end].tobytes().decode("utf-8", errors="replace")
                for start, end in zip(self.offsets[rows].tolist(), self.offsets[rows + 1].tolist())]


@dataclass
class PostingsArrays:
    """The postings of a segment: forward index, term view, block maxima (``index.bmp_build``)."""

    block_size: int
    term_entry_offsets: np.ndarray
    term_entry_blocks: np.ndarray
    term_entry_max: np.ndarray
    term_chunk_starts: np.ndarray
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
    block_post_impacts16: np.ndarray | None = None  # uint16 beside block_post_impacts, when kept

    @property
    def num_blocks(self) -> int:
        return len(self.block_term_offsets) - 1

    @property
    def chunks(self) -> int:
        """Doc-id chunks of ``2^CHUNK_BITS`` docs in the term-major postings (``index.bmp_build``)."""
        return chunk_count(self.num_blocks * self.block_size)

    def postings_per_term(self) -> np.ndarray:
        """Each term's number of postings (its document frequency in the segment), int64."""
        return np.diff(self.term_chunk_starts[:: self.chunks].astype(np.int64))


def chunk_count(num_docs: int) -> int:
    """How many chunks of ``2^CHUNK_BITS`` doc ids cover ``num_docs`` docs (at least one)."""
    return max((int(num_docs) + (1 << CHUNK_BITS) - 1) >> CHUNK_BITS, 1)


@dataclass
class Segment:
    """An opened segment: memory-mapped arrays plus the metadata that describes them."""

    path: Path
    meta: dict
    term_scales: np.ndarray
    doc_ids: StringTable
    doc_id_hashes: np.ndarray
    doc_id_hash_docs: np.ndarray
    doc_titles: StringTable
    postings: PostingsArrays
    doc_texts: StringTable | None = None

    @classmethod
    def open(cls, directory: str | Path, expected_meta: dict | None = None, verify: bool = True) -> "Segment":
        """Open a segment for reading.

        Args:
            directory: the segment directory.
            expected_meta: the commit's checksum record of ``meta.json``.
            verify: check the CRC32 of every file first (reads the whole segment once). The
                cheap structure checks (``index.validate``) run either way.

        Raises:
            IndexFormatError: a file is missing, damaged or inconsistent (the message names it).
        """
        from lsr.index.validate import validate_segment

        directory = Path(directory)
        meta = read_segment_meta(directory, expected_meta)
        listed = meta.get("arrays", {}) if isinstance(meta.get("arrays"), dict) else {}
        names = ALL_ARRAY_NAMES + tuple(name for name in OPTIONAL_ARRAY_NAMES if name in listed)
        contents = _verified_contents(directory, meta, {name: listed.get(name) for name in names}) if verify else {}
        arrays = {name: _open_array(directory, meta, name, contents.get(name)) for name in names}
        segment = cls(
            path=directory,
            meta=meta,
            term_scales=arrays["term_scales"],
            doc_ids=StringTable(arrays["doc_id_offsets"], arrays["doc_id_bytes"]),
            doc_id_hashes=arrays["doc_id_hashes"],
            doc_id_hash_docs=arrays["doc_id_hash_docs"],
            doc_titles=StringTable(arrays["doc_title_offsets"], arrays["doc_title_bytes"]),
            postings=PostingsArrays(_meta_int(meta, "block_size", directory), **{n: arrays[n] for n in POSTINGS_ARRAY_NAMES},
                                    block_post_impacts16=arrays.get("block_post_impacts16")),
            doc_texts=StringTable(arrays["doc_text_offsets"], arrays["doc_text_bytes"]) if "doc_text_offsets" in arrays else None,
        )
        validate_segment(segment)
        return segment

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def dense(self):
        """The segment's faiss part (``index.dense.DenseIndex``), loaded on first use, or None."""
        if not hasattr(self, "_dense"):
            from lsr.index.dense import DENSE_DIR, DenseIndex

            files = {name: info for name, info in (self.meta.get("files") or {}).items()
                     if name.startswith(f"{DENSE_DIR}/")}
            # faiss trusts its input: its files are checked here even when the segment was
            # opened without checksums.
            if problems := [p for name, info in files.items() if (p := check_file(self.path / name, info))]:
                raise IndexFormatError("; ".join(problems))
            self._dense = DenseIndex.open(self.path, self.num_docs) if files else None
        return self._dense

    @property
    def num_docs(self) -> int:
        return int(self.meta["num_docs"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def internal_ids(self) -> dict[str, int]:
        """External id -> internal id, for every document (built on each call: keep it)."""
        return {self.doc_ids[i]: i for i in range(self.num_docs)}

    def find(self, doc_id: str) -> int | None:
        """The internal id of an external id in this segment (deleted or not), or None."""
        from lsr.index.doc_ids import find_id

        return find_id(self, doc_id)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def to_scipy_docs(self, fine: bool = False):
        """The uint8 impacts (not scaled) as a doc-major ``(num_docs, vocab_size)`` scipy CSR
        matrix (materialised: for tests, oracles and small indexes); with ``fine``, the 16-bit
        impacts over 256 (``index.forward.block_range_impacts``)."""
        import scipy.sparse as sp

        if fine:
            from lsr.index.forward import block_range_impacts

            return block_range_impacts(self, 0, self.postings.num_blocks, fine=True)

        from lsr.index.postings_view import term_post_doc_ids

        b = self.postings
        terms = np.repeat(np.arange(self.vocab_size), b.postings_per_term())
        return sp.csr_matrix((b.term_post_impacts.astype(np.float32), (term_post_doc_ids(b), terms)),
                             shape=(self.num_docs, self.vocab_size))

    def term_postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """One term's postings: internal doc ids (uint32, increasing) and uint8 impacts."""
        b = self.postings
        chunks = b.chunks
        starts = b.term_chunk_starts[term * chunks : (term + 1) * chunks + 1].astype(np.int64)
        high = np.repeat(np.arange(chunks, dtype=np.int64) << CHUNK_BITS, np.diff(starts))
        postings = slice(starts[0], starts[-1])
        return (high + b.term_post_docs[postings]).astype(np.uint32), np.asarray(b.term_post_impacts[postings])


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


def _verified_contents(directory: Path, meta: dict, arrays: dict) -> dict[str, bytes]:
    """Check every file of a segment against its checksums, reading the small ones of
    ``arrays`` (name: its ``meta.json`` entry) whole: their bytes by name, to be parsed
    without a second read (`SMALL_FILE_BYTES`).

    Raises:
        IndexFormatError: naming every file that does not match.
    """
    contents, problems, read = {}, [], set()
    for name, info in arrays.items():
        if isinstance(info, dict) and isinstance(info.get("file"), str) and isinstance(info.get("bytes"), int) \
                and info["bytes"] <= SMALL_FILE_BYTES:
            data, problem = read_checked(directory / info["file"], info)
            read.add(info["file"])
            if problem:
                problems.append(problem)
            else:
                contents[name] = data
    if problems := problems + verify_segment_files(directory, meta, frozenset(read)):
        raise IndexFormatError("; ".join(problems))
    return contents


def _parse_npy(contents: bytes) -> np.ndarray:
    """An ``.npy`` file's array from its bytes, read-only as a memory map's is (Numba compiles
    a kernel once for read-only arrays and again for writable ones)."""
    array = np.load(io.BytesIO(contents), allow_pickle=False)
    array.flags.writeable = False
    return array


def _meta_int(meta: dict, key: str, directory: Path) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise IndexFormatError(f"{directory / META_FILE}: {key} must be an integer, got {value!r}")
    return value


def _open_array(directory: Path, meta: dict, name: str, contents: bytes | None = None) -> np.ndarray:
    """A segment's array, memory-mapped, or parsed from ``contents`` (the file, read whole)."""
    info = meta.get("arrays", {}).get(name)
    if not isinstance(info, dict) or "file" not in info:
        raise IndexFormatError(f"{directory / META_FILE} lists no array {name!r}")
    path = directory / info["file"]
    try:
        array = load_array(path) if contents is None else _parse_npy(contents)
    except Exception as error:  # numpy raises many kinds on a damaged header
        raise IndexFormatError(f"{path}: not a readable .npy array ({error})") from error
    if str(array.dtype) != info.get("dtype") or list(array.shape) != info.get("shape"):
        raise IndexFormatError(
            f"{path}: dtype {array.dtype} shape {list(array.shape)} differ from meta.json "
            f"({info.get('dtype')}, {info.get('shape')})"
        )
    # A plain ndarray over the same mapping (which it keeps alive): np.memmap's subclass
    # hooks cost microseconds on every slice and every call into a kernel.
    return np.asarray(array)
