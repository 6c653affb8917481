"""splade-index (PyPI ``splade-index``) as a peer engine: exact float32 term-at-a-time.

splade-index is what a Python user finds first ("an ultra-fast search index for SPLADE"): the
documents' weights as a float32 CSC matrix (one column per term: doc ids and weights), and a
Numba kernel that, per query, adds weight x query weight of every posting of every query term
into a fresh float32 array of all documents, then keeps the top k with a heap. Exact over float32
weights (up to float32 rounding of the sums), no pruning.

How we drive it:

- Its ``SPLADE.index`` encodes texts with a sentence-transformers model; we give it our vectors
  instead, as the arrays that method would have built (``data`` float32, ``indices`` and
  ``indptr`` int32, ``num_docs``), in our doc order, saved as ``.npy`` and memory-mapped (what
  its ``load(..., mmap=True)`` does).
- Search calls ``splade_index.numba.retrieve_utils._retrieve_numba_functional``, the function its
  ``retrieve`` calls once a query is encoded, with ``n_threads=1``: one query on the calling
  thread, float query weights (its own reference is the float one).
- Its heap returns k entries even when fewer docs score above zero; those zero-score entries
  are dropped, as every other engine returns positive scores only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsr.eval.peers.base import BuildReport, phased_report, run_build_child, save_batch
from lsr.index.sparse_batch import SparseBatch

_INSTALL_HINT = 'splade-index is not installed: pip install "lsr-engine[bench]"'
_ARRAYS = ("data", "indices", "indptr")
_META = "lsr_splade_index.json"


class SpladeIndexEngine:
    """splade-index over float weights, one query at a time on the calling thread."""

    name = "splade-index"

    def __init__(self, build_threads: int = 1) -> None:
        self.build_threads = build_threads
        self._scores: dict[str, Any] | None = None
        self._terms = 0  # term ids below this have postings columns

    def build(self, docs: SparseBatch, work_dir: Path) -> BuildReport:
        """Writes the CSC arrays under ``work_dir/splade-index`` (two child processes), then opens them."""
        _retrieve()  # fail here, not in a child, when the package is missing
        index_dir = Path(work_dir) / "splade-index"
        convert = run_build_child("lsr.eval.peers.splade_index:write_input", index_dir, {}, docs=docs,
                                  threads=self.build_threads)
        engine = run_build_child("lsr.eval.peers.splade_index:build_index", index_dir,
                                 {"vocab_size": docs.vocab_size}, threads=self.build_threads)
        self.open(index_dir)
        notes = f"splade-index float32 CSC (int32 ids), numba backend, {engine.threads} build thread(s)"
        return phased_report(convert, engine, index_dir, notes, engine.result)

    def open(self, index_dir: Path) -> None:
        """Memory-maps the arrays written by `build`."""
        meta = json.loads((Path(index_dir) / _META).read_text())
        self._scores = {name: np.load(Path(index_dir) / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        self._scores["num_docs"] = int(meta["docs"])
        self._terms = int(meta["terms"])

    def search(self, terms: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` docs for one query: (int64 doc ids, float32 scores), best first."""
        if self._scores is None:
            raise RuntimeError("build() or open() the index first")
        terms, weights = np.asarray(terms, dtype=np.int64), np.asarray(weights, dtype=np.float32)
        known = (terms >= 0) & (terms < self._terms)  # it reads indptr[term + 1] unchecked
        terms, weights = terms[known].astype(np.int32), weights[known]
        if terms.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        docs, scores = _retrieve()([terms], [weights], self._scores, k=k,
                                   n_threads=1, show_progress=False)
        positive = scores[0] > 0
        return docs[0][positive].astype(np.int64), scores[0][positive]


def write_input(docs: SparseBatch, out_dir: Path) -> dict[str, Any]:
    """Convert phase: our CSR arrays as ``.npy`` files in ``out_dir/input``."""
    save_batch(docs, Path(out_dir) / "input")
    return {"docs": len(docs), "nnz": docs.nnz, "vocab_size": docs.vocab_size}


def build_index(out_dir: Path, vocab_size: int) -> dict[str, Any]:
    """Engine phase: the CSR input to splade-index's float32 CSC arrays (what its ``index``
    makes with ``to_sparse_csc``); the input is then deleted."""
    import scipy.sparse as sp

    out_dir = Path(out_dir)
    source = out_dir / "input"
    csr = {name: np.load(source / f"{name}.npy", mmap_mode="r") for name in ("indptr", "indices", "values")}
    num_docs = len(csr["indptr"]) - 1
    started = time.perf_counter()
    csc = sp.csr_matrix((csr["values"], csr["indices"], csr["indptr"]), shape=(num_docs, vocab_size)).tocsc()
    csc.sort_indices()
    np.save(out_dir / "data.npy", csc.data.astype(np.float32, copy=False))
    np.save(out_dir / "indices.npy", csc.indices.astype(np.int32))
    np.save(out_dir / "indptr.npy", csc.indptr.astype(np.int32))
    for path in source.iterdir():
        path.unlink()
    source.rmdir()
    info = {"docs": num_docs, "nnz": int(csc.nnz), "terms": vocab_size, "engine_build_s": time.perf_counter() - started}
    (out_dir / _META).write_text(json.dumps(info, indent=1))
    return info


def _retrieve():
    try:
        from splade_index.numba.retrieve_utils import _retrieve_numba_functional
    except ImportError as err:
        raise ImportError(f"{_INSTALL_HINT}. {err}") from err
    return _retrieve_numba_functional
