"""Simulated power loss: record an index's fsyncs, rebuild what a power cut would leave, check it.

`IoRecorder` plugs into ``index.storage`` (the one module through which the index makes
anything durable). Every ``fsync`` of a file records its content at that moment; every
``fsync`` of a directory records its entries (name -> file identity). Files are identified by
inode number and inode generation (``FS_IOC_GETVERSION``), so an inode number reused by a new
file is a new file. The model is the strict one: after a power cut, a directory holds the
entries of its last fsync, and a file the content of its last fsync (empty if it was never
fsynced); nothing written after those survives. `IoRecorder.durable_tree` writes the directory
a cut after any recorded event would leave.

`run_scenario` drives a writer through appends, flushes, commits and merges with the
recorder on, marking when each write begins and when it is acknowledged. `check_cut` then
opens the rebuilt directory and checks that it opens, that it holds every acknowledged write
(and the one in flight, if any, either applied or not) and nothing else, and that search
results equal a brute-force oracle over what it holds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.index import storage
from lsr.index.build import build_index
from lsr.index.live import LiveIndex
from lsr.index.scorers.query import merge_query
from lsr.index.sparse_batch import SparseBatch

FS_IOC_GETVERSION = 0x80087601
VOCAB = 200


def identity(path: Path) -> tuple[int, int]:
    """(inode, generation) of a file or directory; generation 0 where the filesystem has none."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            generation = struct.unpack("q", fcntl.ioctl(fd, FS_IOC_GETVERSION, b"\0" * 8))[0] & 0xFFFFFFFF
        except OSError:
            generation = 0
        return os.fstat(fd).st_ino, generation
    finally:
        os.close(fd)


class IoRecorder:
    """Records fsyncs under ``root`` (see the module docstring); the tree as it is now counts as
    durable, holding the documents ``initial`` (id -> vector)."""

    def __init__(self, root: Path, initial: dict) -> None:
        self.root = Path(root)
        self.initial = dict(initial)
        self.root_key = identity(self.root)
        self.events: list[tuple] = []
        for directory, subdirs, files in os.walk(self.root):
            for name in files:
                self.synced_file(Path(directory) / name)
            self.synced_dir(Path(directory))
        self.initial_events = len(self.events)

    # storage.Recorder

    def synced_file(self, path: Path) -> None:
        if self._inside(path):
            self.events.append(("file", identity(path), Path(path).read_bytes()))

    def synced_dir(self, path: Path) -> None:
        if self._inside(path):
            entries = {child.name: (identity(child), child.is_dir()) for child in Path(path).iterdir()}
            self.events.append(("dir", identity(path), entries))

    def removing(self, path: Path) -> None:
        """Nothing to do: a reused inode has a new generation."""

    def _inside(self, path: Path) -> bool:
        return Path(path).resolve().is_relative_to(self.root.resolve())

    # the scenario's marks

    def mark(self, kind: str, payload) -> None:
        self.events.append(("mark", kind, payload))

    @property
    def cut_points(self) -> list[int]:
        """Cuts worth checking: the initial state, after every fsync (the disk changes) and after
        every acknowledgement (the promise changes)."""
        return [i for i in range(self.initial_events, len(self.events) + 1)
                if i == self.initial_events or self.events[i - 1][:2] != ("mark", "begin")]

    def durable_tree(self, cut: int, target: Path) -> None:
        """Write into ``target`` what a power cut after the first ``cut`` events leaves of the root."""
        files, dirs = {}, {}
        for event in self.events[:cut]:
            if event[0] == "file":
                files[event[1]] = event[2]
            elif event[0] == "dir":
                dirs[event[1]] = event[2]

        def build(key, path: Path) -> None:
            path.mkdir()
            for name, (child, is_dir) in dirs.get(key, {}).items():
                if is_dir:
                    build(child, path / name)
                else:
                    (path / name).write_bytes(files.get(child, b""))

        build(self.root_key, target)

    def state_at(self, cut: int) -> tuple[dict, list]:
        """The acknowledged documents before ``cut`` (id -> vector or None if deleted) and the
        operations begun but not acknowledged (at most one in a single-threaded scenario)."""
        acked, in_flight = dict(self.initial), []
        for event in self.events[:cut]:
            if event[0] != "mark":
                continue
            _, kind, payload = event
            if kind == "begin":
                in_flight.append(payload)
            elif kind == "ack":
                in_flight.remove(payload)
                for op, doc_id, vector in payload.ops:
                    acked[doc_id] = vector if op == "add" else None
        return acked, in_flight


