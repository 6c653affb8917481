"""A merged segment that keeps its sources' documents in order: streaming, in bounded memory.

Merging large segments does not reorder their documents again (graph bisection needs every
document's terms in memory); each source is already in its own good order (BP per source),
and the merged segment is their live documents one source after the other. Two passes over
the sources: `TermMaxScan` finds each term's largest weight (the quantisation scale) and the
documents' sizes; `ConcatBuilder` then quantises once more and streams everything to disk
(``index.postings_writer`` for the postings; ids, titles, texts appended), so memory does not
grow with the merged segment's size (except faiss's own, for a dense part).

Both take documents through ``add(doc_ids, batch, titles, texts, dense)``, like
``index.builder.SegmentBuilder``, so one feeder serves all three (``index.merge``).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np

from lsr.index import storage
from lsr.index.builder import _largest_block, _sorted_rows, finalize_segment
from lsr.index.npy_stream import NpyAppender
from lsr.index.postings_writer import PostingsWriter
from lsr.index.quantize import MAX_IMPACT, QuantizationStats, WeightSample, fine_impacts, quantize, scale_for
from lsr.index.sparse_batch import SparseBatch


class TermMaxScan:
    """First pass: per-term maximum weight, a weight sample (global scales), documents' sizes."""

    store_texts = False  # a feeder need not read texts or dense vectors for this pass
    dense = None

    def __init__(self, vocab_size: int) -> None:
        self.term_max = np.zeros(vocab_size, dtype=np.float32)
        self.sample = WeightSample()
        self.nnz: list[np.ndarray] = []
        self.num_docs = 0

    def add(self, doc_ids, batch: SparseBatch, titles=None, texts=None, dense=None) -> None:
        batch = _sorted_rows(batch)
        np.maximum.at(self.term_max, batch.indices, batch.values)
        self.sample.update(batch.values)
        self.nnz.append(np.diff(batch.indptr))
        self.num_docs += len(batch)

    def sizes(self) -> np.ndarray:
        return np.concatenate(self.nnz) if self.nnz else np.zeros(0, dtype=np.int64)


class ConcatBuilder:
    """Second pass: writes the merged segment, documents in the order they are added.

    Args:
        out_dir: where the finished segment goes (must not exist).
        vocab_size: the vocabulary.
        scan: the first pass over the same documents.
        meta: extra metadata for ``meta.json``.
        quantization, scale, scale_quantile, block_size, store_texts, dense, float_vectors_dir, fine_impacts:
            as for `index.builder.SegmentBuilder` (``reorder`` and ``bp_options`` are accepted
            and ignored: the order is the sources').
    """

    def __init__(self, out_dir: Path, vocab_size: int, scan: TermMaxScan, meta: dict | None = None,
                 quantization: str = "per-term", scale: float | None = None, scale_quantile: float = 1.0,
                 block_size: int = 8, store_texts: bool = False, dense: dict | None = None,
                 float_vectors_dir: Path | None = None, reorder: str = "none", bp_options: dict | None = None,
                 duplicates: str = "error", fine_impacts: bool = True) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists():
            raise FileExistsError(f"{self.out_dir} already exists")
        self.vocab_size, self.block_size, self.store_texts = vocab_size, block_size, store_texts
        self.dense = dict(dense) if dense else None
        self.extra_meta = dict(meta or {})
        self.quantization = quantization
        self.num_docs = scan.num_docs
        self.scales, self.global_scale = _scales(scan, quantization, scale, scale_quantile)
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.building-{uuid.uuid4().hex[:8]}"
        self.tmp_dir.mkdir(parents=True)
        sizes = scan.sizes()
        self.fine_impacts = fine_impacts
        self.postings = PostingsWriter(self.tmp_dir, vocab_size, self.num_docs, block_size,
                                       max_block_postings=_largest_block(sizes, block_size), max_postings=int(sizes.sum()),
                                       fine=fine_impacts)
        self.stats = QuantizationStats()
        self.tables = {kind: _StringTable(self.tmp_dir, kind) for kind in
                       ("doc_id", "doc_title") + (("doc_text",) if store_texts else ())}
        self.dense_spill = open(self.tmp_dir / "dense.raw", "wb") if self.dense else None
        self.float_vectors_dir = Path(float_vectors_dir) if float_vectors_dir else None
        self.floats = _FloatVectors(self.float_vectors_dir, vocab_size) if float_vectors_dir else None
        self.added = 0
        self.order: np.ndarray | None = None
        self._started = time.perf_counter()

    def add(self, doc_ids: list[str], batch: SparseBatch, titles: list[str] | None = None,
            texts: list[str] | None = None, dense: np.ndarray | None = None) -> None:
        batch = _sorted_rows(batch)
        impacts, stats = quantize(batch.values, self.scales[batch.indices])
        self.stats.add(stats)
        kept = impacts > 0
        rows = np.repeat(np.arange(len(batch)), np.diff(batch.indptr))
        fine = fine_impacts(batch.values[kept], self.scales[batch.indices[kept]]) if self.fine_impacts else None
        self.postings.add(np.bincount(rows[kept], minlength=len(batch)), batch.indices[kept], impacts[kept], fine)
        self.tables["doc_id"].add(doc_ids)
        self.tables["doc_title"].add(titles if titles is not None else [""] * len(doc_ids))
        if self.store_texts:
            self.tables["doc_text"].add(texts)
        if self.dense_spill is not None:
            self.dense_spill.write(np.ascontiguousarray(dense, dtype=np.float32).tobytes())
        if self.floats is not None:
            self.floats.add(batch)
        self.added += len(doc_ids)

    def finish(self) -> Path:
        """Write the remaining arrays and meta.json, fsync, and move the segment into place."""
        try:
            started = time.perf_counter()
            num_blocks = self.postings.finish()
            postings_seconds = time.perf_counter() - started
            np.save(self.tmp_dir / "term_scales.npy", self.scales)
            for table in self.tables.values():
                table.close()
            if self.dense_spill is not None:
                self._write_dense()
            if self.floats is not None:
                self.floats.close(self.added)
            finalize_segment(self.tmp_dir, self.out_dir, self._meta(num_blocks, postings_seconds))
        except BaseException:
            self.abort()
            raise
        self.order = np.arange(self.added, dtype=np.int64)
        return self.out_dir

    def abort(self) -> None:
        if self.dense_spill is not None and not self.dense_spill.closed:
            self.dense_spill.close()
        storage.remove(self.tmp_dir)

    def _write_dense(self) -> None:
        from lsr.index.dense import write_dense_index

        self.dense_spill.close()
        path = self.tmp_dir / "dense.raw"
        vectors = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, self.dense["dim"]) \
            if path.stat().st_size else np.zeros((0, self.dense["dim"]), np.float32)
        write_dense_index(self.tmp_dir, vectors, self.dense["model"], self.dense.get("options"))
        del vectors
        storage.remove(path)

    def _meta(self, num_blocks: int, postings_seconds: float) -> dict:
        return {
            "vocab_size": self.vocab_size, "num_docs": self.added, "num_postings": self.stats.kept,
            "mean_doc_nnz": self.stats.kept / self.added if self.added else 0.0,
            "doc_order": "concatenated", "bp_options": None, "block_size": self.block_size, "num_blocks": num_blocks,
            "reorder_seconds": 0.0, "bmp_seconds": round(postings_seconds, 3),
            "quantization": {"method": f"uint8-{self.quantization}", "scale": self.global_scale,
                             "scale_quantile": None, "clipped": self.stats.clipped, "zeroed": self.stats.zeroed},
            "dropped_duplicates": 0, "build_seconds": round(time.perf_counter() - self._started, 3),
            **self.extra_meta,
        }


