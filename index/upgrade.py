"""`lsr index upgrade DIR`: an index of format version 2 (one directory) becomes version 3, and
the segments of format 1 in a version 3 index become format 2 (see `_upgrade_segments`).

Version 2 kept its arrays and ``meta.json`` at the top of the directory, a faiss part in
``dense/`` and live writes in ``updates.log`` (JSON lines). The upgrade, in place:

1. checks every array against the sha256 its ``meta.json`` recorded (a damaged index is not
   upgraded);
2. builds one segment from those arrays by hard links (nothing is copied but the term-major
   postings, rewritten in segment format 2's layout, ``index.bmp_build.chunk_term_postings``),
   adding the id hash table and CRC32 checksums; if two documents share an id, the last one
   stays searchable;
3. writes the records of ``updates.log`` (a torn last line skipped: it was never
   acknowledged) into the write-ahead log;
4. commits, and only then removes the version 2 files.

A crash before the commit leaves the version 2 index as it was (run the upgrade again); after
it, the index is version 3 and a second run removes what is left of version 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

import numpy as np

from lsr.index import storage
from lsr.index.bmp_build import chunk_term_postings
from lsr.index.builder import describe_extra_files
from lsr.index.commit import SEGMENTS_DIR, Commit, SegmentRecord, generations, read_commit, write_commit
from lsr.index.deletes import read_deletes, write_deletes
from lsr.index.directory import WriteLock, collect_garbage, init_layout
from lsr.index.doc_ids import duplicate_positions, hash_ids, sorted_hash_table
from lsr.index.format import (META_FILE, SEGMENT_FORMAT, SEGMENT_FORMAT_VERSION, UPGRADABLE_VERSIONS, IndexFormatError,
                          describe_arrays, describe_file, load_array, read_segment_meta, verify_segment_files)
from lsr.index.wal import WriteAheadLog, create_wal_file, encode_body
from lsr.index.writer import index_settings

OLD_VERSION = 2
OLD_LOG = "updates.log"
OLD_LOCK = ".serving.lock"


def upgrade_index(directory: str | Path) -> dict:
    """Upgrade a version 2 index in place (see the module docstring).

    Returns:
        ``{"format_version", "documents", "logged_writes"}``.
    """
    directory = Path(directory)
    old_meta_path = directory / META_FILE
    if generations(directory):
        _remove_old_files(directory, _read_old_meta(directory) if old_meta_path.is_file() else None)
        with _locked(directory):
            segments = _upgrade_segments(directory)
        return {"format_version": 3, "documents": None, "logged_writes": 0, "upgraded_segments": segments}
    meta = _read_old_meta(directory)
    _check_old_arrays(directory, meta)
    init_layout(directory)
    with _locked(directory):
        for sub in (SEGMENTS_DIR, "deletes", "wal"):  # what an interrupted upgrade left
            for path in (directory / sub).iterdir():
                storage.remove(path)
        name = f"s000001-{uuid.uuid4().hex[:8]}"
        duplicates = _link_segment(directory, meta, directory / SEGMENTS_DIR / name)
        create_wal_file(directory, 1)
        writes = _carry_log(directory, meta)
        record = SegmentRecord(name, int(meta["num_docs"]), describe_file(directory / SEGMENTS_DIR / name / META_FILE))
        if len(duplicates):
            deleted = np.zeros(record.num_docs, dtype=bool)
            deleted[duplicates] = True
            record = SegmentRecord(record.name, record.num_docs, record.meta, write_deletes(directory, name, 1, deleted))
        write_commit(directory, Commit(1, (record,), wal_seq=0, next_segment=2, settings=_settings(directory, meta)))
        _remove_old_files(directory, meta)
    return {"format_version": 3, "documents": int(meta["num_docs"]) - len(duplicates), "logged_writes": writes}


def older_segments(directory: str | Path) -> list[str]:
    """Segments named by the newest commit of an index that are of an older segment format."""
    directory = Path(directory)
    commit = read_commit(directory, generations(directory)[-1])
    return [record.name for record in commit.segments
            if read_segment_meta(directory / SEGMENTS_DIR / record.name, record.meta,
                                 versions=(*UPGRADABLE_VERSIONS, SEGMENT_FORMAT_VERSION))["format_version"]
            != SEGMENT_FORMAT_VERSION]


def upgrade_if_needed(directory: str | Path) -> int:
    """For the indexes this project keeps as caches (evaluation runs, mining): rewrite segments
    of an older format in place (`upgrade_index`) and say so on stderr; a current index is only
    read (no lock taken). Returns how many segments were rewritten."""
    if not generations(directory) or not older_segments(directory):
        return 0
    count = upgrade_index(directory)["upgraded_segments"]
    print(f"{directory}: {count} segment(s) of an older segment format rewritten (lsr index upgrade)",
          file=sys.stderr)
    return count


def _upgrade_segments(directory: Path) -> int:
    """Segments of format 1 named by the newest commit, rewritten in format 2 under new names
    (hard links but for the term-major postings) with their deletes, then one commit names
    them; the old ones go with the garbage once no reader pins them. Returns how many."""
    commit = read_commit(directory, generations(directory)[-1])
    records, next_segment, changed = [], commit.next_segment, 0
    for record in commit.segments:
        source = directory / SEGMENTS_DIR / record.name
        meta = read_segment_meta(source, record.meta, versions=(1, SEGMENT_FORMAT_VERSION))
        if meta.get("format_version") != 1:
            records.append(record)
            continue
        if problems := verify_segment_files(source, meta):
            raise IndexFormatError("; ".join(problems) + "; rebuild the index instead")
        name = f"s{next_segment:06d}-{uuid.uuid4().hex[:8]}"
        next_segment += 1
        _rewrite_format_1_segment(source, meta, directory / SEGMENTS_DIR / name)
        deletes = None
        if record.deletes:
            deleted = read_deletes(directory, record.deletes, record.num_docs)
            deletes = write_deletes(directory, name, commit.generation + 1, deleted)
        records.append(SegmentRecord(name, record.num_docs, describe_file(directory / SEGMENTS_DIR / name / META_FILE),
                                     deletes))
        changed += 1
    if changed:
        commit = commit.successor(segments=tuple(records), next_segment=next_segment)
        write_commit(directory, commit)
    collect_garbage(directory, commit)  # also what an upgrade killed after its commit left
    return changed


def _rewrite_format_1_segment(source: Path, meta: dict, target: Path) -> None:
    tmp = target.parent / f".{target.name}.building-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for relative in [info["file"] for info in meta["arrays"].values()] + list(meta.get("files") or {}):
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            os.link(source / relative, tmp / relative)
        names = _rewrite_term_postings(tmp, meta)
        segment_meta = {k: v for k, v in meta.items() if k not in ("arrays", "files")}
        segment_meta.update(format_version=SEGMENT_FORMAT_VERSION, arrays=describe_arrays(tmp, names),
                            files=describe_extra_files(tmp))
        _publish(tmp, segment_meta, target)
    except BaseException:
        storage.remove(tmp)
        raise


def _rewrite_term_postings(tmp: Path, meta: dict) -> list[str]:
    """Segment format 1's term postings in ``tmp`` rewritten as format 2's; the array names of
    the result, for ``meta.json``."""
    block_size = int(meta["block_size"])
    chunk_term_postings(tmp, max((int(meta["num_docs"]) + block_size - 1) // block_size, 1), block_size)
    return [name.replace("term_entry_starts", "term_chunk_starts") for name in meta["arrays"]]


def _publish(tmp: Path, segment_meta: dict, target: Path) -> None:
    """Write a built segment's ``meta.json``, make the whole directory durable, rename it in."""
    (tmp / META_FILE).write_text(json.dumps(segment_meta, indent=2))
    storage.fsync_tree(tmp)
    storage.rename(tmp, target)


