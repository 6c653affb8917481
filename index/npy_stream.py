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


def npy_data_offset(path: Path) -> tuple[int, np.dtype, tuple]:
    """Where a ``.npy`` file's data starts, its dtype and shape (from its header)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
        return handle.tell(), dtype, shape


class NpyReader:
    """Slices of a 1-d ``.npy`` array read with plain reads (no memory map: what a stream reads
    once does not stay in the process's resident memory)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset, self.dtype, self.shape = npy_data_offset(self.path)

    def __len__(self) -> int:
        return int(self.shape[0])

    def read(self, start: int, end: int) -> np.ndarray:
        count = max(0, end - start)
        if count == 0:
            return np.empty(0, dtype=self.dtype)
        return np.fromfile(self.path, dtype=self.dtype, count=count, offset=self.offset + start * self.dtype.itemsize)
