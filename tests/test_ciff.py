"""CIFF export/import: round trips, hand-computed bytes, malformed input and BMP interop."""

import gzip
import struct

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.index.build import build_index
from lsr.index.ciff import CiffFormatError, export_ciff, import_ciff, read_ciff_header
from lsr.index.ciff_protobuf import (
    CiffHeader,
    PostingsListDecoder,
    decode_varint,
    encode_doc_records,
    encode_postings_list,
    encode_varint,
)
from lsr.index.check import verify_index
from lsr.index.live import open_single_segment
from lsr.index.scorers.exhaustive import search
from lsr.index.sparse_batch import SparseBatch

VOCAB = 300
ARRAYS = ("postings_offsets", "postings_docs", "postings_impacts", "term_scales")


def term_major(index):
    """The index's postings as term-major CSR arrays (offsets, doc ids, uint8 impacts)."""
    by_term = index.to_scipy_docs().T.tocsr()
    by_term.sort_indices()
    return {"postings_offsets": by_term.indptr, "postings_docs": by_term.indices,
            "postings_impacts": by_term.data.astype(np.uint8), "term_scales": np.asarray(index.term_scales)}


def random_index(path, n=400, seed=0, **options):
    matrix = sp.random(n, VOCAB, density=0.03, random_state=seed, format="lil", dtype=np.float32) * 3
    matrix[7] = 0  # an empty document
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    ids = [f"doc-{i}" if i % 3 else f"документ-{i}-文" for i in range(n)]
    build_index(path, [(ids, SparseBatch.from_scipy(matrix), None)], VOCAB, {"encoder": {"model": "m"}}, **options)
    return open_single_segment(path)


def write_ciff(path, lists, records, num_docs=None, extra_header=b""):
    """A CIFF file from ``lists`` = [(term, docs, tfs)] and ``records`` = [(docid, id, length)]."""
    header = CiffHeader(len(lists), len(records) if num_docs is None else num_docs).encode() + extra_header
    with open(path, "wb") as out:
        out.write(encode_varint(len(header)) + header)
        for term, docs, tfs in lists:
            scratch = np.empty(11 * len(docs) + 1, dtype=np.uint8)
            head, body = encode_postings_list(term.encode(), np.array(docs, np.int64), np.array(tfs, np.int64), scratch)
            out.write(head + body.tobytes())
        for docid, name, length in records:
            raw = np.frombuffer(name.encode(), np.uint8)
            out.write(encode_doc_records(docid, np.array([0, len(raw)]), raw, np.array([length])).tobytes())
    return path


def read_lists(path):
    """(term, docs, tfs) of every postings list of a CIFF file, in file order."""
    data = path.read_bytes()
    length, pos = decode_varint(data, 0)
    header = CiffHeader.decode(data[pos : pos + length])
    pos += length
    lists = []
    for _ in range(header.num_postings_lists):
        length, pos = decode_varint(data, pos)
        record = PostingsListDecoder().decode(np.frombuffer(data, np.uint8, length, pos))
        lists.append((record.term.decode(), np.cumsum(record.gaps).tolist(), record.tfs.tolist()))
        pos += length
    return lists


