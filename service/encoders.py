"""`LocalEncoders`: the query and document encoders of an index, loaded in this process.

The engine asks for exactly what a request needs (a sparse query vector, a dense one, a
document's vectors, the vocabulary's tokens), so the same calls can go to an encoder loaded
here or to an encoder deployment on Ray Serve (``service.ray_serve.RemoteEncoders``).
"""

from __future__ import annotations

import copy

import numpy as np

from lsr.encoders.tokens import tokenize


class LocalEncoders:
    """The encoders an index was built with (its commit records them).

    Args:
        settings: the index's settings (``LiveIndex.settings``).
        device: torch device.
        torch_threads: intra-op threads of this process (ONNX Runtime's sessions get as many).
        query_backend: how queries are encoded (`lsr.encoders.onnx_queries`): ``auto``,
            ``torch``, ``onnx`` or ``onnx-int8``; documents always go through PyTorch.
    """

    def __init__(self, settings: dict, device: str = "cpu", torch_threads: int | None = None,
                 query_backend: str = "auto") -> None:
        import torch

        from lsr.encoders.loading import load_encoder
        from lsr.encoders.onnx_queries import with_dense_query_backend, with_sparse_query_backend

        self._torch = torch
        self.torch_threads = torch_threads
        self._hold_threads()
        recorded = settings["meta"]["encoder"]
        self.encoder = load_encoder(recorded["model"], query_max_length=recorded["query_max_length"],
                                    doc_max_length=recorded["doc_max_length"], device=device)
        self.encoder = with_sparse_query_backend(self.encoder, query_backend, torch_threads)
        self.dense_encoder = None
        dense = settings["build"].get("dense")
        if dense is not None:
            from lsr.encoders.dense import DenseEncoder

            self.dense_encoder = with_dense_query_backend(DenseEncoder(dense["model"], device=device), query_backend,
                                                          torch_threads)
            # Queries' tokens are counted (untruncated) on a copy: sentence-transformers calls the
            # model's own tokenizer out of reach of the lock in `lsr.encoders.tokens`.
            self._dense_counting_tokenizer = copy.deepcopy(self.dense_encoder.model.tokenizer)
        self.vocab_size = self.encoder.vocab_size
        self.has_dense = self.dense_encoder is not None

    def tokens(self) -> list[str]:
        """The vocabulary's tokens, by term id (explain and highlighting name terms with them)."""
        return self.encoder.tokenizer.convert_ids_to_tokens(list(range(self.encoder.vocab_size)))

    def _hold_threads(self) -> None:
        """Put PyTorch's intra-op threads back to ``torch_threads`` where something moved them: a
        parallel Numba kernel (Numba's OpenMP layer: BP reordering, batch search) sets the OpenMP
        thread count of the thread that launched it, which is PyTorch's count too."""
        if self.torch_threads and self._torch.get_num_threads() != self.torch_threads:
            self._torch.set_num_threads(self.torch_threads)

    def encode_sparse(self, query: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """Query terms, raw weights and whether the query was cut to the encoder's token limit."""
        self._hold_threads()
        tokens = tokenize(self.encoder.tokenizer, query, add_special_tokens=True, truncation=False,
                          verbose=False)["input_ids"]
        truncated = len(tokens) > self.encoder.query_max_length
        terms, weights = self.encoder.encode_queries([query]).row(0)
        return np.asarray(terms), np.asarray(weights), truncated

    def encode_dense(self, query: str) -> tuple[np.ndarray, bool]:
        """The dense query vector and whether the query was cut to the dense model's limit."""
        self._hold_threads()
        vector = self.dense_encoder.encode_queries([query])[0]
        counted = tokenize(self._dense_counting_tokenizer, query, truncation=False, verbose=False)["input_ids"]
        truncated = len(counted) > self.dense_encoder.max_length
        return vector, truncated

    def encode_document(self, full_text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A document's sparse terms and weights, and its dense vector (None without a dense part)."""
        self._hold_threads()
        terms, weights = self.encoder.encode_documents([full_text]).row(0)
        dense = self.dense_encoder.encode_documents([full_text])[0] if self.dense_encoder is not None else None
        return np.asarray(terms), np.asarray(weights), dense
