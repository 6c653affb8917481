"""A segment's postings written from documents in their final order, in bounded memory.

`PostingsWriter` takes documents in internal-id order, a chunk at a time (term ids sorted
per document, uint8 impacts, zeros already dropped, and with ``fine`` their 16-bit impacts,
``index.quantize.fine_impacts``), and writes the arrays that ``index.bmp_build`` describes:

* the per-block forward index, block by block as the documents arrive (appended to
  ``.npy`` files, `index.npy_stream`), with ``fine`` also ``block_post_impacts16``: the 16-bit
  impacts beside ``block_post_impacts``, posting for posting (only the forward index has them:
  rescoring reads blocks);
* the term view (block-max entries and the chunked term-major postings), by an external sort:
  each chunk of blocks becomes a *run* sorted by term (a counting sort), kept on disk; at the
  end the runs are merged term range by term range (a term's entries: run 1's, then run 2's,
  ..., so still in block order);
* the dense block-maxima rows (terms in a fifth of the blocks or more), one row at a time
  from the finished term view, and the per-term k-th impacts from impact histograms.

Memory is bounded by the chunk size and the vocabulary (the runs' per-term counts), not by
the number of documents. The arrays equal those of
``index.bmp_build.build_bmp_arrays`` on the same postings (tested).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from lsr.index import storage
from lsr.index.bmp_build import MAX_BLOCK_SIZE, SEED_KS, block_term_type, kth_levels
from lsr.index.format import CHUNK_BITS, CHUNK_MASK, chunk_count
from lsr.index.npy_stream import NpyAppender, read_slice

CHUNK_POSTINGS = 1 << 23
RANGE_POSTINGS = 1 << 24  # postings of the term range merged from the runs at a time

# kernels


@njit(cache=True, nogil=True)
def _block_view(indptr, terms, impacts, fine, block_size, first_block, num_blocks, out_terms, out_starts, out_counts,
                out_max, out_docs, out_impacts, out_fine, block_entries, block_postings):
    """The forward index of ``num_blocks`` whole blocks of a chunk (doc-major input).

    Entries come out block by block, terms ascending; ``out_counts`` / ``out_max`` are each
    entry's postings and largest impact; ``fine`` (16-bit impacts, or empty) is permuted into
    ``out_fine`` as ``impacts`` into ``out_impacts``. Returns (entries, postings) written.
    """
    has_fine = fine.shape[0] > 0
    e = 0
    p = 0
    num_docs = indptr.shape[0] - 1
    for b in range(num_blocks):
        first_doc = b * block_size
        last_doc = min(first_doc + block_size, num_docs)
        lo, hi = indptr[first_doc], indptr[last_doc]
        count = hi - lo
        block_terms = terms[lo:hi]
        order = np.argsort(block_terms, kind="mergesort")  # stable: docs stay ascending inside a term
        offsets = np.empty(count, dtype=np.uint8)
        for d in range(first_doc, last_doc):
            for q in range(indptr[d], indptr[d + 1]):
                offsets[q - lo] = d - first_doc
        start_e, start_p = e, p
        last = -1
        for i in range(count):
            q = order[i]
            t = block_terms[q]
            if t != last:
                out_terms[e] = t
                out_starts[e] = p - start_p
                out_counts[e] = 0
                out_max[e] = 0
                e += 1
                last = t
            out_counts[e - 1] += 1
            if impacts[lo + q] > out_max[e - 1]:
                out_max[e - 1] = impacts[lo + q]
            out_docs[p] = offsets[q]
            out_impacts[p] = impacts[lo + q]
            if has_fine:
                out_fine[p] = fine[lo + q]
            p += 1
        block_entries[b] = e - start_e
        block_postings[b] = p - start_p
    return e, p


@njit(cache=True, nogil=True)
def _term_run(entry_terms, entry_counts, entry_max, entry_blocks, post_docs, post_impacts, vocab_size,
              run_blocks, run_max, run_counts, run_docs, run_impacts, term_entries, term_postings):
    """A chunk's entries sorted by term (a counting sort; block order kept inside a term)."""
    num_entries = entry_terms.shape[0]
    for x in range(num_entries):
        term_entries[entry_terms[x]] += 1
        term_postings[entry_terms[x]] += entry_counts[x]
    entry_cursor = np.zeros(vocab_size, dtype=np.int64)
    post_cursor = np.zeros(vocab_size, dtype=np.int64)
    ce = 0
    cp = 0
    for t in range(vocab_size):
        entry_cursor[t] = ce
        post_cursor[t] = cp
        ce += term_entries[t]
        cp += term_postings[t]
    source = 0
    for x in range(num_entries):
        t = entry_terms[x]
        y = entry_cursor[t]
        entry_cursor[t] = y + 1
        run_blocks[y] = entry_blocks[x]
        run_max[y] = entry_max[x]
        run_counts[y] = entry_counts[x]
        q = post_cursor[t]
        for i in range(entry_counts[x]):
            run_docs[q + i] = post_docs[source + i]
            run_impacts[q + i] = post_impacts[source + i]
        post_cursor[t] = q + entry_counts[x]
        source += entry_counts[x]