@dataclass(frozen=True)
class Write:
    """One acknowledged call: a tuple of (op, id, vector) operations."""

    ops: tuple
    label: str = field(default="")


def _vector(rng, density: float = 0.06) -> sp.csr_matrix:
    row = sp.random(1, VOCAB, density=density, random_state=rng, format="csr", dtype=np.float32)
    row.data = np.abs(row.data) + 0.05
    return row


def initial_index(path: Path, rng, n: int = 120) -> dict:
    """A fresh index of ``n`` documents (one segment); returns id -> vector."""
    docs = [_vector(rng) for _ in range(n)]
    ids = [f"d{i}" for i in range(n)]
    build_index(path, [(ids, SparseBatch.from_scipy(sp.vstack(docs).tocsr()), None)], VOCAB, reorder="bp",
                block_size=4)
    return dict(zip(ids, docs))


def run_scenario(path: Path, recorder: IoRecorder, rng, steps: int, kinds: tuple[str, ...],
                 initial: dict) -> None:
    """Drive a writer through ``steps`` random operations of the given kinds with ``recorder``
    plugged into the storage module. Kinds: ``add``, ``add_many``, ``delete``, ``flush``,
    ``merge``, ``force_merge``, ``rebuild`` (replace every segment)."""
    alive = dict(initial)
    storage.set_recorder(recorder)
    try:
        live = LiveIndex(path, writer="required")
        live.flush_policy.max_docs = 10**9  # flushes happen when the scenario says
        for step in range(steps):
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind in ("add", "add_many"):
                count = 1 if kind == "add" else int(rng.integers(2, 6))
                docs = [(f"d{rng.integers(200)}" if rng.random() < 0.5 else f"n{step}-{i}", _vector(rng))
                        for i in range(count)]
                docs = list(dict(docs).items())  # one op per id in a call
                write = Write(tuple(("add", doc_id, vector) for doc_id, vector in docs), kind)
                recorder.mark("begin", write)
                live.add_many([(doc_id, "", "", v.indices, v.data, None) for doc_id, v in docs])
                recorder.mark("ack", write)
                alive.update(docs)
            elif kind == "delete" and alive:
                doc_id = list(alive)[int(rng.integers(len(alive)))]
                write = Write((("delete", doc_id, None),), kind)
                recorder.mark("begin", write)
                live.delete(doc_id)
                recorder.mark("ack", write)
                del alive[doc_id]
            elif kind == "flush":
                live.flush()
            elif kind == "merge":  # in turn reordering and keeping the sources' orders (small merges do)
                live.merge(policy=_TwoSmallest(concatenate=step % 2 == 1))
            elif kind == "force_merge":
                live.merge(max_segments=1)
            elif kind == "rebuild":
                live.close()
                docs = {f"r{step}-{i}": _vector(rng) for i in range(30)}
                write = Write(tuple(("add", doc_id, v) for doc_id, v in docs.items()) +
                              tuple(("delete", doc_id, None) for doc_id in alive), kind)
                recorder.mark("begin", write)
                build_index(path, [(list(docs), SparseBatch.from_scipy(sp.vstack(list(docs.values())).tocsr()), None)],
                            VOCAB, overwrite=True, reorder="bp", block_size=4)
                recorder.mark("ack", write)
                alive = dict(docs)
                live = LiveIndex(path, writer="required")
                live.flush_policy.max_docs = 10**9
        live.close()
    finally:
        storage.set_recorder(None)


class _TwoSmallest:
    def __init__(self, concatenate: bool) -> None:
        self.concatenate = concatenate

    def concatenates(self, segments) -> bool:
        return self.concatenate

    def find_merge(self, segments):
        if len(segments) < 2:
            return None
        return [s.name for s in sorted(segments, key=lambda s: s.num_live)[:2]]


