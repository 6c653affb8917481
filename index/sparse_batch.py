"""`SparseBatch`: the one interchange type between encoders, the index builder and scorers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class SparseBatch:
    """A batch of sparse vocabulary vectors in CSR layout.

    Row ``r`` holds term ids ``indices[indptr[r]:indptr[r + 1]]`` with weights
    ``values[indptr[r]:indptr[r + 1]]``.

    Attributes:
        indptr: int64 row offsets, length ``rows + 1``.
        indices: uint32 term ids.
        values: float32 weights.
        vocab_size: number of columns (the encoder's vocabulary size).
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "indptr", np.ascontiguousarray(self.indptr, dtype=np.int64))
        object.__setattr__(self, "indices", np.ascontiguousarray(self.indices, dtype=np.uint32))
        object.__setattr__(self, "values", np.ascontiguousarray(self.values, dtype=np.float32))
        self._validate()

    def _validate(self) -> None:
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0:
            raise ValueError("SparseBatch.indptr must be 1-d and start at 0")
        # Slicing, not np.diff: a query's batch is one short row, and np.diff's Python overhead
        # (9 us) was a tenth of an inference-free query's whole encoding.
        if (self.indptr[1:] < self.indptr[:-1]).any():
            raise ValueError("SparseBatch.indptr must be non-decreasing")
        nnz = int(self.indptr[-1])
        if len(self.indices) != nnz or len(self.values) != nnz:
            raise ValueError(
                f"SparseBatch has indptr[-1]={nnz} but {len(self.indices)} indices "
                f"and {len(self.values)} values"
            )
        if nnz and int(self.indices.max()) >= self.vocab_size:
            raise ValueError(
                f"SparseBatch term id {int(self.indices.max())} is outside the vocabulary "
                f"of size {self.vocab_size}"
            )
        if not np.isfinite(self.values).all():
            raise ValueError("SparseBatch.values contains NaN or infinite weights")

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and weights of row ``r``."""
        start, end = self.indptr[r], self.indptr[r + 1]
        return self.indices[start:end], self.values[start:end]

    def take(self, rows) -> "SparseBatch":
        """The batch of ``rows`` (positions, in the order given), values and term order kept."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # Each output position's source: its row's start plus its offset inside the row.
        source = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        return SparseBatch(indptr, self.indices[source], self.values[source], self.vocab_size)

    def to_scipy(self) -> sp.csr_matrix:
        """The batch as a ``(rows, vocab_size)`` float32 scipy CSR matrix."""
        return sp.csr_matrix(
            (self.values, self.indices.astype(np.int64), self.indptr),
            shape=(len(self), self.vocab_size),
        )

    @classmethod
    def from_scipy(cls, matrix: sp.spmatrix) -> "SparseBatch":
        """Build a batch from any scipy sparse matrix (explicit zeros are dropped)."""
        csr = sp.csr_matrix(matrix, dtype=np.float32)
        csr.eliminate_zeros()
        csr.sort_indices()
        return cls(csr.indptr, csr.indices, csr.data, csr.shape[1])

    @classmethod
    def from_dicts(cls, rows: list[dict[int, float]], vocab_size: int) -> "SparseBatch":
        """Build a batch from ``{term_id: weight}`` dicts (for tests and JSON edges only)."""
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indices: list[int] = []
        values: list[float] = []
        for r, row in enumerate(rows):
            for term in sorted(row):
                indices.append(term)
                values.append(row[term])
            indptr[r + 1] = len(indices)
        return cls(indptr, np.array(indices, dtype=np.int64), np.array(values), vocab_size)

    @classmethod
    def concat(cls, batches: list["SparseBatch"]) -> "SparseBatch":
        """Stack batches row-wise; all must share one vocabulary size."""
        if not batches:
            raise ValueError("SparseBatch.concat needs at least one batch")
        vocab = batches[0].vocab_size
        if any(b.vocab_size != vocab for b in batches):
            raise ValueError("SparseBatch.concat: batches have different vocabulary sizes")
        offsets = np.cumsum([0] + [b.nnz for b in batches[:-1]])
        indptr = np.concatenate([[0]] + [b.indptr[1:] + o for b, o in zip(batches, offsets)])
        return cls(
            indptr,
            np.concatenate([b.indices for b in batches]),
            np.concatenate([b.values for b in batches]),
            vocab,
        )
