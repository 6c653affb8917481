"""Query encoding through ONNX Runtime: the vectors of PyTorch (within 1e-4) in a fraction of the time.

A service encodes one query at a time. For a small model (SPLADE-tiny has two layers) PyTorch's
cost is its per-operator dispatch, not arithmetic; ONNX Runtime runs the whole graph in one call.

Backends (``--query-backend``; the service's ``LSR_QUERY_BACKEND``):

- ``torch``: the model itself.
- ``onnx``: the model's query graph in ONNX Runtime. The graph is ``query.onnx`` beside the model
  (``lsr export --onnx`` writes it) or, when there is none, exported once into the cache
  (``$LSR_CACHE_DIR``, default ``~/.cache/lsr``) under a fingerprint of the model's files.
- ``onnx-int8``: the same graph with its weights quantised to int8 (dynamic quantisation); the
  vectors change, so its effectiveness cost is measured (``lsr eval ... --query-backend``).
- ``auto`` (default): ``onnx`` where onnxruntime is installed and a graph is already there,
  otherwise ``torch``; it never exports.

Every graph is run beside PyTorch on sample texts when it is opened: one that fails, gives
vectors of another shape, or (float weights) differs by more than 1e-4 is an error naming the
file, never a wrong vector. Documents are always encoded by
PyTorch (the wrappers hand everything but queries to the model they wrap). Inference-free
models need no graph: their queries are table lookups.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from lsr.index.sparse_batch import SparseBatch
from lsr.encoders.query_backends import QUERY_BACKENDS
from lsr.encoders.tokens import pad_right, tokenize

GRAPH_NAME = "query.onnx"
INT8_NAME = "query.int8.onnx"
MAX_DIFFERENCE = 1e-4
CHECK_TEXTS = ["vitamin D and bone density", "what causes cell death in tumours?",
               "a longer query about the effect of exercise on blood pressure in older adults " * 3]
LOGITS_PER_BATCH = 16 * 2**20  # float32 logits of one sparse batch: 64 MB
EXPORT_FORMAT = 1  # bump when the exported graphs change: the cache key includes it


def cache_dir() -> Path:
    return Path(os.environ.get("LSR_CACHE_DIR") or Path.home() / ".cache" / "lsr") / "onnx"


def model_fingerprint(directory: Path, kind: str) -> str:
    """A key for the graph of the model in ``directory``: every file's name, size and mtime
    (graphs excluded), the graph kind and the exporter's format."""
    digest = hashlib.sha256(f"{kind}:{EXPORT_FORMAT}:{directory.resolve()}".encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix != ".onnx"):
        stat = path.stat()
        digest.update(f"{path.relative_to(directory)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def with_sparse_query_backend(encoder, backend: str = "auto", threads: int | None = None):
    """``encoder``, or a wrapper that encodes its queries with ONNX Runtime (see the module doc)."""
    _check_backend(backend)
    if backend == "torch" or not hasattr(encoder, "module") or encoder.describe()["type"] == "inference-free":
        return encoder
    from lsr.encoders.models import resolve_model

    return _with_graph(OnnxSparseQueries, encoder, Path(resolve_model(encoder.model_name)), "sparse", backend,
                       threads, export=lambda path: _export_sparse(encoder, path))


def with_dense_query_backend(dense_encoder, backend: str = "auto", threads: int | None = None):
    """``dense_encoder`` (a `DenseEncoder`), or a wrapper encoding its queries with ONNX Runtime."""
    _check_backend(backend)
    if dense_encoder is None or backend == "torch":
        return dense_encoder
    from lsr.encoders.dense import resolve_dense_model

    return _with_graph(OnnxDenseQueries, dense_encoder, Path(resolve_dense_model(dense_encoder.model_name)), "dense",
                       backend, threads, export=lambda path: _export_dense(dense_encoder, path))


def _with_graph(wrapper, encoder, directory: Path, kind: str, backend: str, threads: int | None, export):
    """``wrapper`` around ``encoder`` with the graph ``backend`` asks for, or ``encoder`` where
    ``auto`` finds none."""
    graph = _graph_path(directory, kind, backend, export)
    if graph is None:
        return encoder
    return wrapper(encoder, _session(graph, threads), graph, quantized=backend == "onnx-int8")


def open_sparse_graph(encoder, graph: Path, threads: int | None = None) -> "OnnxSparseQueries":
    """``encoder``'s queries through the float graph at ``graph`` (checked against it when opened)."""
    return OnnxSparseQueries(encoder, _session(graph, threads), graph)


class _OnnxQueries:
    """An encoder whose ``encode_queries`` runs an ONNX graph; everything else is the wrapped
    encoder's (documents always go through PyTorch).

    Args:
        encoder: the wrapped encoder.
        session: an ``onnxruntime.InferenceSession`` of its query graph.
        graph: the graph's path (reports and errors name it).
        quantized: the graph's weights are int8 (its vectors' shape is checked against
            PyTorch's, not their values).
    """

    def __init__(self, encoder, session, graph: Path, quantized: bool = False) -> None:
        self._encoder = encoder
        self.session = session
        self.graph = graph
        self.query_backend = "onnx-int8" if quantized else "onnx"
        _check_against_torch(graph, self._run_graph, self._torch_vectors, self._tokenizer(), self._max_length(),
                             compare_values=not quantized)

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def _run_graph(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (vectors,) = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return vectors


class OnnxSparseQueries(_OnnxQueries):
    """A SPLADE or uniCOIL encoder whose queries go through its query graph."""

    def _tokenizer(self):
        return self._encoder.tokenizer

    def _max_length(self) -> int:
        return self._encoder.query_max_length

    def _torch_vectors(self, texts: list[str]) -> np.ndarray:
        """PyTorch's query vectors as a dense ``(texts, vocab)`` array (the reference of the check)."""
        return self._encoder.encode_queries(texts).to_scipy().toarray()

    def encode_queries(self, texts: list[str], show_progress: bool = False) -> SparseBatch:
        if not texts:
            return SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float32),
                               self._encoder.vocab_size)
        rows: list[tuple[np.ndarray, np.ndarray]] = [None] * len(texts)  # type: ignore[list-item]
        # The query graph holds a batch's (texts, tokens, vocab) logits at once: bounded here.
        limit = self._encoder.query_max_length * self._encoder.vocab_size
        batch_size = max(1, min(self._encoder.batch_size, LOGITS_PER_BATCH // limit))
        for chunk, input_ids, mask in _padded_batches(self._encoder.tokenizer, texts,
                                                      self._encoder.query_max_length, batch_size):
            weights = self._run_graph(input_ids, mask)
            for row, position in enumerate(chunk):
                terms = np.flatnonzero(weights[row])
                rows[position] = (terms, weights[row, terms])
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(terms) for terms, _ in rows], out=indptr[1:])
        return SparseBatch(indptr, np.concatenate([t for t, _ in rows]), np.concatenate([w for _, w in rows]),
                           self._encoder.vocab_size)