def check_cut(recorder: IoRecorder, cut: int, work: Path, rng, recover=None) -> str | None:
    """Rebuild the directory a cut leaves and check it; the problem found, or None.
    ``recover``: what a user runs on that directory before opening it (``lsr index upgrade``
    after an upgrade cut short, say), called with its path."""
    target = work / f"cut-{cut}"
    recorder.durable_tree(cut, target)
    if recover is not None:
        try:
            recover(target)
        except Exception as error:
            shutil.rmtree(target, ignore_errors=True)
            return f"cut {cut}: recovery failed: {type(error).__name__}: {error}"
    acked, in_flight = recorder.state_at(cut)
    candidates = [acked]
    for write in in_flight:  # the write in flight may have reached the disk, or not
        applied = dict(acked)
        for op, doc_id, vector in write.ops:
            applied[doc_id] = vector if op == "add" else None
        candidates.append(applied)
    try:
        with LiveIndex(target, writer="required") as live:
            return _check_state(live, candidates, rng)
    except Exception as error:  # the directory must open: anything raised is a failure
        return f"cut {cut}: opening failed: {type(error).__name__}: {error}"
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _check_state(live: LiveIndex, candidates: list[dict], rng) -> str | None:
    view = live.refresh()
    held = {}
    for state in view.segments:
        for local in range(state.segment.num_docs):
            if not len(state.live) or state.live[local]:
                held[state.segment.doc_ids[local]] = state
    if view.buffer is not None:
        for row in range(view.buffer.num_rows):
            if view.buffer.live[row]:
                held[view.buffer.doc_id(row)] = None
    matched = None
    for candidate in candidates:
        expected = {doc_id for doc_id, vector in candidate.items() if vector is not None}
        if set(held) == expected and all(_close(live, doc_id, candidate[doc_id]) for doc_id in expected):
            matched = candidate
            break
    if matched is None:
        expected = {d for d, v in candidates[0].items() if v is not None}
        lost = sorted(expected - set(held))[:5]
        extra = sorted(set(held) - expected)[:5]
        return f"documents differ from the acknowledged state: missing {lost}, unexpected {extra}"
    for _ in range(3):
        query = _vector(rng, density=0.15)
        for scorer in ("exhaustive", "bmp"):
            ids, scores = live.search_sparse(query.indices, query.data, 10, scorer=scorer)
            expected = brute_force_top_k(view, query.indices, query.data, 10)
            if len(ids) != len(expected) or not np.allclose(scores, [s for _, s in expected], rtol=1e-9):
                return f"{scorer} search differs from brute force: {list(zip(ids, scores))} vs {expected}"
    return None


def _close(live: LiveIndex, doc_id: str, vector: sp.csr_matrix) -> bool:
    """The stored vector is the acknowledged one: exactly for a write still in the buffer, to
    within quantisation in a segment (weights here lie in [0.05, 1.05]; a few impact levels
    of 1/255 of the largest weight are at most 0.02, far below what tells two vectors apart)."""
    terms, weights, impacts, _ = live.document_vector(doc_id)
    stored = np.zeros(VOCAB)
    stored[terms.astype(np.int64)] = weights
    expected = vector.toarray()[0]
    if impacts is None:
        return bool(np.array_equal(stored.astype(np.float32), expected.astype(np.float32)))
    return bool(np.all(np.abs(stored - expected) <= 0.02))


def brute_force_top_k(view, terms, weights, k: int, precision: str = "auto") -> list[tuple[str, float]]:
    """Brute force over what a view holds: segment docs by quantised impacts (8- or 16-bit as
    ``precision`` chooses, ``index.search``; query weights scaled per segment, as the kernels
    scale them), buffered docs by float weights, deleted docs left out; ranked by score, then
    by segment order and internal id."""
    vocab_size = view.vocab_size
    fine = view.fine(precision)
    merged_terms, merged_weights = merge_query(np.asarray(terms), np.asarray(weights), vocab_size)
    found = []
    for state in view.segments:
        segment = state.segment
        query = np.zeros(vocab_size)
        query[merged_terms] = (merged_weights * segment.term_scales[merged_terms]).astype(np.float64)
        scores = segment.to_scipy_docs(fine=fine).astype(np.float64) @ query
        for doc in np.flatnonzero(scores > 0):
            if not len(state.live) or state.live[doc]:
                found.append((-scores[doc], state.base + doc, segment.doc_ids[doc]))
    buffer = view.buffer
    query = np.zeros(vocab_size)
    query[merged_terms] = merged_weights.astype(np.float64)
    for row in range(buffer.num_rows):
        span = slice(buffer.indptr[row], buffer.indptr[row + 1])
        score = float(buffer.values[span].astype(np.float64) @ query[buffer.indices[span]])
        if buffer.live[row] and score > 0:
            found.append((-score, view.buffer_base + row, buffer.doc_id(row)))
    found.sort()
    return [(doc_id, -negative) for negative, _, doc_id in found[:k]]
