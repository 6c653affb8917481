"""Our CIFF codec (`index.ciff`, Numba) against the `protobuf` library on the official schema.

    python eval/bench_ciff.py INDEX_DIR [--work DIR] [--out eval/results/bench_ciff_1m]

INDEX_DIR is an index of one segment (``lsr index merge`` makes one). Both sides write the same
postings lists and doc records in the same order; the files must be byte for byte equal (the
check that we write canonical proto3). Both sides then decode every postings list into doc ids
and tfs (numpy arrays, the form an import consumes) and must agree on every posting. Our full
import (decode plus building a segment) is timed too. One process, one thread, each step once,
ours first then the library's; the ratio is the library's time over ours.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from lsr.eval.report import publish


class Digest:
    """What both decoders must agree on: list count, postings, and sums over doc ids and tfs."""

    def __init__(self) -> None:
        self.lists = self.postings = self.doc_sum = self.tf_sum = self.weighted = 0

    def __call__(self, term, docs: np.ndarray, tfs: np.ndarray) -> None:
        self.lists += 1
        self.postings += len(docs)
        self.doc_sum += int(docs.sum())
        self.tf_sum += int(tfs.sum())
        self.weighted += int(np.dot(docs % 65521, tfs)) * self.lists  # order matters

    def as_dict(self) -> dict:
        return dict(vars(self))


def decode_with_ours(path: Path, each_list) -> int:
    """Every postings list through our reader and decoder (what `import_ciff` runs); doc count."""
    from lsr.index.ciff import _read_header, _reader
    from lsr.index.ciff_protobuf import PostingsListDecoder, decode_doc_records

    decoder = PostingsListDecoder()
    with open(path, "rb") as handle:
        reader = _reader(handle, path)
        header = _read_header(reader)
        for i in range(header.num_postings_lists):
            record = decoder.decode(reader.read_message(f"postings list #{i}")[0])
            each_list(record.term, np.cumsum(record.gaps), record.tfs)
        seen = 0
        while seen < header.num_docs:
            reader.fill(1 << 22)
            docids, _, _, consumed = decode_doc_records(reader.view(), header.num_docs - seen)
            reader.pos += consumed
            seen += len(docids)
    return seen


def timed(step):
    started = time.perf_counter()
    value = step()
    return time.perf_counter() - started, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)

    import google.protobuf
    from google.protobuf.internal import api_implementation

    from lsr.eval.ciff_official import export_with_protobuf, read_with_protobuf
    from lsr.index.ciff import export_ciff, import_ciff, read_ciff_header
    from lsr.index.live import open_single_segment

    work = Path(tempfile.mkdtemp(prefix="bench-ciff-", dir=args.work))
    try:
        segment = open_single_segment(args.index)
        ours_file, library_file = work / "ours.ciff", work / "protobuf.ciff"
        seconds = {}
        seconds["export ours"], _ = timed(lambda: export_ciff(segment, ours_file))
        header = read_ciff_header(ours_file)
        seconds["export protobuf"], _ = timed(lambda: export_with_protobuf(segment, library_file, header))
        identical = filecmp.cmp(ours_file, library_file, shallow=False)
        library_file.unlink()
        ours_digest, library_digest = Digest(), Digest()
        seconds["decode ours"], _ = timed(lambda: decode_with_ours(ours_file, ours_digest))
        seconds["decode protobuf"], _ = timed(lambda: read_with_protobuf(ours_file, library_digest))
        seconds["import ours (decode + build a segment)"], _ = timed(
            lambda: import_ciff(ours_file, work / "imported", vocab_size=segment.vocab_size))
        if ours_digest.as_dict() != library_digest.as_dict():
            raise SystemExit(f"the decoders disagree: ours {ours_digest.as_dict()}, protobuf {library_digest.as_dict()}")
        if not identical:
            raise SystemExit("the library's file differs from ours")
        report = {
            "index": str(args.index), "num_docs": segment.num_docs, "postings": ours_digest.postings,
            "postings_lists": ours_digest.lists, "ciff_bytes": ours_file.stat().st_size,
            "protobuf": {"backend": api_implementation.Type(), "version": google.protobuf.__version__},
            "files_identical": identical,
            "seconds": seconds,
            "ratio_protobuf_over_ours": {
                "export": seconds["export protobuf"] / seconds["export ours"],
                "decode": seconds["decode protobuf"] / seconds["decode ours"],
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    publish(report, markdown, "bench_ciff.py", argv, args.out)


def markdown(report: dict) -> str:
    lines = [f"CIFF of {report['num_docs']:,} documents, {report['postings']:,} postings in "
             f"{report['postings_lists']:,} lists, {report['ciff_bytes'] / 2**20:.0f} MiB; protobuf "
             f"{report['protobuf']['version']} ({report['protobuf']['backend']} backend); the two files "
             f"{'are byte for byte identical' if report['files_identical'] else 'DIFFER'}.", "",
             "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {value:.2f} |" for step, value in report["seconds"].items()]
    ratio = report["ratio_protobuf_over_ours"]
    lines += ["", f"protobuf / ours: export {ratio['export']:.1f}x, decode {ratio['decode']:.1f}x "
              "(the issue's bar for replacing ours: within 2x).", "",
              f"Command: `{report['command']}`; machine: {report['machine']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