class OnnxDenseQueries(_OnnxQueries):
    """A `DenseEncoder` whose queries go through its graph (pooling and normalisation inside)."""

    def _tokenizer(self):
        return self._encoder.model.tokenizer

    def _max_length(self) -> int:
        return self._encoder.max_length

    def _torch_vectors(self, texts: list[str]) -> np.ndarray:
        return self._encoder.encode(texts)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self._encoder.dim), dtype=np.float32)
        for chunk, input_ids, mask in _padded_batches(self._encoder.model.tokenizer, texts,
                                                      self._encoder.max_length, self._encoder.batch_size):
            vectors[chunk] = self._run_graph(input_ids, mask)
        return vectors


def _padded_batches(tokenizer, texts: list[str], max_length: int, batch_size: int):
    """``(positions, input_ids, attention_mask)`` per batch: texts tokenised once, similar lengths
    together (less padding), padded on the right as the tokenizer would."""
    if not texts:
        return
    token_ids = tokenize(tokenizer, list(texts), truncation=True, max_length=max_length, verbose=False)["input_ids"]
    order = np.argsort([len(ids) for ids in token_ids], kind="stable")[::-1]
    pad = tokenizer.pad_token_id or 0
    for start in range(0, len(texts), batch_size):
        chunk = order[start:start + batch_size]
        yield (chunk, *pad_right([token_ids[i] for i in chunk], pad))


