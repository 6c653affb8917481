"""Seismic (Rust, PyPI ``pyseismic-lsr``) as a peer engine: approximate top-k.

Seismic (Bruch, Nardini, Rulli, Venturini, SIGIR 2024) keeps, per term, only the largest
postings (``n_postings`` on average over the vocabulary, at most ``max_fraction`` times that
per list), clusters each list into blocks with one summary vector per block, and at query time
visits the ``query_cut`` heaviest query terms, skipping a block when its summary's dot product
is below ``heap_factor`` times the current k-th score; candidates are scored exactly against the
forward index. Summaries are lossy, so it is approximate at every setting.

How we drive it:

- `SeismicIndexRaw` (``SeismicIndexRawLV`` past 65,536 terms): built from Seismic's binary
  "inner format" file, which we write from the CSR arrays (``u32 n_docs``, then per doc
  ``u32 nnz, u32 term ids[nnz], f32 weights[nnz]``). Seismic numbers docs by their position in
  that file, so its doc ids are ours and come back as ints; term ids are ours as well, with no
  string lexicon (the string-keyed `SeismicIndex` would cost a string conversion per term and a
  parse per hit). Rows must have strictly increasing term ids; we sort them if needed.
- Values: Seismic stores doc weights as ``f16`` (float weights keep about 3 significant digits,
  relative error up to 2**-11; integers up to 2,048, so uint8 impacts, are exact) and its block
  summaries in a lossy quantised form; query weights stay ``f32``, and the scores it returns
  are ``f32`` dot products of the query with the ``f16`` doc vectors.
- Threads: the build uses Rayon's global pool, sized by ``RAYON_NUM_THREADS`` or the CPUs the
  process may use, so the build child is pinned to ``build_threads`` CPUs (the ``num_threads``
  argument of Seismic's Python builders creates a pool that it does not install). ``search``
  runs one query on the calling thread without Rayon.
- The index is saved with Seismic's own serialiser (one ``.index.seismic`` file: forward index,
  pruned lists, summaries) and loaded whole into memory for searching.
- Queries must have strictly increasing term ids below the index's dimension (the largest doc
  term id + 1): Seismic panics otherwise, and casts ids past 65,535 to u16 without a check. We
  drop out-of-range terms and sort (summing repeated ids) before the call.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsr.eval.peers.base import BuildReport, phased_report, run_build_child
from lsr.index.sparse_batch import SparseBatch

_INSTALL_HINT = 'Seismic is not installed: pip install "lsr-engine[bench]" (brings pyseismic-lsr)'
_U16_TERMS = 1 << 16
_CHUNK_DOCS = 10_000  # bounds the int64 temporaries of the conversion (~32 B per posting)
_INDEX_FILE = "index"  # Seismic appends ".index.seismic"
_INPUT_FILE = "docs.seismic.bin"
_META = "lsr_seismic.json"


class SeismicEngine:
    """Seismic over float (or impact) weights, one query at a time on the calling thread.

    Args:
        query_cut: query terms visited, heaviest first.
        heap_factor: a block is skipped when its summary scores below ``heap_factor`` times the
            current k-th score: lower values skip less (slower, more accurate).
        n_postings: postings kept per term on average (Seismic's pruning budget).
        centroid_fraction: blocks per list, as a fraction of ``n_postings``.
        min_cluster_size: smallest block; smaller clusters are merged away.
        summary_energy: share of each summary's L1 mass kept.
        max_fraction: longest list kept, as a multiple of ``n_postings``.
        doc_cut: terms per doc used by the approximate clustering.
        sorted_summaries: visit the first list's blocks by decreasing summary score.
        build_threads: CPUs the build process may use.
    """

    def __init__(
        self,
        query_cut: int = 10,
        heap_factor: float = 0.9,
        *,
        n_postings: int = 3500,
        centroid_fraction: float = 0.1,
        min_cluster_size: int = 2,
        summary_energy: float = 0.4,
        max_fraction: float = 1.5,
        doc_cut: int = 15,
        sorted_summaries: bool = True,
        build_threads: int = 1,
    ) -> None:
        self.query_cut = int(query_cut)
        self.heap_factor = float(heap_factor)
        self.sorted_summaries = bool(sorted_summaries)
        self.build_params = {
            "n_postings": int(n_postings),
            "centroid_fraction": float(centroid_fraction),
            "min_cluster_size": int(min_cluster_size),
            "summary_energy": float(summary_energy),
            "max_fraction": float(max_fraction),
            "doc_cut": int(doc_cut),
        }
        self.build_threads = build_threads
        self.name = (
            f"seismic(n_postings={n_postings},query_cut={self.query_cut},"
            f"heap_factor={self.heap_factor})"
        )
        self._index: Any = None
        self._dim = 0

    def build(self, docs: SparseBatch, work_dir: Path) -> BuildReport:
        """Builds the index under ``work_dir/seismic`` (two child processes), then loads it."""
        _seismic()  # fail here, not in a child, when the package is missing
        index_dir = Path(work_dir) / "seismic"
        convert = run_build_child(
            "lsr.eval.peers.seismic:write_input", index_dir, {}, docs=docs, threads=self.build_threads
        )
        large_vocab = docs.vocab_size > _U16_TERMS
        engine = run_build_child(
            "lsr.eval.peers.seismic:build_index",
            index_dir,
            {**self.build_params, "large_vocab": large_vocab},
            threads=self.build_threads,
            preload=("seismic",),
        )
        self.open(index_dir)
        notes = (
            "Seismic raw index, f16 doc values, "
            + ", ".join(f"{key}={value}" for key, value in self.build_params.items())
            + f", {engine.threads} build thread(s)"
        )
        return phased_report(convert, engine, index_dir, notes, engine.result)

    def open(self, index_dir: Path) -> None:
        """Loads an index built by `build` into memory."""
        seismic = _seismic()
        meta = json.loads((Path(index_dir) / _META).read_text())
        cls = seismic.SeismicIndexRawLV if meta["large_vocab"] else seismic.SeismicIndexRaw
        self._index = cls.load(str(_index_path(index_dir)))
        self._dim = int(self._index.dim)

    def with_search(self, query_cut: int, heap_factor: float) -> "SeismicEngine":
        """Another engine over the same loaded index, with other search settings."""
        other = SeismicEngine(
            query_cut,
            heap_factor,
            sorted_summaries=self.sorted_summaries,
            build_threads=self.build_threads,
            **self.build_params,
        )
        other._index, other._dim = self._index, self._dim
        return other

    def search(
        self, terms: np.ndarray, weights: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` docs for one query: (int64 doc ids, float32 scores), best first."""
        if self._index is None:
            raise RuntimeError("build() or open() the index first")
        terms, weights = _clean_query(terms, weights, self._dim)
        if terms.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        hits = self._index.search(
            terms,
            weights,
            k,
            self.query_cut,
            self.heap_factor,
            0,  # n_knn: no k-NN graph
            self.sorted_summaries,
        )
        if not hits:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        scores, ids = zip(*hits)  # (score, doc id) pairs; twice as fast as np.array(hits)
        return np.array(ids, dtype=np.int64), np.array(scores, dtype=np.float32)


def write_input(docs: SparseBatch, out_dir: Path) -> dict[str, Any]:
    """Convert phase: writes ``docs`` in Seismic's inner format as ``out_dir/docs.seismic.bin``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_inner_format(docs, out_dir / _INPUT_FILE)
    return {"docs": len(docs), "nnz": docs.nnz}


def build_index(out_dir: Path, *, large_vocab: bool, **params: Any) -> dict[str, Any]:
    """Engine phase: Seismic builds and saves its index from ``docs.seismic.bin``, then the
    input file is deleted.

    Returns:
        Timings and counts, for the build report.
    """
    seismic = _seismic()
    out_dir = Path(out_dir)
    source = out_dir / _INPUT_FILE
    start = time.perf_counter()
    cls = seismic.SeismicIndexRawLV if large_vocab else seismic.SeismicIndexRaw
    index = cls.build(str(source), **params)
    built = time.perf_counter()
    source.unlink()
    _save(index, out_dir)
    info = {
        "engine_build_s": built - start,
        "save_s": time.perf_counter() - built,
        "docs": int(index.len),
        "nnz": int(index.nnz),
        "dim": int(index.dim),
        "large_vocab": large_vocab,
        **params,
    }
    (out_dir / _META).write_text(json.dumps(info, indent=1))
    return info


def write_inner_format(docs: SparseBatch, path: Path) -> None:
    """Writes ``docs`` in Seismic's binary inner format, rows sorted by term id.

    Layout (little-endian): ``u32 n_docs``, then per doc ``u32 nnz``, ``u32 term ids[nnz]``,
    ``f32 weights[nnz]``.
    """
    with open(path, "wb") as out:
        out.write(np.uint32(len(docs)).tobytes())
        for start in range(0, len(docs), _CHUNK_DOCS):
            stop = min(start + _CHUNK_DOCS, len(docs))
            out.write(_inner_chunk(docs, start, stop).tobytes())


def _inner_chunk(docs: SparseBatch, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` laid out as one uint32 buffer of the inner format."""
    indptr = docs.indptr[start : stop + 1]
    base = int(indptr[0])
    lengths = np.diff(indptr)
    terms = np.asarray(docs.indices[base : int(indptr[-1])], dtype=np.uint32)
    values = np.asarray(docs.values[base : int(indptr[-1])], dtype=np.float32)
    rows = np.repeat(np.arange(stop - start, dtype=np.int64), lengths)
    if not _rows_increasing(terms, rows):
        order = np.lexsort((terms, rows))
        terms, values = terms[order], values[order]
        if not _rows_increasing(terms, rows):
            raise ValueError("Seismic needs distinct term ids within a doc; found a repeated one")
    # doc r's header sits at r + 2 * (its first posting); term ids follow, then the weights
    headers = np.arange(stop - start, dtype=np.int64) + 2 * (indptr[:-1] - base)
    within = np.arange(terms.size, dtype=np.int64) - (indptr[:-1] - base)[rows]
    term_slots = headers[rows] + 1 + within
    buffer = np.empty(stop - start + 2 * terms.size, dtype=np.uint32)
    buffer[headers] = lengths
    buffer[term_slots] = terms
    buffer[term_slots + lengths[rows]] = values.view(np.uint32)
    return buffer


def _clean_query(terms: np.ndarray, weights: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Term ids Seismic accepts: inside ``[0, dim)``, strictly increasing (it panics otherwise;
    and it silently wraps ids past 65,535 to u16), as int32; repeated ids have weights summed."""
    terms = np.asarray(terms, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float32)
    if terms.size and (terms.min() < 0 or terms.max() >= dim):
        keep = (terms >= 0) & (terms < dim)
        terms, weights = terms[keep], weights[keep]
    if terms.size > 1 and not bool(np.all(terms[1:] > terms[:-1])):
        terms, slots = np.unique(terms, return_inverse=True)
        weights = np.bincount(slots, weights=weights, minlength=terms.size).astype(np.float32)
    return terms.astype(np.int32), weights


def _save(index: Any, out_dir: Path) -> None:
    """Saves to ``index.index.seismic``: pyseismic-lsr 0.5.4 documents that it appends the
    suffix but writes to the bare path, so we accept either and settle on the suffixed name.
    A file left there by an earlier build is replaced, never kept beside the new one."""
    bare = out_dir / _INDEX_FILE
    index.save(str(bare))
    if bare.is_file():
        bare.replace(_index_path(out_dir))


def _index_path(index_dir: Path) -> Path:
    return Path(index_dir) / f"{_INDEX_FILE}.index.seismic"


def _rows_increasing(terms: np.ndarray, rows: np.ndarray) -> bool:
    if terms.size < 2:
        return True
    steps = np.diff(terms.astype(np.int64))
    return not bool(np.any((steps <= 0) & (np.diff(rows) == 0)))


def _seismic():
    try:
        import seismic
    except ImportError as err:
        raise ImportError(f"{_INSTALL_HINT}. {err}") from err
    return seismic
