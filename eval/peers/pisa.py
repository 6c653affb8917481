"""PISA (C++, through the PyPI package ``pyterrier-pisa``) as a peer engine over our impacts.

PISA is driven through ``pyterrier_pisa._pisathon``, the package's compiled extension, loaded on
its own: importing ``pyterrier_pisa`` itself pulls in PyTerrier, pandas and ir_datasets (about
0.7 s and a hundred MB), none of which is needed here, and no JVM is involved either way.

Index (built in two child processes, see `eval.peers.base`: `write_collection` converts, then
`build_index` is PISA's own work):

- Impacts go in as PISA's term frequencies, so nothing is re-quantised or re-scored: we write
  PISA's uncompressed ``binary_freq_collection`` (``inv.docs``, ``inv.freqs``, ``inv.sizes``)
  straight from the CSR arrays, doc ``i`` = PISA doc ``i``, then let PISA build the block-max
  ("wand") data and compress the postings for the ``quantized`` scorer, whose score for a
  posting is its frequency. Float weights are first quantised with `index.quantize.quantize`
  (scale = largest weight / 255 unless ``impact_scale`` is given); weights that already are
  integers in ``[0, 2**31)`` are taken as they are. Zero impacts are dropped.
- Terms are the decimal strings of our term ids, sorted as strings (PISA looks query terms up by
  binary search in its lexicon); doc names are the decimal strings of our doc ids.
- The uncompressed collection and the text lexicons are deleted once PISA has compressed the
  index; what stays (and is counted on disk) is the compressed index, the block-max data and the
  two binary lexicons.

Queries (`PisaEngine.search`):

- ``_pisathon.retrieve`` takes ``{term: weight}`` dicts and turns each entry into ``floor(weight)``
  copies of the term; PISA then scores ``sum(copies * impact)`` (``query_weighted=1``). So float
  weights are truncated, and a weight below 1 drops its term. We quantise query weights
  ourselves: ``q = rint(w * query_levels / max(w))`` (terms that round to 0 are dropped), or
  ``q = rint(w)`` with ``query_levels=None`` for weights that already are integers. Returned
  scores are put back in the units of ``w * doc weight``.
- One query per call, ``threads=1``: the extension then runs the query on the calling thread,
  holding the GIL. Per call it also re-creates the query processor, builds one Python ``str`` per
  hit for the doc name (which we parse back to an int) and fills numpy buffers. That glue is
  part of the measured latency; measured here: about 10 us for a one-hit query (half of it our
  query dict), about 20 us more per 1,000 hits, and the term copies: about 20 us for 20 terms at
  255 levels, growing faster than linearly (0.5 ms at 2,048 levels), hence 255 by default.
- Algorithms: ``maxscore``, ``block_max_wand``, ``block_max_maxscore``, ``wand`` and ``ranked_or``
  (all safe: exact top-k over the impacts and the quantised query). Ties are returned by
  increasing doc id.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numba import njit

from lsr.eval.peers.base import BuildReport, integer_impacts, phased_report, run_build_child
from lsr.index.sparse_batch import SparseBatch

ALGORITHMS = ("maxscore", "block_max_wand", "block_max_maxscore", "wand", "ranked_or")
_SCORER = "quantized"
_META = "lsr_pisa.json"
_BUILD_ONLY = ("inv.docs", "inv.freqs", "inv.sizes", "fwd.documents", "fwd.terms")
_INSTALL_HINT = 'PISA is not installed: pip install "lsr-engine[bench]" (brings pyterrier-pisa)'
_KEEP = object()


class PisaEngine:
    """PISA over our integer impacts, one query at a time on the calling thread.

    Args:
        algorithm: PISA query algorithm, one of `ALGORITHMS`.
        query_levels: the largest query weight of each query maps to this integer (see the
            module docstring); None keeps the weights as given, rounded to integers.
        impact_scale: weight of one impact level when the documents carry float weights;
            None picks largest weight / 255, or takes integer weights as they are.
        encoding: PISA posting-list codec.
        block_size: postings per block of the block-max data.
        build_threads: CPUs the build process may use.
    """

    def __init__(
        self,
        algorithm: str = "maxscore",
        *,
        query_levels: int | None = 255,
        impact_scale: float | None = None,
        encoding: str = "block_simdbp",
        block_size: int = 64,
        build_threads: int = 1,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown PISA algorithm {algorithm!r}; choose from {ALGORITHMS}")
        if query_levels is not None and query_levels < 1:
            raise ValueError("query_levels must be a positive integer or None")
        self.algorithm = algorithm
        self.query_levels = query_levels
        self.impact_scale = impact_scale
        self.encoding = encoding
        self.block_size = block_size
        self.build_threads = build_threads
        self.name = f"pisa({algorithm},q={query_levels},{encoding})"
        self._ctx: Any = None
        self._lib: ModuleType | None = None
        self._term_names: list[str | None] = []  # term id -> decimal string, None if no postings
        self._doc_scale = 1.0

    def build(self, docs: SparseBatch, work_dir: Path) -> BuildReport:
        """Builds the index under ``work_dir/pisa`` (two child processes), then opens it."""
        _pisathon()  # fail here, not in a child, when the package is missing
        index_dir = Path(work_dir) / "pisa"
        convert = run_build_child(
            "lsr.eval.peers.pisa:write_collection",
            index_dir,
            {"impact_scale": self.impact_scale},
            docs=docs,
            threads=self.build_threads,
        )
        params = {"encoding": self.encoding, "block_size": self.block_size}
        engine = run_build_child(
            "lsr.eval.peers.pisa:build_index", index_dir, params, threads=self.build_threads
        )
        self.open(index_dir)
        info = {**convert.result, **engine.result}
        notes = (
            f"PISA {_SCORER} scorer over {info['impacts']} impacts (scale {info['scale']:.6g}, "
            f"{info['clipped']} clipped, {info['zeroed']} zeroed), {self.encoding}, "
            f"block-max blocks of {self.block_size}, {engine.threads} build thread(s)"
        )
        return phased_report(convert, engine, index_dir, notes, info)

    def open(self, index_dir: Path) -> None:
        """Opens an index built by `build` (PISA memory-maps its files)."""
        index_dir = Path(index_dir)
        meta = json.loads((index_dir / _META).read_text())
        lib = _pisathon()
        ctx = lib.RetrievalContext()
        lib.prepare_index(
            ctx,
            str(index_dir),
            meta["encoding"],
            _SCORER,
            "",
            block_size=meta["block_size"],
            quantize=0,
            stop_fname="",
        )
        names = np.full(meta["vocab_size"], None, dtype=object)
        present = np.load(index_dir / "terms.npy")
        names[present] = [str(t) for t in present.tolist()]
        self._lib, self._ctx, self._term_names = lib, ctx, names.tolist()
        self._doc_scale = float(meta["scale"])

    def with_algorithm(self, algorithm: str, query_levels: Any = _KEEP) -> "PisaEngine":
        """Another engine over the same opened index, with other query settings."""
        levels = self.query_levels if query_levels is _KEEP else query_levels
        other = PisaEngine(
            algorithm,
            query_levels=levels,
            impact_scale=self.impact_scale,
            encoding=self.encoding,
            block_size=self.block_size,
            build_threads=self.build_threads,
        )
        other._lib, other._ctx, other._term_names = self._lib, self._ctx, self._term_names
        other._doc_scale = self._doc_scale
        return other

    def search(
        self, terms: np.ndarray, weights: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` docs for one query: (int64 doc ids, float32 scores), best first.

        Scores are PISA's integer scores times the doc and query quantisation steps.
        """
        if self._ctx is None:
            raise RuntimeError("build() or open() the index first")
        query, unit = self._query(terms, weights)
        if not query:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        qidxs = np.empty(k, dtype=np.int32)
        ranks = np.empty(k, dtype=np.int32)
        scores = np.empty(k, dtype=np.float32)
        docnos = np.empty(k, dtype=object)  # fresh: the extension stores new refs unreleased
        count = self._lib.retrieve(
            self._ctx,
            self.algorithm,
            [(0, query)],
            k=k,
            threads=1,
            pretokenised=True,
            query_weighted=1,
            result_qidxs=qidxs,
            result_docnos=docnos,
            result_ranks=ranks,
            result_scores=scores,
        )
        # doc names are our decimal doc ids; one join and a C parse beat int() per hit 3 to 1
        ids = np.fromstring(" ".join(docnos[:count].tolist()), dtype=np.int64, sep=" ")
        if ids.size != count:
            raise RuntimeError(f"PISA returned {count} hits but {ids.size} parsable doc names")
        return ids, scores[:count] * np.float32(unit * self._doc_scale)

    def _query(self, terms: np.ndarray, weights: np.ndarray) -> tuple[dict[str, float], float]:
        """The ``{term: integer weight}`` dict PISA gets, and the weight of one query level.

        Plain Python on purpose: for queries of tens of terms it beats a dozen numpy calls.
        """
        term_list = np.asarray(terms).tolist()
        weight_list = np.asarray(weights, dtype=np.float64).tolist()
        top = max(weight_list, default=0.0)
        if top <= 0:
            return {}, 1.0
        unit = 1.0 if self.query_levels is None else top / self.query_levels
        names, vocab = self._term_names, len(self._term_names)
        query: dict[str, float] = {}
        for term, weight in zip(term_list, weight_list):
            level = round(weight / unit)  # half to even, as np.rint
            if level >= 1 and 0 <= term < vocab and names[term] is not None:
                query[names[term]] = query.get(names[term], 0.0) + level
        return query, unit


