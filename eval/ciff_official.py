"""CIFF through the `protobuf` library and the official schema: the reference our codec is held to.

`index.ciff_protobuf` encodes and decodes CIFF by hand (Numba kernels); this module does the
same with Google's protobuf runtime, so that tests can check our bytes against the library's
(`tests/test_ciff.py`) and `eval/bench_ciff.py` can measure whether the library is fast enough
to replace ours. The message classes come from the official schema
(github.com/osirrc/ciff, ``common-index-format-v1.proto``, package ``io.osirrc.ciff``), built
here as a descriptor at run time, so no ``protoc`` and no generated file are needed.

The length prefixes (Java's ``writeDelimitedTo``) use the runtime's varint helpers: the Python
library has no public delimited-stream API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.decoder import _DecodeVarint
from google.protobuf.internal.encoder import _VarintBytes

PACKAGE = "io.osirrc.ciff"
_T = descriptor_pb2.FieldDescriptorProto

# (message, [(field name, number, type, label, message type of a repeated field)]) as in the schema.
SCHEMA = (
    ("Header", [("version", 1, _T.TYPE_INT32), ("num_postings_lists", 2, _T.TYPE_INT32),
                ("num_docs", 3, _T.TYPE_INT32), ("total_postings_lists", 4, _T.TYPE_INT32),
                ("total_docs", 5, _T.TYPE_INT32), ("total_terms_in_collection", 6, _T.TYPE_INT64),
                ("average_doclength", 7, _T.TYPE_DOUBLE), ("description", 8, _T.TYPE_STRING)]),
    ("Posting", [("docid", 1, _T.TYPE_INT32), ("tf", 2, _T.TYPE_INT32)]),
    ("PostingsList", [("term", 1, _T.TYPE_STRING), ("df", 2, _T.TYPE_INT64), ("cf", 3, _T.TYPE_INT64),
                      ("postings", 4, _T.TYPE_MESSAGE, "Posting")]),
    ("DocRecord", [("docid", 1, _T.TYPE_INT32), ("collection_docid", 2, _T.TYPE_STRING),
                   ("doclength", 3, _T.TYPE_INT32)]),
)


def _message_classes() -> dict[str, type]:
    file = descriptor_pb2.FileDescriptorProto(name="common-index-format-v1.proto", package=PACKAGE,
                                              syntax="proto3")
    for name, fields in SCHEMA:
        message = file.message_type.add(name=name)
        for field_name, number, kind, *of in fields:
            field = message.field.add(name=field_name, number=number, type=kind,
                                      label=_T.LABEL_REPEATED if of else _T.LABEL_OPTIONAL)
            if of:
                field.type_name = f".{PACKAGE}.{of[0]}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name, _ in SCHEMA}


_CLASSES = _message_classes()
Header, Posting, PostingsList, DocRecord = (_CLASSES[n] for n in ("Header", "Posting", "PostingsList", "DocRecord"))


def write_delimited(out, message) -> None:
    body = message.SerializeToString()
    out.write(_VarintBytes(len(body)))
    out.write(body)


def postings_list(term: bytes, docs: np.ndarray, tfs: np.ndarray):
    """A ``PostingsList`` message: doc ids as gaps, as the schema defines them."""
    gaps = np.diff(np.asarray(docs, dtype=np.int64), prepend=0)
    message = PostingsList(term=term.decode("utf-8"), df=len(gaps), cf=int(np.sum(tfs, dtype=np.int64)))
    add = message.postings.add
    for gap, tf in zip(gaps.tolist(), np.asarray(tfs).tolist()):
        add(docid=gap, tf=tf)
    return message


def export_with_protobuf(index, path: str | Path, header) -> None:
    """Write ``index`` (an opened segment) as CIFF with the library, in the order `index.ciff` uses.

    ``header`` is our `CiffHeader` for the same index, so only the encoding differs.
    """
    from lsr.index.ciff import _doc_lengths, _export_terms
    from lsr.index.postings_view import term_view

    order, names = _export_terms(index, None)
    doclengths = np.zeros(index.num_docs, dtype=np.int64)
    _doc_lengths(term_view(index.postings), doclengths)
    with open(path, "wb") as out:
        write_delimited(out, Header(**{name: getattr(header, name) for name, *_ in SCHEMA[0][1]}))
        for term, name in zip(order, names):
            docs, impacts = index.term_postings(term)
            write_delimited(out, postings_list(name, docs, impacts))
        offsets, data = index.doc_ids.offsets, index.doc_ids.data
        for doc in range(index.num_docs):
            collection_docid = bytes(data[int(offsets[doc]) : int(offsets[doc + 1])]).decode("utf-8")
            write_delimited(out, DocRecord(docid=doc, collection_docid=collection_docid,
                                           doclength=int(doclengths[doc])))


def _messages(data: bytes) -> Iterator[memoryview]:
    view, pos = memoryview(data), 0
    while pos < len(data):
        length, pos = _DecodeVarint(data, pos)
        yield view[pos : pos + length]
        pos += length


def read_with_protobuf(path: str | Path, each_list: Callable[[str, np.ndarray, np.ndarray], None]):
    """Parse a whole CIFF file with the library; returns the header and the collection doc ids.

    ``each_list(term, doc ids, tfs)`` gets every postings list in file order. The file is read
    into memory (the library parses from bytes): fine for tests and the benchmark.
    """
    messages = _messages(Path(path).read_bytes())
    header = Header.FromString(next(messages))
    postings = PostingsList()
    for _ in range(header.num_postings_lists):
        postings.ParseFromString(next(messages))
        count = len(postings.postings)
        gaps = np.fromiter((p.docid for p in postings.postings), dtype=np.int64, count=count)
        tfs = np.fromiter((p.tf for p in postings.postings), dtype=np.int64, count=count)
        each_list(postings.term, np.cumsum(gaps), tfs)
    record, collection_ids = DocRecord(), []
    for doc in range(header.num_docs):
        record.ParseFromString(next(messages))
        if record.docid != doc:
            raise ValueError(f"{path}: doc record #{doc} has docid {record.docid}")
        collection_ids.append(record.collection_docid)
    if next(messages, None) is not None:
        raise ValueError(f"{path}: trailing messages after the last doc record")
    return header, collection_ids
