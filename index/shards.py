"""Sharded indexes: documents partitioned by a stable hash of their id, one index per shard.

A sharded index is a directory holding ``shards.json`` (the manifest: how ids are hashed and
the shard directories in shard order) and one ordinary index directory per shard. A document
lives in exactly one shard, `shard_of` its id, so a write goes to one shard and an id is never
in two. The manifest is written last, atomically (``index.storage``): a directory without it
is not a sharded index.

`ShardedIndex` opens every shard in this process and answers as `index.live.LiveIndex` does
(the service runs on either); the Ray Serve path asks shard replicas instead and merges their
answers with the same `merge_top_k`. A query's top-k over shards is exact: each shard returns
its own exact top-k, and the k best of their union are the k best of all documents.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsr.index import storage
from lsr.index.doc_ids import hash_id, hash_ids
from lsr.index.format import IndexFormatError

MANIFEST = "shards.json"
MANIFEST_FORMAT = "lsr-shards"
MANIFEST_VERSION = 1
PARTITION = "fnv1a64-splitmix64-mod"  # what `shard_of` computes; recorded so a reader can refuse another
MAX_SHARDS = 4096


def shard_of(doc_id: str, num_shards: int) -> int:
    """The shard that owns ``doc_id``: FNV-1a of its UTF-8 bytes, mixed by splitmix64's
    finaliser (FNV's low bits alone spread short numeric ids unevenly), modulo the count.
    Stable across processes, machines and versions (never Python's salted ``hash``)."""
    return int(_mix(hash_id(doc_id)) % np.uint64(num_shards))


def shards_of(doc_ids, num_shards: int) -> np.ndarray:
    """`shard_of` every id of ``doc_ids`` (int64 array): one Numba pass over the ids' bytes and
    the same mixing in numpy's wrapping uint64 arithmetic (8.8M ids in seconds, not minutes)."""
    encoded = [doc_id.encode("utf-8") for doc_id in doc_ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    x = _mix(hash_ids(offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)))
    return (x % np.uint64(num_shards)).astype(np.int64)


def _mix(x):
    """splitmix64's finaliser of FNV-1a hashes (a numpy uint64 or uint64 array; wrapping)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def shard_names(num_shards: int) -> list[str]:
    return [f"shard-{i:04d}" for i in range(num_shards)]


def group_by_shard(doc_ids, num_shards: int) -> dict[int, list[int]]:
    """Shard -> the positions of ``doc_ids`` it owns, in input order (shards owning none left out)."""
    owners = shards_of(doc_ids, num_shards)
    order = np.argsort(owners, kind="stable")  # positions grouped by shard, input order within each
    shards, starts = np.unique(owners[order], return_index=True)
    return {int(shard): part.tolist() for shard, part in zip(shards, np.split(order, starts[1:]))}


@dataclass(frozen=True)
class Manifest:
    """What ``shards.json`` says: the shard directories (relative names) in shard order."""

    shards: tuple[str, ...]
    partition: str = PARTITION

    @property
    def num_shards(self) -> int:
        return len(self.shards)


def check_num_shards(num_shards: int) -> int:
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or not 1 <= num_shards <= MAX_SHARDS:
        raise ValueError(f"shards must be an integer from 1 to {MAX_SHARDS}, got {num_shards!r}")
    return num_shards


def is_sharded(directory: str | Path) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def write_manifest(directory: str | Path, manifest: Manifest) -> None:
    """Write ``shards.json`` durably (its CRC32 in the last line, as commit files carry)."""
    body = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "partition": manifest.partition,
            "shards": list(manifest.shards)}
    data = json.dumps(body, indent=1, sort_keys=True).encode("utf-8") + b"\n"
    storage.write_atomic(Path(directory) / MANIFEST, data + f"crc32 {zlib.crc32(data):08x}\n".encode("ascii"))


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of a sharded index.

    Raises:
        IndexFormatError: missing, damaged (checksum), of another format or partition, or
            naming a shard directory that is not inside the index or does not exist.
    """
    path = Path(directory) / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise IndexFormatError(f"{directory}: not a sharded index (no {MANIFEST})") from error
    body, _, footer = data.rstrip(b"\n").rpartition(b"\n")
    body += b"\n"
    if footer != f"crc32 {zlib.crc32(body):08x}".encode("ascii"):
        raise IndexFormatError(f"{path}: checksum footer missing or wrong (the manifest is damaged)")
    try:
        raw = json.loads(body)
        if raw["format"] != MANIFEST_FORMAT or raw["format_version"] != MANIFEST_VERSION:
            raise ValueError(f"not {MANIFEST_FORMAT} version {MANIFEST_VERSION}")
        shards = tuple(raw["shards"])
        partition = raw["partition"]
    except (ValueError, TypeError, KeyError) as error:
        raise IndexFormatError(f"{path}: not a valid shard manifest ({error})") from error
    if partition != PARTITION:
        raise IndexFormatError(f"{path}: ids are partitioned by {partition!r}; this version knows {PARTITION!r}")
    if not shards or len(shards) > MAX_SHARDS or len(set(shards)) != len(shards) or not all(
            isinstance(name, str) and name and "/" not in name and name not in (".", "..") for name in shards):
        raise IndexFormatError(f"{path}: the shard list must name 1 to {MAX_SHARDS} distinct directories inside "
                               f"the index")
    for name in shards:
        if not (Path(directory) / name).is_dir():
            raise IndexFormatError(f"{path}: shard directory {name!r} is missing")
    return Manifest(shards, partition)


def shard_directories(directory: str | Path) -> dict[str, Path]:
    """Shard name -> index directory: a sharded index's shards (checked, in shard order), or
    a plain index as its one shard (``shard-0000``)."""
    directory = Path(directory)
    if is_sharded(directory):
        return {name: directory / name for name in read_manifest(directory).shards}
    return {shard_names(1)[0]: directory}


def merge_top_k(results: list[tuple[list[str], np.ndarray]], k: int) -> tuple[list[str], np.ndarray]:
    """The ``k`` best of several shards' best-first ``(ids, scores)``: by score, ties by shard
    order then rank (each shard's own order), so the merge is deterministic."""
    ids = [doc_id for shard_ids, _ in results for doc_id in shard_ids]
    if not ids:
        dtype = results[0][1].dtype if results else np.float64
        return [], np.zeros(0, dtype=dtype)
    scores = np.concatenate([np.asarray(s) for _, s in results])
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))[:k]
    return [ids[i] for i in order.tolist()], scores[order]
