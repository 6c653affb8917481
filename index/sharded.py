"""`ShardedIndex`: every shard of a sharded index opened in this process, answering as one
`index.live.LiveIndex` does (same methods, same results as one index of the same segments).

Searches ask every shard for its exact top-k and merge them (`index.shards.merge_top_k`);
reads and writes of one document go to the shard that owns its id (`index.shards.shard_of`).
Each shard keeps its own guarantees (write-ahead log, commits, one writer process per shard).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.index.format import IndexFormatError
from lsr.index.live import DocumentNotFound, Hits, LiveIndex
from lsr.index.shards import group_by_shard, merge_top_k, read_manifest, shard_of
from lsr.index.sparse_batch import SparseBatch
from lsr.index.writer import FlushPolicy


class ShardedIndex:
    """A sharded index directory (``shards.json``), opened for search and writes.

    Args:
        directory: the sharded index (``lsr index ... --shards S`` writes one).
        verify: as `LiveIndex`.
        writer: as `LiveIndex`, for every shard.
    """

    def __init__(self, directory: str | Path, verify: bool = True, writer: str = "auto") -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.flush_policy = FlushPolicy()
        self.shards: list[LiveIndex] = []
        try:
            for name in self.manifest.shards:
                live = LiveIndex(self.directory / name, verify=verify, writer=writer)
                live.flush_policy = self.flush_policy  # one policy object: the service sets it once
                if live.writer is not None:
                    live.writer.policy = self.flush_policy
                self.shards.append(live)
            first = self.shards[0].settings
            for name, live in zip(self.manifest.shards, self.shards):
                if live.settings["vocab_size"] != first["vocab_size"] or live.dense_dim != self.shards[0].dense_dim:
                    raise IndexFormatError(f"{self.directory / name}: its vocabulary or dense part differs from "
                                           f"{self.directory / self.manifest.shards[0]}'s")
        except BaseException:
            self.close()
            raise

    # lifecycle

    def close(self) -> None:
        for live in self.shards:
            live.close()
        self.shards = []

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def maintain(self) -> None:
        for live in self.shards:
            live.maintain()

    def flush(self) -> None:
        for live in self.shards:
            live.flush()

    def merge(self, max_segments: int | None = None, policy=None) -> None:
        """Merge in every shard this process writes (as `LiveIndex.merge`)."""
        for live in self.shards:
            if live.writer is not None:
                live.merge(max_segments, policy)

    @property
    def writer(self) -> bool | None:
        """Truthy when this process writes at least one shard (the service's merge thread asks)."""
        return True if any(live.writer is not None for live in self.shards) else None

    # reading state

    @property
    def settings(self) -> dict:
        return self.shards[0].settings

    @property
    def meta(self) -> dict:
        return self.shards[0].meta

    @property
    def vocab_size(self) -> int:
        return self.shards[0].vocab_size

    @property
    def dense_dim(self) -> int | None:
        return self.shards[0].dense_dim

    @property
    def num_docs(self) -> int:
        return sum(live.num_docs for live in self.shards)

    def shard_for(self, doc_id: str) -> LiveIndex:
        return self.shards[shard_of(doc_id, len(self.shards))]

    # searching

    def search_sparse(self, terms, weights, k: int, scorer: str = "auto", alpha: float = 1.0, beta: float = 1.0,
                      max_blocks: int | None = None, precision: str = "auto") -> Hits:
        return merge_top_k([live.search_sparse(terms, weights, k, scorer, alpha, beta, max_blocks, precision)
                            for live in self.shards], k)

    def search_sparse_batch(self, queries: SparseBatch, k: int, scorer: str = "auto", alpha: float = 1.0,
                            beta: float = 1.0, max_blocks: int | None = None, precision: str = "auto") -> list[Hits]:
        per_shard = [live.search_sparse_batch(queries, k, scorer, alpha, beta, max_blocks, precision)
                     for live in self.shards]
        return [merge_top_k([found[q] for found in per_shard], k) for q in range(len(queries))]

    def search_dense(self, vector: np.ndarray, k: int) -> Hits:
        return merge_top_k([live.search_dense(vector, k) for live in self.shards], k)

    def contains(self, doc_id: str) -> bool:
        return self.shard_for(doc_id).contains(doc_id)

    def document(self, doc_id: str) -> dict:
        return self.shard_for(doc_id).document(doc_id)

    def documents(self, doc_ids: list[str]) -> dict[str, dict]:
        found = {}
        for shard, positions in group_by_shard(doc_ids, len(self.shards)).items():
            found.update(self.shards[shard].documents([doc_ids[p] for p in positions]))
        return found

    def document_vector(self, doc_id: str, precision: str = "auto"):
        return self.shard_for(doc_id).document_vector(doc_id, precision)

    # writing

    def add(self, doc_id: str, title: str, text: str, terms, weights, dense: np.ndarray | None = None) -> bool:
        return self.shard_for(doc_id).add(doc_id, title, text, terms, weights, dense)

    def add_many(self, documents: list[tuple]) -> list[bool]:
        """`LiveIndex.add_many` per shard (one log write and fsync in each shard written)."""
        replaced = [False] * len(documents)
        for shard, positions in group_by_shard([d[0] for d in documents], len(self.shards)).items():
            for position, was in zip(positions, self.shards[shard].add_many([documents[p] for p in positions])):
                replaced[position] = was
        return replaced

    def delete(self, doc_id: str) -> None:
        self.shard_for(doc_id).delete(doc_id)

    def stats(self) -> dict:
        """`LiveIndex.stats` summed over the shards (see `combine_stats`)."""
        return combine_stats(list(self.manifest.shards), [live.stats() for live in self.shards])


def combine_stats(names: list[str], per_shard: list[dict]) -> dict:
    """Shards' `LiveIndex.stats` as one: counts summed, segment names prefixed by their shard,
    and each shard's own figures under ``shards``."""
    first = per_shard[0]
    total = {key: sum(s[key] for s in per_shard)
             for key in ("documents", "buffered_writes", "buffer_documents", "postings", "commit", "wal_seq",
                         "last_seq")}
    return {
        **first, **total,
        "segments": [{**segment, "name": f"{name}/{segment['name']}"}
                     for name, s in zip(names, per_shard) for segment in s["segments"]],
        "writer": any(s["writer"] for s in per_shard),
        "shards": [{"name": name, "documents": s["documents"], "commit": s["commit"], "wal_seq": s["wal_seq"],
                    "last_seq": s["last_seq"], "writer": s["writer"]} for name, s in zip(names, per_shard)],
    }


def open_index(directory: str | Path, verify: bool = True, writer: str = "auto") -> LiveIndex | ShardedIndex:
    """A `ShardedIndex` for a directory with ``shards.json``, else a `LiveIndex`."""
    from lsr.index.shards import is_sharded

    cls = ShardedIndex if is_sharded(directory) else LiveIndex
    return cls(directory, verify=verify, writer=writer)


__all__ = ["DocumentNotFound", "ShardedIndex", "open_index"]
