"""Build an index from a stream of `SparseBatch` chunks in bounded memory.

Chunks are spilled to disk doc-major as they arrive (float weights, term ids, ids, titles).
``finish()`` then chooses the quantisation scale, counts the surviving postings per term and
scatters the spill into term-major arrays memory-mapped on disk, so memory stays bounded by the
chunk size and the vocabulary, not by the corpus. Everything is written into a temporary
directory beside the target and renamed into place only when complete: an interrupted build
leaves no half-written index and never touches an existing one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
from numba import njit

from index.format import (
    ARRAY_NAMES,
    FORMAT_NAME,
    FORMAT_VERSION,
    META_FILE,
    load_array,
    sha256_file,
)
from index.quantize import QuantizationStats, WeightSample, quantize, scale_for
from index.sparse_batch import SparseBatch

POSTINGS_PER_PASS = 1 << 23

# kernels


@njit(cache=True, nogil=True)
def _scatter_postings(terms, impacts, docs, cursor, out_docs, out_impacts):
    # Docs arrive in increasing order, so each term's postings stay sorted by doc id.
    for i in range(terms.shape[0]):
        if impacts[i] == 0:
            continue
        t = terms[i]
        pos = cursor[t]
        out_docs[pos] = docs[i]
        out_impacts[pos] = impacts[i]
        cursor[t] = pos + 1


# wrappers


class IndexBuilder:
    """Writes one index directory from streamed chunks.

    Args:
        out_dir: where the finished index goes.
        vocab_size: the encoder's vocabulary size.
        meta: extra metadata recorded in ``meta.json`` (encoder, corpus, ...).
        scale: fixed quantisation scale; by default chosen from the data.
        scale_quantile: quantile of all weights mapped to impact 255 (1.0 = the maximum).
        overwrite: replace an existing index at ``out_dir`` once the new one is complete.
        float_vectors_dir: if given, also keep the float doc vectors there (doc-major CSR).
    """

    def __init__(
        self,
        out_dir: str | Path,
        vocab_size: int,
        meta: dict | None = None,
        scale: float | None = None,
        scale_quantile: float = 1.0,
        overwrite: bool = False,
        float_vectors_dir: str | Path | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not overwrite:
            raise FileExistsError(f"{self.out_dir} already exists; pass overwrite to replace it")
        self.vocab_size = int(vocab_size)
        self.extra_meta = dict(meta or {})
        self.fixed_scale = scale
        self.scale_quantile = scale_quantile
        self.float_vectors_dir = Path(float_vectors_dir) if float_vectors_dir else None
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.building-{uuid.uuid4().hex[:8]}"
        self.spill_dir = self.tmp_dir / "spill"
        self.spill_dir.mkdir(parents=True)
        self._files = {
            name: open(self.spill_dir / f"{name}.raw", "wb")
            for name in ("doc_nnz", "terms", "weights", "id_bytes", "id_lens", "title_bytes", "title_lens")
        }
        self._sample = WeightSample()
        self.num_docs = 0
        self.num_postings = 0
        self._started = time.perf_counter()

    def add(self, doc_ids: list[str], batch: SparseBatch, titles: list[str] | None = None) -> None:
        """Append one chunk of documents (ids, vectors and optional titles)."""
        if len(doc_ids) != len(batch):
            raise ValueError(f"{len(doc_ids)} doc ids for a batch of {len(batch)} vectors")
        if batch.vocab_size != self.vocab_size:
            raise ValueError(f"batch vocabulary {batch.vocab_size} differs from {self.vocab_size}")
        titles = titles if titles is not None else [""] * len(doc_ids)
        if np.any(batch.values < 0):
            raise ValueError("document weights must be non-negative")
        self._files["doc_nnz"].write(np.diff(batch.indptr).astype(np.int64).tobytes())
        self._files["terms"].write(batch.indices.tobytes())
        self._files["weights"].write(batch.values.tobytes())
        self._write_strings("id", [str(i) for i in doc_ids])
        self._write_strings("title", titles)
        self._sample.update(batch.values)
        self.num_docs += len(batch)
        self.num_postings += batch.nnz

    def _write_strings(self, kind: str, strings: list[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self._files[f"{kind}_bytes"].write(b"".join(encoded))
        self._files[f"{kind}_lens"].write(np.array([len(e) for e in encoded], dtype=np.int64).tobytes())

    def abort(self) -> None:
        """Drop everything written so far; the target directory is untouched."""
        for handle in self._files.values():
            handle.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> "IndexBuilder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def finish(self) -> Path:
        """Quantise, write the term-major arrays and meta.json, and move the index into place."""
        try:
            for handle in self._files.values():
                handle.close()
            scale = self.fixed_scale or scale_for(self._sample.quantile(self.scale_quantile))
            stats = self._write_postings(scale)
            self._write_string_table("id", "doc_id")
            self._write_string_table("title", "doc_title")
            if self.float_vectors_dir is not None:
                self._write_float_vectors()
            self._write_meta(scale, stats)
            shutil.rmtree(self.spill_dir)
            _move_into_place(self.tmp_dir, self.out_dir)
        except BaseException:
            self.abort()
            raise
        return self.out_dir

    def _spill(self, name: str, dtype) -> np.ndarray:
        path = self.spill_dir / f"{name}.raw"
        if path.stat().st_size == 0:
            return np.empty(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r")

    def _doc_ranges(self, doc_nnz: np.ndarray):
        """Split the docs into runs of about POSTINGS_PER_PASS postings (bounded memory)."""
        indptr = np.concatenate([[0], np.cumsum(doc_nnz)])
        start = 0
        while start < len(doc_nnz):
            end = int(np.searchsorted(indptr, indptr[start] + POSTINGS_PER_PASS, side="right")) - 1
            end = max(end, start + 1)
            yield start, min(end, len(doc_nnz)), indptr
            start = end

    def _write_postings(self, scale: float) -> QuantizationStats:
        doc_nnz = self._spill("doc_nnz", np.int64)
        terms = self._spill("terms", np.uint32)
        weights = self._spill("weights", np.float32)
        df = np.zeros(self.vocab_size, dtype=np.int64)
        stats = QuantizationStats()
        for start, end, indptr in self._doc_ranges(doc_nnz):
            span = slice(indptr[start], indptr[end])
            impacts, chunk_stats = quantize(weights[span], scale)
            stats.add(chunk_stats)
            df += np.bincount(terms[span][impacts > 0], minlength=self.vocab_size)
        offsets = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
        out_docs = _new_array(self.tmp_dir, "postings_docs", np.uint32, int(offsets[-1]))
        out_impacts = _new_array(self.tmp_dir, "postings_impacts", np.uint8, int(offsets[-1]))
        cursor = offsets[:-1].copy()
        for start, end, indptr in self._doc_ranges(doc_nnz):
            span = slice(indptr[start], indptr[end])
            impacts, _ = quantize(weights[span], scale)
            docs = np.repeat(np.arange(start, end, dtype=np.uint32), doc_nnz[start:end])
            _scatter_postings(np.asarray(terms[span]), impacts, docs, cursor, out_docs, out_impacts)
        out_docs.flush()
        out_impacts.flush()
        del out_docs, out_impacts
        np.save(self.tmp_dir / "postings_offsets.npy", offsets)
        return stats

    def _write_string_table(self, kind: str, name: str) -> None:
        lens = self._spill(f"{kind}_lens", np.int64)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        np.save(self.tmp_dir / f"{name}_offsets.npy", offsets)
        _raw_to_npy(self.spill_dir / f"{kind}_bytes.raw", self.tmp_dir / f"{name}_bytes.npy", np.uint8)

    def _write_float_vectors(self) -> None:
        target = self.float_vectors_dir
        target.mkdir(parents=True, exist_ok=True)
        doc_nnz = self._spill("doc_nnz", np.int64)
        np.save(target / "indptr.npy", np.concatenate([[0], np.cumsum(doc_nnz)]).astype(np.int64))
        _raw_to_npy(self.spill_dir / "terms.raw", target / "indices.npy", np.uint32)
        _raw_to_npy(self.spill_dir / "weights.raw", target / "values.npy", np.float32)
        (target / "meta.json").write_text(json.dumps({"vocab_size": self.vocab_size, "num_docs": self.num_docs}))

    def _write_meta(self, scale: float, stats: QuantizationStats) -> None:
        arrays = {}
        for name in ARRAY_NAMES:
            path = self.tmp_dir / f"{name}.npy"
            array = load_array(path)
            arrays[name] = {
                "file": path.name,
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "sha256": sha256_file(path),
            }
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "num_docs": self.num_docs,
            "num_postings": stats.kept,
            "mean_doc_nnz": self.num_postings / self.num_docs if self.num_docs else 0.0,
            "doc_order": "input",
            "quantization": {
                "method": "linear-uint8",
                "scale": scale,
                "scale_quantile": None if self.fixed_scale else self.scale_quantile,
                "clipped": stats.clipped,
                "zeroed": stats.zeroed,
            },
            "build_seconds": round(time.perf_counter() - self._started, 3),
            **self.extra_meta,
            "arrays": arrays,
        }
        (self.tmp_dir / META_FILE).write_text(json.dumps(meta, indent=2))


def _new_array(directory: Path, name: str, dtype, length: int) -> np.ndarray:
    """A writable .npy memmap (an empty array has nothing to map, so it is saved directly)."""
    path = directory / f"{name}.npy"
    if length == 0:
        np.save(path, np.empty(0, dtype=dtype))
        return np.empty(0, dtype=dtype)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(length,))


def _raw_to_npy(raw_path: Path, npy_path: Path, dtype) -> None:
    """Wrap a raw little-endian array file in an .npy header without loading it."""
    dtype = np.dtype(dtype)
    count = raw_path.stat().st_size // dtype.itemsize
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (count,)}
    with open(npy_path, "wb") as out, open(raw_path, "rb") as raw:
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(raw, out, 1 << 22)


def _move_into_place(tmp_dir: Path, out_dir: Path) -> None:
    """Rename the finished index into place; an old index is removed only after that."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.replaced-{uuid.uuid4().hex[:8]}"
        os.rename(out_dir, old)
    os.rename(tmp_dir, out_dir)
    if old is not None:
        shutil.rmtree(old)


def build_index(
    out_dir: str | Path,
    chunks,
    vocab_size: int,
    meta: dict | None = None,
    **options,
) -> Path:
    """Build an index from an iterable of ``(doc_ids, SparseBatch, titles)`` chunks."""
    with IndexBuilder(out_dir, vocab_size, meta, **options) as builder:
        for doc_ids, batch, titles in chunks:
            builder.add(doc_ids, batch, titles)
        return builder.finish()