@pytest.mark.parametrize("name", ["x.ciff", "x.ciff.gz"])
def test_round_trip_gives_identical_index(tmp_path, name):
    original = random_index(tmp_path / "ix")
    export_ciff(original, tmp_path / name, description="round trip")
    import_ciff(tmp_path / name, tmp_path / "back", scale=original.term_scales, meta={"encoder": {"model": "m"}})
    back = open_single_segment(tmp_path / "back")
    before, after = term_major(original), term_major(back)
    for array in ARRAYS:
        assert np.array_equal(before[array], after[array]), array
    for name in ("block_terms", "block_entry_starts", "block_post_docs", "term_chunk_starts", "term_post_docs", "term_post_impacts"):
        assert np.array_equal(getattr(original.postings, name), getattr(back.postings, name)), name
    assert [back.doc_ids[i] for i in range(back.num_docs)] == [original.doc_ids[i] for i in range(original.num_docs)]
    assert back.vocab_size == VOCAB and back.num_docs == 400
    assert back.meta["source"]["description"] == "round trip" and back.meta["source"]["format"] == "ciff"
    assert back.meta["quantization"]["method"] == "uint8-per-term" and back.meta["quantization"]["clipped"] == 0
    assert back.meta["encoder"] == {"model": "m"}
    assert verify_index(tmp_path / "back")[0] == []
    terms, weights = np.array([3, 17, 42]), np.array([0.5, 1.0, 2.0], np.float32)
    for a, b in zip(search(original, terms, weights, 20), search(back, terms, weights, 20)):
        assert np.array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_header_counts_and_doclengths(tmp_path):
    index = random_index(tmp_path / "ix", n=50)
    export_ciff(index, tmp_path / "x.ciff")
    header = read_ciff_header(tmp_path / "x.ciff")
    postings = term_major(index)
    df = np.diff(postings["postings_offsets"])
    total = int(postings["postings_impacts"].sum(dtype=np.int64))
    assert (header.num_postings_lists, header.total_postings_lists) == (np.count_nonzero(df), VOCAB)
    assert (header.num_docs, header.total_docs, header.total_terms_in_collection) == (50, 50, total)
    assert header.average_doclength == pytest.approx(total / 50)
    assert "term scales in the index's term_scales.npy" in header.description


def test_term_strings_sorted_and_mapped_back(tmp_path):
    index = random_index(tmp_path / "ix", n=60, seed=1)
    vocab_list = [f"tok{i}" for i in range(VOCAB)]
    vocab_list[:3] = ["é", "日本", "Zebra"]
    export_ciff(index, tmp_path / "x.ciff", terms=vocab_list)
    lists = read_lists(tmp_path / "x.ciff")
    names = [term for term, _, _ in lists]
    assert names == sorted(names, key=lambda s: s.encode())
    postings = term_major(index)
    assert len(names) == np.count_nonzero(np.diff(postings["postings_offsets"]))
    term, docs, tfs = lists[names.index("tok5")]
    start, end = postings["postings_offsets"][5], postings["postings_offsets"][6]
    assert docs == postings["postings_docs"][start:end].tolist()
    assert tfs == postings["postings_impacts"][start:end].tolist()
    vocab = {s: i for i, s in enumerate(vocab_list)}
    import_ciff(tmp_path / "x.ciff", tmp_path / "back", vocab=vocab, scale=index.term_scales)
    back = open_single_segment(tmp_path / "back")
    assert back.vocab_size == VOCAB
    before, after = term_major(index), term_major(back)
    for array in ARRAYS:
        assert np.array_equal(before[array], after[array])
    with pytest.raises(ValueError, match="same string"):
        export_ciff(index, tmp_path / "y.ciff", terms=["a"] * VOCAB)
    with pytest.raises(ValueError, match="terms has 2 strings"):
        export_ciff(index, tmp_path / "y.ciff", terms=["a", "b"])


def tiny_index(path):
    batch = SparseBatch.from_dicts([{0: 2.0, 1: 1.0}, {1: 3.0}], 2)
    build_index(path, [(["a", "b"], batch, None)], 2, quantization="global", scale=1.0)
    return open_single_segment(path)


def test_hand_computed_bytes(tmp_path):
    export_ciff(tiny_index(tmp_path / "ix"), tmp_path / "x.ciff", description="t")
    header = (
        "08 01 10 02 18 02 20 02 28 02 30 06"  # version 1, 2 lists, 2 docs, vocab 2, 2 docs, 6 terms
        " 39 00 00 00 00 00 00 08 40"  # average_doclength 3.0 (fixed64 double)
        " 42 01 74"  # description "t"
    )
    term0 = "0a 01 30 10 01 18 02 22 02 10 02"  # "0", df 1, cf 2, (doc 0: docid omitted, tf 2)
    term1 = "0a 01 31 10 02 18 04 22 02 10 01 22 04 08 01 10 03"  # "1", df 2, cf 4, (0, 1), (gap 1, 3)
    docs = "05 12 01 61 18 03 07 08 01 12 01 62 18 03"  # (0, "a", 3), (1, "b", 3)
    expected = f"18 {header} 0b {term0} 11 {term1} {docs}"
    assert (tmp_path / "x.ciff").read_bytes() == bytes.fromhex(expected)