@njit(cache=True, nogil=True)
def _merge_runs(counts_e, counts_p, entry_bases, post_bases, blocks, maxima, counts, docs, impacts,
                out_blocks, out_max, out_counts, out_docs, out_impacts):
    """Interleave the runs' slices of a term range: for each term, run 0's entries, run 1's, ...

    ``counts_e[r, t]`` / ``counts_p[r, t]``: entries and postings of term t in run r;
    ``entry_bases[r]`` / ``post_bases[r]``: where run r's slice starts in the concatenated inputs.
    """
    runs, terms = counts_e.shape
    entry_cursor = entry_bases.copy()
    post_cursor = post_bases.copy()
    e = 0
    p = 0
    for t in range(terms):
        for r in range(runs):
            ne = counts_e[r, t]
            np_ = counts_p[r, t]
            x = entry_cursor[r]
            for i in range(ne):
                out_blocks[e + i] = blocks[x + i]
                out_max[e + i] = maxima[x + i]
                out_counts[e + i] = counts[x + i]
            entry_cursor[r] = x + ne
            q = post_cursor[r]
            for i in range(np_):
                out_docs[p + i] = docs[q + i]
                out_impacts[p + i] = impacts[q + i]
            post_cursor[r] = q + np_
            e += ne
            p += np_


@njit(cache=True, nogil=True)
def _kth_impacts(postings_per_term, impacts, ks, out):
    """Each term's ks[i]-th largest impact (0 when fewer postings), from a 256-level histogram of
    its postings (``impacts``: the postings of consecutive terms, in term order)."""
    histogram = np.zeros(256, dtype=np.int64)
    p = 0
    for t in range(postings_per_term.shape[0]):
        count = postings_per_term[t]
        if count >= ks[0]:
            kth_levels(impacts, p, p + count, ks, histogram, out[t])
        p += count


# wrappers

RUN_FILES = {"blocks": np.uint32, "max": np.uint8, "counts": np.uint32, "docs": np.uint8, "impacts": np.uint8}


