"""Segments are grouped for the BMP kernel by a key read from array flags: it must split them
wherever `numba.typeof` does (a typed list refuses an item of another type), and nowhere else
for arrays as the index makes them (aligned)."""

from __future__ import annotations

import itertools

import numba
import numpy as np
import scipy.sparse as sp

from lsr.index.build import build_index
from lsr.index.live import open_single_segment
from lsr.index.scorers.bmp import _numba_type_key, kernel_groups, kernel_segment
from lsr.index.sparse_batch import SparseBatch


def small_segment(path):
    docs = sp.random(60, 50, density=0.2, random_state=np.random.default_rng(0), format="csr", dtype=np.float32)
    docs.data = np.abs(docs.data) + 0.1
    build_index(path, [([f"d{i}" for i in range(60)], SparseBatch.from_scipy(docs), None)], 50, block_size=8,
                store_texts=False)
    return open_single_segment(path)


def variants(base, path):
    """The segment's kernel view (0), views that differ from it in one array's writability (1),
    dtype (3) or layout (4, 5), views of the same Numba type built otherwise (2: a read-only mask
    where it had none; 8: the segment opened again), and two the key splits where Numba may not
    (6: a misaligned array; 7: a Python int for a numpy one), which `kernel_segment` never makes."""
    live = np.ones(int(base.num_docs), dtype=np.uint8)
    readonly_live = live.copy()
    readonly_live.flags.writeable = False
    misaligned = np.frombuffer(bytes(8 * len(base.terms.entry_offsets) + 1), dtype=np.uint8)[1:].view(np.int64)
    yield base
    yield base._replace(live=live)  # writable
    yield base._replace(live=readonly_live)  # read-only, like the kernel view's own masks
    yield base._replace(terms=base.terms._replace(entry_offsets=base.terms.entry_offsets.astype(np.int32)))
    yield base._replace(blocks=base.blocks._replace(bm_dense=np.asfortranarray(base.blocks.bm_dense)))
    yield base._replace(term_scales=np.repeat(base.term_scales, 2)[::2])  # strided: layout A
    yield base._replace(terms=base.terms._replace(entry_offsets=misaligned))  # the key splits; Numba may not
    yield base._replace(num_docs=int(base.num_docs))  # a Python int: the key splits; Numba does not
    yield kernel_segment(open_single_segment(path), readonly_live)


def test_the_group_key_splits_exactly_where_numba_types_differ(tmp_path):
    base = kernel_segment(small_segment(tmp_path / "a"))
    items = list(variants(base, tmp_path / "a"))
    types = [numba.typeof(item) for item in items]
    keys = [_numba_type_key(item) for item in items]
    finer = {6, 7}  # a split there would cost a kernel call, no more
    for i, j in itertools.combinations(range(len(items)), 2):
        if types[i] != types[j]:
            assert keys[i] != keys[j], (i, j, types[i], types[j])
        elif not finer & {i, j}:
            assert keys[i] == keys[j], (i, j, keys[i], keys[j])
    assert len(set(types)) == 5 and types[0] == types[2] == types[8]  # the variants are what they claim
    groups = kernel_groups(items)  # a typed list per group: appending a mismatched item would raise
    assert sorted(len(g.segments) for g in groups) == sorted(keys.count(k) for k in set(keys))
