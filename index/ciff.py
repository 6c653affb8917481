"""Export our index to CIFF and import CIFF into our index format.

CIFF (Common Index File Format, Lin et al. 2020) is what PISA (``ciff2pisa``), BMP
(``bmp.ciff2bmp``) and Anserini exchange; the wire format lives in `index.ciff_protobuf`.
Our uint8 impacts are the term frequencies, so an engine that scores ``sum(query weight x tf)``
(PISA's ``quantized`` scorer, BMP) ranks as our scorers do once each query weight is multiplied
by its term's scale (``index.term_scales``; with a global scale that is a no-op for ranking).
CIFF has no place for per-term scales: an import takes them as ``scale``.

Format decisions:

* Postings lists are written in lexicographic order of the terms' UTF-8 bytes (the order of
  Anserini's Lucene term dictionary; ``ciff2pisa`` re-sorts unsorted input and ``ciff2bmp`` sorts
  its own term map, so neither needs it, but PISA then skips a pass). Only terms with postings
  are written; without a term list the term string is the decimal term id.
* ``Header.total_postings_lists`` is our vocabulary size ("the vocabulary size" in the proto),
  so an import recovers it although empty lists are not written.
* ``DocRecord.doclength`` is the sum of the doc's impacts: what Anserini's impact-index exports
  write (the Lucene norm counts each term ``impact`` times) and what makes
  ``total_terms_in_collection`` "the sum of all document lengths". BMP ignores it; PISA uses
  it only in BM25-type scorers, never in ``quantized``.
* Doc records come in internal doc id order 0..n-1 (PISA and BMP reject anything else); doc
  titles have no place in CIFF and are not exported.

Files ending in ``.gz`` are read and written through gzip.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numba import njit

from lsr.index.bmp_build import finish_postings
from lsr.index.builder import DEFAULT_BLOCK_SIZE, finalize_segment
from lsr.index.ciff_protobuf import (INT32_MAX, MAX_POSTING_BYTES, CiffFormatError, CiffHeader, DelimitedReader,
                                 PostingsListDecoder, WireError, decode_doc_records, encode_doc_records,
                                 encode_postings_list, encode_varint)
from lsr.index.format import CHUNK_BITS, Segment, new_array_file
from lsr.index.postings_view import chunk_postings, term_view
from lsr.index.quantize import MAX_IMPACT, QuantizationStats

__all__ = ["CiffFormatError", "CiffHeader", "export_ciff", "import_ciff", "read_ciff_header"]

DOC_RECORDS_PER_CHUNK = 1 << 16

# kernels


@njit(cache=True, nogil=True)
def _doc_lengths(view, out):
    """Sum of each doc's impacts, term by term of a `TermView`."""
    for t in range(view.entry_offsets.shape[0] - 1):
        for c in range(view.chunks):
            start, end = chunk_postings(view, t, c)
            for p in range(start, end):
                out[(c << CHUNK_BITS) | np.int64(view.post_docs[p])] += view.post_impacts[p]


# wrappers


def _open(path: Path, mode: str, compressed: bool):
    return gzip.open(path, mode) if compressed else open(path, mode, buffering=1 << 20)