def _check_backend(backend: str) -> None:
    if backend not in QUERY_BACKENDS:
        raise ValueError(f"query backend must be one of {QUERY_BACKENDS}, got {backend!r}")


def _onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _graph_path(directory: Path, kind: str, backend: str, export) -> Path | None:
    """The graph to run for ``backend``, exported (and quantised) into the cache when asked and
    missing; None where ``auto`` finds no graph or no onnxruntime."""
    if not _onnxruntime_available():
        if backend == "auto":
            return None
        raise ImportError(f'--query-backend {backend} needs onnxruntime: pip install "lsr-engine[onnx]"')
    if not directory.is_dir():
        if backend == "auto":
            return None
        raise ValueError(f"--query-backend {backend} needs the model as a local directory, not {str(directory)!r}")
    cached = cache_dir() / f"{kind}-{model_fingerprint(directory, kind)}"
    beside = directory / GRAPH_NAME if kind == "sparse" else None  # lsr export --onnx writes it
    graph = next((p for p in (beside, cached / GRAPH_NAME) if p is not None and p.is_file()), None)
    if backend == "auto":
        return graph
    if graph is None:
        graph = _write_atomically(cached / GRAPH_NAME, export)
    if backend == "onnx-int8":
        source = graph
        graph = cached / INT8_NAME
        if not graph.is_file():
            _write_atomically(graph, lambda path: _quantize_int8(source, path))
    return graph


def _quantize_int8(source: Path, path: Path) -> None:
    """Dynamic quantisation: int8 weights, activations quantised per batch at run time."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    # Its advice to pre-process the graph first: the pre-processing's shape inference does not
    # complete on torch.export's graphs (tried), and the quantised graph is measured as it is.
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _write_atomically(path: Path, write) -> Path:
    """``write(temporary)`` then rename: a reader never sees half a graph; two processes exporting
    at once each write their own temporary and the last rename wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{os.getpid()}.{path.name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _session(graph: Path, threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or _torch_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    try:
        return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable graphs
        raise ValueError(f"{graph}: not a readable ONNX graph ({error}); delete it to export it again") from error


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _check_against_torch(graph: Path, run_graph, torch_vectors, tokenizer, max_length: int,
                         compare_values: bool = True) -> None:
    """Run the graph on `CHECK_TEXTS` beside PyTorch: it must run and give vectors of the model's
    shape, and (``compare_values``; not for int8 weights) within `MAX_DIFFERENCE` of its values."""
    expected = torch_vectors(CHECK_TEXTS)
    remedy = "it is not this model's graph: delete it to export it again, or use --query-backend torch"
    for chunk, input_ids, mask in _padded_batches(tokenizer, CHECK_TEXTS, max_length, len(CHECK_TEXTS)):
        try:
            got = run_graph(input_ids, mask)
        except Exception as error:  # onnxruntime's own exception types: wrong inputs, failed kernels
            raise ValueError(f"{graph}: the ONNX graph fails on token ids ({error}); {remedy}") from error
        if got.shape != expected[chunk].shape:
            raise ValueError(f"{graph}: the ONNX graph gives {got.shape[1:]} vectors, the model "
                             f"{expected.shape[1:]}; {remedy}")
        difference = float(np.abs(got - expected[chunk]).max())
        if compare_values and not difference <= MAX_DIFFERENCE:
            raise ValueError(f"{graph}: the ONNX graph differs from the model by {difference:.2e} "
                             f"(> {MAX_DIFFERENCE}); {remedy}")


def _export_sparse(encoder, path: Path) -> None:
    from lsr.export.onnx import export_query_onnx

    export_query_onnx(encoder, path)


def _export_dense(dense_encoder, path: Path) -> None:
    from lsr.export.onnx import export_dense_onnx

    export_dense_onnx(dense_encoder, path)