class _locked:
    def __init__(self, directory: Path) -> None:
        self.lock = WriteLock.acquire(directory)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _read_old_meta(directory: Path) -> dict:
    path = directory / META_FILE
    if not path.is_file():
        raise IndexFormatError(f"{directory} is not an index of format version {OLD_VERSION} ({META_FILE} missing)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"{path}: invalid JSON ({error})") from error
    if meta.get("format") != "lsr-index" or meta.get("format_version") != OLD_VERSION:
        raise IndexFormatError(f"{path}: not an index of format version {OLD_VERSION}")
    return meta


def _check_old_arrays(directory: Path, meta: dict) -> None:
    for info in meta["arrays"].values():
        path = directory / info["file"]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        if digest.hexdigest() != info["sha256"]:
            raise IndexFormatError(f"{path}: sha256 does not match meta.json; rebuild the index instead")


def _link_segment(directory: Path, meta: dict, target: Path) -> np.ndarray:
    """The version 2 arrays as a segment (hard links); returns positions of duplicate ids to delete."""
    tmp = target.parent / f".{target.name}.building-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for info in meta["arrays"].values():
            os.link(directory / info["file"], tmp / info["file"])
        if (directory / "dense").is_dir():
            (tmp / "dense").mkdir()
            for path in (directory / "dense").iterdir():
                os.link(path, tmp / "dense" / path.name)
        names = _rewrite_term_postings(tmp, meta) + ["doc_id_hashes", "doc_id_hash_docs"]
        offsets, data = load_array(tmp / "doc_id_offsets.npy"), load_array(tmp / "doc_id_bytes.npy")
        hashes = hash_ids(offsets, data)
        sorted_hashes, docs = sorted_hash_table(hashes)
        np.save(tmp / "doc_id_hashes.npy", sorted_hashes)
        np.save(tmp / "doc_id_hash_docs.npy", docs)
        later, first = duplicate_positions(np.asarray(offsets), np.asarray(data), hashes)
        groups: dict[int, list[int]] = {}
        for position, origin in zip(later.tolist(), first.tolist()):
            groups.setdefault(origin, [origin]).append(position)
        duplicates = np.array(sorted(p for members in groups.values() for p in sorted(members)[:-1]), dtype=np.int64)
        segment_meta = {k: v for k, v in meta.items() if k not in ("arrays", "format", "format_version")}
        segment_meta.update(format=SEGMENT_FORMAT, format_version=SEGMENT_FORMAT_VERSION,
                            upgraded_from=OLD_VERSION, arrays=describe_arrays(tmp, names),
                            files=describe_extra_files(tmp))
        _publish(tmp, segment_meta, target)
    except BaseException:
        storage.remove(tmp)
        raise
    return duplicates


def _carry_log(directory: Path, meta: dict) -> int:
    """The version 2 update log's records, appended to the write-ahead log; how many."""
    path = directory / OLD_LOG
    if not path.is_file():
        return 0
    data = path.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].splitlines()  # a last line without newline was never acknowledged
    bodies = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if record["op"] == "add":
                bodies.append(encode_body("add", record["id"], record.get("title", ""), record.get("text", ""),
                                          record.get("terms", []), record.get("weights", []), record.get("dense")))
            else:
                bodies.append(encode_body("delete", record["id"]))
        except (ValueError, KeyError, TypeError) as error:
            raise IndexFormatError(f"{path}, line {number}: not an update record ({error})") from error
    if bodies:
        wal = WriteAheadLog(directory)
        try:
            wal.append(bodies)
        finally:
            wal.close()
    return len(bodies)