def write_collection(
    docs: SparseBatch, out_dir: Path, *, impact_scale: float | None = None
) -> dict[str, Any]:
    """Convert phase: writes PISA's uncompressed collection and text lexicons for ``docs``.

    Returns:
        Counts and the quantisation used (also kept in the index's ``lsr_pisa.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tfs, info = integer_impacts(docs.values, impact_scale)
    # A term-major copy by counting sort, in uint32: scipy's tocsc() of a 4M-doc collection
    # held three copies in 64-bit indices and ran out of memory on 24 GB.
    term_indptr = np.zeros(docs.vocab_size + 1, dtype=np.int64)
    _count_terms(docs.indices, tfs, term_indptr)
    np.cumsum(term_indptr, out=term_indptr)
    term_docs = np.empty(int(term_indptr[-1]), dtype=np.uint32)
    term_tfs = np.empty(int(term_indptr[-1]), dtype=np.uint32)
    doc_lengths = np.zeros(len(docs), dtype=np.int64)
    _fill_terms(docs.indptr, docs.indices, tfs, term_indptr[:-1].copy(), term_docs, term_tfs, doc_lengths)
    del tfs
    present = np.flatnonzero(np.diff(term_indptr))
    names = np.array([str(t) for t in present.tolist()])
    order = np.argsort(names, kind="stable")  # PISA's lexicon is sorted as strings
    _write_postings(out_dir, term_indptr, term_docs, term_tfs, present[order], doc_lengths)
    (out_dir / "fwd.terms").write_text("".join(f"{name}\n" for name in names[order].tolist()))
    with open(out_dir / "fwd.documents", "w") as out:
        for start in range(0, len(docs), 100_000):
            stop = min(start + 100_000, len(docs))
            out.write("\n".join(map(str, range(start, stop))) + "\n")
    np.save(out_dir / "terms.npy", present.astype(np.int64))
    meta = {
        "vocab_size": docs.vocab_size,
        "docs": len(docs),
        "postings": int(term_indptr[-1]),
        "terms": int(present.size),
        **info,
    }
    (out_dir / _META).write_text(json.dumps(meta, indent=1))
    return meta


def build_index(
    out_dir: Path, *, encoding: str = "block_simdbp", block_size: int = 64
) -> dict[str, Any]:
    """Engine phase: PISA builds its lexicons, block-max data and compressed index.

    Needs the files of `write_collection` in ``out_dir``; deletes the ones searching does not use.
    """
    lib = _pisathon()
    out_dir = Path(out_dir)
    lib.build_binlex(str(out_dir / "fwd.documents"), str(out_dir / "fwd.doclex"))
    lib.build_binlex(str(out_dir / "fwd.terms"), str(out_dir / "fwd.termlex"))
    ctx = lib.RetrievalContext()
    lib.prepare_index(  # creates the block-max data, then compresses the postings
        ctx, str(out_dir), encoding, _SCORER, "", block_size=block_size, quantize=0, stop_fname=""
    )
    del ctx
    for name in _BUILD_ONLY:
        (out_dir / name).unlink()
    meta = json.loads((out_dir / _META).read_text())
    meta.update(encoding=encoding, block_size=block_size)
    (out_dir / _META).write_text(json.dumps(meta, indent=1))
    return {"encoding": encoding, "block_size": block_size}


@njit(cache=True, nogil=True)
def _count_terms(indices, tfs, counts):
    """counts[t + 1]: postings of term t with a non-zero frequency."""
    for p in range(indices.shape[0]):
        if tfs[p] > 0:
            counts[indices[p] + 1] += 1


@njit(cache=True, nogil=True)
def _fill_terms(indptr, indices, tfs, cursor, term_docs, term_tfs, doc_lengths):
    """Postings by term, docs ascending within a term (docs are visited in order); and each
    doc's length, the sum of its frequencies."""
    for doc in range(indptr.shape[0] - 1):
        for p in range(indptr[doc], indptr[doc + 1]):
            if tfs[p] > 0:
                t = indices[p]
                term_docs[cursor[t]] = doc
                term_tfs[cursor[t]] = tfs[p]
                cursor[t] += 1
                doc_lengths[doc] += tfs[p]