def test_varints():
    assert encode_varint(300) == b"\xac\x02" and decode_varint(b"\x00\xac\x02", 1) == (300, 3)
    assert encode_varint(-1) == b"\xff" * 9 + b"\x01"
    scratch = np.empty(64, np.uint8)
    head, body = encode_postings_list(b"t", np.array([300, 301]), np.array([255, 1]), scratch)
    assert body.tobytes() == bytes.fromhex("22 06 08 ac 02 10 ff 01 22 04 08 01 10 01")


def test_matches_the_protobuf_library(tmp_path):
    """Google's protobuf runtime on the official schema writes our file byte for byte, and parses
    ours to the same header, postings (multi-byte varints, non-ASCII terms and ids) and doc ids."""
    from lsr.eval.ciff_official import export_with_protobuf, read_with_protobuf

    index = random_index(tmp_path / "ix", n=700)  # doc ids above 127: two-byte gaps
    export_ciff(index, tmp_path / "ours.ciff")
    header = read_ciff_header(tmp_path / "ours.ciff")
    export_with_protobuf(index, tmp_path / "library.ciff", header)
    assert (tmp_path / "library.ciff").read_bytes() == (tmp_path / "ours.ciff").read_bytes()

    lists = []
    parsed, collection_ids = read_with_protobuf(tmp_path / "ours.ciff",
                                                lambda term, docs, tfs: lists.append((term, docs.tolist(), tfs.tolist())))
    assert (parsed.num_docs, parsed.total_postings_lists, parsed.description) == (700, VOCAB, header.description)
    assert parsed.average_doclength == header.average_doclength
    assert lists == read_lists(tmp_path / "ours.ciff")
    postings = term_major(index)
    for term, docs, tfs in lists:
        start, end = postings["postings_offsets"][int(term)], postings["postings_offsets"][int(term) + 1]
        assert docs == postings["postings_docs"][start:end].tolist()
        assert tfs == postings["postings_impacts"][start:end].tolist()
    assert collection_ids == [index.doc_ids[i] for i in range(700)]