def export_ciff(index: Segment | str | Path, path: str | Path, terms: Sequence[str] | None = None,
                description: str = "") -> Path:
    """Write an index as one CIFF file, streaming (memory bounded by the largest postings list).

    Args:
        index: an opened segment, or an index directory of one segment (``lsr index merge`` makes one).
        path: the CIFF file to write (gzip-compressed if it ends in ``.gz``); written to a
            temporary file beside it and renamed into place when complete.
        terms: the vocabulary, term id -> string (e.g. the tokenizer's tokens); by default
            the term string is the decimal term id.
        description: the header's description; by default one naming the index and its scales.

    Returns:
        The path written.
    """
    if not isinstance(index, Segment):
        from lsr.index.live import open_single_segment

        index = open_single_segment(index)
    path = Path(path)
    if index.num_docs > INT32_MAX:
        raise ValueError(f"CIFF doc ids are int32: {index.num_docs} documents do not fit")
    order, names = _export_terms(index, terms)
    doclengths = np.zeros(index.num_docs, dtype=np.int64)
    _doc_lengths(term_view(index.postings), doclengths)
    total = int(doclengths.sum())
    header = CiffHeader(
        num_postings_lists=len(order), num_docs=index.num_docs,
        total_postings_lists=index.vocab_size, total_docs=index.num_docs,
        total_terms_in_collection=total, average_doclength=total / max(index.num_docs, 1),
        description=description or _default_description(index),
    )
    tmp = path.parent / f".{path.name}.writing-{uuid.uuid4().hex[:8]}"
    try:
        with _open(tmp, "wb", path.suffix == ".gz") as out:
            body = header.encode()
            out.write(encode_varint(len(body)) + body)
            _write_postings_lists(out, index, order, names)
            _write_doc_records(out, index, doclengths)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _default_description(index: Segment) -> str:
    model = (index.meta.get("encoder") or {}).get("model")
    quantization = index.meta.get("quantization") or {}
    scale = quantization.get("scale")
    scoring = f"score = sum(query weight x tf) x {scale!r}" if scale else (
        "score = sum(query weight x term scale x tf), term scales in the index's term_scales.npy")
    return (f"lsr-index export of {index.path.name}: encoder {model}, vocab_size {index.vocab_size}, "
            f"quantization {quantization.get('method')}; tf = uint8 impact; {scoring}")


def _export_terms(index: Segment, terms: Sequence[str] | None) -> tuple[list[int], list[bytes]]:
    """Term ids with postings and their UTF-8 names, sorted by name bytes."""
    ids = np.flatnonzero(np.diff(index.postings.term_entry_offsets) > 0).tolist()
    if terms is not None and ids and ids[-1] >= len(terms):
        raise ValueError(f"terms has {len(terms)} strings but the index has postings for term id {ids[-1]}")
    named = sorted(((str(t) if terms is None else terms[t]).encode("utf-8"), t) for t in ids)
    for (a, t1), (b, t2) in zip(named, named[1:]):
        if a == b:
            raise ValueError(f"terms {t1} and {t2} have the same string {a.decode()!r}; CIFF keys lists by term")
    return [t for _, t in named], [name for name, _ in named]


def _write_postings_lists(out, index: Segment, order: list[int], names: list[bytes]) -> None:
    scratch = np.empty(0, dtype=np.uint8)
    for term, name in zip(order, names):
        docs, impacts = index.term_postings(term)
        if scratch.size < MAX_POSTING_BYTES * len(docs):
            scratch = np.empty(max(MAX_POSTING_BYTES * len(docs), 2 * scratch.size), dtype=np.uint8)
        head, body = encode_postings_list(name, docs, impacts, scratch)
        out.write(head)
        out.write(body)


def _write_doc_records(out, index: Segment, doclengths: np.ndarray) -> None:
    offsets, data = index.doc_ids.offsets, index.doc_ids.data
    for first in range(0, index.num_docs, DOC_RECORDS_PER_CHUNK):
        last = min(first + DOC_RECORDS_PER_CHUNK, index.num_docs)
        chunk_offsets = np.asarray(offsets[first : last + 1], dtype=np.int64)
        base = int(chunk_offsets[0])
        id_bytes = np.asarray(data[base : int(chunk_offsets[-1])])
        out.write(encode_doc_records(first, chunk_offsets - base, id_bytes, doclengths[first:last]))


def _reader(handle, path: Path) -> DelimitedReader:
    return DelimitedReader(handle, path, None if path.suffix == ".gz" else path.stat().st_size)


def read_ciff_header(path: str | Path) -> CiffHeader:
    """Read only the header of a CIFF file."""
    path = Path(path)
    with _open(path, "rb", path.suffix == ".gz") as handle:
        return _read_header(_reader(handle, path))


def _read_header(reader: DelimitedReader) -> CiffHeader:
    body, at = reader.read_message("header")
    try:
        header = CiffHeader.decode(bytes(body))
    except WireError as error:
        raise reader.error("header", error.problem, at + error.position) from None
    for name in ("num_postings_lists", "num_docs"):
        if getattr(header, name) < 0:
            raise reader.error("header", f"{name} is negative ({getattr(header, name)})", at)
    return header