def _write_postings(
    out_dir: Path, indptr: np.ndarray, doc_ids: np.ndarray, freqs: np.ndarray, terms: np.ndarray,
    doc_lengths: np.ndarray,
) -> None:
    """PISA's binary_freq_collection: ``inv.docs``, ``inv.freqs``, ``inv.sizes`` (all uint32).

    ``inv.docs`` is ``[1, n_docs]`` then, per term, ``[length, doc ids...]``; ``inv.freqs`` is,
    per term, ``[length, freqs...]``; ``inv.sizes`` is ``[n_docs, doc lengths...]``.
    """
    n_docs = len(doc_lengths)
    with open(out_dir / "inv.docs", "wb") as f_docs, open(out_dir / "inv.freqs", "wb") as f_freqs:
        f_docs.write(np.array([1, n_docs], dtype=np.uint32).tobytes())
        for term in terms.tolist():
            start, stop = int(indptr[term]), int(indptr[term + 1])
            header = np.uint32(stop - start).tobytes()
            f_docs.write(header)
            f_docs.write(doc_ids[start:stop].tobytes())
            f_freqs.write(header)
            f_freqs.write(freqs[start:stop].tobytes())
    with open(out_dir / "inv.sizes", "wb") as f_sizes:
        f_sizes.write(np.uint32(n_docs).tobytes())
        f_sizes.write(np.minimum(doc_lengths, 2**32 - 1).astype(np.uint32).tobytes())


def _pisathon() -> ModuleType:
    """``pyterrier_pisa._pisathon``, loaded without importing ``pyterrier_pisa`` (and PyTerrier)."""
    name = "pyterrier_pisa._pisathon"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("pyterrier_pisa")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(_INSTALL_HINT)
    folder = Path(next(iter(spec.submodule_search_locations)))
    binaries = sorted(folder.glob("_pisathon*.so")) + sorted(folder.glob("_pisathon*.pyd"))
    if not binaries:
        raise ImportError(f"pyterrier_pisa has no compiled _pisathon module. {_INSTALL_HINT}")
    ext_spec = importlib.util.spec_from_file_location(name, binaries[0])
    module = importlib.util.module_from_spec(ext_spec)
    ext_spec.loader.exec_module(module)
    sys.modules[name] = module
    return module
