"""BM25 baseline through pyserini (Lucene, via Anserini), the way pyserini's BEIR "flat" runs do.

pyserini's BEIR flat indexes (``BeirFlatCollection``) put ``title + "\\n" + text`` in one
``contents`` field, analysed by Anserini's default English analyzer (Lucene's standard
tokenizer, English stopwords removed, Porter stemmer); queries go through the same analyzer as
a bag of words, scored with BM25 (k1=0.9, b=0.4) and cut at 1,000 hits. We write the same
``contents`` to a ``JsonCollection`` file and index it with Anserini's ``IndexCollection``, so
the index and the scores are the ones of pyserini's prebuilt index. Its BEIR runs also pass
``--remove-query`` (drop a hit whose doc id equals the query id); that rule is left to the
caller.

Reference (pyserini 2CR, BEIR test): nDCG@10 SciFact 0.6789, NFCorpus 0.3218.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from lsr.eval.baselines.java import run_index_collection, start_jvm

logger = logging.getLogger(__name__)

_INSTALL_HINT = 'pyserini is not installed: pip install "lsr-engine[baselines]"'
# Queries sent to Lucene per batch_search call, to bound the Java-side result lists.
_QUERY_BATCH = 1024


def bm25_run(
    documents: Iterable[tuple[str, str, str]],
    queries: Mapping[str, str],
    work_dir: Path,
    k: int = 1000,
    k1: float = 0.9,
    b: float = 0.4,
    threads: int = 2,
) -> dict[str, dict[str, float]]:
    """Indexes documents with Lucene and ranks them with BM25 for every query.

    Args:
        documents: ``(doc_id, title, text)`` triples, streamed once to disk (never all held in
            memory). Title and text are indexed as one field, as in pyserini's BEIR flat index.
        queries: query id to query text.
        work_dir: folder for the collection file (``collection/``) and the Lucene index
            (``index/``); both are overwritten.
        k: hits per query.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        threads: threads for indexing and for searching.

    Returns:
        ``{query_id: {doc_id: score}}`` with at most ``k`` documents per query.

    Raises:
        ImportError: pyserini is not installed.
        JavaNotFoundError: no Java 21+ to run Lucene.
    """
    from lsr.quiet import stderr_to_log

    work_dir = Path(work_dir)
    # The JVM's and Lucene's warnings (MMapDirectory on Java 22+, sun.misc.Unsafe) go to a log
    # file, not into the user's terminal; errors still come back as exceptions.
    with stderr_to_log("jvm"):
        index_dir = build_index(documents, work_dir, threads=threads)
        return search_index(index_dir, queries, k=k, k1=k1, b=b, threads=threads)


def build_index(
    documents: Iterable[tuple[str, str, str]], work_dir: Path, threads: int = 2
) -> Path:
    """Writes ``documents`` as a JsonCollection and indexes it with Anserini.

    Args:
        documents: ``(doc_id, title, text)`` triples.
        work_dir: folder that receives ``collection/docs.jsonl`` and ``index/``.
        threads: indexing threads.

    Returns:
        The Lucene index folder.
    """
    _require_pyserini()
    collection_dir = Path(work_dir) / "collection"
    index_dir = Path(work_dir) / "index"
    collection_dir.mkdir(parents=True, exist_ok=True)
    written = _write_collection(documents, collection_dir / "docs.jsonl")

    counters = run_index_collection([
        "-collection", "JsonCollection",
        "-generator", "DefaultLuceneDocumentGenerator",
        "-input", str(collection_dir),
        "-index", str(index_dir),
        "-threads", str(threads),
        "-quiet",
    ])  # fmt: skip
    indexed = counters.indexed.get()
    if indexed != written:
        # Anserini skips documents whose contents are blank, as pyserini's indexes do.
        logger.warning(
            "Lucene indexed %d of %d documents (%d empty, %d errors)",
            indexed, written, counters.empty.get(), counters.errors.get(),
        )  # fmt: skip
    return index_dir


def search_index(
    index_dir: Path,
    queries: Mapping[str, str],
    k: int = 1000,
    k1: float = 0.9,
    b: float = 0.4,
    threads: int = 2,
) -> dict[str, dict[str, float]]:
    """Ranks a Lucene index with BM25 for every query.

    Args:
        index_dir: a Lucene index built by :func:`build_index` (or any Anserini index).
        queries: query id to query text.
        k: hits per query.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        threads: search threads.

    Returns:
        ``{query_id: {doc_id: score}}``; a query with no hit maps to an empty dict.
    """
    searcher = _lucene_searcher_class()(str(index_dir))
    try:
        searcher.set_bm25(float(k1), float(b))
        run: dict[str, dict[str, float]] = {}
        qids = list(queries)
        for start in range(0, len(qids), _QUERY_BATCH):
            batch = qids[start : start + _QUERY_BATCH]
            hits = searcher.batch_search([queries[q] for q in batch], batch, k=k, threads=threads)
            for qid in batch:
                run[qid] = {hit.docid: float(hit.score) for hit in hits.get(qid, [])}
    finally:
        searcher.close()
    return run


def _write_collection(documents: Iterable[tuple[str, str, str]], path: Path) -> int:
    """Streams documents to a JsonCollection file; returns how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for doc_id, title, text in documents:
            # Same concatenation as Anserini's BeirFlatCollection.
            contents = f"{title or ''}\n{text or ''}"
            out.write(json.dumps({"id": str(doc_id), "contents": contents}, ensure_ascii=False))
            out.write("\n")
            count += 1
    return count


def _require_pyserini() -> None:
    if importlib.util.find_spec("pyserini") is None:
        raise ImportError(_INSTALL_HINT)


def _lucene_searcher_class():
    """Imports pyserini's LuceneSearcher after starting our JVM."""
    _require_pyserini()
    start_jvm()
    # pyserini 1.6 builds an OpenAI client at import and fails without a key; it is never used
    # for BM25, so a placeholder is set for the import only.
    placeholder = "OPENAI_API_KEY" not in os.environ
    if placeholder:
        os.environ["OPENAI_API_KEY"] = "unused"
    try:
        from pyserini.search.lucene import LuceneSearcher
    except ImportError as err:
        raise ImportError(f"{_INSTALL_HINT} ({err})") from err
    finally:
        if placeholder:
            os.environ.pop("OPENAI_API_KEY", None)
    return LuceneSearcher


def bm25_efficiency(index_dir: Path, queries: Mapping[str, str], k: int = 1000) -> dict:
    """BM25's counterparts of our efficiency figures, on one thread.

    Returns:
        ``flops_per_query``: mean over queries of the postings their analysed terms touch
        (the sum of document frequencies of the distinct terms); ``mean_search_ms``: mean
        single-query latency of Lucene's BM25 search (after one warm-up query).
    """
    import time

    searcher = _lucene_searcher_class()(str(index_dir))
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(index_dir))
    try:
        texts = list(queries.values())
        postings = 0
        for text in texts:
            for term in set(reader.analyze(text)):
                df, _ = reader.get_term_counts(term, analyzer=None)
                postings += df
        searcher.set_bm25(0.9, 0.4)
        searcher.search(texts[0], k=k)
        started = time.perf_counter()
        for text in texts:
            searcher.search(text, k=k)
        elapsed_ms = (time.perf_counter() - started) * 1000
    finally:
        searcher.close()  # the reader has no close(): Lucene's reader is released with it
    return {"flops_per_query": postings / len(texts), "mean_search_ms": elapsed_ms / len(texts)}
