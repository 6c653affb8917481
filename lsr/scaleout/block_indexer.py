"""What a Ray worker does with one corpus block: read it, encode it, and write one segment
per shard (not yet in any index: the job's driver publishes it).

`BlockIndexer` is the callable class of a Ray Data actor pool (one encoder per actor, loaded
once); it is also usable without Ray, which the tests use to compare with the driver's output.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsr.index import storage

from lsr.index.builder import SegmentBuilder
from lsr.index.sharded_build import shard_rows
from lsr.index.writer import builder_options


@dataclass(frozen=True)
class EncoderSpec:
    """How a worker loads its encoders (`lsr.encoders.loading.load_encoder` arguments)."""

    model: str | None
    batch_size: int = 32
    query_max_length: int | None = None
    doc_max_length: int | None = None
    dense_model: str | None = None  # build the dense part with this model ("" = the bundled one)
    dense: bool = False
    dense_max_length: int | None = None  # the dense model's token limit for documents (its own by default)


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs (picklable).

    Attributes:
        work_dir: where blocks' segments and float vectors are written before publication.
        num_shards: shards of the index.
        settings: the index settings every shard's commit records (``index.writer.index_settings``).
        source: a `lsr.data.blocks.CorpusBlocks` (texts) or `VectorBlocks` (vectors given).
        encoder: how to encode texts (None for a `VectorBlocks` source).
        keep_floats: keep each segment's float vectors (the driver merges from them).
        duplicates: an id given twice inside one block: ``error`` or ``last`` (as `SegmentBuilder`).
    """

    work_dir: str
    num_shards: int
    settings: dict
    source: object
    encoder: EncoderSpec | None = None
    keep_floats: bool = True
    duplicates: str = "error"


class BlockIndexer:
    """Encode and index blocks (``{"block": int}`` rows) into per-shard segments.

    Returns one row per (block, shard) with documents: ``block``, ``shard``, ``segment`` (the
    finished segment's directory), ``floats`` (its float vectors, or ""), ``docs``, and the
    block's ``encode_seconds`` and ``build_seconds`` on the block's first row.
    """

    def __init__(self, spec: JobSpec, device: str = "cpu", threads: int | None = None) -> None:
        self.spec = spec
        self.threads = threads
        self.encoder = self.dense_encoder = None
        if spec.encoder is not None:
            from lsr.encoders.loading import load_encoder

            self._hold_threads()

            e = spec.encoder
            self.encoder = load_encoder(e.model, e.batch_size, e.query_max_length, e.doc_max_length, device=device)
            if e.dense:
                from lsr.encoders.dense import DenseEncoder

                self.dense_encoder = DenseEncoder(e.dense_model or None, batch_size=e.batch_size,
                                                  max_length=e.dense_max_length, device=device)

    def __call__(self, batch: dict) -> dict:
        rows: dict[str, list] = {name: [] for name in ("block", "shard", "segment", "floats", "docs",
                                                       "encode_seconds", "build_seconds")}
        for block in np.asarray(batch["block"]).tolist():
            for row in self.index_block(int(block)):
                for name, value in row.items():
                    rows[name].append(value)
        return {name: np.asarray(values) for name, values in rows.items()}

    def _hold_threads(self) -> None:
        """Keep torch and numba on the CPUs Ray gave this actor, on the thread that runs now.

        Both are set again before every block because they are per thread and because numba's
        OpenMP layer sets OpenMP's thread count to its own on every parallel launch (all the
        machine's CPUs), which torch reads too: after a block's segment was built, the next
        block's encoding ran on two threads per one-CPU actor, and with the many small products
        of the per-document pooling two such actors on two CPUs encoded 4 times slower
        (0.20 against 0.05 s a document).
        """
        if not self.threads:
            return
        import numba

        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        if self.spec.encoder is not None:
            import torch

            torch.set_num_threads(self.threads)

    def index_block(self, block: int) -> list[dict]:
        self._hold_threads()
        started = time.perf_counter()
        titles = texts = dense = None
        if self.encoder is None:
            doc_ids, vectors = self.spec.source.read_vectors(block)
        else:
            documents = self.spec.source.read(block)
            doc_ids = [d.doc_id for d in documents]
            titles, texts = [d.title for d in documents], [d.text for d in documents]
            full = [d.full_text() for d in documents]
            vectors = self.encoder.encode_documents(full)
            if self.dense_encoder is not None:
                dense = self.dense_encoder.encode_documents(full)
        encoded = time.perf_counter()
        # A fresh directory per attempt: Ray may run a block again after a worker failed.
        attempt = storage.make_dir(Path(self.spec.work_dir) / f"b{block:08d}-{uuid.uuid4().hex[:8]}")
        options = builder_options(self.spec.settings)
        out = []
        for shard, positions in enumerate(shard_rows(doc_ids, self.spec.num_shards)):
            if not len(positions):
                continue
            floats = attempt / f"floats-{shard:04d}" if self.spec.keep_floats else None
            builder = SegmentBuilder(attempt / f"segment-{shard:04d}", self.spec.settings["vocab_size"],
                                     self.spec.settings["meta"], float_vectors_dir=floats,
                                     duplicates=self.spec.duplicates, **options)
            builder.add([doc_ids[p] for p in positions], vectors.take(positions),
                        None if titles is None else [titles[p] for p in positions],
                        texts=None if texts is None or not options.get("store_texts") else [texts[p] for p in positions],
                        dense=None if dense is None else dense[positions])
            builder.finish()
            out.append({"block": block, "shard": shard, "segment": str(builder.out_dir),
                        "floats": str(floats) if floats else "", "docs": len(positions)})
        if not out:  # an empty block still reports, so the driver marks it done
            out.append({"block": block, "shard": -1, "segment": "", "floats": "", "docs": 0})
        for row in out:
            row.update(encode_seconds=0.0, build_seconds=0.0)
        out[0].update(encode_seconds=encoded - started, build_seconds=time.perf_counter() - encoded)
        return out
