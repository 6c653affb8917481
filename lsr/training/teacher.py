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


def _dense_scores(queries: list[str], docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
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
    lists = {e.query_id: list(dict.fromkeys(e.positives + candidates.get(e.query_id, [])))
             for e in training_set.examples}
    doc_ids = sorted({d for docs in lists.values() for d in docs})
    doc_row = {d: i for i, d in enumerate(doc_ids)}
    texts = [training_set.corpus[d] for d in doc_ids]
    queries = [e.query for e in training_set.examples]
    dense_q, dense_d = _dense_scores(queries, texts)
    sparse_q, sparse_d = _sparse_vectors(queries, texts)
    scores = {}
    for row, example in enumerate(training_set.examples):
        rows = np.array([doc_row[d] for d in lists[example.query_id]])
        dense = dense_d[rows] @ dense_q[row]
        sparse = (sparse_d[rows] @ sparse_q[row].T).toarray().ravel()
        combined = ensemble_scores([dense, sparse])
        scores[example.query_id] = {d: float(s) for d, s in zip(lists[example.query_id], combined)}
    write_json(cache_file, scores)
    return scores
