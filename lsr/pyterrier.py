"""PyTerrier transformers over our indexes, so that ``pt.Experiment`` compares our pipelines.

PyTerrier's core (``python-terrier``) needs no Java; nothing here starts one.

    import pyterrier as pt
    from lsr.pyterrier import SparseIndexer, QueryEncoder, Retriever

    index = SparseIndexer("my-index", dense=True).index(corpus_iter)  # dicts with docno, text
    sparse = Retriever(index)                     # encodes the query itself
    pipeline = QueryEncoder(index) >> Retriever(index)   # the same, in two stages
    hybrid = Retriever(index, mode="hybrid")
    pt.Experiment([sparse, hybrid], topics, qrels, eval_metrics=["nDCG@10"])

Frames follow PyTerrier's conventions: queries carry ``qid`` and ``query``; results add
``docno``, ``score`` and ``rank``; `QueryEncoder` adds ``query_toks`` (token -> weight, as
pyt_splade writes it), which `Retriever` searches when present instead of encoding ``query``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyterrier as pt

from lsr.api import SparseIndex

RESULT_COLUMNS = ["qid", "query", "docno", "score", "rank"]


def _opened(index: SparseIndex | str | Path) -> SparseIndex:
    return index if isinstance(index, SparseIndex) else SparseIndex.open(index, writable=False)


class SparseIndexer(pt.Indexer):
    """Builds a `SparseIndex` from PyTerrier's document dicts (``docno``, ``text``, optional
    ``title``); ``index`` returns the opened index (a `Retriever` takes it).

    Args:
        path: the index directory to create.
        encoder, dense, overwrite, options: as for `SparseIndex.build`.
    """

    def __init__(self, path: str | Path, encoder=None, dense: bool = False, overwrite: bool = False,
                 **options) -> None:
        self.path, self.encoder, self.dense, self.overwrite, self.options = Path(path), encoder, dense, overwrite, options

    def index(self, iter_dict) -> SparseIndex:
        documents = ({"id": d["docno"], "title": d.get("title") or "", "text": d["text"]} for d in iter_dict)
        return SparseIndex.build(documents, self.path, self.encoder, dense=self.dense, overwrite=self.overwrite,
                                 **self.options)


class QueryEncoder(pt.Transformer):
    """Adds ``query_toks``, the sparse query vector as {token: weight}, to each query."""

    def __init__(self, index: SparseIndex | str | Path) -> None:
        self.index = _opened(index)

    def transform(self, topics: pd.DataFrame) -> pd.DataFrame:
        encoder = self.index.encoder
        vectors = encoder.encode_queries(list(topics["query"])) if len(topics) else None
        tokens = []
        for row in range(len(topics)):
            terms, weights = vectors.row(row)
            names = encoder.tokenizer.convert_ids_to_tokens([int(t) for t in terms])
            tokens.append({name: float(w) for name, w in zip(names, weights)})
        return topics.assign(query_toks=tokens)


class Retriever(pt.Transformer):
    """The top ``k`` documents of each query from a `SparseIndex`.

    Args:
        index: an opened `SparseIndex` or its directory.
        k: results per query.
        mode: ``sparse``, ``dense`` or ``hybrid`` (`SparseIndex.search`).
        search_options: passed to `SparseIndex.search` (``fusion``, ``alpha``, ``precision``, ...).
    """

    def __init__(self, index: SparseIndex | str | Path, k: int = 1000, mode: str = "sparse", **search_options) -> None:
        self.index, self.k, self.mode, self.search_options = _opened(index), k, mode, search_options

    def transform(self, topics: pd.DataFrame) -> pd.DataFrame:
        if self.mode == "sparse" and "query_toks" in topics.columns:
            ranked = [self._search_tokens(tokens) for tokens in topics["query_toks"]]
        else:
            hits = self.index.search(list(topics["query"]), self.k, self.mode, **self.search_options)
            ranked = [([h.id for h in row], [h.score for h in row]) for row in hits]
        rows = [(qid, query, doc_id, float(score), rank)
                for qid, query, (ids, scores) in zip(topics["qid"], topics["query"], ranked)
                for rank, (doc_id, score) in enumerate(zip(ids, scores))]
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)

    def _search_tokens(self, tokens: dict[str, float]) -> tuple[list, list]:
        tokenizer = self.index.encoder.tokenizer
        terms = np.array(tokenizer.convert_tokens_to_ids(list(tokens)), dtype=np.int64)
        weights = np.array(list(tokens.values()), dtype=np.float32)
        # A token outside the vocabulary matches no document (the tokenizer maps it to its
        # unknown token, which is not what the query asked for).
        unknown = [name != tokenizer.unk_token and term == tokenizer.unk_token_id for name, term in zip(tokens, terms)]
        known = (terms >= 0) & ~np.array(unknown, dtype=bool)
        options = {key: value for key, value in self.search_options.items() if key in ("alpha", "beta", "precision")}
        hits = self.index.search_vector(terms[known], weights[known], self.k, **options)
        return [h.id for h in hits], [h.score for h in hits]
