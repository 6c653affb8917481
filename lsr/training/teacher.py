"""The heterogeneous ensemble teacher of Geng et al. (2024): a dense and a sparse retriever.

Each teacher scores every candidate of a query (its positives and mined negatives); the
scores are min-max normalised per query and per teacher, so neither teacher's scale
dominates, then summed. The teachers are the bundled dense all-MiniLM-L6-v2 (cosine) and the
bundled SPLADE-tiny (dot product). Scores are cached; the loss multiplies them by
``loss.teacher_scale`` to bring the margins to the student's score scale.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lsr.training.cache import cache_key, read_json, write_json
from lsr.training.data import TrainingSet


def min_max(scores: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant list maps to all zeros (it ranks nothing)."""
    low, high = float(scores.min()), float(scores.max())
    if high - low <= 1e-12:
        return np.zeros_like(scores, dtype=np.float64)
    return (scores - low) / (high - low)


def ensemble_scores(per_teacher: list[np.ndarray]) -> np.ndarray:
    """Sum of the per-teacher min-max normalised scores of one query's candidates."""
    return np.sum([min_max(np.asarray(s, dtype=np.float64)) for s in per_teacher], axis=0)


def _dense_vectors(queries: list[str], docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from lsr.encoders.models import bundled_dense_path

    model = SentenceTransformer(str(bundled_dense_path()), device="cpu")
    q = model.encode(queries, batch_size=64, normalize_embeddings=True, show_progress_bar=True)
    d = model.encode(docs, batch_size=32, normalize_embeddings=True, show_progress_bar=True)
    return q, d


def _sparse_vectors(queries: list[str], docs: list[str]):
    from lsr.encoders.splade import SpladeEncoder

    encoder = SpladeEncoder()
    return encoder.encode_queries(queries).to_scipy(), encoder.encode_documents(docs, show_progress=True).to_scipy()


class TeacherVectors:
    """Both teachers' vectors of a training set's queries and documents, so that any (query,
    document) pair can be scored: what in-batch distillation needs (``loss.teacher_in_batch``),
    where a query meets the other queries' documents too.

    Args:
        query_ids, doc_ids: the rows of the arrays below, in order.
        dense_queries, dense_documents: unit-length all-MiniLM-L6-v2 vectors (float32).
        sparse_queries, sparse_documents: bundled SPLADE-tiny vectors (scipy CSR).
    """

    def __init__(self, query_ids, doc_ids, dense_queries, dense_documents, sparse_queries, sparse_documents) -> None:
        self.query_row = {q: i for i, q in enumerate(query_ids)}
        self.doc_row = {d: i for i, d in enumerate(doc_ids)}
        self.dense_queries, self.dense_documents = dense_queries, dense_documents
        self.sparse_queries, self.sparse_documents = sparse_queries.tocsr(), sparse_documents.tocsr()

    def scores(self, query_ids: list[str], doc_ids: list[str]) -> np.ndarray:
        """``(queries, documents)`` ensemble scores: per query, each teacher's scores of these
        documents min-max normalised over them, then summed (as `ensemble_scores`)."""
        queries = [self.query_row[q] for q in query_ids]
        documents = [self.doc_row[d] for d in doc_ids]
        dense = self.dense_queries[queries] @ self.dense_documents[documents].T
        sparse = (self.sparse_queries[queries] @ self.sparse_documents[documents].T).toarray()
        return np.stack([ensemble_scores([dense[row], sparse[row]]) for row in range(len(queries))])


def teacher_vectors(training_set: TrainingSet, doc_ids: list[str], cache_dir: str | Path) -> TeacherVectors:
    """`TeacherVectors` of every training query and of ``doc_ids``, cached in ``cache_dir``."""
    from scipy import sparse as sp

    query_ids = [e.query_id for e in training_set.examples]
    key = cache_key(training_set.name, len(training_set.examples), "minilm+splade-tiny vectors", query_ids, doc_ids)
    cache_file = Path(cache_dir) / f"teacher-vectors-{key}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as saved:
            def csr(prefix):
                return sp.csr_matrix((saved[f"{prefix}_data"], saved[f"{prefix}_indices"], saved[f"{prefix}_indptr"]),
                                     shape=tuple(saved[f"{prefix}_shape"]))
            return TeacherVectors(query_ids, doc_ids, saved["dense_queries"], saved["dense_documents"],
                                  csr("sparse_queries"), csr("sparse_documents"))
    texts = [training_set.corpus[d] for d in doc_ids]
    dense_q, dense_d = _dense_vectors([e.query for e in training_set.examples], texts)
    sparse_q, sparse_d = _sparse_vectors([e.query for e in training_set.examples], texts)
    arrays = {"dense_queries": dense_q, "dense_documents": dense_d}
    for prefix, matrix in (("sparse_queries", sparse_q), ("sparse_documents", sparse_d)):
        arrays.update({f"{prefix}_data": matrix.data, f"{prefix}_indices": matrix.indices,
                       f"{prefix}_indptr": matrix.indptr, f"{prefix}_shape": np.array(matrix.shape)})
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_name(cache_file.name + ".partial")
    with open(partial, "wb") as out:  # beside, then renamed: a crash never leaves half a cache file
        np.savez(out, **arrays)
    os.replace(partial, cache_file)
    return TeacherVectors(query_ids, doc_ids, dense_q, dense_d, sparse_q, sparse_d)


def candidate_lists(training_set: TrainingSet, candidates: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per query: its positives, then its candidates, each document once."""
    return {e.query_id: list(dict.fromkeys(e.positives + candidates.get(e.query_id, [])))
            for e in training_set.examples}


def candidate_vectors(training_set: TrainingSet, candidates: dict[str, list[str]], cache_dir: str | Path
                      ) -> TeacherVectors:
    """`teacher_vectors` of every document a batch can hold: the positives and candidates of all
    queries."""
    lists = candidate_lists(training_set, candidates)
    return teacher_vectors(training_set, sorted({d for docs in lists.values() for d in docs}), cache_dir)


def ensemble_teacher(training_set: TrainingSet, candidates: dict[str, list[str]], cache_dir: str | Path
                     ) -> dict[str, dict[str, float]]:
    """Normalised ensemble scores ``{query_id: {doc_id: score}}`` of positives and candidates."""
    cache_dir = Path(cache_dir)
    key = cache_key(training_set.name, len(training_set.examples), "minilm+splade-tiny",
                    sorted((q, tuple(c)) for q, c in candidates.items()))
    cache_file = cache_dir / f"teacher-{key}.json"
    cached = read_json(cache_file)
    if cached is not None:
        return cached
    lists = candidate_lists(training_set, candidates)
    vectors = candidate_vectors(training_set, candidates, cache_dir)
    scores = {}
    for example in training_set.examples:
        docs = lists[example.query_id]
        combined = vectors.scores([example.query_id], docs)[0]
        scores[example.query_id] = {d: float(s) for d, s in zip(docs, combined)}
    write_json(cache_file, scores)
    return scores
