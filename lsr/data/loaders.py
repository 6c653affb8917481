"""Streaming readers for BEIR-style files: JSONL corpora and queries, TSV queries and qrels.

Corpora are read one line at a time and grouped into chunks, never held whole in memory.
Every malformed line fails with a `DataFormatError` naming the file, the line and the problem.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import NamedTuple


class DataFormatError(ValueError):
    """A corpus, query or qrels file is malformed (the message names file and line)."""


class Document(NamedTuple):
    doc_id: str
    title: str
    text: str

    def full_text(self) -> str:
        """Title and text joined as in BEIR (``title + " " + text``, stripped)."""
        return f"{self.title} {self.text}".strip()


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a text file for reading, transparently decompressing ``.gz``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file."""
    with open_text(path) as handle:
        try:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield line_number, parse_object_line(line, path, line_number)
        except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, OSError) as error:
            raise DataFormatError(f"{path}: unreadable ({error})") from None


def parse_object_line(line: str, path, line_number: int) -> dict:
    """One JSONL line that must hold a JSON object (`DataFormatError` names file and line)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}:{line_number}: invalid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}:{line_number}: expected a JSON object")
    return record


def corpus_document(record: dict, path, line_number: int) -> Document:
    """A corpus line's object as a `Document`: ``{"_id" | "id", "title"?, "text"}``."""
    return Document(
        _id_field(record, path, line_number),
        _text_field(record, "title", path, line_number, required=False),
        _text_field(record, "text", path, line_number, required=True),
    )


def _id_field(record: dict, path, line_number: int) -> str:
    for key in ("_id", "id"):
        if key in record:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
                raise DataFormatError(f"{path}:{line_number}: field {key!r} must be a non-empty string")
            return str(value)
    raise DataFormatError(f"{path}:{line_number}: missing field '_id' (or 'id')")


def _text_field(record: dict, key: str, path, line_number: int, required: bool) -> str:
    if key not in record or record[key] is None:
        if required:
            raise DataFormatError(f"{path}:{line_number}: missing field {key!r}")
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise DataFormatError(f"{path}:{line_number}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def iter_corpus(path: str | Path) -> Iterator[Document]:
    """Stream documents from a JSONL corpus: ``{"_id" | "id", "title"?, "text"}`` per line."""
    for line_number, record in iter_jsonl(path):
        yield corpus_document(record, path, line_number)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Group an iterable into lists of at most ``size`` items."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def load_queries(path: str | Path) -> dict[str, str]:
    """Read queries from JSONL (``{"_id", "text"}``) or TSV (``id<TAB>text``) into a dict."""
    path = Path(path)
    queries: dict[str, str] = {}
    if ".jsonl" in path.suffixes:
        for line_number, record in iter_jsonl(path):
            query_id = _id_field(record, path, line_number)
            queries[query_id] = _text_field(record, "text", path, line_number, required=True)
        return queries
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise DataFormatError(f"{path}:{line_number}: expected 'id<TAB>text', found {len(parts)} fields")
            queries[parts[0]] = parts[1]
    return queries


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read relevance judgments: BEIR TSV (``query-id corpus-id score`` with a header line)
    or TREC qrels (``qid 0 docid rel``, whitespace separated)."""
    qrels: dict[str, dict[str, int]] = {}
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or (line_number == 1 and fields[0] == "query-id"):
                continue
            if len(fields) == 3:
                query_id, doc_id, grade = fields
            elif len(fields) == 4:
                query_id, _, doc_id, grade = fields
            else:
                raise DataFormatError(
                    f"{path}:{line_number}: expected 3 (BEIR) or 4 (TREC) fields, found {len(fields)}"
                )
            try:
                qrels.setdefault(query_id, {})[doc_id] = int(grade)
            except ValueError:
                raise DataFormatError(f"{path}:{line_number}: relevance {grade!r} is not an integer") from None
    return qrels
