"""The one process that builds segments and commits: flushes, merge commits, new indexes.

`IndexWriter` holds the index's write lock (``index.directory.WriteLock``) for its lifetime.
It is the only committer, so its ``commit`` is always the newest one. Its operations:

* **flush**: roll the write-ahead log (appends go on into a new file), build a segment from
  the records the closed files hold (for each id, its last record wins), then commit: the new
  segment, the deletion of every older copy of the ids those records touched, and
  ``wal_seq`` = the last record flushed; only then are the closed log files deleted;
* **merge commit** (``index.merge`` builds the merged segment): replace the source segments
  by the merged one, carrying over the deletions committed while the merge ran;
* **publish**: commit segments built by an indexing job (a new index, or a replacement of
  every segment of an existing one);
* after every commit, delete what no commit in use needs (``index.directory.collect_garbage``).

Segments are built without the commit lock, so searches and appends never wait for a build;
the commit lock is held only while a commit is computed and written. A crash at any point
leaves the previous commit intact: a half-built or uncommitted segment is not named by any
commit and is deleted by the next writer.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from lsr.index import storage
from lsr.index.builder import DEFAULT_BLOCK_SIZE, SegmentBuilder
from lsr.index.commit import SEGMENTS_DIR, Commit, SegmentRecord, generations, read_newest_commit, write_commit
from lsr.index.deletes import read_deletes, write_deletes
from lsr.index.directory import WriteLock, collect_garbage, init_layout
from lsr.index.doc_ids import find_ids, hash_id
from lsr.index.format import META_FILE, IndexFormatError, Segment, describe_file
from lsr.index.sparse_batch import SparseBatch
from lsr.index.wal import WAL_DIR, WalRecord, WriteAheadLog, create_wal_file

# How segments are built, with `SegmentBuilder`'s defaults (every flush and merge uses these).
BUILD_DEFAULTS = {"quantization": "per-term", "scale": None, "scale_quantile": 1.0, "reorder": "none",
                  "block_size": DEFAULT_BLOCK_SIZE, "bp_options": {}, "store_texts": False, "fine_impacts": True}
LAYOUT_NAMES = {SEGMENTS_DIR, "deletes", WAL_DIR, "locks"}


@dataclass
class FlushPolicy:
    """When the writer turns buffered writes into a segment.

    Attributes:
        max_docs: buffered records that trigger a flush.
        max_seconds: age of the oldest buffered record that triggers one (the service's
            maintenance thread checks it).
    """

    max_docs: int = 1000
    max_seconds: float = 5.0
    # A flushed segment is small and soon merged (merges reorder): not reordering it saves the
    # flush most of its time.
    reorder: str = "none"


def index_settings(vocab_size: int, meta: dict | None = None, dense: dict | None = None, **build) -> dict:
    """The index-wide settings a commit records: vocabulary, user metadata and how segments are built."""
    dense_settings = None
    if dense is not None:
        options = dense.get("options")
        dense_settings = {"model": dense["model"], "dim": int(dense["dim"]),
                          "options": asdict(options) if options is not None and not isinstance(options, dict)
                          else options}
    return {"vocab_size": int(vocab_size), "meta": dict(meta or {}),
            "build": {**{k: build.get(k, default) for k, default in BUILD_DEFAULTS.items()}, "dense": dense_settings}}


def builder_options(settings: dict) -> dict:
    """`SegmentBuilder` keyword arguments from a commit's settings."""
    from lsr.index.dense import DenseOptions

    build = dict(settings["build"])
    dense = build.pop("dense", None)
    if dense is not None:
        options = dense.get("options")
        dense = {"model": dense["model"], "dim": dense["dim"],
                 "options": DenseOptions(**options) if options else None}
    return {**build, "dense": dense}