class PostingsWriter:
    """Writes a segment's postings arrays into ``out_dir`` (see the module docstring).

    Args:
        out_dir: the segment directory being built.
        vocab_size: terms.
        num_docs: documents that will be added, in order.
        block_size: docs per block (1 to 256).
        max_block_postings: an upper bound of the postings of any block (picks the start type).
        max_postings: an upper bound of all postings (picks the start type of the term view).
        chunk_postings: postings buffered before a chunk of blocks is written out.
        fine: `add` also takes 16-bit impacts, written as ``block_post_impacts16``.
    """

    def __init__(self, out_dir: Path, vocab_size: int, num_docs: int, block_size: int, max_block_postings: int,
                 max_postings: int, chunk_postings: int = CHUNK_POSTINGS, fine: bool = False) -> None:
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block size must be between 1 and {MAX_BLOCK_SIZE}, got {block_size}")
        self.out_dir = Path(out_dir)
        self.vocab_size, self.num_docs, self.block_size = vocab_size, num_docs, block_size
        self.num_blocks = max((num_docs + block_size - 1) // block_size, 1)
        self.chunk_postings = chunk_postings
        self.block_start_type = np.uint16 if max_block_postings < 2**16 else np.uint32
        self.start_type = np.uint32 if max_postings < 2**32 else np.int64
        self.block_entries = np.zeros(self.num_blocks, dtype=np.int64)
        self.block_postings = np.zeros(self.num_blocks, dtype=np.int64)
        self.forward = {"block_terms": NpyAppender(self.out_dir / "block_terms.npy", block_term_type(vocab_size)),
                        "block_entry_starts": NpyAppender(self.out_dir / "block_entry_starts.npy", self.block_start_type),
                        "block_post_docs": NpyAppender(self.out_dir / "block_post_docs.npy", np.uint8),
                        "block_post_impacts": NpyAppender(self.out_dir / "block_post_impacts.npy", np.uint8)}
        self.fine = fine
        if fine:
            self.forward["block_post_impacts16"] = NpyAppender(self.out_dir / "block_post_impacts16.npy", np.uint16)
        self.runs_dir = self.out_dir / "runs"
        self.runs_dir.mkdir()
        self.run_counts: list[tuple[np.ndarray, np.ndarray]] = []  # per run: entries, postings per term
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_postings = 0
        self._pending_docs = 0
        self._next_block = 0
        self.docs_added = 0

    def add(self, nnz: np.ndarray, terms: np.ndarray, impacts: np.ndarray, fine: np.ndarray | None = None) -> None:
        """Append documents: postings per document, then their terms (sorted per doc) and
        impacts (> 0), and their 16-bit impacts when the writer keeps them (and only then)."""
        nnz = np.asarray(nnz, dtype=np.int64)
        if len(terms) != nnz.sum() or len(impacts) != len(terms):
            raise ValueError("postings do not add up to the documents' counts")
        if (fine is not None) != self.fine or (fine is not None and len(fine) != len(terms)):
            raise ValueError("16-bit impacts must be given for every posting exactly when the writer keeps them")
        fine = np.asarray(fine, dtype=np.uint16) if fine is not None else np.zeros(0, np.uint16)
        self._pending.append((nnz, np.asarray(terms, dtype=np.uint32), np.asarray(impacts, dtype=np.uint8), fine))
        self._pending_postings += len(terms)
        self._pending_docs += len(nnz)
        self.docs_added += len(nnz)
        if self.docs_added > self.num_docs:
            raise ValueError(f"more than the {self.num_docs} documents announced")
        if self._pending_postings >= self.chunk_postings:
            self._write_chunk(final=False)

    def _write_chunk(self, final: bool) -> None:
        """Write the pending documents of whole blocks (all of them, and every block left, when final)."""
        nnz = np.concatenate([p[0] for p in self._pending]) if self._pending else np.zeros(0, np.int64)
        terms = np.concatenate([p[1] for p in self._pending]) if self._pending else np.zeros(0, np.uint32)
        impacts = np.concatenate([p[2] for p in self._pending]) if self._pending else np.zeros(0, np.uint8)
        fine = np.concatenate([p[3] for p in self._pending]) if self._pending else np.zeros(0, np.uint16)
        if final:
            docs, blocks = len(nnz), self.num_blocks - self._next_block
        else:
            blocks = len(nnz) // self.block_size
            docs = blocks * self.block_size
        if blocks == 0:
            return
        indptr = np.zeros(docs + 1, dtype=np.int64)
        np.cumsum(nnz[:docs], out=indptr[1:])
        used = int(indptr[-1])
        self._write_blocks(indptr, terms[:used], impacts[:used], fine[:used], blocks)
        rest = (nnz[docs:], terms[used:], impacts[used:], fine[used:])
        self._pending = [rest] if len(rest[0]) else []
        self._pending_postings, self._pending_docs = len(rest[1]), len(rest[0])

    def _write_blocks(self, indptr, terms, impacts, fine, blocks: int) -> None:
        postings = len(terms)
        out_terms = np.empty(postings, dtype=np.uint32)
        out_starts = np.empty(postings, dtype=np.int64)
        out_counts = np.empty(postings, dtype=np.int64)
        out_max = np.empty(postings, dtype=np.uint8)
        out_docs = np.empty(postings, dtype=np.uint8)
        out_impacts = np.empty(postings, dtype=np.uint8)
        out_fine = np.empty(len(fine), dtype=np.uint16)
        first = self._next_block
        entries, _ = _block_view(indptr, terms, impacts, fine, self.block_size, first, blocks, out_terms, out_starts,
                                 out_counts, out_max, out_docs, out_impacts, out_fine,
                                 self.block_entries[first : first + blocks], self.block_postings[first : first + blocks])
        self.forward["block_terms"].append(out_terms[:entries].astype(self.forward["block_terms"].dtype))
        self.forward["block_entry_starts"].append(out_starts[:entries].astype(self.block_start_type))
        self.forward["block_post_docs"].append(out_docs)
        self.forward["block_post_impacts"].append(out_impacts)
        if self.fine:
            self.forward["block_post_impacts16"].append(out_fine)
        entry_blocks = np.repeat(np.arange(first, first + blocks, dtype=np.uint32),
                                 self.block_entries[first : first + blocks])
        self._write_run(out_terms[:entries], out_counts[:entries], out_max[:entries], entry_blocks, out_docs, out_impacts)
        self._next_block += blocks

    def _write_run(self, entry_terms, entry_counts, entry_max, entry_blocks, docs, impacts) -> None:
        entries, postings = len(entry_terms), len(docs)
        run = {"blocks": np.empty(entries, np.uint32), "max": np.empty(entries, np.uint8),
               "counts": np.empty(entries, np.uint32), "docs": np.empty(postings, np.uint8),
               "impacts": np.empty(postings, np.uint8)}
        term_entries = np.zeros(self.vocab_size, dtype=np.int64)
        term_postings = np.zeros(self.vocab_size, dtype=np.int64)
        _term_run(entry_terms, entry_counts, entry_max, entry_blocks, docs, impacts, self.vocab_size,
                  run["blocks"], run["max"], run["counts"], run["docs"], run["impacts"], term_entries, term_postings)
        number = len(self.run_counts)
        for name, array in run.items():
            array.tofile(self.runs_dir / f"{number}.{name}")
        self.run_counts.append((term_entries, term_postings))

    def finish(self) -> int:
        """Write every remaining array; returns the number of blocks."""
        if self.docs_added != self.num_docs:
            raise ValueError(f"{self.docs_added} documents added, {self.num_docs} announced")
        self._write_chunk(final=True)
        for appender in self.forward.values():
            appender.close()
        np.save(self.out_dir / "block_term_offsets.npy", _prefix(self.block_entries))
        np.save(self.out_dir / "block_post_offsets.npy", _prefix(self.block_postings))
        term_entries, kth = self._merge_term_view()
        np.save(self.out_dir / "term_kth_impacts.npy", kth)
        self._write_dense_maxima(term_entries)
        storage.remove(self.runs_dir)
        return self.num_blocks

    def _merge_term_view(self) -> tuple[np.ndarray, np.ndarray]:
        """The term view from the runs, term range by term range; returns the entries per term
        and the per-term k-th impacts (``term_kth_impacts``)."""
        runs = len(self.run_counts)
        counts_e = np.stack([c[0] for c in self.run_counts]) if runs else np.zeros((0, self.vocab_size), np.int64)
        counts_p = np.stack([c[1] for c in self.run_counts]) if runs else np.zeros((0, self.vocab_size), np.int64)
        entry_starts_of_run = np.concatenate([np.zeros((runs, 1), np.int64), np.cumsum(counts_e, axis=1)], axis=1)
        post_starts_of_run = np.concatenate([np.zeros((runs, 1), np.int64), np.cumsum(counts_p, axis=1)], axis=1)
        term_entries = counts_e.sum(axis=0)
        np.save(self.out_dir / "term_entry_offsets.npy", _prefix(term_entries))
        out = {"term_entry_blocks": NpyAppender(self.out_dir / "term_entry_blocks.npy", np.uint32),
               "term_entry_max": NpyAppender(self.out_dir / "term_entry_max.npy", np.uint8),
               "term_chunk_starts": NpyAppender(self.out_dir / "term_chunk_starts.npy", self.start_type),
               "term_post_docs": NpyAppender(self.out_dir / "term_post_docs.npy", np.uint16),
               "term_post_impacts": NpyAppender(self.out_dir / "term_post_impacts.npy", np.uint8)}
        position = 0  # postings written so far: where the next term range starts
        chunks = chunk_count(self.num_blocks * self.block_size)
        postings_per_term = counts_p.sum(axis=0)
        kth = np.zeros((self.vocab_size, len(SEED_KS)), dtype=np.uint8)
        for t0, t1 in _term_ranges(postings_per_term, RANGE_POSTINGS):
            slices = {name: [] for name in RUN_FILES}
            entry_bases, post_bases = np.zeros(runs, np.int64), np.zeros(runs, np.int64)
            total_e = total_p = 0
            for r in range(runs):
                e0, e1 = entry_starts_of_run[r, t0], entry_starts_of_run[r, t1]
                p0, p1 = post_starts_of_run[r, t0], post_starts_of_run[r, t1]
                entry_bases[r], post_bases[r] = total_e, total_p
                total_e, total_p = total_e + e1 - e0, total_p + p1 - p0
                for name in ("blocks", "max", "counts"):
                    slices[name].append(read_slice(self.runs_dir / f"{r}.{name}", RUN_FILES[name], e0, e1 - e0))
                for name in ("docs", "impacts"):
                    slices[name].append(read_slice(self.runs_dir / f"{r}.{name}", RUN_FILES[name], p0, p1 - p0))
            merged = {"blocks": np.empty(total_e, np.uint32), "max": np.empty(total_e, np.uint8),
                      "counts": np.empty(total_e, np.uint32), "docs": np.empty(total_p, np.uint8),
                      "impacts": np.empty(total_p, np.uint8)}
            joined = {name: np.concatenate(parts) if parts else np.empty(0, RUN_FILES[name])
                      for name, parts in slices.items()}
            _merge_runs(np.ascontiguousarray(counts_e[:, t0:t1]), np.ascontiguousarray(counts_p[:, t0:t1]),
                        entry_bases, post_bases, joined["blocks"], joined["max"], joined["counts"], joined["docs"],
                        joined["impacts"], merged["blocks"], merged["max"], merged["counts"], merged["docs"],
                        merged["impacts"])
            doc_ids = np.repeat(merged["blocks"].astype(np.int64) * self.block_size, merged["counts"]) + merged["docs"]
            starts = position + _chunk_starts(doc_ids, postings_per_term[t0:t1], chunks)
            position += total_p
            _kth_impacts(postings_per_term[t0:t1], merged["impacts"], np.array(SEED_KS, dtype=np.int64), kth[t0:t1])
            out["term_entry_blocks"].append(merged["blocks"])
            out["term_entry_max"].append(merged["max"])
            out["term_chunk_starts"].append(starts.astype(self.start_type))
            out["term_post_docs"].append((doc_ids & CHUNK_MASK).astype(np.uint16))
            out["term_post_impacts"].append(merged["impacts"])
        out["term_chunk_starts"].append(np.array([position], dtype=self.start_type))
        for appender in out.values():
            appender.close()
        return term_entries, kth

    def _write_dense_maxima(self, term_entries: np.ndarray) -> None:
        """Rows of block maxima for the terms in a fifth of the blocks or more (see ``index.bmp_build``)."""
        dense = term_entries * 5 >= self.num_blocks
        slot = np.full(self.vocab_size, -1, dtype=np.int32)
        slot[dense] = np.arange(int(dense.sum()), dtype=np.int32)
        np.save(self.out_dir / "bm_dense_slot.npy", slot)
        rows = NpyAppender(self.out_dir / "bm_dense.npy", np.uint8, (self.num_blocks,))
        offsets = _prefix(term_entries)
        blocks_file, max_file = self.out_dir / "term_entry_blocks.npy", self.out_dir / "term_entry_max.npy"
        small = int(offsets[-1]) <= CHUNK_POSTINGS  # read the entries once rather than term by term
        all_blocks = _npy_slice(blocks_file, np.uint32, 0, int(offsets[-1])) if small else None
        all_max = _npy_slice(max_file, np.uint8, 0, int(offsets[-1])) if small else None
        for t in np.flatnonzero(dense):
            start, count = int(offsets[t]), int(term_entries[t])
            row = np.zeros(self.num_blocks, dtype=np.uint8)
            if small:
                row[all_blocks[start : start + count]] = all_max[start : start + count]
            else:
                row[_npy_slice(blocks_file, np.uint32, start, count)] = _npy_slice(max_file, np.uint8, start, count)
            rows.append(row[None, :])
        rows.close()


def _npy_slice(path: Path, dtype, start: int, count: int) -> np.ndarray:
    """Elements of a (streamed) ``.npy`` array, read without mapping the file."""
    from lsr.index.npy_stream import HEADER_BYTES

    return np.fromfile(path, dtype=dtype, count=count, offset=HEADER_BYTES + start * np.dtype(dtype).itemsize)


def _chunk_starts(doc_ids: np.ndarray, postings_per_term: np.ndarray, chunks: int) -> np.ndarray:
    """``term_chunk_starts`` of a term range (relative to its first posting): where each
    (term, chunk) begins in ``doc_ids``, the range's postings, term by term, docs increasing."""
    keys = np.repeat(np.arange(len(postings_per_term), dtype=np.int64) * chunks, postings_per_term)
    keys += doc_ids >> CHUNK_BITS
    return np.searchsorted(keys, np.arange(len(postings_per_term) * chunks, dtype=np.int64))


def _term_ranges(postings_per_term: np.ndarray, budget: int):
    """Consecutive term ranges of about ``budget`` postings each (a bigger term is a range alone)."""
    start, total = 0, 0
    for t, count in enumerate(postings_per_term.tolist()):
        if total and total + count > budget:
            yield start, t
            start, total = t, 0
        total += count
    yield start, len(postings_per_term)


def _prefix(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out
