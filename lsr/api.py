"""The Python API: build or open an index, search it, add and delete documents.

    from lsr import SparseIndex

    index = SparseIndex.build(["Cells make proteins.", "The sky is blue."], path="my-index")
    for hit in index.search("what do cells make?", k=1):
        print(hit.id, round(hit.score, 2))

An index is a directory (segments and commits, ``index.commit``): `SparseIndex.build` writes
one, `SparseIndex.open` opens it again later (the encoder it was built with is recorded in it,
so nothing else needs saving). Writes (`add`, `delete`) are durable when they return.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsr.data.loaders import Document

MODES = ("sparse", "dense", "hybrid")
FUSION_DEPTH = 100  # candidates per list before a hybrid search fuses them


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, its score, its title and (when asked) its text."""

    id: str
    score: float
    title: str = ""
    text: str | None = None


class SparseIndex:
    """A learned sparse index on disk, with the encoders that fill and query it.

    Use `build` or `open` rather than the constructor. ``with SparseIndex.open(path) as index:``
    closes it (its write lock, its open files) at the end of the block.
    """

    def __init__(self, index, encoder, dense_encoder=None) -> None:
        self._index = index
        self.encoder = encoder
        self.dense_encoder = dense_encoder

    # making and opening

    @classmethod
    def build(cls, corpus, path: str | Path, encoder=None, *, dense: bool = False, dense_encoder=None,
              overwrite: bool = False, show_progress: bool = False, **options) -> "SparseIndex":
        """Encode a corpus and write an index of it at ``path``.

        Args:
            corpus: texts (ids ``"0"``, ``"1"``, ... by position); dicts with ``id`` (or ``_id``),
                ``text`` and optionally ``title``; ``(id, text)`` or ``(id, title, text)`` pairs;
                `lsr.data.loaders.Document` items; or a name `lsr index` takes (a BEIR folder, a
                JSONL file, a dataset id such as ``beir/scifact``).
            path: the index directory to create.
            encoder: None (the bundled SPLADE model), a model name or directory, one of our
                encoders (`lsr.encoders.loading.load_encoder`), or a sentence-transformers
                ``SparseEncoder``.
            dense: also build a dense (faiss) part with the bundled dense model, for
                ``mode="dense"`` and ``"hybrid"``; ``dense_encoder`` gives another model (a name
                or a `lsr.encoders.dense.DenseEncoder`) and implies it.
            overwrite: replace an existing index at ``path``.
            show_progress: a progress bar while encoding.
            options: indexing options of `lsr.indexing.index_corpus` (``reorder``, ``block_size``,
                ``quantization``, ``store_texts``, ``duplicates``, ...).
        """
        from lsr.data.sources import open_corpus
        from lsr.indexing import index_corpus

        sparse = sparse_encoder(encoder)
        dense_model = _dense_encoder(dense_encoder) if dense_encoder is not None or dense else None
        if isinstance(corpus, (str, Path)):
            name, documents = open_corpus(str(corpus))
        else:
            name, documents = "python", documents_from(corpus)
        index_corpus(documents, sparse, path, name, overwrite=overwrite, show_progress=show_progress,
                     dense_encoder=dense_model, **options)
        return cls.open(path, encoder=sparse, dense_encoder=dense_model)

    @classmethod
    def open(cls, path: str | Path, encoder=None, dense_encoder=None, writable: bool = True) -> "SparseIndex":
        """Open an index written by `build` or `lsr index`.

        Args:
            path: the index directory (or a sharded index's).
            encoder, dense_encoder: the query encoders; by default those the index records.
            writable: take the index's write lock when it is free (for `add` and `delete`);
                False opens it read-only, beside a process that writes it.
        """
        from lsr.index.sharded import open_index

        index = open_index(path, writer="auto" if writable else "never")
        try:
            recorded = index.meta["encoder"]
            sparse = sparse_encoder(encoder if encoder is not None else recorded)
            dense_model = None
            if dense_encoder is not None:
                dense_model = _dense_encoder(dense_encoder)
            elif index.dense_dim is not None:
                dense_model = _dense_encoder(index.settings["build"]["dense"]["model"])
        except BaseException:
            index.close()
            raise
        return cls(index, sparse, dense_model)

    def close(self) -> None:
        self._index.close()

    def __enter__(self) -> "SparseIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self._index.num_docs

    # searching

    def search(self, queries: str | Iterable[str], k: int = 10, mode: str = "sparse", *, return_texts: bool = False,
               fusion: str = "adaptive", alpha: float = 1.0, beta: float = 1.0,
               precision: str = "auto") -> list[Hit] | list[list[Hit]]:
        """The top ``k`` documents for one query (a list of `Hit`) or for many (a list of lists).

        Args:
            queries: a query text, or several.
            k: results per query.
            mode: ``sparse`` (the default), ``dense`` or ``hybrid`` (both lists fused; the index
                needs a dense part).
            return_texts: fill each hit's ``text`` (an index built with its texts).
            fusion: for hybrid: ``adaptive`` (the default: chosen on dev splits,
                ``eval/results/fusion_sweep.md``), ``rrf`` or ``convex`` (``index.fusion``).
            alpha, beta: below 1, approximate sparse search (``index.scorers.bmp``).
            precision: which stored impacts score the sparse search (``index.search``).
        """
        single = isinstance(queries, str)
        texts = [queries] if single else list(queries)
        if any(not isinstance(text, str) for text in texts):
            raise TypeError("queries must be a string or an iterable of strings")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if mode != "sparse" and (self.dense_encoder is None or self._index.dense_dim is None):
            raise ValueError(f"mode={mode!r} needs a dense part: build the index with dense=True "
                             "(or `lsr index ... --dense`)")
        depth = max(k, FUSION_DEPTH) if mode == "hybrid" else k
        sparse_lists = dense_lists = None
        if mode in ("sparse", "hybrid") and texts:
            queries_batch = self.encoder.encode_queries(texts)
            sparse_lists = self._index.search_sparse_batch(queries_batch, depth, "auto", alpha, beta, None, precision)
        if mode in ("dense", "hybrid") and texts:
            vectors = self.dense_encoder.encode_queries(texts)
            dense_lists = [self._index.search_dense(vector, depth) for vector in vectors]
        if mode == "sparse":
            ranked = sparse_lists or []
        elif mode == "dense":
            ranked = dense_lists or []
        else:
            from lsr.index.fusion import fuse

            ranked = [fuse(s, d, fusion, limit=k) for s, d in zip(sparse_lists or [], dense_lists or [])]
        results = [self._hits(ids[:k], scores[:k], return_texts) for ids, scores in ranked]
        return results[0] if single else results

    def search_vector(self, terms, weights, k: int = 10, *, return_texts: bool = False, alpha: float = 1.0,
                      beta: float = 1.0, precision: str = "auto") -> list[Hit]:
        """The top ``k`` documents for a sparse query vector already encoded: term ids (of the
        encoder's vocabulary) and their weights."""
        ids, scores = self._index.search_sparse(np.asarray(terms), np.asarray(weights, dtype=np.float32), k, "auto",
                                                alpha, beta, None, precision)
        return self._hits(ids, scores, return_texts)

    def _hits(self, ids, scores, return_texts: bool) -> list[Hit]:
        ids = list(ids)
        documents = self._index.documents(ids) if ids else {}
        hits = []
        for doc_id, score in zip(ids, scores):
            document = documents.get(doc_id)
            if document is None:  # deleted since the search
                continue
            hits.append(Hit(doc_id, float(score), document["title"], document["text"] if return_texts else None))
        return hits

    # writing

    def add(self, documents) -> int:
        """Add documents (as `build` takes them, ids required: texts alone have none), or
        replace those whose id the index holds; returns how many were added or replaced.
        Each is on disk when this returns."""
        docs = list(documents_from(documents, require_ids=True))
        if not docs:
            return 0
        texts = [doc.full_text() for doc in docs]
        vectors = self.encoder.encode_documents(texts)
        dense = self.dense_encoder.encode_documents(texts) if self._index.dense_dim is not None else None
        for row, doc in enumerate(docs):
            terms, weights = vectors.row(row)
            self._index.add(doc.doc_id, doc.title, doc.text, terms, weights, None if dense is None else dense[row])
        return len(docs)

    def delete(self, ids: str | Iterable[str]) -> int:
        """Delete documents by id (one, or several); an id the index does not hold is a
        `KeyError` naming it (``index.live.DocumentNotFound``), after the ones before it."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        for doc_id in ids:
            self._index.delete(doc_id)
        return len(ids)

    def document(self, doc_id: str) -> dict:
        """A document's ``id``, ``title`` and ``text`` (a `KeyError` when the index lacks it)."""
        return self._index.document(doc_id)