def test_every_truncation_is_a_clear_error_and_leaves_nothing(tmp_path):
    export_ciff(tiny_index(tmp_path / "ix"), tmp_path / "x.ciff", description="t")
    data = (tmp_path / "x.ciff").read_bytes()
    for cut in range(len(data)):
        (tmp_path / "cut.ciff").write_bytes(data[:cut])
        with pytest.raises(CiffFormatError, match=r"cut\.ciff: byte \d+: .*(truncated|ends)"):
            import_ciff(tmp_path / "cut.ciff", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.ciff", "ix", "x.ciff"]
    (tmp_path / "cut.ciff").write_bytes(data + b"\x00")
    with pytest.raises(CiffFormatError, match="trailing"):
        import_ciff(tmp_path / "cut.ciff", tmp_path / "out")


def test_truncated_gzip(tmp_path):
    export_ciff(tiny_index(tmp_path / "ix"), tmp_path / "x.ciff")
    data = (tmp_path / "x.ciff").read_bytes()
    (tmp_path / "cut.ciff.gz").write_bytes(gzip.compress(data[: len(data) - 3]))
    with pytest.raises(CiffFormatError, match=r"doc record #1: .*truncated"):
        import_ciff(tmp_path / "cut.ciff.gz", tmp_path / "out")


def test_tf_above_255_clipped_and_zero_dropped_counted(tmp_path):
    lists = [("0", [0, 2], [300, 7]), ("4", [1, 2], [0, 255])]
    write_ciff(tmp_path / "x.ciff", lists, [(0, "a", 0), (1, "b", 0), (2, "c", 0)])
    import_ciff(tmp_path / "x.ciff", tmp_path / "ix", vocab_size=6, scale=0.5)
    index = open_single_segment(tmp_path / "ix")
    postings = term_major(index)
    assert postings["postings_offsets"].tolist() == [0, 2, 2, 2, 2, 3, 3]
    assert postings["postings_docs"].tolist() == [0, 2, 2] and postings["postings_impacts"].tolist() == [255, 7, 255]
    quant = index.meta["quantization"]
    assert (quant["clipped"], quant["zeroed"], quant["scale"], index.meta["num_postings"]) == (1, 1, 0.5, 3)


def test_unknown_term_out_of_range_and_bad_order(tmp_path):
    records = [(0, "a", 1), (1, "b", 1)]
    write_ciff(tmp_path / "x.ciff", [("cat", [0], [1]), ("dog", [1], [2])], records)
    message = r"x\.ciff: byte \d+: postings list #1 \(term 'dog'\): term 'dog' is not in the vocabulary"
    with pytest.raises(CiffFormatError, match=message):
        import_ciff(tmp_path / "x.ciff", tmp_path / "ix", vocab={"cat": 0})
    with pytest.raises(CiffFormatError, match="not a decimal term id"):
        import_ciff(tmp_path / "x.ciff", tmp_path / "ix")
    write_ciff(tmp_path / "y.ciff", [("1", [0, 2], [1, 1])], records)
    message = r"postings list #0 \(term '1'\): posting 1 has doc id 2, but the header has 2 documents"
    with pytest.raises(CiffFormatError, match=message):
        import_ciff(tmp_path / "y.ciff", tmp_path / "ix")
    write_ciff(tmp_path / "z.ciff", [("1", [0], [1])], [(0, "a", 1), (5, "b", 1)])
    with pytest.raises(CiffFormatError, match=r"doc record #1: docid is 5"):
        import_ciff(tmp_path / "z.ciff", tmp_path / "ix")
    write_ciff(tmp_path / "w.ciff", [("1", [0], [1]), ("1", [1], [1])], records)
    with pytest.raises(CiffFormatError, match="already had postings list #0"):
        import_ciff(tmp_path / "w.ciff", tmp_path / "ix")
    write_ciff(tmp_path / "v.ciff", [("7", [0], [1])], records)
    with pytest.raises(CiffFormatError, match="outside the vocabulary of 5 terms"):
        import_ciff(tmp_path / "v.ciff", tmp_path / "ix", vocab_size=5)
    assert not (tmp_path / "ix").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def delimited(*messages: bytes) -> bytes:
    return b"".join(encode_varint(len(m)) + m for m in messages)


def test_unknown_fields_are_skipped(tmp_path):
    header = CiffHeader(1, 2).encode() + bytes.fromhex("78 05 82 01 03 61 62 63 7d 00 00 80 3f")  # fields 15, 16, 15
    postings = bytes.fromhex("0a 01 31 48 07 22 06 08 01 10 09 50 01 5a 02 ff ff")  # fields 9, 10 (in a posting), 11
    record0 = bytes.fromhex("12 01 61 7d 00 00 80 3f")  # field 15, fixed32
    record1 = bytes.fromhex("08 01 12 01 62 18 09 41") + struct.pack("<d", 1.5)  # field 8, fixed64
    (tmp_path / "x.ciff").write_bytes(delimited(header, postings, record0, record1))
    import_ciff(tmp_path / "x.ciff", tmp_path / "ix")
    index = open_single_segment(tmp_path / "ix")
    stored = term_major(index)
    assert index.vocab_size == 2 and stored["postings_docs"].tolist() == [1]
    assert stored["postings_impacts"].tolist() == [9]
    assert [index.doc_ids[0], index.doc_ids[1]] == ["a", "b"]
    (tmp_path / "bad.ciff").write_bytes(delimited(header, postings, record0, bytes.fromhex("08 01 4f")))
    with pytest.raises(CiffFormatError, match=r"bad\.ciff: byte 50: doc record #1: unsupported wire type"):
        import_ciff(tmp_path / "bad.ciff", tmp_path / "iy")
    (tmp_path / "bad.ciff").write_bytes(delimited(header, postings[:-1], record0, record1))
    with pytest.raises(CiffFormatError, match=r"byte 34: postings list #0: a length-delimited field runs past"):
        import_ciff(tmp_path / "bad.ciff", tmp_path / "iy")


def test_refuses_to_overwrite(tmp_path):
    export_ciff(tiny_index(tmp_path / "ix"), tmp_path / "x.ciff")
    with pytest.raises(FileExistsError):
        import_ciff(tmp_path / "x.ciff", tmp_path / "ix")
    import_ciff(tmp_path / "x.ciff", tmp_path / "ix", overwrite=True, scale=2.0)
    index = open_single_segment(tmp_path / "ix")
    assert index.meta["quantization"]["scale"] == 2.0 and index.term_scales.tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="scale has 3 values but the vocabulary has 2"):
        import_ciff(tmp_path / "x.ciff", tmp_path / "ix", overwrite=True, scale=[1.0, 1.0, 1.0])


