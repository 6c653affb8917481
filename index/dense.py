"""The dense part of an index: a faiss index over one float32 vector per document.

Each segment has its own, in ``SEGMENT/dense/`` beside the sparse arrays: ``vectors.faiss``
(row ``i`` is the document with internal id ``i`` of the segment, so both sides share the id
table) and ``dense.json`` (model, dimension, metric, faiss index kind and its parameters). Both
files are checksummed in the segment's ``meta.json`` and checked before faiss reads them.
Vectors are L2-normalised before they are stored, so inner product is cosine similarity.

Index kinds: ``flat`` (``IndexFlatIP``, exact, the default) and ``hnsw`` (``IndexHNSWFlat``
with inner product; ``M``, ``efConstruction`` and ``efSearch`` are recorded and ``efSearch``
is applied again at load). faiss is imported lazily: a sparse-only deployment never needs it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DENSE_DIR = "dense"
DENSE_META = "dense.json"
FAISS_FILE = "vectors.faiss"
DENSE_KINDS = ("flat", "hnsw")


class DenseIndexError(RuntimeError):
    """The dense part is missing or unreadable."""


@dataclass
class DenseOptions:
    """How the faiss index is built (recorded in ``dense.json``)."""

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    def __post_init__(self) -> None:
        if self.kind not in DENSE_KINDS:
            raise ValueError(f"dense index kind must be one of {', '.join(DENSE_KINDS)}, got {self.kind!r}")
        for name in ("hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def _faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError('the dense index needs faiss: pip install "lsr-engine[dense]"') from error
    return faiss


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); float32, C-contiguous."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _new_faiss_index(dim: int, options: DenseOptions):
    faiss = _faiss()
    if options.kind == "flat":
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = options.ef_construction
    index.hnsw.efSearch = options.ef_search
    return index


def write_dense_index(directory: str | Path, vectors: np.ndarray, model: str, options: DenseOptions | None = None,
                      chunk_rows: int = 65536) -> Path:
    """Write ``directory/dense/`` from vectors in internal doc order.

    Args:
        directory: the segment directory being built (its files are fsynced and checksummed
            with the rest of the segment).
        vectors: ``(num_docs, dim)``, any float dtype; may be a memmap (added in chunks).
        model: the dense encoder's name, recorded so queries use the same one.
        options: faiss index kind and parameters.
        chunk_rows: rows normalised and added per step (bounded extra memory).
    """
    options = options or DenseOptions()
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise ValueError(f"dense vectors must be a (num_docs, dim) array, got shape {vectors.shape}")
    target = Path(directory) / DENSE_DIR
    target.mkdir(parents=True)
    index = _new_faiss_index(int(vectors.shape[1]), options)
    for start in range(0, len(vectors), chunk_rows):
        index.add(normalize_rows(vectors[start : start + chunk_rows]))
    _faiss().write_index(index, str(target / FAISS_FILE))
    meta = {"model": model, "dim": int(vectors.shape[1]), "num_docs": int(len(vectors)),
            "metric": "inner_product", "normalized": True, **asdict(options)}
    (target / DENSE_META).write_text(json.dumps(meta, indent=2))
    return target


def has_dense_index(directory: str | Path) -> bool:
    return (Path(directory) / DENSE_DIR / DENSE_META).is_file()


def read_dense_meta(directory: str | Path) -> dict:
    path = Path(directory) / DENSE_DIR / DENSE_META
    if not path.is_file():
        raise DenseIndexError(f"{directory} has no dense index; build one with `lsr index ... --dense`")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DenseIndexError(f"{path}: invalid JSON ({error})") from error
    if not isinstance(meta, dict) or not all(key in meta for key in ("model", "dim", "num_docs", "kind")):
        raise DenseIndexError(f"{path}: not a dense index description")
    return meta


class DenseIndex:
    """An opened dense index: faiss search by normalised query vectors."""

    def __init__(self, faiss_index, meta: dict) -> None:
        self.faiss_index = faiss_index
        self.meta = meta

    @classmethod
    def open(cls, directory: str | Path, num_docs: int | None = None) -> "DenseIndex":
        """Open ``directory/dense``; ``num_docs`` (the sparse side's) must match when given."""
        meta = read_dense_meta(directory)
        faiss_index = _faiss().read_index(str(Path(directory) / DENSE_DIR / FAISS_FILE))
        if faiss_index.ntotal != meta["num_docs"] or (num_docs is not None and faiss_index.ntotal != num_docs):
            raise DenseIndexError(
                f"{directory}: dense index holds {faiss_index.ntotal} vectors, dense.json says "
                f"{meta['num_docs']} and the sparse index {num_docs}; rebuild it with --dense"
            )
        if meta["kind"] == "hnsw":
            faiss_index.hnsw.efSearch = int(meta["ef_search"])
        return cls(faiss_index, meta)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def num_docs(self) -> int:
        return int(self.faiss_index.ntotal)

    def search(self, queries: np.ndarray, k: int, live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` documents of each query.

        Args:
            queries: ``(num_queries, dim)``; normalised here.
            k: results per query.
            live: uint8 per document, 0 for a deleted one (skipped inside faiss); None: all live.

        Returns:
            ``(doc_ids int64, scores float32)``, both ``(num_queries, k')`` with
            ``k' = min(k, num_docs)``, best first; fewer may be found (HNSW, deletes), padded
            with id -1.
        """
        queries = np.atleast_2d(queries)
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {queries.shape[1]}, the dense index {self.dim}")
        k = min(int(k), self.num_docs)
        if k <= 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.int64), empty.astype(np.float32)
        params = None
        if live is not None:
            faiss = _faiss()
            bitmap = np.packbits(np.asarray(live, dtype=bool), bitorder="little")
            selector = faiss.IDSelectorBitmap(self.num_docs, faiss.swig_ptr(bitmap))
            if self.meta["kind"] == "hnsw":
                params = faiss.SearchParametersHNSW(sel=selector)
                params.efSearch = int(self.meta["ef_search"])
            else:
                params = faiss.SearchParameters(sel=selector)
        scores, ids = self.faiss_index.search(normalize_rows(queries), k, params=params)
        return ids.astype(np.int64), scores.astype(np.float32)

    def vectors(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """Stored (normalised) vectors of internal ids ``[start, end)``."""
        end = self.num_docs if end is None else end
        return self.faiss_index.reconstruct_n(start, end - start)
