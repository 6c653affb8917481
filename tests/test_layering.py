"""`lsr.index` is the bottom layer: it must work with torch, transformers and every other
part of `lsr` unimportable (the `lsr` package itself is only a namespace that imports nothing)."""

import subprocess
import sys

SCRIPT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        parts = name.split('.')
        if parts[0] in ('torch', 'transformers') or (parts[0] == 'lsr' and len(parts) > 1 and parts[1] != 'index'):
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
import numpy as np, tempfile
from lsr.index.build import build_index
from lsr.index.format import Segment
from lsr.index.live import open_single_segment
from lsr.index.scorers.exhaustive import search
from lsr.index.sparse_batch import SparseBatch
with tempfile.TemporaryDirectory() as tmp:
    batch = SparseBatch.from_dicts([{1: 1.0, 2: 0.5}, {2: 2.0}], 4)
    build_index(tmp + '/ix', [(['a', 'b'], batch, None)], 4)
    docs, scores = search(open_single_segment(tmp + '/ix'), np.array([2]), np.array([1.0]), 2)
    assert docs.tolist() == [1, 0], docs
    # The dense part, fusion, the write-ahead log, flushes, merges and checks are index-layer code too.
    from lsr.index.fusion import fuse
    from lsr.index.live import LiveIndex
    from lsr.index.builder import SegmentBuilder
    from lsr.index.check import verify_index
    from lsr.index.dense import DenseIndex
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


def test_nothing_imports_the_folders_by_their_bare_names():
    """The folders index/, service/ and eval/ are lsr.index, lsr.service and lsr.eval once
    installed; a bare `from index...` (in code, or in a script string run by a child process)
    works only from a checkout's root, and there it loads a second copy of the module."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bare = re.compile(r"\b(from|import) (index|service|eval)(\.[a-z_]+)*( import |\s*$|\\n)")
    found = [f"{path.relative_to(root)}:{number}"
             for folder in ("lsr", "index", "service", "eval", "tests")
             for path in (root / folder).rglob("*.py")
             for number, line in enumerate(path.read_text().splitlines(), 1) if bare.search(line)]
    assert found == []
