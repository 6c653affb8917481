"""BMP, the Rust reference of Block-Max Pruning (PyPI ``bmp``), over our index through CIFF.

Our index is exported with `index.ciff.export_ciff` (uint8 impacts as term frequencies, term
strings = decimal term ids, our doc order) and converted by ``bmp.ciff2bmp`` at a block size;
both phases run in measured child processes (`eval.peers.base.run_build_child`). Queries are
given with our per-term scaled weights, like every engine over our impacts; BMP then rescales
them to ``ceil(32 w / max w)`` itself. BMP's known defects (it never scores the last block of
its candidate order, drops docs tying with its seeded threshold, keeps scores in u16) are its
own and show in its recall against its own quantised reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsr.eval.peers.base import BuildReport, phased_report, run_build_child
from lsr.index.format import Segment
from lsr.index.live import open_single_segment

_INSTALL_HINT = 'bmp is not installed: pip install "lsr-engine[bench]"'


def export(out_dir: Path, index_dir: str) -> dict:
    """Child phase 1: our index to ``out_dir/index.ciff``."""
    from lsr.index.ciff import export_ciff

    out_dir.mkdir(parents=True, exist_ok=True)
    path = export_ciff(open_single_segment(index_dir), out_dir / "index.ciff")
    return {"ciff_bytes": path.stat().st_size}


def convert(out_dir: Path, block_size: int) -> dict:
    """Child phase 2: ``bmp.ciff2bmp`` of the CIFF file, which is then removed."""
    import bmp

    ciff = out_dir / "index.ciff"
    bmp.ciff2bmp(ciff_file=str(ciff), output=str(out_dir / "index.bmp"), bsize=block_size, compress_range=False)
    ciff.unlink()
    return {}


class BmpEngine:
    """BMP's searcher over our index (safe at ``alpha = beta = 1`` up to its own defects)."""

    def __init__(self, block_size: int = 32, alpha: float = 1.0, beta: float = 1.0, build_threads: int = 1) -> None:
        try:
            import bmp  # noqa: F401
        except ImportError as error:
            raise ImportError(_INSTALL_HINT) from error
        self.block_size = block_size
        self.alpha, self.beta = alpha, beta
        self.build_threads = build_threads
        self.name = f"bmp(b={block_size},alpha={alpha},beta={beta})"
        self._searcher = None
        self._internal: dict[str, int] = {}

    def build_from_index(self, index: Segment, work_dir: Path) -> BuildReport:
        work_dir = Path(work_dir)
        first = run_build_child("lsr.eval.peers.bmp:export", work_dir, {"index_dir": str(index.path)},
                                threads=self.build_threads)
        second = run_build_child("lsr.eval.peers.bmp:convert", work_dir, {"block_size": self.block_size},
                                 threads=self.build_threads)
        self.open(work_dir / "index.bmp", index)
        notes = f"bmp.ciff2bmp bsize={self.block_size} from our CIFF export (uint8 impacts, our doc order)"
        return phased_report(first, second, work_dir, notes, first.result)

    def open(self, path: Path, index: Segment) -> None:
        import bmp

        self._searcher = bmp.Searcher(str(path))
        self._internal = index.internal_ids()

    def search(self, terms: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One query on the calling thread; weights as our scorers see them (scaled per term)."""
        query = {str(int(t)): float(w) for t, w in zip(terms, weights) if w > 0}
        if not query:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        try:
            ids, scores = self._searcher.search(query, k, self.alpha, self.beta)
        except BaseException as error:  # BMP panics (a BaseException) on a query with no known term
            if type(error).__name__ != "PanicException":
                raise
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        docs = np.fromiter((self._internal[i] for i in ids), dtype=np.int64, count=len(ids))
        return docs, np.asarray(scores, dtype=np.float32)
