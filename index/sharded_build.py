"""Indexing jobs that write a sharded index: each chunk's documents go to the shard that owns
their id (`index.shards.shard_of`), each shard is an `index.build.IndexBuild`, and the
manifest (``shards.json``) is written last, once every shard is published."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lsr.index import storage
from lsr.index.build import DEFAULT_SEGMENT_DOCS, IndexBuild
from lsr.index.shards import (Manifest, check_num_shards, group_by_shard, is_sharded, read_manifest, shard_names,
                          write_manifest)
from lsr.index.sparse_batch import SparseBatch


def shard_rows(doc_ids: list[str], num_shards: int) -> list[np.ndarray]:
    """The positions of ``doc_ids`` that each shard owns, in input order (one array per shard)."""
    groups = group_by_shard(doc_ids, num_shards)
    return [np.asarray(groups.get(shard, []), dtype=np.int64) for shard in range(num_shards)]


class ShardedBuild:
    """`IndexBuild` over ``num_shards`` shards (same arguments; ``segment_docs`` is split
    between the shards so the build's memory stays what one index's would be).

    Raises:
        FileExistsError: ``out_dir`` holds something else, or (``overwrite``) a sharded index
            with another shard count.
    """

    def __init__(self, out_dir: str | Path, num_shards: int, vocab_size: int, meta: dict | None = None,
                 overwrite: bool = False, segment_docs: int | None = DEFAULT_SEGMENT_DOCS, **options) -> None:
        self.out_dir = Path(out_dir)
        self.num_shards = check_num_shards(num_shards)
        self.names = shard_names(num_shards)
        if is_sharded(self.out_dir):
            existing = read_manifest(self.out_dir)
            if not overwrite:
                raise FileExistsError(f"{self.out_dir} already holds a sharded index; pass overwrite to replace it")
            if existing.shards != tuple(self.names):
                raise FileExistsError(f"{self.out_dir} holds {existing.num_shards} shards, not {num_shards}: give "
                                      f"a new directory to change the shard count")
        elif self.out_dir.exists() and any(self.out_dir.iterdir()) and not set(
                p.name for p in self.out_dir.iterdir()) <= set(self.names):
            raise FileExistsError(f"{self.out_dir} is not empty and not a sharded index; give an empty or new "
                                  f"directory")
        self.created_directory = not self.out_dir.exists()
        storage.make_dir(self.out_dir)
        per_shard = None if segment_docs is None else max(1, math.ceil(segment_docs / num_shards))
        self.builds: list[IndexBuild] = []
        self._open: list[IndexBuild] = []  # not yet finished or closed
        try:
            for name in self.names:
                self._open.append(IndexBuild(self.out_dir / name, vocab_size, meta, overwrite=overwrite,
                                              segment_docs=per_shard, **options))
                self.builds.append(self._open[-1])
        except BaseException:
            self.close()
            raise

    @property
    def num_docs(self) -> int:
        return sum(build.num_docs for build in self.builds)

    def add(self, doc_ids: list[str], batch: SparseBatch, titles: list[str] | None = None,
            texts: list[str] | None = None, dense: np.ndarray | None = None) -> None:
        for build, rows in zip(self.builds, shard_rows(doc_ids, self.num_shards)):
            if len(rows):
                build.add([doc_ids[r] for r in rows], batch.take(rows),
                          None if titles is None else [titles[r] for r in rows],
                          texts=None if texts is None else [texts[r] for r in rows],
                          dense=None if dense is None else dense[rows])

    def finish(self, extra_meta: dict | None = None) -> Path:
        """Finish and publish every shard, then write the manifest; the index path."""
        try:
            while self._open:  # finish closes each build, failed or not
                self._open.pop(0).finish(extra_meta, require_weights=False)
            if not any(build.has_weights for build in self.builds):
                raise ValueError(f"cannot index {self.num_docs} documents: every document weight is zero (an empty "
                                 f"corpus, or an encoder that gives no terms)")
            write_manifest(self.out_dir, Manifest(tuple(self.names)))
        except BaseException:
            self.close(failed=True)
            raise
        return self.out_dir

    def close(self, failed: bool = True) -> None:
        """Release every shard's build; after a failure, remove the directory if this build made it."""
        while self._open:
            self._open.pop(0).close()
        if failed and self.created_directory:
            storage.remove(self.out_dir)