def documents_from(corpus, require_ids: bool = False) -> Iterator[Document]:
    """The documents of an iterable as `build` takes it (see there), one at a time; an item of
    another shape is a `TypeError` naming its position."""
    if isinstance(corpus, (str, bytes, Mapping, Document)):
        raise TypeError("give an iterable of documents (a single text or document goes in a list)")
    for position, item in enumerate(corpus):
        if isinstance(item, Document):
            yield item
        elif isinstance(item, str):
            if require_ids:
                raise TypeError(f"document {position} is a bare text: give it an id, as {{'id': ..., 'text': ...}}")
            yield Document(str(position), "", item)
        elif isinstance(item, Mapping):
            doc_id = item.get("id", item.get("_id"))
            text = item.get("text")
            if doc_id is None or not isinstance(text, str):
                raise TypeError(f"document {position} needs an 'id' (or '_id') and a 'text' string, got keys "
                                f"{sorted(item)}")
            title = item.get("title") or ""
            yield Document(str(doc_id), str(title), text)
        elif isinstance(item, tuple) and len(item) in (2, 3) and all(isinstance(part, str) for part in item[1:]):
            doc_id, *rest = item
            yield Document(str(doc_id), rest[0] if len(rest) == 2 else "", rest[-1])
        else:
            raise TypeError(f"document {position}: expected a text, a dict, an (id, text) or (id, title, text) tuple "
                            f"or a Document, got {type(item).__name__}")