class IndexWriter:
    """Builds segments and commits for one index directory (see the module docstring).

    Use `create` for a new index (or to replace every segment of one), `open` otherwise.
    """

    def __init__(self, directory: Path, lock: WriteLock, wal: WriteAheadLog, commit: Commit,
                 open_segment=None) -> None:
        self.directory = Path(directory)
        self._lock = lock
        self.wal = wal
        self.commit = commit
        self._open_segment = open_segment or (lambda record: Segment.open(
            self.directory / SEGMENTS_DIR / record.name, record.meta))
        self._commit_lock = threading.RLock()
        self._in_flight: set[str] = set()
        self._next_segment = commit.next_segment
        self._flush_mutex = threading.Lock()
        self._pending_since: float | None = None  # when the log was first seen holding unflushed records
        self.policy = FlushPolicy()
        self.created_directory = False
        self._owns_wal = False  # create() opened its own log  # create() made the directory (a failed first build may remove it)

    @classmethod
    def open(cls, directory: str | Path, wal: WriteAheadLog, open_segment=None, wait: bool = False) -> "IndexWriter":
        """Take the write lock of an existing index (`IndexBusyError` if another process has it)."""
        directory = Path(directory)
        lock = WriteLock.acquire(directory, wait=wait)
        try:
            writer = cls(directory, lock, wal, read_newest_commit(directory), open_segment)
            collect_garbage(directory, writer.commit)  # what a crashed writer left
        except BaseException:
            lock.release()
            raise
        return writer

    @classmethod
    def create(cls, directory: str | Path, settings: dict, overwrite: bool = False) -> "IndexWriter":
        """A writer for a new index at ``directory``, or for replacing every segment of an
        existing one (``overwrite``); nothing is visible until `publish`."""
        directory = Path(directory)
        if generations(directory):
            if not overwrite:
                raise FileExistsError(f"{directory} already holds an index; pass overwrite to replace it")
            wal = WriteAheadLog(directory)
            writer = cls.open(directory, wal)
            writer.commit = writer.commit.successor(settings=settings, generation=writer.commit.generation)
            writer._owns_wal = True
            return writer
        _check_new_directory(directory)
        created = not directory.exists()
        storage.make_dir(directory)
        init_layout(directory)
        lock = WriteLock.acquire(directory)
        try:
            for sub in (SEGMENTS_DIR, "deletes", WAL_DIR):  # what a first build that never finished left
                for path in (directory / sub).iterdir():
                    storage.remove(path)
            for path in directory.iterdir():
                if path.name.startswith(("build-tmp-", ".commit-")):
                    storage.remove(path)
            create_wal_file(directory, 1)
            commit = Commit(generation=0, segments=(), wal_seq=0, next_segment=1, settings=settings)
            writer = cls(directory, lock, WriteAheadLog(directory), commit)
            writer.created_directory = created
            writer._owns_wal = True
            return writer
        except BaseException:
            lock.release()
            raise

    def close(self) -> None:
        self._lock.release()
        if self._owns_wal:
            self.wal.close()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def settings(self) -> dict:
        return self.commit.settings

    # building

    def new_segment_name(self) -> str:
        """A fresh segment name, protected from cleanups until it is committed or abandoned."""
        with self._commit_lock:
            name = f"s{self._next_segment:06d}-{uuid.uuid4().hex[:8]}"
            self._next_segment += 1
            self._in_flight.add(name)
        return name

    def new_segment(self, scan=None, **overrides):
        """A builder for a new segment, with the index's build settings (``overrides`` win): a
        `SegmentBuilder`, or with ``scan`` (an ``index.concat_builder.TermMaxScan`` of the
        documents to come) a `ConcatBuilder` that keeps their order."""
        name = self.new_segment_name()
        options = {**builder_options(self.settings), **overrides}
        meta = dict(self.settings["meta"])
        out = self.directory / SEGMENTS_DIR / name
        if scan is not None:
            from lsr.index.concat_builder import ConcatBuilder

            return ConcatBuilder(out, self.settings["vocab_size"], scan, meta, **options)
        return SegmentBuilder(out, self.settings["vocab_size"], meta, **options)

    def protect(self, name: str) -> None:
        """Keep a file or directory of the index out of this writer's cleanups (work in progress)."""
        with self._commit_lock:
            self._in_flight.add(name)

    def abandon(self, builder) -> None:
        """Forget a builder that failed or was not committed (its files go with the next cleanup)."""
        builder.abort()
        with self._commit_lock:
            self._in_flight.discard(builder.out_dir.name)

    def publish(self, names: list[str], replace_all: bool = False, meta: dict | None = None,
                settings: dict | None = None) -> Commit:
        """Commit finished segments (an indexing job's): appended to the index, or replacing
        every segment and every logged write (``replace_all``); ``meta`` updates the index's
        metadata, ``settings`` replaces its settings."""
        with self._commit_lock:
            records = tuple(self._segment_record(name) for name in names)
            settings = settings or self.settings
            settings = {**settings, "meta": {**settings["meta"], **(meta or {})}}
            if replace_all:
                last_seq = self.wal.roll()
                commit = self.commit.successor(segments=records, wal_seq=last_seq, settings=settings)
            else:
                commit = self.commit.successor(segments=self.commit.segments + records, settings=settings)
            self._commit(commit)
            self._in_flight.difference_update(names)
            if replace_all:
                self.wal.trim(commit.wal_seq)
            return commit

    def _segment_record(self, name: str) -> SegmentRecord:
        meta_path = self.directory / SEGMENTS_DIR / name / META_FILE
        num_docs = int(json.loads(meta_path.read_bytes())["num_docs"])
        return SegmentRecord(name=name, num_docs=num_docs, meta=describe_file(meta_path))

    def _commit(self, commit: Commit) -> None:
        """Write a commit (with the writer's segment counter) and clean up after it."""
        commit = commit.successor(generation=commit.generation, next_segment=max(commit.next_segment, self._next_segment))
        write_commit(self.directory, commit)
        self.commit = commit
        collect_garbage(self.directory, commit, set(self._in_flight))

    # flushing

    def flush(self, force: bool = True, wait: bool = True) -> Commit | None:
        """Turn the logged writes not yet in a segment into one and commit it.

        Args:
            force: flush whatever is logged; otherwise only when the policy says so.
            wait: if another thread is flushing, wait for it and flush after; otherwise
                return None at once (its flush takes the writes logged before it started).

        Returns:
            The new commit, or None when there was nothing to flush.
        """
        if not self._flush_mutex.acquire(blocking=wait):
            return None
        try:
            return self._flush(force)
        finally:
            self._flush_mutex.release()

    def _flush(self, force: bool) -> Commit | None:
        if not force and not self._flush_due():
            return None
        last_seq = self.wal.roll()
        covered = self.commit.wal_seq
        if last_seq <= covered:
            return None
        records = [r for r in self.wal.read(covered) if r.seq <= last_seq]
        latest = _last_per_id(records)
        adds = [r for r in latest if r.op == "add"]
        name = self._build_from_records(adds) if adds else None
        with self._commit_lock:
            changes = self._deletes_for_ids({r.doc_id for r in latest}, self.commit.segments)
            segments = self.apply_deletes(self.commit.segments, changes)
            new = (self._segment_record(name),) if name else ()
            self._commit(self.commit.successor(segments=segments + new, wal_seq=last_seq))
            self._in_flight.discard(name)
        self.wal.trim(last_seq)
        self._pending_since = None
        return self.commit

    def _flush_due(self) -> bool:
        pending = self.wal.last_seq() - self.commit.wal_seq
        if pending <= 0:
            self._pending_since = None
            return False
        now = time.monotonic()
        if self._pending_since is None:
            self._pending_since = now
        return pending >= self.policy.max_docs or now - self._pending_since >= self.policy.max_seconds

    def _build_from_records(self, adds: list[WalRecord]) -> str:
        """A segment of the added documents (one chunk: a flush holds few)."""
        builder = self.new_segment(reorder=self.policy.reorder)
        try:
            vocab_size = self.settings["vocab_size"]
            indptr = np.concatenate([[0], np.cumsum([len(r.terms) for r in adds])]).astype(np.int64)
            batch = SparseBatch(indptr, np.concatenate([r.terms for r in adds]),
                                np.concatenate([r.weights for r in adds]), vocab_size)
            dense = np.stack([r.dense for r in adds]) if builder.dense is not None else None
            builder.add([r.doc_id for r in adds], batch, [r.title for r in adds],
                        texts=[r.text for r in adds] if builder.store_texts else None, dense=dense)
            builder.finish()
        except BaseException:
            self.abandon(builder)
            raise
        return builder.out_dir.name

    # merging

    def open_segment(self, record: SegmentRecord) -> Segment:
        return self._open_segment(record)

    def maybe_merge(self, policy=None) -> Commit | None:
        """Run the merge the policy picks (``index.merge.TieredMergePolicy`` by default), if any;
        a policy with a ``concatenates`` method says whether that merge keeps its sources' orders."""
        from lsr.index.merge import TieredMergePolicy, merge

        policy = policy or TieredMergePolicy()
        names = policy.find_merge(self.commit.segments)
        if not names:
            return None
        concatenate = policy.concatenates([self.commit.segment(n) for n in names]) if hasattr(
            policy, "concatenates") else None
        return merge(self, names, concatenate=concatenate)

    def force_merge(self, max_segments: int = 1) -> Commit:
        """Flush, then merge until at most ``max_segments`` segments remain, none with deletions
        when merged into one (``lsr index merge`` / ``compact``)."""
        from lsr.index.merge import merge

        if max_segments < 1:
            raise ValueError(f"max_segments must be at least 1, got {max_segments}")
        self.flush()
        segments = self.commit.segments
        while len(segments) > max_segments or (max_segments == 1 and segments and segments[0].num_deleted):
            # Merge the smallest ones: as many as it takes to get down to max_segments.
            count = max(2, len(segments) - max_segments + 1) if len(segments) > 1 else 1
            smallest = sorted(segments, key=lambda s: s.num_live)[:count]
            merge(self, [s.name for s in smallest])
            segments = self.commit.segments
        return self.commit

    def merge_from_floats(self, names: list[str], floats: dict[str, Path], float_vectors_dir: Path | None) -> Commit:
        """Merge an indexing job's segments into one from the float vectors it kept, keeping
        each segment's document order (they were reordered when built: bounded memory)."""
        from lsr.index.merge import merge

        return merge(self, names, floats, float_vectors_dir, concatenate=len(names) > 1)

    def delete_copies(self, deleted: dict[str, list[int]]) -> Commit:
        """Commit the deletion of documents given by (segment name, internal ids)."""
        with self._commit_lock:
            changes = {}
            for record in self.commit.segments:
                if record.name in deleted:
                    mask = read_deletes(self.directory, record.deletes, record.num_docs).copy()
                    mask[deleted[record.name]] = True
                    changes[record.name] = mask
            self._commit(self.commit.successor(segments=self.apply_deletes(self.commit.segments, changes)))
            return self.commit

    def add_dense_part(self, segments: list[Segment], vectors: list[np.ndarray], dense: dict, meta: dict) -> Commit:
        """Replace every segment by a copy with a dense part (``vectors[i]`` in segment i's doc
        order); the copies share the sparse files through hard links. One commit."""
        from lsr.index.builder import derive_with_dense
        from lsr.index.dense import DenseOptions

        options = dense.get("options") or DenseOptions()
        replacements = {}
        for segment, rows in zip(segments, vectors):
            builder_name = self.new_segment_name()
            derive_with_dense(segment, self.directory / SEGMENTS_DIR / builder_name, rows, dense["model"], options)
            replacements[segment.name] = builder_name
        with self._commit_lock:
            records, changes = [], {}
            for record in self.commit.segments:
                name = replacements[record.name]
                records.append(self._segment_record(name))
                if record.deletes:
                    changes[name] = read_deletes(self.directory, record.deletes, record.num_docs)
            settings = index_settings(self.settings["vocab_size"], {**self.settings["meta"], **meta},
                                      {**dense, "options": options},
                                      **{k: v for k, v in self.settings["build"].items() if k != "dense"})
            segments = self.apply_deletes(tuple(records), changes)
            self._commit(self.commit.successor(segments=segments, settings=settings))
            self._in_flight.difference_update(replacements.values())
            return self.commit

    def commit_merge(self, names: list[str], merged: str, deleted_at_start: list[np.ndarray],
                     merged_ids: list[np.ndarray], num_docs: int) -> Commit:
        """Commit a merged segment in place of its sources (see ``index.merge``)."""
        with self._commit_lock:
            current = {s.name: s for s in self.commit.segments}
            if any(name not in current for name in names):
                self._in_flight.discard(merged)
                raise RuntimeError(f"segments {names} changed while they were merged")
            merged_deleted = np.zeros(num_docs, dtype=bool)
            for name, before, ids in zip(names, deleted_at_start, merged_ids):
                now = read_deletes(self.directory, current[name].deletes, current[name].num_docs)
                merged_deleted[ids[np.flatnonzero(now & ~before)]] = True
            record = self._segment_record(merged)
            if merged_deleted.any():
                record = replace(record, deletes=write_deletes(self.directory, merged, self.commit.generation + 1,
                                                               merged_deleted))
            segments, placed = [], False
            for segment in self.commit.segments:
                if segment.name not in names:
                    segments.append(segment)
                elif not placed:  # the merged segment takes its first source's place
                    segments.append(record)
                    placed = True
            self._commit(self.commit.successor(segments=tuple(segments)))
            self._in_flight.discard(merged)
            return self.commit

    def _deletes_for_ids(self, doc_ids: set[str], segments) -> dict[str, np.ndarray]:
        """Per segment, the deleted mask after deleting every copy of ``doc_ids`` (changed ones only)."""
        changed = {}
        ids = list(doc_ids)
        hashes = np.array([hash_id(doc_id) for doc_id in ids], dtype=np.uint64)
        for record in segments:
            hits = [local for _, local in find_ids(self._open_segment(record), ids, hashes)]
            if not hits:
                continue
            deleted = read_deletes(self.directory, record.deletes, record.num_docs).copy()
            before = int(deleted.sum())
            deleted[hits] = True
            if int(deleted.sum()) != before:
                changed[record.name] = deleted
        return changed

    def apply_deletes(self, segments: tuple[SegmentRecord, ...], changes: dict[str, np.ndarray]
                      ) -> tuple[SegmentRecord, ...]:
        """Write the changed delete files for the next commit; the segment records naming them."""
        generation = self.commit.generation + 1
        return tuple(
            replace(record, deletes=write_deletes(self.directory, record.name, generation, changes[record.name]))
            if record.name in changes else record
            for record in segments
        )


def _last_per_id(records: list[WalRecord]) -> list[WalRecord]:
    """The last record of each id, in log order."""
    last = {}
    for record in records:
        last.pop(record.doc_id, None)
        last[record.doc_id] = record
    return list(last.values())


def _layout_name(name: str) -> bool:
    """A name an index (or an interrupted build of one) puts at the top of its directory."""
    return name in LAYOUT_NAMES or name.startswith(("build-tmp-", ".commit-"))


def _check_new_directory(directory: Path) -> None:
    """A new index goes into a missing or empty directory, or one a failed first build left."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a directory")
    if (directory / META_FILE).is_file():
        raise IndexFormatError(read_newest_commit_message(directory))
    strangers = [p.name for p in directory.iterdir() if not _layout_name(p.name)]
    if strangers:
        raise FileExistsError(f"{directory} is not empty and not an index (it holds {strangers[0]!r}); "
                              f"give an empty or new directory")


def read_newest_commit_message(directory: Path) -> str:
    try:
        read_newest_commit(directory)
    except IndexFormatError as error:
        return str(error)
    return f"{directory} is an index"
