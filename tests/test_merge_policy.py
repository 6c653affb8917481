"""The tiered merge policy: how many segments it keeps, and which of its merges skip reordering."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from lsr.index.build import build_index
from lsr.index.live import LiveIndex
from lsr.index.merge import REORDER_MAX_DOCS, TieredMergePolicy
from lsr.index.sparse_batch import SparseBatch

VOCAB = 300


def record(name: str, docs: int) -> SimpleNamespace:
    return SimpleNamespace(name=name, num_live=docs, num_docs=docs, num_deleted=0)


def test_flushes_beside_a_large_segment_keep_few_segments():
    """A flush of 1,000 documents a second beside a segment of 1M, one merge a second at most
    (as the service's background merges run): the policy keeps the young segments few."""
    policy = TieredMergePolicy()
    segments = [record("big", 1_000_000)]
    names = itertools.count()
    counts = []
    for _ in range(600):
        segments.append(record(f"f{next(names)}", 1_000))
        chosen = policy.find_merge(tuple(segments))
        if chosen:
            merged = sum(s.num_live for s in segments if s.name in chosen)
            segments = [s for s in segments if s.name not in chosen] + [record(f"m{next(names)}", merged)]
        counts.append(len(segments))
    assert max(counts) <= 10
    assert np.mean(counts[:30]) <= 6
    assert any(s.name == "big" for s in segments)  # the large segment is not rewritten for small ones


def test_small_and_very_large_merges_keep_their_sources_orders():
    policy = TieredMergePolicy()
    assert policy.concatenates([record("a", 1_000), record("b", 5_000)])
    assert not policy.concatenates([record("a", 15_000), record("b", 5_000)])
    assert not policy.concatenates([record("a", 100_000), record("b", 100_000)])
    assert policy.concatenates([record("a", REORDER_MAX_DOCS), record("b", 1)])


def _flushed_index(path, flushes: int, rng) -> LiveIndex:
    docs = sp.random(50, VOCAB, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    build_index(path, [([f"d{i}" for i in range(50)], SparseBatch.from_scipy(docs), None)], VOCAB, reorder="bp",
                block_size=4, store_texts=False)
    live = LiveIndex(path)
    for f in range(flushes):
        rows = sp.random(40, VOCAB, density=0.05, random_state=rng, format="csr", dtype=np.float32)
        for r in range(40):
            row = rows[r]
            live.add(f"f{f}-{r}", "", "", row.indices, np.abs(row.data) + 0.05)
        live.flush()
    return live


def test_a_background_merge_of_small_segments_keeps_their_orders(tmp_path):
    """The default policy's merge of flushed segments concatenates them (ids in source order);
    with ``reorder_min_docs`` 0 the same merge reorders them (graph bisection)."""
    for reorder_min_docs, expect_concatenated in ((20_000, True), (0, False)):
        live = _flushed_index(tmp_path / f"ix{reorder_min_docs}", 6, np.random.default_rng(3))
        before = live.refresh()
        order_before = [state.segment.doc_ids[i] for state in before.segments for i in range(state.segment.num_docs)]
        policy = TieredMergePolicy(reorder_min_docs=reorder_min_docs)
        names = policy.find_merge(live.commit.segments)
        assert names and len(names) >= 2
        live.merge(policy=policy)
        after = live.refresh()
        merged = after.segments[-1].segment
        merged_ids = [merged.doc_ids[i] for i in range(merged.num_docs)]
        sources = [i for i in order_before if i in set(merged_ids)]
        assert sorted(merged_ids) == sorted(sources)
        assert (merged_ids == sources) == expect_concatenated
        live.close()
