"""Acknowledged writes not yet in a segment: the log records after the commit's ``wal_seq``.

Every process keeps the records it has read from the write-ahead log in a `WriteBuffer`:
added documents as float sparse vectors (scored exactly, without quantisation), and the set
of ids any buffered record touched (``shadowed``): every copy of those ids in a committed
segment is out of date, so searches treat it as deleted. A flush turns the buffer into a
segment (``index.writer``); once the commit covering it is read, `WriteBuffer.drop_through`
forgets the records it holds.

Arrays grow by doubling and are only ever appended to, and so are the lists of ids, titles
and texts, so a `BufferView` (a search's snapshot) stays valid while writes continue without
copying them: it sees a prefix, plus its own copy of the live mask (a buffered document
replaced or deleted later is dead). A query reads only its own terms' postings: each term's
postings sit in a chain of nodes of `NODE_SLOTS` postings, oldest first (Lucene's in-memory
postings use such slices), so walking a term reads a few cache lines per node where a chain
of single postings cost a cache miss each. Whatever is written after a view was taken is
invisible to it without a copy: a new posting has a row at or past the view's rows, a new
node an index at or past its nodes, and the view stops at both (a slot not yet written holds
`UNWRITTEN`, past every row). Building a view costs the live mask's copy, not a pass over the
buffered documents.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from lsr.index.doc_ids import hash_id
from lsr.index.wal import WalRecord

NODE_SLOTS = 16  # postings of one term per node: 64 bytes of rows, 64 of values
UNWRITTEN = np.iinfo(np.int32).max  # the row of a slot not yet written

# kernels


@njit(cache=True, nogil=True)
def _vector_problem(terms, weights, vocab_size):
    """0 if a record's vector fits the index, 1 for a term id out of range, 2 for a weight
    that is negative or not finite (one pass, for every record read from the log)."""
    for p in range(terms.shape[0]):
        if terms[p] >= vocab_size:
            return 1
        if not (0 <= weights[p] < np.inf):  # NaN fails every comparison
            return 2
    return 0


@njit(cache=True, nogil=True)
def _link_row(indices, values, start, end, row, term_first, term_last, node_fill, node_next, node_rows, node_values,
              num_nodes):
    """Append the postings ``start:end`` (one row's) to their terms' node chains; returns the
    number of nodes (the caller made room for one more node per posting). A new node is filled
    and its row written before anything links to it, so a reader that reaches it sees them."""
    for p in range(start, end):
        term = indices[p]
        node = term_last[term]
        if node < 0 or node_fill[node] == NODE_SLOTS:
            fresh = num_nodes
            num_nodes += 1
            node_rows[fresh, :] = UNWRITTEN  # the arrays are allocated uninitialised
            node_fill[fresh] = 0
            node_next[fresh] = -1
            if node < 0:
                term_first[term] = fresh
            else:
                node_next[node] = fresh
            term_last[term] = fresh
            node = fresh
        slot = node_fill[node]
        node_values[node, slot] = values[p]
        node_rows[node, slot] = row
        node_fill[node] = slot + 1
    return num_nodes


@njit(cache=True, nogil=True)
def _check_and_link(indices, values, indptr, first_row, end_row, vocab_size, term_first, term_last, node_fill,
                    node_next, node_rows, node_values, num_nodes):
    """`_link_row` for the rows ``first_row:end_row`` (their postings at ``indptr``) if every
    posting fits the index (`_vector_problem`); returns the number of nodes, or -1 (nothing
    linked) if one does not."""
    start, end = indptr[first_row], indptr[end_row]
    if _vector_problem(indices[start:end], values[start:end], vocab_size):
        return -1
    for row in range(first_row, end_row):
        num_nodes = _link_row(indices, values, indptr[row], indptr[row + 1], row, term_first, term_last, node_fill,
                              node_next, node_rows, node_values, num_nodes)
    return num_nodes


@njit(cache=True, nogil=True)
def _score_nodes(q_terms, q_weights, term_first, node_next, node_rows, node_values, live, out):
    """Add ``weight x value`` of every posting of the query's terms to its row (float64), for
    the rows and nodes of a view (``out`` has one slot per row, ``node_next`` one per node);
    dead rows end at 0. Rows meet their terms in query order, as a row-by-row pass over
    term-sorted rows would add them."""
    num_rows, num_nodes = out.shape[0], node_next.shape[0]
    for j in range(q_terms.shape[0]):
        w = np.float64(q_weights[j])
        node = term_first[q_terms[j]]
        while 0 <= node < num_nodes:
            for slot in range(NODE_SLOTS):
                row = node_rows[node, slot]
                if row >= num_rows:  # written after the view (or not yet): rows only grow
                    break
                out[row] += w * np.float64(node_values[node, slot])
            node = node_next[node]
    for r in range(num_rows):
        if not live[r]:
            out[r] = 0.0


# wrappers


class BufferRecordError(ValueError):
    """A log record whose content does not fit the index (term ids, weights, dense size)."""


class BufferView(NamedTuple):
    """A snapshot of the buffer, safe to search without a lock. (A named tuple: a refresh that
    reads new records builds one, and a frozen dataclass's constructor cost several times more.)

    Attributes:
        num_rows: buffered documents seen (dead rows included).
        indptr, indices, values: the rows' sparse vectors (CSR; uint32 terms, float32 weights).
        term_first: per term, the first node of its chain (shared with the buffer, which only
            ever sets an entry from -1 to a node past the view's).
        node_next, node_rows, node_values: per node, the next node of its term (-1 at the
            end), and its `NODE_SLOTS` postings' rows and values (module docstring).
        dense: ``(rows, dim)`` float32, or None when the index has no dense part.
        live: bool per row: False once a later record replaced or deleted it.
        num_shadowed: ids whose segment copies are out of date, as of this view (a prefix of
            the buffer's `WriteBuffer.shadow_order`: every id a buffered record touched).
        shadow_hashes: the `index.doc_ids.hash_id` of each of those ids, in that order.
        ids, titles, texts: per row (lists the buffer appends to; read below ``num_rows``).
        shadow_rank: id -> position in ``shadow_order`` (never changes once set).
        rows_of: id -> its rows, ascending.
        shadow_order: the buffer's list of shadowed ids (read below ``num_shadowed``).
    """

    num_rows: int
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    term_first: np.ndarray
    node_next: np.ndarray
    node_rows: np.ndarray
    node_values: np.ndarray
    dense: np.ndarray | None
    live: np.ndarray
    num_shadowed: int
    shadow_hashes: np.ndarray
    ids: list
    titles: list
    texts: list
    shadow_rank: dict
    rows_of: dict
    shadow_order: list

    @property
    def num_live(self) -> int:
        return int(np.count_nonzero(self.live))

    def doc_id(self, row: int) -> str:
        return self.ids[row]

    def title(self, row: int) -> str:
        return self.titles[row]

    def text(self, row: int) -> str:
        return self.texts[row]

    def is_shadowed(self, doc_id: str) -> bool:
        """Whether a buffered record (as of this view) touched ``doc_id``."""
        return self.shadow_rank.get(doc_id, self.num_shadowed) < self.num_shadowed

    def sparse_scores(self, merged_terms: np.ndarray, merged_weights: np.ndarray, vocab_size: int) -> np.ndarray:
        """Float64 scores of every row for a merged query (``index.scorers.query.merge_query``)."""
        out = np.zeros(self.num_rows, dtype=np.float64)
        if self.num_rows and len(merged_terms):
            _score_nodes(np.asarray(merged_terms, dtype=np.int64), np.asarray(merged_weights, dtype=np.float64),
                         self.term_first, self.node_next, self.node_rows, self.node_values, self.live, out)
        return out

    def dense_scores(self, vector: np.ndarray) -> np.ndarray:
        if self.dense is None or not self.num_rows:
            return np.zeros(self.num_rows, dtype=np.float32)
        return (self.dense @ np.asarray(vector, dtype=np.float32)).astype(np.float32)

    def row_of(self, doc_id: str) -> int | None:
        """The live row holding ``doc_id``, or None."""
        for row in reversed(self.rows_of.get(doc_id, ())):
            if row < self.num_rows:
                return row if self.live[row] else None
        return None


class WriteBuffer:
    """Buffered records of one process (not thread-safe: `index.live.LiveIndex` locks around it).

    Args:
        vocab_size: the sparse vocabulary (term ids are checked against it).
        dense_dim: the dense dimension, or None when the index has no dense part.
    """

    def __init__(self, vocab_size: int, dense_dim: int | None, capacity: tuple[int, int, int] = (16, 256, 64)) -> None:
        self.vocab_size = vocab_size
        self.dense_dim = dense_dim
        self.records: list[WalRecord] = []
        self._ids: list[str] = []
        self._titles: list[str] = []
        self._texts: list[str] = []
        self._row_of: dict[str, int] = {}  # id -> its live row
        self._rows_of: dict[str, list[int]] = {}  # id -> every row it had (append-only, for views)
        self.shadow_order: list[str] = []  # ids in the order a record first touched them
        self._shadow_rank: dict[str, int] = {}
        # Room for (rows, postings, nodes) to start with; arrays grow by doubling. Unused slots
        # are never read (views stop at the counts), so they are left uninitialised.
        rows, postings, nodes = capacity
        self._shadow_hashes = np.empty(rows, dtype=np.uint64)
        self._indptr = np.zeros(rows + 1, dtype=np.int64)
        self._indices = np.empty(postings, dtype=np.uint32)
        self._values = np.empty(postings, dtype=np.float32)
        self._term_first = np.full(vocab_size, -1, dtype=np.int32)
        self._term_last = np.full(vocab_size, -1, dtype=np.int32)
        self._node_fill = np.empty(nodes, dtype=np.int32)
        self._node_next = np.empty(nodes, dtype=np.int32)
        self._node_rows = np.empty((nodes, NODE_SLOTS), dtype=np.int32)
        self._node_values = np.empty((nodes, NODE_SLOTS), dtype=np.float32)
        self._num_nodes = 0
        self._dense = np.empty((rows, dense_dim), dtype=np.float32) if dense_dim else None
        self._live = np.empty(rows, dtype=bool)
        self._nnz = 0
        self._view: BufferView | None = None

    @property
    def last_seq(self) -> int | None:
        return self.records[-1].seq if self.records else None

    def __len__(self) -> int:
        return len(self.records)

    def touched(self, doc_id: str) -> bool:
        """Whether a buffered record added, replaced or deleted ``doc_id``."""
        return doc_id in self._shadow_rank

    def holds(self, doc_id: str) -> bool:
        """Whether the buffer holds a live copy of ``doc_id``."""
        return doc_id in self._row_of

    def apply(self, record: WalRecord) -> None:
        """Apply one record, in log order."""
        self.apply_many([record])

    def apply_many(self, records: list[WalRecord]) -> None:
        """Apply records in log order.

        The adds' postings are staged past the stored ones (slots no view reads), then checked
        and linked in one compiled call; the ids' bookkeeping follows once they fit. (A refresh
        reads a few records between searches, which leave the caches cold: every distinct
        numpy or Numba call on this path cost several microseconds, so it makes few.)

        Raises:
            BufferRecordError: a record does not fit the index (the records before it are applied).
        """
        if not records:
            return
        adds = [record for record in records if record.op == "add"]
        first_row, nnz = len(self._ids), self._nnz
        self._reserve(first_row + len(adds), nnz + sum(len(record.terms) for record in adds))
        indices, values, indptr = self._indices, self._values, self._indptr
        end, row = nnz, first_row
        for record in adds:
            start, end, row = end, end + len(record.terms), row + 1
            indices[start:end] = record.terms
            values[start:end] = record.weights
            indptr[row] = end
        num_nodes = -1
        if not any(self._dense_misfit(record) for record in adds):
            num_nodes = _check_and_link(indices, values, indptr, first_row, row, self.vocab_size, self._term_first,
                                        self._term_last, self._node_fill, self._node_next, self._node_rows,
                                        self._node_values, self._num_nodes)
        if num_nodes < 0:  # nothing was linked
            self._refuse_first_misfit(records, nnz)
        self._num_nodes, self._nnz = num_nodes, end
        self._book(records, first_row)
        self._view = None

    def _dense_misfit(self, record: WalRecord) -> bool:
        return (0 if record.dense is None else len(record.dense)) != (self.dense_dim or 0)

    def _refuse_first_misfit(self, records: list[WalRecord], start: int) -> None:
        """Apply the records before the first that does not fit the index, then raise
        `BufferRecordError` naming it; the adds' postings are judged as staged from ``start``
        (as they would be stored: float32 weights, uint32 term ids)."""
        for i, record in enumerate(records):
            if record.op != "add":
                continue
            end = start + len(record.terms)
            terms, weights = self._indices[start:end], self._values[start:end]
            start = end
            problem = _vector_problem(terms, weights, self.vocab_size)
            where = f"log record {record.seq} ({record.doc_id!r})"
            if problem == 1:
                message = f"{where}: term id {int(terms.max())} is outside the vocabulary of {self.vocab_size}"
            elif problem == 2:
                message = f"{where}: weights must be finite, >= 0"
            elif self._dense_misfit(record):
                dim = 0 if record.dense is None else len(record.dense)
                message = f"{where}: dense vector of {dim} values, the index needs {self.dense_dim or 0}"
            else:
                continue
            if i:
                self.apply_many(records[:i])  # stages them again: the message is made first
            raise BufferRecordError(message)
        raise AssertionError("a batch failed its check, yet none of its records does")

    def _book(self, records: list[WalRecord], first_row: int) -> None:
        """The ids' bookkeeping of records whose rows ``first_row:`` are stored and linked."""
        row, dead_rows = first_row, []
        for record in records:  # in log order
            doc_id = record.doc_id
            previous = self._row_of.pop(doc_id, None)
            if previous is not None:
                dead_rows.append(previous)
            if doc_id not in self._shadow_rank:
                rank = len(self.shadow_order)
                if rank == len(self._shadow_hashes):
                    self._shadow_hashes = _grown(self._shadow_hashes, rank + 1)
                self._shadow_hashes[rank] = hash_id(doc_id)
                self._shadow_rank[doc_id] = rank
                self.shadow_order.append(doc_id)
            if record.op == "add":
                if self._dense is not None:  # stored normalised, as the segments' faiss part is
                    norm = float(np.linalg.norm(record.dense))
                    self._dense[row] = record.dense / norm if norm > 0 else record.dense
                self._ids.append(doc_id)
                self._titles.append(record.title)
                self._texts.append(record.text)
                self._row_of[doc_id] = row
                self._rows_of.setdefault(doc_id, []).append(row)
                row += 1
            self.records.append(record)
        self._live[first_row:row] = True
        if dead_rows:  # after the new rows: a record may replace a row added before it in this batch
            self._live[dead_rows] = False

    def _reserve(self, rows: int, postings: int) -> None:
        """Room for ``rows`` rows and ``postings`` postings (and a node per new posting)."""
        if rows + 1 > len(self._indptr):
            self._indptr = _grown(self._indptr, rows + 1)
        if rows > len(self._live):
            self._live = _grown(self._live, rows)
        if self._dense is not None and rows > len(self._dense):
            self._dense = _grown(self._dense, rows)
        if postings > len(self._indices):
            self._indices = _grown(self._indices, postings)
            self._values = _grown(self._values, postings)
        needed = self._num_nodes + postings - self._nnz  # at most a new node per new posting
        if needed > len(self._node_next):
            self._node_fill = _grown(self._node_fill, needed)
            self._node_next = _grown(self._node_next, needed)
            self._node_rows = _grown(self._node_rows, needed)
            self._node_values = _grown(self._node_values, needed)

    def view(self) -> BufferView:
        """The current snapshot (built on first use after a change)."""
        if self._view is None:
            rows = len(self._ids)
            self._view = BufferView(
                rows, self._indptr[: rows + 1], self._indices[: self._nnz], self._values[: self._nnz],
                self._term_first, self._node_next[: self._num_nodes], self._node_rows, self._node_values,
                None if self._dense is None else self._dense[:rows], self._live[:rows].copy(),
                len(self.shadow_order), self._shadow_hashes[: len(self.shadow_order)], self._ids, self._titles,
                self._texts, self._shadow_rank, self._rows_of, self.shadow_order)
        return self._view

    def drop_through(self, seq: int) -> "WriteBuffer":
        """A buffer of the records after ``seq`` (a commit now holds the others)."""
        return self._rebuilt(self.vocab_size, self.dense_dim, after=seq)

    def reshaped(self, vocab_size: int, dense_dim: int | None) -> "WriteBuffer":
        """The same records for an index whose settings changed (a commit that rebuilt it)."""
        return self._rebuilt(vocab_size, dense_dim, after=-1)

    def _rebuilt(self, vocab_size: int, dense_dim: int | None, after: int) -> "WriteBuffer":
        # As much room as this buffer had: the next one fills about as far before its flush,
        # and growing by doubling from nothing cost a few milliseconds of copies each time.
        fresh = WriteBuffer(vocab_size, dense_dim, (len(self._live), len(self._indices), len(self._node_next)))
        fresh.apply_many([record for record in self.records if record.seq > after])
        return fresh


def _grown(array: np.ndarray, needed: int) -> np.ndarray:
    """A copy with room for at least ``needed`` rows (doubling; the new ones uninitialised, see
    `WriteBuffer.__init__`); old views keep the old array."""
    size = max(needed, 2 * len(array))
    out = np.empty((size,) + array.shape[1:], dtype=array.dtype)
    out[: len(array)] = array
    return out