def test_bmp_reads_our_export(tmp_path):
    """The reference BMP (``pip install bmp``) scores our CIFF export exactly as we do.

    ``bmp.Searcher.search`` rescales query weights to a maximum of 32 (``ceil(w * 32 / max)``),
    so queries use integer weights with a maximum of exactly 32, which it keeps exact. It never
    scores the last block of its candidate order; a sentinel doc alone in the last block, with a
    sentinel query term of weight 1 (the lowest possible bound), takes that place. With k=1000
    (more than the matching docs) its seeded threshold is 0 and it returns every match.
    """
    import bmp
    rng = np.random.default_rng(7)
    block, n, vocab = 32, 63 * 32, 3000
    docs = sp.random(n, vocab - 1, density=0.01, random_state=3, format="csr", dtype=np.float32)
    docs.data = rng.integers(1, 60, docs.nnz).astype(np.float32)
    sentinel = sp.csr_matrix(([1.0], ([0], [vocab - 1])), shape=(1, vocab))
    docs = sp.vstack([sp.hstack([docs, sp.csr_matrix((n, 1))]), sentinel]).tocsr()
    ids = [f"d{i}-é" for i in range(n + 1)]
    build_index(tmp_path / "ix", [(ids, SparseBatch.from_scipy(docs), None)], vocab, quantization="global", scale=1.0)
    index = open_single_segment(tmp_path / "ix")
    export_ciff(index, tmp_path / "x.ciff")
    bmp.ciff2bmp(ciff_file=str(tmp_path / "x.ciff"), output=str(tmp_path / "x.bmp"), bsize=block, compress_range=False)
    searcher = bmp.Searcher(str(tmp_path / "x.bmp"))
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    present = np.flatnonzero(np.diff(term_major(index)["postings_offsets"][:-1]) > 0)
    for _ in range(30):
        terms = rng.choice(present, rng.integers(1, 8), replace=False)
        weights = rng.integers(1, 33, len(terms)).astype(np.float32)
        weights[0] = 32
        top_docs, top_scores = search(index, terms, weights, 10)
        query = {str(t): float(w) for t, w in zip(terms, weights)} | {str(vocab - 1): 1.0}
        found, scores = searcher.search(query, k=1000, alpha=1.0, beta=1.0)
        found, scores = np.array([position[d] for d in found]), np.array(scores, dtype=np.float64)
        real = found != n
        order = np.lexsort((found[real], -scores[real]))
        all_docs, all_scores = search(index, terms, weights, 1000)
        assert np.array_equal(found[real][order], all_docs) and np.array_equal(scores[real][order], all_scores)
        assert np.array_equal(found[real][order][:10], top_docs)
        assert np.array_equal(scores[real][order][:10], top_scores)