def import_ciff(
    path: str | Path,
    out_dir: str | Path,
    vocab: Mapping[str, int] | None = None,
    vocab_size: int | None = None,
    scale: float | Sequence[float] | np.ndarray = 1.0,
    overwrite: bool = False,
    meta: dict | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Path:
    """Build one of our index directories (one segment) from a CIFF file, streaming in bounded memory.

    The tfs become the uint8 impacts: a tf above 255 is clipped to 255 and a tf of 0 is
    dropped, both counted in the segment's ``meta.json`` (``quantization.clipped`` /
    ``zeroed``). The segment is written into a temporary directory and renamed into place only
    when complete, then committed; on any error no commit names it. The segment records the
    source (path, header description); a doc id given twice is an error naming it.

    Args:
        path: the CIFF file (gzip-compressed if it ends in ``.gz``).
        out_dir: the index directory to create.
        vocab: term string -> term id (the tokenizer's vocabulary); without it every term
            string must be a decimal term id.
        vocab_size: by default ``max(vocab) + 1`` with ``vocab``, else the larger of the
            header's ``total_postings_lists`` and the largest term id + 1.
        scale: the weight of one impact level: one number (scores are impact sums x scale),
            or one per term (``vocab_size`` values, e.g. the exporting index's term_scales).
        overwrite: replace an existing index at ``out_dir``.
        meta: extra entries for ``meta.json`` (e.g. ``{"encoder": {...}}``).
        block_size: docs per block of the Block-Max Pruning arrays (1 to 256).

    Raises:
        CiffFormatError: truncated or corrupt input, an unknown term, a doc id out of range;
            the message names the file, the byte offset and the postings list or doc record.
    """
    from lsr.index.writer import IndexWriter, index_settings

    path, out_dir = Path(path), Path(out_dir)
    if vocab is not None and vocab_size is None:
        vocab_size = max(vocab.values(), default=-1) + 1
    _check_scale(scale, vocab_size)
    started = time.perf_counter()
    with _open(path, "rb", path.suffix == ".gz") as handle:
        header = _read_header(_reader(handle, path))
    per_term = np.ndim(scale) == 1
    build = {"quantization": "per-term" if per_term else "global", "reorder": "none", "block_size": block_size,
             "store_texts": False, **({} if per_term else {"scale": float(scale)})}
    # The vocabulary size may come from the postings (below): the settings are final at publish.
    writer = IndexWriter.create(out_dir, index_settings(vocab_size or 1, meta, None, **build), overwrite)
    name = writer.new_segment_name()
    tmp = writer.directory / "segments" / f".{name}.building-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with _open(path, "rb", path.suffix == ".gz") as handle:
            reader = _reader(handle, path)
            header = _read_header(reader)
            term_ids, counts, stats = _import_postings(reader, header, tmp, vocab, vocab_size)
            _import_doc_records(reader, header, tmp)
            reader.fill(1)
            if reader.available():
                raise reader.error("after the last doc record", "unexpected trailing bytes (header counts wrong?)")
        if vocab_size is None:
            vocab_size = max([header.total_postings_lists, *(t + 1 for t in term_ids)])
        _check_scale(scale, vocab_size)
        source = {"format": "ciff", "path": str(path.resolve()), "description": header.description,
                  "version": header.version, "num_postings_lists": header.num_postings_lists,
                  "total_terms_in_collection": header.total_terms_in_collection}
        layout = _finish(tmp, term_ids, counts, vocab_size, header.num_docs, scale, block_size)
        finalize_segment(tmp, writer.directory / "segments" / name,
                         _segment_meta(vocab_size, header.num_docs, scale, stats, layout,
                                       {"source": source, **(meta or {})}, started))
        writer.publish([name], replace_all=True, settings=index_settings(vocab_size, {"source": source, **(meta or {})},
                                                                         None, **build))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        writer.close()
        if writer.created_directory:  # nothing was committed: leave no trace of the import
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    writer.close()
    return out_dir


def _check_scale(scale, vocab_size: int | None) -> None:
    scales = np.asarray(scale, dtype=np.float64)
    if scales.ndim > 1 or not np.all(np.isfinite(scales) & (scales > 0)):
        raise ValueError("scale must be one positive number or one per term")
    if scales.ndim == 1 and vocab_size is not None and len(scales) != vocab_size:
        raise ValueError(f"scale has {len(scales)} values but the vocabulary has {vocab_size} terms")


def _term_id(term: bytes, vocab: Mapping[str, int] | None, vocab_size: int | None) -> tuple[int | None, str]:
    """The term's id, or None and the reason it has none."""
    try:
        text = term.decode("utf-8")
    except UnicodeDecodeError:
        return None, f"term {term!r} is not valid UTF-8"
    if vocab is not None:
        term_id = vocab.get(text)
        if term_id is None:
            return None, f"term {text!r} is not in the vocabulary"
    elif text.isascii() and text.isdigit():
        term_id = int(text)
    else:
        return None, f"term {text!r} is not a decimal term id; pass vocab= to map term strings to ids"
    if vocab_size is not None and term_id >= vocab_size:
        return None, f"term {text!r} has id {term_id}, outside the vocabulary of {vocab_size} terms"
    return term_id, ""


def _import_postings(reader: DelimitedReader, header: CiffHeader, tmp: Path, vocab, vocab_size):
    """Spill every list (file order) to raw files; returns term ids, counts and clip stats."""
    decoder, stats, seen, counts = PostingsListDecoder(), QuantizationStats(), {}, []
    with open(tmp / "docs.raw", "wb") as docs_out, open(tmp / "impacts.raw", "wb") as impacts_out:
        for i in range(header.num_postings_lists):
            body, at = reader.read_message(f"postings list #{i}")
            try:
                record = decoder.decode(body)
            except WireError as error:
                raise reader.error(f"postings list #{i}", error.problem, at + error.position) from None
            where = f"postings list #{i} (term {record.term.decode('utf-8', 'replace')!r})"
            term_id, problem = _term_id(record.term, vocab, vocab_size)
            if term_id is None or term_id in seen:
                problem = problem or f"term id {term_id} already had postings list #{seen.get(term_id)}"
                raise reader.error(where, problem, at)
            docs, impacts = _checked_postings(record, header.num_docs, stats, lambda p: reader.error(where, p, at))
            docs_out.write(docs.tobytes())
            impacts_out.write(impacts.tobytes())
            seen[term_id] = i
            counts.append(len(docs))
    return list(seen), counts, stats


def _checked_postings(record, num_docs: int, stats: QuantizationStats, error) -> tuple[np.ndarray, np.ndarray]:
    """Doc ids (uint32) and impacts (uint8) of a decoded list; tfs clipped or dropped, counted."""
    gaps, tfs = record.gaps, record.tfs
    if record.df and record.df != len(gaps):
        raise error(f"df is {record.df} but the list holds {len(gaps)} postings")
    repeated = np.flatnonzero(gaps[1:] == 0)
    if repeated.size:
        raise error(f"posting {repeated[0] + 1} repeats the previous doc id (a docid gap of 0)")
    docs = np.cumsum(gaps)
    if docs.size and docs[-1] >= num_docs:
        j = int(np.argmax(docs >= num_docs))
        raise error(f"posting {j} has doc id {docs[j]}, but the header has {num_docs} documents")
    keep = tfs > 0
    kept = int(np.count_nonzero(keep))
    stats.add(QuantizationStats(int(np.count_nonzero(tfs > MAX_IMPACT)), len(tfs) - kept, kept))
    return docs[keep].astype(np.uint32), np.minimum(tfs[keep], MAX_IMPACT).astype(np.uint8)


def _import_doc_records(reader: DelimitedReader, header: CiffHeader, tmp: Path) -> None:
    """Spill the collection doc ids; records must come in doc id order 0..n-1."""
    seen = 0
    with open(tmp / "ids.raw", "wb") as ids_out, open(tmp / "id_lens.raw", "wb") as lens_out:
        while seen < header.num_docs:
            reader.fill(DOC_RECORDS_PER_CHUNK * 64)
            at, wanted = reader.offset, min(header.num_docs - seen, DOC_RECORDS_PER_CHUNK)
            try:
                docids, id_lens, id_bytes, consumed = decode_doc_records(reader.view(), wanted)
            except WireError as error:
                raise reader.error(f"doc record #{seen + error.record}", error.problem, at + error.position) from None
            if len(docids) == 0:
                if reader.eof:
                    problem = f"truncated: the header promises {header.num_docs} doc records"
                    raise reader.error(f"doc record #{seen}", problem)
                reader.fill(2 * reader.available())  # one record larger than the buffer
                continue
            wrong = np.flatnonzero(docids != np.arange(seen, seen + len(docids)))
            if wrong.size:
                j = int(wrong[0])
                problem = f"docid is {docids[j]}; CIFF doc records must come in docid order 0..n-1"
                raise reader.error(f"doc record #{seen + j}", problem, at)
            ids_out.write(id_bytes.tobytes())
            lens_out.write(id_lens.tobytes())
            reader.pos += consumed
            seen += len(docids)


def _finish(tmp: Path, term_ids: list[int], counts: list[int], vocab_size: int, num_docs: int, scale,
            block_size: int) -> dict:
    """Every array of the index: postings in term id order, id tables, term scales, BMP."""
    _write_postings(tmp, np.array(term_ids, dtype=np.int64), np.array(counts, dtype=np.int64), vocab_size)
    lens = np.fromfile(tmp / "id_lens.raw", dtype=np.int64)
    np.save(tmp / "doc_id_offsets.npy", np.concatenate([[0], np.cumsum(lens)]).astype(np.int64))
    header = {"descr": "|u1", "fortran_order": False, "shape": ((tmp / "ids.raw").stat().st_size,)}
    with open(tmp / "doc_id_bytes.npy", "wb") as out, open(tmp / "ids.raw", "rb") as raw:
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(raw, out, 1 << 22)
    np.save(tmp / "doc_title_offsets.npy", np.zeros(num_docs + 1, dtype=np.int64))
    np.save(tmp / "doc_title_bytes.npy", np.empty(0, dtype=np.uint8))
    np.save(tmp / "term_scales.npy", np.broadcast_to(np.asarray(scale, dtype=np.float32), (vocab_size,)).copy())
    for name in ("docs.raw", "impacts.raw", "ids.raw", "id_lens.raw"):
        (tmp / name).unlink()
    started = time.perf_counter()
    num_blocks = finish_postings(tmp, num_docs, block_size)
    return {"doc_order": "none", "bp_options": None, "block_size": block_size, "num_blocks": num_blocks,
            "bmp_seconds": round(time.perf_counter() - started, 3)}


def _write_postings(tmp: Path, term_ids: np.ndarray, counts: np.ndarray, vocab_size: int) -> np.ndarray:
    """Permute the spilled lists (file order) into term-major arrays (term id order)."""
    df = np.zeros(vocab_size, dtype=np.int64)
    df[term_ids] = counts
    offsets = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
    total = int(offsets[-1])
    out_docs = new_array_file(tmp, "postings_docs", np.uint32, total)
    out_impacts = new_array_file(tmp, "postings_impacts", np.uint8, total)
    if total:
        src_docs = np.memmap(tmp / "docs.raw", dtype=np.uint32, mode="r")
        src_impacts = np.memmap(tmp / "impacts.raw", dtype=np.uint8, mode="r")
        starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
        for term, start, count in zip(term_ids.tolist(), starts, counts.tolist()):
            target = slice(offsets[term], offsets[term] + count)
            out_docs[target] = src_docs[start : start + count]
            out_impacts[target] = src_impacts[start : start + count]
        out_docs.flush()
        out_impacts.flush()
        del src_docs, src_impacts
    del out_docs, out_impacts
    np.save(tmp / "postings_offsets.npy", offsets)
    return offsets


def _segment_meta(vocab_size: int, num_docs: int, scale, stats: QuantizationStats, layout: dict,
                  extra: dict, started: float) -> dict:
    per_term = np.ndim(scale) == 1
    return {
        "vocab_size": vocab_size, "num_docs": num_docs, "num_postings": stats.kept,
        "mean_doc_nnz": stats.kept / num_docs if num_docs else 0.0,
        **layout,
        "quantization": {"method": "uint8-per-term" if per_term else "uint8-global",
                         "scale": None if per_term else float(scale), "scale_quantile": None,
                         "clipped": stats.clipped, "zeroed": stats.zeroed},
        "build_seconds": round(time.perf_counter() - started, 3),
        "encoder": {},
        **extra,
    }