def _settings(directory: Path, meta: dict) -> dict:
    quantization = meta["quantization"]
    build = {"quantization": quantization["method"].removeprefix("uint8-"), "reorder": meta["doc_order"],
             "block_size": meta["block_size"], "bp_options": meta.get("bp_options") or {},
             "store_texts": "doc_text_offsets" in meta["arrays"]}
    if build["quantization"] == "global":
        if quantization.get("scale_quantile") is None:
            build["scale"] = quantization["scale"]
        else:
            build["scale_quantile"] = quantization["scale_quantile"]
    dense = None
    if (directory / "dense" / "dense.json").is_file():
        d = json.loads((directory / "dense" / "dense.json").read_text())
        dense = {"model": d["model"], "dim": d["dim"], "options": {"kind": d["kind"], "hnsw_m": d["hnsw_m"],
                 "ef_construction": d["ef_construction"], "ef_search": d["ef_search"]}}
    user = {k: meta[k] for k in ("encoder", "corpus", "dense_encoder", "encode_seconds", "dense_encode_seconds")
            if k in meta}
    return index_settings(meta["vocab_size"], user, dense, **build)


def _remove_old_files(directory: Path, meta: dict | None) -> None:
    """The version 2 files, once a commit holds everything (their segment copies are hard links)."""
    for info in (meta or {}).get("arrays", {}).values():
        storage.remove(directory / info["file"])
    for name in ("dense", OLD_LOG, OLD_LOCK, META_FILE):
        storage.remove(directory / name)
    storage.fsync_dir(directory)