def _scales(scan: TermMaxScan, quantization: str, scale: float | None, quantile: float) -> tuple[np.ndarray, float | None]:
    if quantization == "global":
        chosen = scale or scale_for(scan.sample.quantile(quantile), 1.0)  # 1.0: no weight at all
        return np.full(len(scan.term_max), chosen, dtype=np.float32), chosen
    return np.where(scan.term_max > 0, scan.term_max / MAX_IMPACT, 1.0).astype(np.float32), None


class _StringTable:
    """``<kind>_offsets.npy`` / ``<kind>_bytes.npy`` written as strings arrive."""

    def __init__(self, directory: Path, kind: str) -> None:
        self.directory, self.kind = directory, kind
        self.bytes = NpyAppender(directory / f"{kind}_bytes.npy", np.uint8)
        self.lengths: list[np.ndarray] = []

    def add(self, strings: list[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self.bytes.append(np.frombuffer(b"".join(encoded), dtype=np.uint8))
        self.lengths.append(np.array([len(e) for e in encoded], dtype=np.int64))

    def close(self) -> None:
        self.bytes.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        np.save(self.directory / f"{self.kind}_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


class _FloatVectors:
    """The merged segment's float doc vectors (doc-major CSR), as ``SegmentBuilder`` keeps them."""

    def __init__(self, directory: Path, vocab_size: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.vocab_size = directory, vocab_size
        self.indices = NpyAppender(directory / "indices.npy", np.uint32)
        self.values = NpyAppender(directory / "values.npy", np.float32)
        self.nnz: list[np.ndarray] = []

    def add(self, batch: SparseBatch) -> None:
        self.indices.append(batch.indices)
        self.values.append(batch.values)
        self.nnz.append(np.diff(batch.indptr))

    def close(self, num_docs: int) -> None:
        self.indices.close()
        self.values.close()
        nnz = np.concatenate(self.nnz) if self.nnz else np.zeros(0, np.int64)
        np.save(self.directory / "indptr.npy", np.concatenate([[0], np.cumsum(nnz)]).astype(np.int64))
        (self.directory / "meta.json").write_text(json.dumps({"vocab_size": self.vocab_size, "num_docs": num_docs}))