def sparse_encoder(encoder):
    """Our encoder for ``encoder``: None (the bundled model), a name or directory, a recorded
    ``describe()`` dict, one of ours (returned as it is), or a sentence-transformers
    ``SparseEncoder`` (wrapped)."""
    from lsr.encoders.loading import load_encoder

    if encoder is None or isinstance(encoder, (str, Path)):
        return load_encoder(None if encoder is None else str(encoder))
    if isinstance(encoder, Mapping):
        if encoder.get("type") == SentenceTransformersSparse.TYPE:
            from sentence_transformers import SparseEncoder

            return SentenceTransformersSparse(SparseEncoder(encoder["model"], device="cpu"), encoder["model"])
        return load_encoder(encoder["model"], query_max_length=encoder.get("query_max_length"),
                            doc_max_length=encoder.get("doc_max_length"))
    if hasattr(encoder, "encode_documents") and hasattr(encoder, "encode_queries") and hasattr(encoder, "describe"):
        return encoder
    if type(encoder).__name__ == "SparseEncoder" and hasattr(encoder, "encode_query"):
        return SentenceTransformersSparse(encoder)
    raise TypeError(f"encoder must be None, a model name or directory, one of lsr's encoders or a "
                    f"sentence-transformers SparseEncoder, got {type(encoder).__name__}")


def _dense_encoder(encoder):
    from lsr.encoders.dense import DenseEncoder

    if encoder is None or encoder is True:
        return DenseEncoder()
    if isinstance(encoder, (str, Path)):
        return DenseEncoder(str(encoder))
    return encoder


class SentenceTransformersSparse:
    """A sentence-transformers ``SparseEncoder`` with our encoders' interface (``SparseBatch``
    vectors, ``describe``), so an index can be built and searched with it.

    Args:
        model: the ``SparseEncoder``.
        name: what the index records as its model (a name or directory ``SparseEncoder`` loads;
            by default the transformer's own ``name_or_path``), so `SparseIndex.open` finds it again.
    """

    TYPE = "sentence-transformers-sparse"

    def __init__(self, model, name: str | None = None) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.model_name = name or model[0].auto_model.config._name_or_path
        self.vocab_size = int(self._encode(["vocabulary size"], query=True).shape[1])
        self.query_max_length = self.doc_max_length = int(model.max_seq_length)

    def describe(self) -> dict:
        return {"type": self.TYPE, "model": self.model_name, "query_max_length": self.query_max_length,
                "doc_max_length": self.doc_max_length}

    def encode_queries(self, texts: list[str]):
        return self._batch(texts, query=True)

    def encode_documents(self, texts: list[str]):
        return self._batch(texts, query=False)

    def _encode(self, texts: list[str], query: bool):
        encode = self.model.encode_query if query else self.model.encode_document
        return encode(list(texts), convert_to_tensor=True, convert_to_sparse_tensor=True).coalesce()

    def _batch(self, texts: list[str], query: bool):
        import scipy.sparse as sp

        from lsr.index.sparse_batch import SparseBatch

        if not texts:
            return SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float32), self.vocab_size)
        tensor = self._encode(texts, query)
        rows, terms = tensor.indices().cpu().numpy()
        values = tensor.values().float().cpu().numpy()
        keep = values > 0
        matrix = sp.csr_matrix((values[keep], (rows[keep], terms[keep])), shape=(len(texts), self.vocab_size))
        matrix.sort_indices()
        return SparseBatch.from_scipy(matrix)
