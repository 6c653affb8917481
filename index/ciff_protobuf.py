"""The CIFF wire format, encoded and decoded by hand (no protobuf dependency).

CIFF (Lin et al. 2020, github.com/osirrc/ciff) is a stream of length-delimited protobuf messages:
one ``Header``, ``num_postings_lists`` ``PostingsList`` messages, then ``num_docs``
``DocRecord`` messages, each prefixed by its byte length as a varint. The schema::

    Header       {int32 version = 1; int32 num_postings_lists = 2; int32 num_docs = 3;
                  int32 total_postings_lists = 4; int32 total_docs = 5;
                  int64 total_terms_in_collection = 6; double average_doclength = 7;
                  string description = 8;}
    Posting      {int32 docid = 1; int32 tf = 2;}        // docid: gap from the previous posting
    PostingsList {string term = 1; int64 df = 2; int64 cf = 3; repeated Posting postings = 4;}
    DocRecord    {int32 docid = 1; string collection_docid = 2; int32 doclength = 3;}

We write canonical proto3 (fields in number order, zero values and empty strings omitted), byte
for byte what the Java and Rust protobuf libraries write. Reading accepts any field order and
missing fields (protobuf defaults), and skips unknown fields by their wire type.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

INT32_MAX = (1 << 31) - 1
MAX_POSTING_BYTES = 11  # tag + length + (tag + 5-byte gap) + (tag + 2-byte tf)
MAX_DOC_RECORD_OVERHEAD = 32  # prefix + docid + id tag and length + doclength
READ_CHUNK = 1 << 22

# Negative kernel return codes (the position of a problem is reported beside them).
TRUNCATED, TOO_LONG, PAST_END, WIRE_TYPE, OUT_OF_RANGE, WRONG_TYPE = -1, -2, -3, -4, -5, -6
ERRORS = {
    TRUNCATED: "the message ends inside a field",
    TOO_LONG: "a varint is longer than 10 bytes",
    PAST_END: "a length-delimited field runs past the end of its message",
    WIRE_TYPE: "unsupported wire type (groups or a corrupt tag)",
    OUT_OF_RANGE: "a docid gap or tf is negative or above the int32 range",
    WRONG_TYPE: "a known field has the wrong wire type",
}

# kernels


@njit(cache=True, nogil=True)
def _field_size(value):
    """Bytes of a one-byte tag plus the varint ``value``; 0 for 0 (proto3 omits defaults)."""
    size = 2
    while value >= 128:
        value >>= 7
        size += 1
    return size if value != 0 or size > 2 else 0


@njit(cache=True, nogil=True)
def _put_varint(out, pos, value):
    while value >= 128:
        out[pos] = (value & 127) | 128
        value >>= 7
        pos += 1
    out[pos] = value
    return pos + 1


@njit(cache=True, nogil=True)
def _put_field(out, pos, tag, value):
    """Write a one-byte tag and the varint ``value``, unless it is 0; returns the new position."""
    if value == 0:
        return pos
    out[pos] = tag
    return _put_varint(out, pos + 1, value)


@njit(cache=True, nogil=True)
def _get_varint(buf, pos, end):
    """Returns (value, position after it); the position is an error code if < 0.

    The value is int64: a 10-byte varint (a negative int32/int64) comes back negative.
    """
    result = 0
    for shift in range(0, 70, 7):
        if pos >= end:
            return 0, TRUNCATED
        byte = np.int64(buf[pos])
        pos += 1
        result |= (byte & 127) << shift
        if byte < 128:
            return result, pos
    return 0, TOO_LONG


@njit(cache=True, nogil=True)
def _next_field(buf, pos, end):
    """Parse one field: (number, wire type, varint value, payload start, next position).

    The payload of a non-varint field is ``buf[payload start:next position]``; a next position
    below 0 is an error code.
    """
    key, pos = _get_varint(buf, pos, end)
    if pos < 0:
        return 0, 0, 0, 0, pos
    field, wire = key >> 3, key & 7
    if wire == 0:
        value, after = _get_varint(buf, pos, end)
        return field, wire, value, pos, after
    if wire == 1 or wire == 5:
        width = 8 if wire == 1 else 4
        return field, wire, 0, pos, pos + width if pos + width <= end else TRUNCATED
    if wire == 2:
        length, pos = _get_varint(buf, pos, end)
        if pos >= 0 and not 0 <= length <= end - pos:
            return field, wire, 0, pos, PAST_END
        return field, wire, 0, pos, pos + length if pos >= 0 else pos
    return field, wire, 0, pos, WIRE_TYPE


@njit(cache=True, nogil=True, inline="always")  # inlined: 2x faster decoding
def _decode_posting(buf, pos, end):
    """Parse one Posting spanning buf[pos:end]: (gap, tf, 0, 0) or (0, 0, error, position)."""
    gap = 0
    tf = 0
    while pos < end:
        start = pos
        key, pos = _get_varint(buf, pos, end)
        if pos >= 0 and (key == 0x08 or key == 0x10):
            value, pos = _get_varint(buf, pos, end)
            if pos >= 0 and not 0 <= value <= INT32_MAX:
                return 0, 0, OUT_OF_RANGE, start
            if key == 0x08:
                gap = value
            else:
                tf = value
        elif pos >= 0:
            pos = WRONG_TYPE if (key >> 3) == 1 or (key >> 3) == 2 else _next_field(buf, start, end)[4]
        if pos < 0:
            return 0, 0, pos, start
    return gap, tf, 0, 0


@njit(cache=True, nogil=True)
def _decode_postings_list(buf, out_gaps, out_tfs, info):
    """Parse one PostingsList body; ``info`` receives term start/end, df, cf, postings count.

    Returns (0, 0), or (error code, position of the field at fault).
    """
    end, pos, count = buf.shape[0], 0, 0
    info[:] = 0
    while pos < end:
        start = pos
        if buf[pos] == 0x22 and pos + 1 < end and buf[pos + 1] < 128:  # a Posting: the fast path
            field, wire, value, payload, pos = 4, 2, 0, pos + 2, pos + 2 + buf[pos + 1]
            if pos > end:
                return PAST_END, start
        else:
            field, wire, value, payload, pos = _next_field(buf, pos, end)
        if pos >= 0 and 1 <= field <= 4 and wire != (2 if field == 1 or field == 4 else 0):
            pos = WRONG_TYPE
        if pos < 0:
            return pos, start
        if field == 1:
            info[0], info[1] = payload, pos
        elif field == 2 or field == 3:
            info[field] = value if value >= 0 else -1
        elif field == 4:
            gap, tf, code, where = _decode_posting(buf, payload, pos)
            if code != 0:
                return code, where
            out_gaps[count] = gap
            out_tfs[count] = tf
            count += 1
    info[4] = count
    return 0, 0


@njit(cache=True, nogil=True)
def _encode_postings(docs, impacts, out):
    """Write the field-4 Posting submessages of one list (docid gaps); returns the bytes used."""
    pos = 0
    previous = np.int64(0)
    for i in range(docs.shape[0]):
        gap = np.int64(docs[i]) - previous
        previous = np.int64(docs[i])
        tf = np.int64(impacts[i])
        out[pos] = 0x22
        pos = _put_varint(out, pos + 1, _field_size(gap) + _field_size(tf))
        pos = _put_field(out, _put_field(out, pos, 0x08, gap), 0x10, tf)
    return pos


@njit(cache=True, nogil=True)
def _encode_doc_records(first_docid, id_offsets, id_bytes, doclengths, out):
    """Write delimited DocRecords for docs first_docid, ...; returns the bytes used."""
    pos = 0
    for r in range(doclengths.shape[0]):
        docid, length = np.int64(first_docid + r), np.int64(doclengths[r])
        id_len = np.int64(id_offsets[r + 1] - id_offsets[r])
        id_size = _field_size(id_len) + id_len if id_len != 0 else 0
        pos = _put_varint(out, pos, _field_size(docid) + id_size + _field_size(length))
        pos = _put_field(out, _put_field(out, pos, 0x08, docid), 0x12, id_len)
        out[pos : pos + id_len] = id_bytes[id_offsets[r] : id_offsets[r + 1]]
        pos = _put_field(out, pos + id_len, 0x18, length)
    return pos


@njit(cache=True, nogil=True)
def _decode_doc_records(buf, docids, doclengths, id_lens, id_out):
    """Parse whole delimited DocRecords from the start of buf (an incomplete last one is left).

    Returns (records parsed, bytes consumed, id bytes written, error code, error position).
    """
    end, pos, id_pos = buf.shape[0], 0, 0
    for r in range(docids.shape[0]):
        length, p = _get_varint(buf, pos, end)
        if p == TRUNCATED or (p >= 0 and length > end - p):
            return r, pos, id_pos, 0, 0  # needs more bytes
        if p < 0 or length < 0:
            return r, pos, id_pos, TOO_LONG if p < 0 else PAST_END, pos
        stop = p + length
        docids[r], doclengths[r], id_lens[r] = 0, 0, 0
        while p < stop:
            start = p
            field, wire, value, payload, p = _next_field(buf, p, stop)
            if p >= 0 and 1 <= field <= 3 and wire != (2 if field == 2 else 0):
                p = WRONG_TYPE
            if p < 0:
                return r, pos, id_pos, p, start
            if field == 1 or field == 3:
                (docids if field == 1 else doclengths)[r] = value if 0 <= value <= INT32_MAX else -1
            elif field == 2:
                id_lens[r] = p - payload
                id_out[id_pos : id_pos + p - payload] = buf[payload:p]
        id_pos += id_lens[r]
        pos = stop
    return docids.shape[0], pos, id_pos, 0, 0


# wrappers


class CiffFormatError(ValueError):
    """A CIFF file is truncated, corrupt, or holds values our index cannot represent."""


class WireError(ValueError):
    """A protobuf message could not be decoded: ``problem`` at byte ``position`` of the buffer
    (and, in a batch of DocRecords, in its ``record``-th record)."""

    def __init__(self, problem: str, position: int, record: int = 0) -> None:
        super().__init__(problem)
        self.problem, self.position, self.record = problem, position, record


def encode_varint(value: int) -> bytes:
    """Base-128 varint; negative int32/int64 values take 10 bytes (two's complement)."""
    value = value + (1 << 64) if value < 0 else value
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Returns (value, position after it) or raises `WireError`; 10-byte varints are negative."""
    value, after = _get_varint(np.frombuffer(data, dtype=np.uint8), pos, len(data))
    if after < 0:
        raise WireError(ERRORS[int(after)], pos)
    return int(value), int(after)


@dataclass
class CiffHeader:
    """The CIFF ``Header`` message."""

    num_postings_lists: int
    num_docs: int
    total_postings_lists: int = 0
    total_docs: int = 0
    total_terms_in_collection: int = 0
    average_doclength: float = 0.0
    description: str = ""
    version: int = 1

    _INT_FIELDS = {1: "version", 2: "num_postings_lists", 3: "num_docs", 4: "total_postings_lists",
                   5: "total_docs", 6: "total_terms_in_collection"}

    def encode(self) -> bytes:
        """The canonical proto3 body (without the length prefix)."""
        out = bytearray()
        for number, name in self._INT_FIELDS.items():
            if value := getattr(self, name):
                out += encode_varint(number << 3) + encode_varint(value)
        if self.average_doclength:
            out += b"\x39" + struct.pack("<d", self.average_doclength)
        if self.description:
            text = self.description.encode("utf-8")
            out += b"\x42" + encode_varint(len(text)) + text
        return bytes(out)

    @classmethod
    def decode(cls, body: bytes) -> "CiffHeader":
        """Parse a header body; raises `WireError` on malformed input."""
        header, buf, pos = cls(0, 0, version=0), np.frombuffer(body, dtype=np.uint8), 0
        while pos < len(body):
            field, wire, value, payload, after = (int(x) for x in _next_field(buf, pos, len(body)))
            expected = {7: 1, 8: 2}.get(field, 0)
            if after >= 0 and 1 <= field <= 8 and wire != expected:
                after = WRONG_TYPE
            if after < 0:
                raise WireError(ERRORS[after], pos)
            if field in cls._INT_FIELDS:  # int32 fields keep the low 32 bits, as protobuf does
                value = value if field == 6 else (value & 0xFFFFFFFF) - ((value & 0x80000000) << 1)
                setattr(header, cls._INT_FIELDS[field], value)
            elif field == 7:
                header.average_doclength = struct.unpack("<d", body[payload:after])[0]
            elif field == 8:
                header.description = body[payload:after].decode("utf-8", errors="replace")
            pos = after
        return header


@dataclass
class PostingsListRecord:
    """A decoded ``PostingsList``: docid gaps and tfs as int64 (not yet checked)."""

    term: bytes
    df: int
    cf: int
    gaps: np.ndarray
    tfs: np.ndarray


def encode_postings_list(term: bytes, docs: np.ndarray, impacts: np.ndarray,
                         scratch: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Encode one delimited PostingsList: returns the length prefix plus head, and the postings.

    Args:
        term: the term string, UTF-8.
        docs: increasing doc ids of the list.
        impacts: the tfs (our uint8 impacts; below 2**14 so that a posting fits its bytes).
        scratch: a uint8 buffer of at least ``MAX_POSTING_BYTES * len(docs)`` bytes.
    """
    if len(impacts) and not 0 <= int(impacts.min()) <= int(impacts.max()) < 1 << 14:
        raise ValueError("tfs must be in [0, 2**14) to fit MAX_POSTING_BYTES per posting")
    used = _encode_postings(docs, impacts, scratch)
    df, cf = len(docs), int(impacts.sum(dtype=np.int64))
    head = (b"\x0a" + encode_varint(len(term)) + term if term else b"") + (
        (b"\x10" + encode_varint(df) if df else b"") + (b"\x18" + encode_varint(cf) if cf else b""))
    return encode_varint(len(head) + used) + head, scratch[:used]


class PostingsListDecoder:
    """Decodes PostingsList bodies into reused buffers (fresh ones per list would page-fault)."""

    def __init__(self) -> None:
        self._gaps = self._tfs = np.empty(0, dtype=np.int64)
        self._info = np.zeros(5, dtype=np.int64)

    def decode(self, body: np.ndarray) -> PostingsListRecord:
        """Decode one body (uint8); raises `WireError`. ``gaps``/``tfs`` live until the next call."""
        capacity = body.shape[0] // 2 + 1  # a Posting takes at least 2 bytes
        if self._gaps.shape[0] < capacity:
            size = max(capacity, 2 * self._gaps.shape[0])
            self._gaps, self._tfs = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
        code, where = _decode_postings_list(body, self._gaps, self._tfs, self._info)
        if code != 0:
            raise WireError(ERRORS[int(code)], int(where))
        term_start, term_end, df, cf, count = self._info.tolist()
        return PostingsListRecord(bytes(body[term_start:term_end]), df, cf, self._gaps[:count], self._tfs[:count])


def encode_doc_records(first_docid: int, id_offsets: np.ndarray, id_bytes: np.ndarray,
                       doclengths: np.ndarray) -> np.ndarray:
    """Encode delimited DocRecords for consecutive docs (offsets relative to ``id_bytes``)."""
    out = np.empty(MAX_DOC_RECORD_OVERHEAD * len(doclengths) + len(id_bytes), dtype=np.uint8)
    used = _encode_doc_records(first_docid, id_offsets, id_bytes, doclengths, out)
    return out[:used]


def decode_doc_records(buf: np.ndarray, max_records: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Decode the whole delimited DocRecords at the start of ``buf`` (at most ``max_records``).

    An incomplete record at the end is left for the caller to complete; a malformed one raises
    `WireError` with its position in ``buf``.

    Returns:
        docids (int64, -1 where negative), id lengths, the id bytes, and the bytes consumed.
    """
    n = min(max_records, buf.shape[0])
    docids, doclengths, id_lens = (np.empty(n, dtype=np.int64) for _ in range(3))
    id_out = np.empty(buf.shape[0], dtype=np.uint8)
    count, consumed, id_used, code, where = _decode_doc_records(buf, docids, doclengths, id_lens, id_out)
    if code != 0:
        raise WireError(ERRORS[int(code)], int(where), int(count))
    return docids[:count], id_lens[:count], id_out[:id_used], int(consumed)


class DelimitedReader:
    """Reads length-delimited messages from a binary stream, tracking absolute byte offsets.

    Memory holds the current message (or a chunk of small ones), never the whole file. ``size``
    (the file size, when known) lets a corrupt huge length fail before anything is read.
    """

    def __init__(self, handle, path: Path, size: int | None = None) -> None:
        self.handle, self.path, self.size = handle, path, size
        self.data, self.pos, self.base, self.eof = b"", 0, 0, False

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def available(self) -> int:
        return len(self.data) - self.pos

    def view(self) -> np.ndarray:
        """The buffered bytes past the current position (uint8, no copy)."""
        return np.frombuffer(self.data, dtype=np.uint8, offset=self.pos)

    def fill(self, need: int) -> None:
        """Buffer at least ``need`` bytes past the current position, unless the file ends."""
        if self.available() >= need or self.eof:
            return
        parts, have = [self.data[self.pos :]], self.available()
        while have < need:
            try:
                chunk = self.handle.read(max(READ_CHUNK, need - have))
            except (OSError, EOFError, zlib.error) as error:  # a corrupt or truncated gzip stream
                problem = f"{type(error).__name__}: {error} (truncated?)"
                raise self.error("reading", problem, self.offset + have) from None
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self.base, self.data, self.pos = self.base + self.pos, b"".join(parts), 0

    def error(self, where: str, problem: str, offset: int | None = None) -> CiffFormatError:
        return CiffFormatError(f"{self.path}: byte {self.offset if offset is None else offset}: {where}: {problem}")

    def read_message(self, where: str) -> tuple[np.ndarray, int]:
        """The next message's body (uint8, no copy) and its absolute offset."""
        start = self.offset
        self.fill(10)
        if self.available() == 0:
            raise self.error(where, "the file ends here (truncated?)")
        length, pos = _get_varint(self.view(), 0, self.available())
        if pos < 0 or length < 0:
            raise self.error(where, f"bad length prefix: {ERRORS[int(pos) if pos < 0 else PAST_END]}")
        body_at = start + int(pos)
        left = self.size - body_at if self.size is not None else None
        if left is None or left >= length:
            self.pos += int(pos)
            self.fill(length)
            left = self.available()
        if left < length:
            raise self.error(where, f"truncated: the message needs {length} bytes, the file has {left} left", start)
        body = np.frombuffer(self.data, dtype=np.uint8, count=length, offset=self.pos)
        self.pos += length
        return body, body_at
