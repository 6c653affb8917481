"""Build one segment from a stream of `SparseBatch` chunks in bounded memory.

Chunks are spilled to disk doc-major as they arrive (float weights, term ids, ids, titles).
``finish()`` then checks the ids (a duplicate is an error naming it, or with
``duplicates="last"`` the last document of an id wins), chooses the doc order and the
quantisation scales, counts the surviving postings per term and scatters the spill into
temporary term-major arrays memory-mapped on disk, from which ``index.bmp_build`` derives the
segment's postings; memory stays bounded by the chunk size and the vocabulary, not by the
corpus. Everything is written into a temporary directory beside the target, fsynced, and
renamed into place only when complete (``index.storage``): an interrupted build leaves no
half-written segment. A segment is part of an index only once a commit names it
(``index.writer``).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
from numba import njit

from lsr.index import storage
from lsr.index.bmp_build import MAX_BLOCK_SIZE
from lsr.index.doc_ids import DuplicateIdError, duplicate_positions, hash_ids, sorted_hash_table
from lsr.index.format import (
    ALL_ARRAY_NAMES,
    META_FILE,
    SEGMENT_FORMAT,
    SEGMENT_FORMAT_VERSION,
    OPTIONAL_ARRAY_NAMES,
    describe_arrays,
    describe_file,
    new_array_file,
)
from lsr.index.npy_stream import NpyAppender
from lsr.index.postings_writer import PostingsWriter
from lsr.index.quantize import MAX_IMPACT, QuantizationStats, WeightSample, fine_impacts, quantize, scale_for
from lsr.index.reorder import bp_order, random_order
from lsr.index.sparse_batch import SparseBatch

POSTINGS_PER_PASS = 1 << 23
DEFAULT_BLOCK_SIZE = 8  # fastest of 8, 16, 32 on 1M docs (README, engine benchmark)

# kernels


@njit(cache=True, nogil=True)
def _gather_rows(rows, indptr, terms, weights):
    """The postings of docs ``rows`` (in that order), concatenated."""
    total = 0
    for r in rows:
        total += indptr[r + 1] - indptr[r]
    out_terms = np.empty(total, dtype=np.uint32)
    out_weights = np.empty(total, dtype=np.float32)
    pos = 0
    for r in rows:
        for p in range(indptr[r], indptr[r + 1]):
            out_terms[pos] = terms[p]
            out_weights[pos] = weights[p]
            pos += 1
    return out_terms, out_weights


@njit(cache=True, nogil=True)
def _gather_bytes(rows, offsets, data, out):
    pos = 0
    for r in rows:
        for p in range(offsets[r], offsets[r + 1]):
            out[pos] = data[p]
            pos += 1


# wrappers

DOC_ORDERS = ("none", "bp", "random")
QUANTIZATIONS = ("per-term", "global")
DUPLICATES = ("error", "last")


class SegmentBuilder:
    """Writes one segment directory from streamed chunks.

    Args:
        out_dir: where the finished segment goes (must not exist).
        vocab_size: the encoder's vocabulary size.
        meta: extra metadata recorded in ``meta.json`` (encoder, corpus, ...).
        quantization: ``per-term`` (default: each term's largest weight maps to impact 255,
            so rare low-weight terms keep their resolution; measured best of the 8-bit codes in
            ``eval/results/quantization.json``) or ``global`` (one scale for every term).
        scale: with ``global``: a fixed scale; by default chosen from the data.
        scale_quantile: with ``global``: the quantile of all weights mapped to impact 255
            (1.0 = the maximum; lower clips the largest weights, counted).
        float_vectors_dir: if given, also keep the float doc vectors there (doc-major CSR,
            in the segment's doc order).
        reorder: doc order: ``none`` (input order), ``bp`` (recursive graph bisection, see
            ``index.reorder``) or ``random``.
        block_size: docs per block of the Block-Max Pruning arrays (1 to 256).
        bp_options: ``leaf_size`` / ``max_iterations`` for ``index.reorder.bp_order``.
        store_texts: keep each document's text (``doc_text_*`` arrays) for display and for
            merging segments.
        dense: build the dense part too (``index.dense``): ``{"model": name, "dim": d,
            "options": DenseOptions}``; `add` then takes one vector per document.
        duplicates: ``error`` (an id given twice is a `DuplicateIdError` naming it) or ``last``
            (the last document of an id is kept, the earlier ones dropped).
        fine_impacts: also keep 16-bit impacts (``block_post_impacts16``, 2 bytes a posting),
            for search exact over them (``precision="16-bit"``, ``index.scorers.bmp``).
    """

    def __init__(
        self,
        out_dir: str | Path,
        vocab_size: int,
        meta: dict | None = None,
        quantization: str = "per-term",
        scale: float | None = None,
        scale_quantile: float = 1.0,
        float_vectors_dir: str | Path | None = None,
        reorder: str = "none",
        block_size: int = DEFAULT_BLOCK_SIZE,
        bp_options: dict | None = None,
        store_texts: bool = False,
        dense: dict | None = None,
        duplicates: str = "error",
        fine_impacts: bool = True,
    ) -> None:
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
        if quantization == "per-term" and (scale is not None or scale_quantile != 1.0):
            raise ValueError("scale and scale_quantile apply to quantization='global' only")
        self.quantization = quantization
        self.global_scale: float | None = None  # chosen in finish() with quantization="global"
        if reorder not in DOC_ORDERS:
            raise ValueError(f"reorder must be one of {', '.join(DOC_ORDERS)}, got {reorder!r}")
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block size must be between 1 and {MAX_BLOCK_SIZE}, got {block_size}")
        if duplicates not in DUPLICATES:
            raise ValueError(f"duplicates must be one of {', '.join(DUPLICATES)}, got {duplicates!r}")
        self.reorder = reorder
        self.block_size = block_size
        self.fine_impacts = fine_impacts
        self.bp_options = dict(bp_options or {})
        self.duplicates = duplicates
        self.out_dir = Path(out_dir)
        if self.out_dir.exists():
            raise FileExistsError(f"{self.out_dir} already exists")
        self.vocab_size = int(vocab_size)
        self.extra_meta = dict(meta or {})
        self.fixed_scale = scale
        self.scale_quantile = scale_quantile
        self.float_vectors_dir = Path(float_vectors_dir) if float_vectors_dir else None
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.building-{uuid.uuid4().hex[:8]}"
        self.spill_dir = self.tmp_dir / "spill"
        storage.make_dir(self.out_dir.parent)
        self.spill_dir.mkdir(parents=True)
        self.store_texts = store_texts
        self.dense = dict(dense) if dense else None
        spills = ["doc_nnz", "terms", "weights", "id_bytes", "id_lens", "title_bytes", "title_lens"]
        spills += ["text_bytes", "text_lens"] if store_texts else []
        spills += ["dense"] if dense else []
        self._files = {name: open(self.spill_dir / f"{name}.raw", "wb") for name in spills}
        self._sample = WeightSample()
        self._term_max = np.zeros(self.vocab_size, dtype=np.float32)
        self.num_docs = 0  # documents added (before duplicates are dropped)
        self.num_postings = 0
        self.order: np.ndarray | None = None  # after finish: input position of each internal doc
        self._started = time.perf_counter()

    @property
    def has_weights(self) -> bool:
        """Whether any document added so far has a positive weight."""
        return bool(self._term_max.max(initial=0.0) > 0)

    def add(self, doc_ids: list[str], batch: SparseBatch, titles: list[str] | None = None,
            texts: list[str] | None = None, dense: np.ndarray | None = None) -> None:
        """Append one chunk of documents: ids, sparse vectors, optional titles, the texts
        (with ``store_texts``) and the dense vectors (with ``dense``)."""
        if len(doc_ids) != len(batch):
            raise ValueError(f"{len(doc_ids)} doc ids for a batch of {len(batch)} vectors")
        self._add_extras(len(doc_ids), texts, dense)
        if batch.vocab_size != self.vocab_size:
            raise ValueError(f"batch vocabulary {batch.vocab_size} differs from {self.vocab_size}")
        titles = titles if titles is not None else [""] * len(doc_ids)
        if np.any(batch.values < 0):
            raise ValueError("document weights must be non-negative")
        batch = _sorted_rows(batch)
        self._files["doc_nnz"].write(np.diff(batch.indptr).astype(np.int64).tobytes())
        self._files["terms"].write(batch.indices.tobytes())
        self._files["weights"].write(batch.values.tobytes())
        self._write_strings("id", [str(i) for i in doc_ids])
        self._write_strings("title", titles)
        self._sample.update(batch.values)
        np.maximum.at(self._term_max, batch.indices, batch.values)
        self.num_docs += len(batch)
        self.num_postings += batch.nnz

    def _add_extras(self, count: int, texts: list[str] | None, dense: np.ndarray | None) -> None:
        if self.store_texts:
            if texts is None or len(texts) != count:
                raise ValueError(f"store_texts: give one text per document ({count})")
            self._write_strings("text", texts)
        if self.dense is not None:
            shape = (count, self.dense["dim"])
            if dense is None or dense.shape != shape:
                raise ValueError(f"dense: expected vectors of shape {shape}, got "
                                 f"{None if dense is None else dense.shape}")
            self._files["dense"].write(np.ascontiguousarray(dense, dtype=np.float32).tobytes())

    def _write_strings(self, kind: str, strings: list[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self._files[f"{kind}_bytes"].write(b"".join(encoded))
        self._files[f"{kind}_lens"].write(np.array([len(e) for e in encoded], dtype=np.int64).tobytes())

    def abort(self) -> None:
        """Drop everything written so far; the target directory is untouched."""
        for handle in self._files.values():
            handle.close()
        storage.remove(self.tmp_dir)

    def __enter__(self) -> "SegmentBuilder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def finish(self) -> Path:
        """Check ids, reorder, quantise, write every array and meta.json, fsync, move into place."""
        try:
            for handle in self._files.values():
                handle.close()
            kept = self._kept_positions()
            term_scales = self._term_scales()
            started = time.perf_counter()
            order = self._doc_order(kept)
            reorder_seconds = time.perf_counter() - started
            started = time.perf_counter()
            stats, num_blocks = self._write_postings(term_scales, order)
            postings_seconds = time.perf_counter() - started
            self._write_string_table("id", "doc_id", order)
            self._write_string_table("title", "doc_title", order)
            if self.store_texts:
                self._write_string_table("text", "doc_text", order)
            if self.dense is not None:
                self._write_dense(order)
            if self.float_vectors_dir is not None:
                self._write_float_vectors(order)
            timings = {"reorder_seconds": round(reorder_seconds, 3), "bmp_seconds": round(postings_seconds, 3)}
            storage.remove(self.spill_dir)
            finalize_segment(self.tmp_dir, self.out_dir, self._meta(len(order), stats, num_blocks, timings))
        except BaseException:
            self.abort()
            raise
        self.order = order
        return self.out_dir

    def _kept_positions(self) -> np.ndarray | None:
        """Input positions kept after the duplicate check (None: all of them)."""
        lens = self._spill("id_lens", np.int64)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        later, first = duplicate_positions(offsets, self._spill("id_bytes", np.uint8))
        if len(later) == 0:
            return None
        if self.duplicates == "error":
            j = int(np.argmin(later))
            doc_id = bytes(self._spill("id_bytes", np.uint8)[offsets[later[j]] : offsets[later[j] + 1]]).decode("utf-8")
            raise DuplicateIdError(doc_id, f" (documents {int(first[j])} and {int(later[j])} of this build)")
        # Last wins: of each group of equal ids keep the largest position.
        keep = np.ones(self.num_docs, dtype=bool)
        groups: dict[int, list[int]] = {}
        for position, origin in zip(later.tolist(), first.tolist()):
            groups.setdefault(origin, [origin]).append(position)
        for members in groups.values():
            keep[sorted(members)[:-1]] = False
        return np.flatnonzero(keep)

    def _term_scales(self) -> np.ndarray:
        """The weight of one impact level, per term (float32); saved as ``term_scales.npy``."""
        if self.quantization == "global":
            # A segment whose documents have no weight at all (documents with empty texts, say)
            # is valid: any scale quantises nothing. An indexing job refuses a corpus of them.
            self.global_scale = self.fixed_scale or scale_for(self._sample.quantile(self.scale_quantile), 1.0)
            scales = np.full(self.vocab_size, self.global_scale, dtype=np.float32)
        else:
            scales = np.where(self._term_max > 0, self._term_max / MAX_IMPACT, 1.0).astype(np.float32)
        np.save(self.tmp_dir / "term_scales.npy", scales)
        return scales

    def _doc_order(self, kept: np.ndarray | None) -> np.ndarray:
        """``order[i]`` = the input position of the doc that gets internal id ``i``."""
        if self.reorder == "random":
            order = random_order(self.num_docs, seed=self.bp_options.get("seed", 0))
        elif self.reorder == "bp" and self.num_docs > 1:
            order = bp_order(self._doc_indptr(), self._spill("terms", np.uint32), self.vocab_size,
                             **{k: v for k, v in self.bp_options.items() if k != "seed"})
        else:
            order = np.arange(self.num_docs, dtype=np.int64)
        if kept is not None:
            dropped = np.ones(self.num_docs, dtype=bool)
            dropped[kept] = False
            order = order[~dropped[order]]
        return order

    def _doc_indptr(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self._spill("doc_nnz", np.int64))]).astype(np.int64)

    def _permuted_chunks(self, order: np.ndarray):
        """Yield ``(start, end, nnz, terms, weights)`` for new ids ``[start, end)``, about
        POSTINGS_PER_PASS postings at a time (bounded memory)."""
        indptr = self._doc_indptr()
        terms, weights = self._spill("terms", np.uint32), self._spill("weights", np.float32)
        nnz = np.diff(indptr)[order]
        ends = np.cumsum(nnz)
        start = 0
        while start < len(order):
            end = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + POSTINGS_PER_PASS, side="right"))
            end = min(max(end, start + 1), len(order))
            chunk_terms, chunk_weights = _gather_rows(order[start:end], indptr, terms, weights)
            yield start, end, nnz[start:end], chunk_terms, chunk_weights
            start = end

    def _spill(self, name: str, dtype) -> np.ndarray:
        path = self.spill_dir / f"{name}.raw"
        if path.stat().st_size == 0:
            return np.empty(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r")

    def _write_postings(self, term_scales: np.ndarray, order: np.ndarray) -> tuple[QuantizationStats, int]:
        """Quantise the documents in their final order and stream them into the postings arrays
        (``index.postings_writer``); returns the quantisation counts and the number of blocks."""
        nnz = np.diff(self._doc_indptr())[order]
        writer = PostingsWriter(self.tmp_dir, self.vocab_size, len(order), self.block_size,
                                max_block_postings=_largest_block(nnz, self.block_size), max_postings=int(nnz.sum()),
                                fine=self.fine_impacts)
        stats = QuantizationStats()
        for start, end, chunk_nnz, terms, weights in self._permuted_chunks(order):
            impacts, chunk_stats = quantize(weights, term_scales[terms])
            stats.add(chunk_stats)
            kept = impacts > 0
            docs = np.repeat(np.arange(end - start), chunk_nnz)
            fine = fine_impacts(weights[kept], term_scales[terms[kept]]) if self.fine_impacts else None
            writer.add(np.bincount(docs[kept], minlength=end - start), terms[kept], impacts[kept], fine)
        return stats, writer.finish()

    def _write_string_table(self, kind: str, name: str, order: np.ndarray) -> None:
        lens = self._spill(f"{kind}_lens", np.int64)
        old_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(np.asarray(lens)[order])]).astype(np.int64)
        np.save(self.tmp_dir / f"{name}_offsets.npy", offsets)
        out = new_array_file(self.tmp_dir, f"{name}_bytes", np.uint8, int(offsets[-1]))
        if out.size:
            _gather_bytes(order, old_offsets, self._spill(f"{kind}_bytes", np.uint8), out)
            out.flush()

    def _write_float_vectors(self, order: np.ndarray) -> None:
        target = storage.make_dir(self.float_vectors_dir)  # kept for a later merge: durable like the segment
        indptr = np.concatenate([[0], np.cumsum(np.diff(self._doc_indptr())[order])]).astype(np.int64)
        np.save(target / "indptr.npy", indptr)
        out_terms, out_weights = NpyAppender(target / "indices.npy", np.uint32), NpyAppender(target / "values.npy", np.float32)
        for _, _, _, terms, weights in self._permuted_chunks(order):
            out_terms.append(terms)
            out_weights.append(weights)
        out_terms.close()
        out_weights.close()
        (target / "meta.json").write_text(json.dumps({"vocab_size": self.vocab_size, "num_docs": len(order)}))
        storage.fsync_tree(target)

    def _write_dense(self, order: np.ndarray) -> None:
        """The faiss index in internal doc order, permuted through a spill file (bounded memory)."""
        from lsr.index.dense import write_dense_index

        dim = self.dense["dim"]
        spilled = self._spill("dense", np.float32).reshape(-1, dim)
        permuted = new_array_file(self.spill_dir, "dense_ordered", np.float32, (len(order), dim))
        step = max(1, (1 << 24) // dim)
        for start in range(0, len(order), step):
            permuted[start : start + step] = spilled[order[start : start + step]]
        write_dense_index(self.tmp_dir, permuted, self.dense["model"], self.dense.get("options"))

    def _meta(self, num_docs: int, stats: QuantizationStats, num_blocks: int, timings: dict) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "num_docs": num_docs,
            "num_postings": stats.kept,
            "mean_doc_nnz": stats.kept / num_docs if num_docs else 0.0,
            "doc_order": self.reorder,
            "bp_options": self.bp_options if self.reorder != "none" else None,
            "block_size": self.block_size,
            "num_blocks": num_blocks,
            **timings,
            "quantization": {
                "method": f"uint8-{self.quantization}",
                "scale": self.global_scale if self.quantization == "global" else None,
                "scale_quantile": self.scale_quantile if self.quantization == "global" and not self.fixed_scale else None,
                "clipped": stats.clipped,
                "zeroed": stats.zeroed,
            },
            "dropped_duplicates": self.num_docs - num_docs,
            "build_seconds": round(time.perf_counter() - self._started, 3),
            **self.extra_meta,
        }


def finalize_segment(tmp_dir: Path, out_dir: Path, meta: dict) -> Path:
    """Finish a segment whose arrays are all in ``tmp_dir``: write the id hash table (a duplicate
    id is a `DuplicateIdError`), checksum every file into ``meta.json``, fsync, rename into place."""
    offsets, data = np.load(tmp_dir / "doc_id_offsets.npy"), np.load(tmp_dir / "doc_id_bytes.npy", mmap_mode="r")
    hashes = hash_ids(offsets, data)
    later, first = duplicate_positions(offsets, data, hashes)
    if len(later):
        doc_id = bytes(data[offsets[later[0]] : offsets[later[0] + 1]]).decode("utf-8", "replace")
        raise DuplicateIdError(doc_id, f" (documents {int(first[0])} and {int(later[0])})")
    sorted_hashes, docs = sorted_hash_table(hashes)
    np.save(tmp_dir / "doc_id_hashes.npy", sorted_hashes)
    np.save(tmp_dir / "doc_id_hash_docs.npy", docs)
    names = ALL_ARRAY_NAMES + tuple(name for name in OPTIONAL_ARRAY_NAMES if (tmp_dir / f"{name}.npy").exists())
    meta = {"format": SEGMENT_FORMAT, "format_version": SEGMENT_FORMAT_VERSION, **meta,
            "arrays": describe_arrays(tmp_dir, names), "files": describe_extra_files(tmp_dir)}
    (tmp_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    storage.fsync_tree(tmp_dir)
    storage.rename(tmp_dir, out_dir)
    return out_dir


def _sorted_rows(batch: SparseBatch) -> SparseBatch:
    """The batch with each row's terms ascending and a term given twice summed (the postings
    writer needs one posting per term and document)."""
    terms = batch.indices.astype(np.int64)
    row_of = np.repeat(np.arange(len(batch)), np.diff(batch.indptr))
    if len(terms) < 2 or np.all((np.diff(terms) > 0) | (np.diff(row_of) > 0)):
        return batch
    matrix = batch.to_scipy()
    matrix.sum_duplicates()
    return SparseBatch.from_scipy(matrix)


def _largest_block(nnz: np.ndarray, block_size: int) -> int:
    """The most postings any block of consecutive documents can hold (before zeros are dropped)."""
    if not len(nnz):
        return 0
    padded = np.zeros(-(-len(nnz) // block_size) * block_size, dtype=np.int64)
    padded[: len(nnz)] = nnz
    return int(padded.reshape(-1, block_size).sum(axis=1).max())


def describe_extra_files(directory: Path) -> dict:
    """Checksum records of the files in subdirectories of a segment (its dense part)."""
    return {path.relative_to(directory).as_posix(): describe_file(path)
            for path in sorted(Path(directory).rglob("*")) if path.is_file() and path.parent != Path(directory)}


def derive_with_dense(source, target: Path, vectors: np.ndarray, model: str, options) -> Path:
    """A new segment with ``source``'s sparse files (hard links, nothing copied) and a dense part
    built from ``vectors`` (source doc order); fsynced and renamed into place."""
    import os

    from lsr.index.dense import write_dense_index

    tmp = target.parent / f".{target.name}.building-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        meta = dict(source.meta)
        for info in meta["arrays"].values():
            os.link(source.path / info["file"], tmp / info["file"])
        write_dense_index(tmp, vectors, model, options)
        meta["files"] = describe_extra_files(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        storage.fsync_tree(tmp)
        storage.rename(tmp, target)
    except BaseException:
        storage.remove(tmp)
        raise
    return target
