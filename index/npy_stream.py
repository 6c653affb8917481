"""``.npy`` files written by appending, in bounded memory, whose length is known only at the end.

The header is written first with room to spare and rewritten in place on `close` with the
final shape (the ``.npy`` format pads its header with spaces, so its length can be kept):
large arrays go to disk chunk by chunk through plain writes, never through a memory map
whose touched pages would count as the process's resident memory.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

HEADER_BYTES = 128  # fits any dtype and a 2-d shape of 20-digit dimensions
WRITE_BUFFER = 1 << 20


def npy_header(dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header of exactly `HEADER_BYTES` bytes."""
    body = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (np.dtype(dtype).str, tuple(int(s) for s in shape))
    length = HEADER_BYTES - 10
    if len(body) + 1 > length:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", length) + (body.ljust(length - 1) + "\n").encode("latin1")


class NpyAppender:
    """Append rows to ``path`` (a 1-d array, or 2-d with ``row_shape``); `close` fixes the header.

    Args:
        path: the ``.npy`` file to create.
        dtype: the element type.
        row_shape: the shape of one row beyond the first dimension (``()`` for a 1-d array).
    """

    def __init__(self, path: str | Path, dtype, row_shape: tuple[int, ...] = ()) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._handle = open(self.path, "wb", buffering=WRITE_BUFFER)
        self._handle.write(npy_header(self.dtype, (0, *self.row_shape)))

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {values.shape[1:]}, expected {self.row_shape}")
        self._handle.write(values.tobytes())
        self.rows += values.shape[0]

    def close(self) -> Path:
        self._handle.seek(0)
        self._handle.write(npy_header(self.dtype, (self.rows, *self.row_shape)))
        self._handle.close()
        return self.path


def read_slice(path: Path, dtype, start: int, count: int) -> np.ndarray:
    """Elements ``[start, start + count)`` of a raw (headerless) file, read into memory."""
    if count <= 0:
        return np.empty(0, dtype=dtype)
    return np.fromfile(path, dtype=dtype, count=count, offset=start * np.dtype(dtype).itemsize)
