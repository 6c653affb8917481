"""Indexing jobs: a corpus becomes segments chunk by chunk, published by one commit.

`IndexBuild` cuts the stream of documents into segments of ``segment_docs`` documents. Each
is finished (doc order, quantisation, block data) on a background thread while the caller
goes on (encoding the next chunk), so both cores stay busy; memory is bounded by the segment
size, not the corpus. When the stream ends, ids are checked across segments (a duplicate is
an error naming it, or with ``duplicates="last"`` the last copy wins), the segments are
published by one commit, and by default merged into one segment. The merge reads the float
vectors each segment kept aside, so the merged segment is quantised once, from the encoder's
weights, exactly as a one-pass build would be.
"""

from __future__ import annotations

import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lsr.index import storage
from lsr.index.builder import SegmentBuilder
from lsr.index.commit import SEGMENTS_DIR
from lsr.index.doc_ids import DuplicateIdError, duplicate_positions
from lsr.index.format import load_array
from lsr.index.sparse_batch import SparseBatch
from lsr.index.writer import IndexWriter, index_settings

DEFAULT_SEGMENT_DOCS = 1_000_000  # BP over a segment's documents costs about 2 GB at 1M (eval/results/bench_build_*)


class IndexBuild:
    """Writes one index directory from streamed chunks (see the module docstring).

    Args:
        out_dir: the index directory to create (or whose segments to replace, ``overwrite``).
        vocab_size: the encoder's vocabulary size.
        meta: metadata recorded in every commit (encoder, corpus, ...).
        overwrite: replace every segment (and every logged write) of an existing index.
        segment_docs: documents per segment (None: one segment).
        merge: merge the segments into one at the end (otherwise they are kept as built).
        background: finish segments on a background thread.
        float_vectors_dir: keep the float doc vectors of the final single segment there.
        dense: the dense part's ``{"model", "dim", "options"}``, or None.
        options: `SegmentBuilder` options (quantisation, doc order, block size, texts,
            ``duplicates``).
    """

    def __init__(self, out_dir: str | Path, vocab_size: int, meta: dict | None = None, overwrite: bool = False,
                 segment_docs: int | None = DEFAULT_SEGMENT_DOCS, merge: bool = True, background: bool = True,
                 float_vectors_dir: str | Path | None = None, dense: dict | None = None, **options) -> None:
        if segment_docs is not None and segment_docs < 1:
            raise ValueError(f"segment_docs must be positive, got {segment_docs}")
        self.duplicates = options.pop("duplicates", "error")
        self.out_dir = Path(out_dir)
        self.writer = IndexWriter.create(self.out_dir, index_settings(vocab_size, meta, dense, **options), overwrite)
        self.segment_docs = segment_docs
        self.merge = merge
        self.float_vectors_dir = Path(float_vectors_dir) if float_vectors_dir else None
        self._floats_root = self.out_dir / f"build-tmp-{uuid.uuid4().hex[:8]}"
        self.writer.protect(self._floats_root.name)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="segment") if background else None
        self._builder: SegmentBuilder | None = None
        self._finished: list[Future] = []
        self._published = False
        self.num_docs = 0
        self.has_weights = False  # known once finished

    def add(self, doc_ids: list[str], batch: SparseBatch, titles: list[str] | None = None,
            texts: list[str] | None = None, dense: np.ndarray | None = None) -> None:
        """Append a chunk of documents (as `SegmentBuilder.add`); a chunk that crosses a segment
        boundary is split there."""
        start = 0
        while start < len(doc_ids):
            if self._builder is None:
                keep_floats = self.merge or self.float_vectors_dir is not None
                floats = self._floats_root / f"{len(self._finished)}" if keep_floats else None
                self._builder = self.writer.new_segment(duplicates=self.duplicates, float_vectors_dir=floats)
            room = len(doc_ids) - start if self.segment_docs is None else self.segment_docs - self._builder.num_docs
            end = min(len(doc_ids), start + room)
            part = _rows(batch, start, end)
            self._builder.add(doc_ids[start:end], part, None if titles is None else titles[start:end],
                              texts=None if texts is None else texts[start:end],
                              dense=None if dense is None else dense[start:end])
            self.num_docs += end - start
            if self.segment_docs is not None and self._builder.num_docs >= self.segment_docs:
                self._seal()
            start = end

    def _seal(self) -> None:
        builder, self._builder = self._builder, None
        if self._executor is not None:
            self._finished.append(self._executor.submit(_finish, builder))
        else:
            future = Future()
            future.set_result(_finish(builder))
            self._finished.append(future)

    def finish(self, extra_meta: dict | None = None, require_weights: bool = True) -> Path:
        """Finish the last segment, check ids across segments, publish, merge; the index path.

        Args:
            extra_meta: more metadata for the index (what the job measured, e.g. encoding time).
            require_weights: refuse an index in which every weight is zero (a sharded build
                checks that over all its shards instead: one shard may be empty).
        """
        try:
            if self._builder is not None or not self._finished:
                if self._builder is None:  # an empty corpus: one empty segment
                    self._builder = self.writer.new_segment(duplicates=self.duplicates)
                self._seal()
            builders = [future.result() for future in self._finished]
            self.has_weights = any(b.has_weights for b in builders)
            if require_weights and not self.has_weights:
                raise ValueError(f"cannot index {self.num_docs} documents: every document weight is zero (an empty "
                                 f"corpus, or an encoder that gives no terms)")
            names = [b.out_dir.name for b in builders]
            self.writer.publish(names, replace_all=True, meta=extra_meta)
            self._published = True
            deleted = self._cross_segment_duplicates(builders)
            if deleted:
                self.writer.delete_copies(deleted)
            if self.merge and (len(names) > 1 or deleted):
                self.writer.merge_from_floats(names, {b.out_dir.name: b.float_vectors_dir for b in builders},
                                              self.float_vectors_dir)
            elif self.float_vectors_dir is not None:
                _move_floats(builders[0].float_vectors_dir, self.float_vectors_dir)
        finally:
            self.close()
        return self.out_dir

    def _cross_segment_duplicates(self, builders: list[SegmentBuilder]) -> dict[str, list[int]]:
        return cross_segment_duplicates([b.out_dir for b in builders], self.duplicates)

    def close(self) -> None:
        """Stop the background thread, drop the float copies and release the write lock; before
        a publish, also drop every segment built so far (and the directory, if this build made it)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._builder is not None:
            self.writer.abandon(self._builder)
            self._builder = None
        if not self._published:
            for future in self._finished:
                if future.done() and future.exception() is None:
                    storage.remove(future.result().out_dir)
            self._finished = []
        storage.remove(self._floats_root)
        self.writer.close()
        if not self._published and self.writer.created_directory:
            storage.remove(self.out_dir)


def cross_segment_duplicates(segment_dirs: list[Path], duplicates: str = "error") -> dict[str, list[int]]:
    """Ids given in two of the segments (in this order): a `DuplicateIdError` naming the first,
    or with ``duplicates="last"`` the earlier copies to delete, as ``{segment name: internal ids}``."""
    if len(segment_dirs) < 2:
        return {}
    tables = [(load_array(d / "doc_id_offsets.npy"), load_array(d / "doc_id_bytes.npy")) for d in segment_dirs]
    sizes = [len(offsets) - 1 for offsets, _ in tables]
    offsets = np.concatenate([[0]] + [o[1:] + sum(len(d) for _, d in tables[:i]) for i, (o, _) in enumerate(tables)])
    data = np.concatenate([np.asarray(d) for _, d in tables])
    later, first = duplicate_positions(offsets.astype(np.int64), data)
    if not len(later):
        return {}
    starts = np.concatenate([[0], np.cumsum(sizes)])
    if duplicates == "error":
        j = int(np.argmin(later))
        doc_id = bytes(data[offsets[later[j]] : offsets[later[j] + 1]]).decode("utf-8")
        raise DuplicateIdError(doc_id, " (in two chunks of this build)")
    groups: dict[int, list[int]] = {}
    for position, origin in zip(later.tolist(), first.tolist()):
        groups.setdefault(origin, [origin]).append(position)
    deleted: dict[str, list[int]] = {}
    for members in groups.values():
        for position in sorted(members)[:-1]:  # every copy but the last
            segment = int(np.searchsorted(starts, position, side="right") - 1)
            deleted.setdefault(segment_dirs[segment].name, []).append(position - int(starts[segment]))
    return deleted


def _rows(batch: SparseBatch, start: int, end: int) -> SparseBatch:
    if start == 0 and end == len(batch):
        return batch
    a, b = batch.indptr[start], batch.indptr[end]
    return SparseBatch(batch.indptr[start : end + 1] - a, batch.indices[a:b], batch.values[a:b], batch.vocab_size)


def _finish(builder: SegmentBuilder) -> SegmentBuilder:
    builder.finish()
    return builder


def _move_floats(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))


def build_index(out_dir: str | Path, chunks, vocab_size: int, meta: dict | None = None, **options) -> Path:
    """Build an index from an iterable of ``(doc_ids, SparseBatch, titles)`` chunks
    (`IndexBuild` options; by default one segment per `DEFAULT_SEGMENT_DOCS` documents, merged)."""
    build = IndexBuild(out_dir, vocab_size, meta, background=options.pop("background", False), **options)
    try:
        for doc_ids, batch, titles in chunks:
            build.add(doc_ids, batch, titles)
    except BaseException:
        build.close()
        raise
    return build.finish()


def segment_names(out_dir: Path) -> list[str]:
    return sorted(p.name for p in (Path(out_dir) / SEGMENTS_DIR).iterdir() if p.is_dir())
