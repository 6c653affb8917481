"""pyserini's Lucene BM25 (`eval.baselines.bm25`) as a PyTerrier transformer, so that
``pt.Experiment`` puts the baseline beside our pipelines (`lsr.pyterrier`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyterrier as pt

from lsr.eval.baselines.bm25 import build_index, search_index
from lsr.pyterrier import RESULT_COLUMNS
from lsr.quiet import stderr_to_log


class PyseriniBM25(pt.Transformer):
    """BM25 over a Lucene index of ``documents`` (``(docno, title, text)``), built once in
    ``work_dir``; ``k1`` and ``b`` as pyserini's BEIR runs use them."""

    def __init__(self, documents: Iterable[tuple[str, str, str]], work_dir: str | Path, k: int = 1000,
                 k1: float = 0.9, b: float = 0.4) -> None:
        self.k, self.k1, self.b = k, k1, b
        with stderr_to_log("jvm"):  # the JVM's warnings, as in eval.baselines.bm25.bm25_run
            self.index_dir = build_index(documents, Path(work_dir))

    def transform(self, topics: pd.DataFrame) -> pd.DataFrame:
        queries = dict(zip(topics["qid"], topics["query"]))
        with stderr_to_log("jvm"):
            run = search_index(self.index_dir, queries, k=self.k, k1=self.k1, b=self.b)
        rows = [(qid, query, doc_id, score, rank)
                for qid, query in queries.items()
                for rank, (doc_id, score) in enumerate(sorted(run.get(qid, {}).items(), key=lambda x: (-x[1], x[0])))]
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)
