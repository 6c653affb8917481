"""`index` is the bottom layer: it must work with torch and transformers unimportable."""

import subprocess
import sys

SCRIPT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'lsr', 'eval', 'service'):
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
import numpy as np, tempfile
from index.build import build_index
from index.format import Segment
from index.live import open_single_segment
from index.scorers.exhaustive import search
from index.sparse_batch import SparseBatch
with tempfile.TemporaryDirectory() as tmp:
    batch = SparseBatch.from_dicts([{1: 1.0, 2: 0.5}, {2: 2.0}], 4)
    build_index(tmp + '/ix', [(['a', 'b'], batch, None)], 4)
    docs, scores = search(open_single_segment(tmp + '/ix'), np.array([2]), np.array([1.0]), 2)
    assert docs.tolist() == [1, 0], docs
    # The dense part, fusion, the write-ahead log, flushes, merges and checks are index-layer code too.
    from index.fusion import fuse
    from index.live import LiveIndex
    from index.builder import SegmentBuilder
    from index.check import verify_index
    from index.dense import DenseIndex
    with SegmentBuilder(tmp + '/dense', 4, dense={'model': 'm', 'dim': 3}) as builder:
        builder.add(['a', 'b'], batch, dense=np.eye(3, dtype=np.float32)[:2])
        builder.finish()
    assert DenseIndex.open(tmp + '/dense').search(np.array([[0, 1, 0]]), 1)[0].tolist() == [[1]]
    live = LiveIndex(tmp + '/ix')
    live.add('c', 't', 'x', np.array([3]), np.array([1.0], np.float32))
    assert live.search_sparse(np.array([3]), np.array([1.0]), 1)[0] == ['c']
    live.flush()
    live.merge(max_segments=1)
    assert live.num_docs == 3 and verify_index(tmp + '/ix')[0] == []
    live.close()
    assert fuse((['a'], [1.0]), (['b'], [2.0]))[0] == ['a', 'b']
print('ok')
"""


def test_index_works_without_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
