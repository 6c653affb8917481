"""`LiveIndex`: an index directory opened for search and writes, by one process among several.

What a search sees is a `index.search.View`, rebuilt when something changed:

* the newest commit's segments (opened once, memory-mapped, checked; pinned so the writer
  deletes none of them while this process reads them), each with the deleted mask of that
  commit;
* the write-ahead log records after the commit's ``wal_seq``, read into a
  `index.buffer.WriteBuffer`: added documents are searched in float, and every id they touch
  is deleted in the segments.

Before every operation `refresh` looks for a newer commit (a directory listing) and for new
log records (reading from where it stopped), so a process sees each commit and each
acknowledged write of every other process before it answers its next request.

Writes (`add`, `add_many`, `delete`) append to the log (fsynced before they return) and
refresh. One process at a time is also the writer (``index.writer.IndexWriter``): it turns
the log into segments (`flush`, when the policy says so) and merges them. With ``writer=
"auto"`` a process takes that role when it is free; `maintain` (called by a service's
background thread) takes it over when the previous writer's process died.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsr.index import storage
from lsr.index.buffer import WriteBuffer
from lsr.index.commit import SEGMENTS_DIR, Commit, generations, read_commit, read_newest_commit
from lsr.index.deletes import read_deletes
from lsr.index.directory import CommitPin, IndexBusyError
from lsr.index.dense import DenseIndexError
from lsr.index.doc_ids import IdTables, hash_id
from lsr.index.forward import document_impacts
from lsr.index.format import IndexFormatError, Segment
from lsr.index.quantize import FINE_LEVELS
from lsr.index.scorers.bmp import deleted_seed_counts
from lsr.index.scorers.exhaustive import NO_DELETE_COUNTS, NO_DELETES
from lsr.index.search import SegmentState, View, search_dense, search_sparse, search_sparse_batch
from lsr.index.sparse_batch import SparseBatch
from lsr.index.wal import WalGap, WriteAheadLog, encode_body
from lsr.index.writer import FlushPolicy, IndexWriter

Hits = tuple[list[str], np.ndarray]  # external ids, scores; best first
REFRESH_ATTEMPTS = 50


class DocumentNotFound(KeyError):
    """No live document has this id."""

    def __init__(self, doc_id: str) -> None:
        super().__init__(doc_id)
        self.doc_id = doc_id

    def __str__(self) -> str:
        return f"no document with id {self.doc_id!r}"


@dataclass
class _SegmentEntry:
    """A segment of the current commit with what its commit says is deleted."""

    segment: Segment
    deleted: np.ndarray | None  # bool, None when nothing is
    kth_deleted: np.ndarray
    file: str | None = None  # the delete file it came from


class _CommitState:
    """The current commit, its opened segments and the pin that keeps them on disk."""

    def __init__(self, commit: Commit, pin: CommitPin, entries: list[_SegmentEntry]) -> None:
        self.commit = commit
        self.entries = entries
        self.id_tables = IdTables([entry.segment for entry in entries])
        weakref.finalize(self, pin.release)  # released once no view uses this commit any more


class LiveIndex:
    """An index directory: search, documents, writes.

    Args:
        directory: an index directory (``lsr index`` writes one).
        verify: check every file's checksum when a segment is first opened.
        writer: ``auto`` takes the write role if it is free, ``required`` fails with
            `IndexBusyError` if it is not, ``never`` only appends to the log.
    """

    def __init__(self, directory: str | Path, verify: bool = True, writer: str = "auto") -> None:
        if writer not in ("auto", "required", "never"):
            raise ValueError(f"writer must be auto, required or never, got {writer!r}")
        self.directory = Path(directory)
        first = read_newest_commit(self.directory)  # a clear error for what is not an index
        self.settings = first.settings
        self.vocab_size = int(self.settings["vocab_size"])
        dense = self.settings["build"].get("dense")
        self.dense_dim = int(dense["dim"]) if dense else None  # both follow the commit (`_adopt`)
        self._verify = verify
        self._lock = threading.RLock()
        self._open: dict[str, Segment] = {}
        self._state: _CommitState | None = None
        self._buffer = WriteBuffer(self.vocab_size, self.dense_dim)
        self._applied_seq = 0
        self._view: View | None = None
        self._resolved = 0  # shadowed ids looked up in the segments (a prefix of the buffer's shadow order)
        self._extra: dict[int, list[int]] = {}  # segment index -> internal ids the buffer deleted
        self._watch = storage.ChangeWatch()
        self._masks: dict[int, tuple[int, np.ndarray, int]] = {}  # segment index -> (extra count, live mask, live)
        self._segments_cache: tuple = (None, (), {})  # (what it was built for, segment states, view cache)
        self.wal = WriteAheadLog(self.directory)
        self.writer: IndexWriter | None = None
        self.flush_policy = FlushPolicy()
        try:
            self.refresh()
            if writer == "required":
                self.writer = IndexWriter.open(self.directory, self.wal, self._segment_for)
                self.writer.policy = self.flush_policy
            elif writer == "auto":
                self.try_become_writer()
        except BaseException:
            self.close()
            raise

    # lifecycle

    def try_become_writer(self) -> bool:
        """Take the write role if no other process has it; True if this process is the writer."""
        if self.writer is None:
            try:
                self.writer = IndexWriter.open(self.directory, self.wal, self._segment_for)
            except IndexBusyError:
                return False
            self.writer.policy = self.flush_policy
        return True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if hasattr(self, "wal"):
            self.wal.close()
        self._state = self._view = None

    def __enter__(self) -> "LiveIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def maintain(self) -> None:
        """What a service runs every second or so: take the write role if it is free, and as
        the writer flush when the policy says so."""
        if self.try_become_writer():
            if self.writer.flush(force=False) is not None:
                self.refresh()

    def flush(self) -> Commit | None:
        """Turn the logged writes into a segment now (writer only)."""
        commit = self._writer().flush()
        self.refresh()
        return commit

    def merge(self, max_segments: int | None = None, policy=None) -> Commit | None:
        """Merge segments (writer only): down to ``max_segments``, or what the policy picks."""
        writer = self._writer()
        commit = writer.force_merge(max_segments) if max_segments is not None else writer.maybe_merge(policy)
        self.refresh()
        return commit

    def _writer(self) -> IndexWriter:
        if not self.try_become_writer():
            raise IndexBusyError(f"{self.directory}: another process is the writer")
        return self.writer

    # reading state

    @property
    def commit(self) -> Commit:
        self.refresh()
        return self._state.commit

    @property
    def meta(self) -> dict:
        """The index's metadata (encoder, corpus, ...) as recorded by the build."""
        return self.settings["meta"]

    def refresh(self) -> View:
        """The current view: the newest commit and every log record written so far."""
        with self._lock:
            self._catch_up()
            if self._view is None:
                self._view = self._build_view()
            return self._view

    def _catch_up(self) -> None:
        """Under the lock: load a newer commit and apply the log records after it (the view is
        built again when next asked for: writes alone need none)."""
        for _ in range(REFRESH_ATTEMPTS):
            try:
                changed = self._load_newest_commit()
                records = self.wal.read(self._applied_seq)
                break
            except WalGap:
                self._state = None  # a newer commit holds what was trimmed: load it
                self._watch = storage.ChangeWatch()
        else:
            raise IndexFormatError(f"{self.directory}: the write-ahead log misses records that no commit holds")
        if records:
            applied = len(self._buffer)
            try:
                self._buffer.apply_many(records)
            finally:  # a record that does not fit stops there: the ones before it are applied
                applied = len(self._buffer) - applied
                if applied:
                    self._applied_seq = records[applied - 1].seq
        if changed or records:
            self._view = None

    def _load_newest_commit(self) -> bool:
        if self._state is not None and not self._watch.changed(self.directory):
            return False  # no name added or removed at the top: no new commit
        for _ in range(REFRESH_ATTEMPTS):
            found = generations(self.directory)
            if not found:
                raise IndexFormatError(f"{self.directory}: no commit file left")
            if self._state is not None and self._state.commit.generation == found[-1]:
                return False
            pin = CommitPin.take(self.directory, found[-1])
            if pin is None:
                continue  # deleted meanwhile: look again
            try:
                commit = read_commit(self.directory, found[-1])
                entries = [self._entry(record) for record in commit.segments]
            except BaseException:
                pin.release()
                raise
            self._state = _CommitState(commit, pin, entries)
            self._open = {e.segment.name: e.segment for e in entries}
            self._buffer = self._buffer.drop_through(commit.wal_seq)
            if commit.settings != self.settings:  # a rebuild (or a dense part added) changed them
                self._adopt(commit.settings)
            self._applied_seq = max(self._applied_seq, commit.wal_seq)
            self._resolved, self._extra, self._masks = 0, {}, {}
            return True
        raise IndexFormatError(f"{self.directory}: could not pin a commit (they change too fast)")

    def _adopt(self, settings: dict) -> None:
        self.settings = settings
        self.vocab_size = int(settings["vocab_size"])
        dense = settings["build"].get("dense")
        self.dense_dim = int(dense["dim"]) if dense else None
        self._buffer = self._buffer.reshaped(self.vocab_size, self.dense_dim)

    def _entry(self, record) -> _SegmentEntry:
        segment = self._segment_for(record)
        if record.deletes is None:
            return _SegmentEntry(segment, None, NO_DELETE_COUNTS)
        before = next((e for e in (self._state.entries if self._state is not None else []) if e.segment is segment), None)
        if before is not None and before.file == record.deletes["file"]:
            return before  # the same delete file: reuse what was computed from it
        deleted = read_deletes(self.directory, record.deletes, record.num_docs)
        if before is not None and before.deleted is not None and not np.any(before.deleted & ~deleted):
            # More deletions than before (the usual case, a flush): count only the new ones.
            counts = before.kth_deleted + deleted_seed_counts(segment, deleted & ~before.deleted)
        else:
            counts = deleted_seed_counts(segment, deleted)
        return _SegmentEntry(segment, deleted, counts, record.deletes["file"])

    def _segment_for(self, record) -> Segment:
        segment = self._open.get(record.name)
        if segment is None:
            segment = Segment.open(self.directory / SEGMENTS_DIR / record.name, record.meta, verify=self._verify)
            if segment.vocab_size != self.vocab_size:
                raise IndexFormatError(f"{segment.path}: vocabulary of {segment.vocab_size}, the index has "
                                       f"{self.vocab_size}")
            self._open[record.name] = segment
        return segment

    def _build_view(self) -> View:
        buffer = self._buffer.view()
        self._resolve(buffer)
        # The segments' states change with the commit and the buffer's deletions in them only:
        # views that differ by buffered adds alone share them, and the cache of what the BMP
        # kernel reads of them (building that costs about 0.1 ms a segment, the states a few
        # microseconds each, on every refresh that reads a new record).
        key = (self._state.commit.generation, tuple(sorted((i, len(ids)) for i, ids in self._extra.items())))
        if self._segments_cache[0] != key:
            states, base = [], 0
            for index, entry in enumerate(self._state.entries):
                extra = self._extra.get(index, [])
                live, num_live = self._live_mask(index, entry, extra)
                dense = entry.segment.dense if self.dense_dim else None
                states.append(SegmentState(entry.segment, base, live, num_live, entry.kth_deleted, len(extra), dense))
                base += entry.segment.num_docs
            self._segments_cache = (key, tuple(states), {})
        _, states, cache = self._segments_cache
        return View(states, buffer, self.vocab_size, owner=self._state, cache=cache)

    def _resolve(self, buffer) -> None:
        """Find the segment copies of the ids newly shadowed (replaced or deleted by buffered
        writes) and add them to the segments' extra deletions (``self._extra``)."""
        start = self._resolved
        if start >= buffer.num_shadowed:
            return
        ids = buffer.shadow_order[start : buffer.num_shadowed]
        hashes = buffer.shadow_hashes[start : buffer.num_shadowed]
        for index, _, local in self._state.id_tables.find(ids, hashes):
            entry = self._state.entries[index]
            if entry.deleted is None or not entry.deleted[local]:
                self._extra.setdefault(index, []).append(local)
        self._resolved = buffer.num_shadowed

    def _live_mask(self, index: int, entry: _SegmentEntry, extra: list[int]) -> tuple[np.ndarray, int]:
        """The segment's live mask: its commit's deletions plus the buffer's (cached per count)."""
        if entry.deleted is None and not extra:
            return NO_DELETES, entry.segment.num_docs
        cached = self._masks.get(index)
        if cached is not None and cached[0] == len(extra):
            return cached[1], cached[2]
        if cached is not None and cached[0] < len(extra):
            # ``extra`` only grows until the next commit: the last mask (which views may hold,
            # so a copy) plus the documents deleted since, without a pass over the segment.
            newly = np.unique(np.asarray(extra[cached[0] :], dtype=np.int64))
            live = cached[1].copy()
            num_live = cached[2] - int(np.count_nonzero(live[newly]))
            live[newly] = 0
        else:
            live = (np.ones(entry.segment.num_docs, dtype=np.uint8) if entry.deleted is None
                    else (~entry.deleted).astype(np.uint8))
            live[extra] = 0
            num_live = int(np.count_nonzero(live))
        self._masks[index] = (len(extra), live, num_live)
        return live, num_live

    # searching

    @property
    def num_docs(self) -> int:
        return self.refresh().num_docs

    def search_sparse(self, terms, weights, k: int, scorer: str = "auto", alpha: float = 1.0, beta: float = 1.0,
                      max_blocks: int | None = None, precision: str = "auto") -> Hits:
        """Top ``k`` live documents for a query vector (raw encoder weights); ``precision``:
        which impacts score the segments (``index.search``)."""
        view = self.refresh()
        keys, scores = search_sparse(view, np.asarray(terms), np.asarray(weights), k, scorer, alpha, beta, max_blocks,
                                     precision)
        return view.doc_ids(keys), scores

    def search_sparse_batch(self, queries: SparseBatch, k: int, scorer: str = "auto", alpha: float = 1.0,
                            beta: float = 1.0, max_blocks: int | None = None, precision: str = "auto") -> list[Hits]:
        """`search_sparse` for every query of a batch, in parallel over queries."""
        view = self.refresh()
        results = search_sparse_batch(view, queries, k, scorer, alpha, beta, max_blocks, precision)
        out = []
        for q in range(len(queries)):
            keys, scores = results.row(q)
            out.append((view.doc_ids(keys), scores))
        return out

    def search_dense(self, vector: np.ndarray, k: int) -> Hits:
        """Top ``k`` live documents by inner product with a dense query vector."""
        if self.dense_dim is None:
            raise DenseIndexError(f"{self.directory} has no dense index; build it with `lsr index ... --dense`")
        view = self.refresh()
        keys, scores = search_dense(view, np.asarray(vector, dtype=np.float32), k)
        return view.doc_ids(keys), scores

    # documents

    def contains(self, doc_id: str) -> bool:
        try:
            self._locate(self.refresh(), doc_id)
        except DocumentNotFound:
            return False
        return True

    def document(self, doc_id: str) -> dict:
        """``{"id", "title", "text", "segment"}`` of a live document (``segment``: its segment's
        name, or ``buffer`` for a write not yet flushed)."""
        return self._describe(doc_id, *self._locate(self.refresh(), doc_id))

    def documents(self, doc_ids: list[str]) -> dict[str, dict]:
        """`document` of each live id among ``doc_ids`` (one refresh for all); others are left out."""
        view = self.refresh()
        found = {}
        for doc_id in doc_ids:
            try:
                found[doc_id] = self._describe(doc_id, *self._locate(view, doc_id), view=view)
            except DocumentNotFound:
                continue
        return found

    def document_vector(self, doc_id: str,
                        precision: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """A live document's terms, float weights and, in a segment, the impacts a search of
        ``precision`` scores it by (uint8, or uint16 for 16-bit, ``index.search``) and the weight
        of one of their levels per term (None, None for a write not yet flushed)."""
        view = self.refresh()
        state, local = self._locate(view, doc_id)
        if state is None:
            buffer = view.buffer
            span = slice(buffer.indptr[local], buffer.indptr[local + 1])
            return buffer.indices[span], buffer.values[span], None, None
        fine = view.fine(precision)
        terms, impacts = document_impacts(state.segment, local, fine)
        scales = state.segment.term_scales[terms] / (FINE_LEVELS if fine else 1)  # a power of two: exact
        return terms, impacts.astype(np.float32) * scales, impacts, scales

    def _locate(self, view: View, doc_id: str) -> tuple[SegmentState | None, int]:
        """``(segment state, internal id)`` of a live document, or ``(None, buffer row)``."""
        buffer = view.buffer
        if buffer is not None and buffer.is_shadowed(doc_id):
            row = buffer.row_of(doc_id)
            if row is None:
                raise DocumentNotFound(doc_id)
            return None, row
        for state in reversed(view.segments):
            local = state.segment.find(doc_id)
            if local is not None and (not len(state.live) or state.live[local]):
                return state, local
        raise DocumentNotFound(doc_id)

    def _describe(self, doc_id: str, state: SegmentState | None, local: int, view: View | None = None) -> dict:
        if state is None:
            buffer = (view or self.refresh()).buffer
            return {"id": doc_id, "title": buffer.title(local), "text": buffer.text(local), "segment": "buffer"}
        segment = state.segment
        texts = segment.doc_texts
        return {"id": doc_id, "title": segment.doc_titles[local], "text": texts[local] if texts is not None else "",
                "segment": segment.name}

    # writing

    def add(self, doc_id: str, title: str, text: str, terms, weights, dense: np.ndarray | None = None) -> bool:
        """Add or replace a document durably (fsynced before it returns). True if it replaced one."""
        return self.add_many([(doc_id, title, text, terms, weights, dense)])[0]

    def add_many(self, documents: list[tuple]) -> list[bool]:
        """Add or replace documents ``(id, title, text, terms, weights, dense)`` with one log
        write and one fsync; for each, whether it replaced a live document."""
        bodies = []
        for doc_id, title, text, terms, weights, dense in documents:
            self._check_document(doc_id, terms, weights, dense)
            bodies.append(encode_body("add", doc_id, title, text, terms, weights, dense))
        with self._lock:
            self._catch_up()
            replaced = [self._is_live(d[0]) for d in documents]
        self._append(bodies)
        return replaced

    def delete(self, doc_id: str) -> None:
        """Delete a live document durably (`DocumentNotFound` if there is none)."""
        with self._lock:
            self._catch_up()
            if not self._is_live(doc_id):
                raise DocumentNotFound(doc_id)
        self._append([encode_body("delete", doc_id)])

    def _append(self, bodies: list[bytes]) -> None:
        self.wal.append(bodies)
        with self._lock:
            self._catch_up()
            full = self.writer is not None and len(self._buffer) >= self.flush_policy.max_docs
        # Flush outside the lock, and only if no other thread is flushing: writes and
        # searches go on meanwhile.
        if full and self.writer.flush(force=False, wait=False) is not None:
            with self._lock:
                self._catch_up()

    def _is_live(self, doc_id: str) -> bool:
        """Under the lock, after `_catch_up`: whether ``doc_id`` has a live copy (without
        building a view: `_locate` on one says the same)."""
        if self._buffer.touched(doc_id):
            return self._buffer.holds(doc_id)
        hashes = np.array([hash_id(doc_id)], dtype=np.uint64)
        for index, _, local in self._state.id_tables.find([doc_id], hashes):  # every segment in one call
            deleted = self._state.entries[index].deleted
            if deleted is None or not deleted[local]:
                return True
        return False

    def _check_document(self, doc_id, terms, weights, dense) -> None:
        if not isinstance(doc_id, str) or not doc_id:
            raise ValueError(f"a document id must be a non-empty string, got {doc_id!r}")
        terms, weights = np.asarray(terms), np.asarray(weights)
        if terms.shape != weights.shape or terms.ndim != 1:
            raise ValueError(f"document {doc_id!r}: {terms.size} terms but {weights.size} weights")
        if len(terms) and (terms.min() < 0 or terms.max() >= self.vocab_size):
            raise ValueError(f"document {doc_id!r}: term ids must be in [0, {self.vocab_size})")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError(f"document {doc_id!r}: weights must be finite and non-negative")
        if (dense is None) != (self.dense_dim is None):
            raise ValueError(f"document {doc_id!r}: a dense vector is required exactly when the index has a "
                             f"dense part")
        if dense is not None and np.asarray(dense).shape != (self.dense_dim,):
            raise ValueError(f"document {doc_id!r}: the dense vector must have {self.dense_dim} values")

    # reporting

    def stats(self) -> dict:
        view = self.refresh()
        commit = self._state.commit
        build = self.settings["build"]
        return {
            "documents": view.num_docs,
            "segments": [{"name": s.segment.name, "documents": s.segment.num_docs, "live": s.live_count()}
                         for s in view.segments],
            "buffered_writes": len(self._buffer),
            "buffer_documents": view.buffer.num_live if view.buffer else 0,
            "postings": sum(int(s.segment.meta["num_postings"]) for s in view.segments),
            "vocab_size": self.vocab_size,
            "commit": commit.generation,
            "wal_seq": commit.wal_seq,
            "last_seq": self._applied_seq,
            "writer": self.writer is not None,
            "encoder": self.meta.get("encoder", {}),
            "dense": None if self.dense_dim is None else {"model": build["dense"]["model"], "dim": self.dense_dim,
                                                          "kind": (build["dense"].get("options") or {}).get("kind", "flat")},
            "quantization": f"uint8-{build.get('quantization', 'per-term')}",
            "block_size": build.get("block_size"),
            "doc_order": build.get("reorder"),
        }


def open_single_segment(directory: str | Path, verify: bool = True) -> Segment:
    """The segment of an index that is exactly one segment, with no deletions and no writes
    waiting in the log: what the benchmarks, the peers' converters and CIFF export read.

    Raises:
        IndexFormatError: the index has several segments, deletions or unflushed writes
            (the message says to merge it).
    """
    from lsr.index.wal import WriteAheadLog

    directory = Path(directory)
    commit = read_newest_commit(directory)
    wal = WriteAheadLog(directory)
    try:
        pending = wal.last_seq() - commit.wal_seq
    finally:
        wal.close()
    if len(commit.segments) != 1 or commit.segments[0].deletes or pending > 0:
        raise IndexFormatError(f"{directory} has {len(commit.segments)} segment(s), "
                               f"{sum(s.num_deleted for s in commit.segments)} deleted document(s) and {pending} "
                               f"unflushed write(s); this reads an index of one segment: run `lsr index merge "
                               f"{directory}` first")
    record = commit.segments[0]
    return Segment.open(directory / SEGMENTS_DIR / record.name, record.meta, verify=verify)
