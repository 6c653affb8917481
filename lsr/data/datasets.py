"""Dataset ids and folders: a corpus stream, queries and qrels behind one interface.

A dataset is named by an ir_datasets id (``beir/scifact/test``), which resolves to the local
copy under the data directory when one is there and to ir_datasets' own loader otherwise, or
by the path of a BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``,
``qrels/<split>.tsv``). ``beir/<name>`` without a split is ``beir/<name>/test``. The data
directory is ``$LSR_DATA_DIR``, or ``shared/data`` found beside the repository. A dataset that
is neither local nor reachable (no network, an id ir_datasets cannot fetch) is one
`DatasetUnavailableError` line that lists the local ids, never a traceback.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lsr.data.loaders import Document, iter_corpus, load_qrels, load_queries

# ir_datasets id -> (folder under the data directory, qrels split). Corpus-less entries
# (MS MARCO dev) take their documents from ir_datasets.
LOCAL_DATASETS: dict[str, tuple[str, str]] = {
    "beir/scifact/test": ("beir/scifact", "test"),
    "beir/scifact/train": ("beir/scifact", "train"),
    "beir/nfcorpus/test": ("beir/nfcorpus", "test"),
    "beir/nfcorpus/dev": ("beir/nfcorpus", "dev"),
    "beir/nfcorpus/train": ("beir/nfcorpus", "train"),
    "msmarco-passage/dev/small": ("msmarco-passage/beir-format", "dev"),
    # 5,000 passages and 43 judged DL19 queries: a smoke-test subset, not TREC DL 2019 itself
    "msmarco-dl19-mini": ("msmarco-dl19-mini", "test"),
}


class UnknownDatasetError(ValueError):
    """Neither a known id, an ir_datasets id, nor a BEIR folder."""


class DatasetUnavailableError(ValueError):
    """A dataset ir_datasets knows but could not load here (no local copy, no download)."""


def local_dataset_ids() -> list[str]:
    """The ids whose files are in the data directory."""
    root = data_dir()
    return sorted(name for name, (folder, _) in LOCAL_DATASETS.items()
                  if root is not None and (root / folder).is_dir())


@contextmanager
def _fetching(name: str):
    """ir_datasets' failures to fetch ``name`` (no network, a moved URL) as one line; its
    download logs go to a log file (`lsr.quiet`)."""
    from lsr.quiet import stderr_to_log

    try:
        with stderr_to_log("ir_datasets") as log:
            yield
    except (ImportError, UnknownDatasetError, DatasetUnavailableError):
        raise
    except Exception as error:  # requests, urllib and ir_datasets raise many kinds
        root = data_dir()
        raise DatasetUnavailableError(
            f"dataset {name!r} is not in the local data directory ({root or 'none found'}) and could not be "
            f"downloaded ({type(error).__name__}, details in {log}); local ids: "
            f"{', '.join(local_dataset_ids()) or 'none'}"
        ) from None


def data_dir() -> Path | None:
    """The local data directory: ``$LSR_DATA_DIR`` or ``../shared/data`` beside the checkout."""
    if env := os.environ.get("LSR_DATA_DIR"):
        return Path(env)
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


@dataclass
class Dataset:
    """A corpus, its queries and qrels for one split."""

    name: str
    split: str
    corpus_path: Path | None = None
    queries_path: Path | None = None
    qrels_path: Path | None = None
    ir_datasets_id: str | None = None

    def iter_documents(self) -> Iterator[Document]:
        """Stream the corpus (from the local file, else from ir_datasets)."""
        if self.corpus_path is not None:
            yield from iter_corpus(self.corpus_path)
            return
        name = self.ir_datasets_id or self.name
        with _fetching(name):  # the download happens before the first document comes
            docs = iter(_ir_datasets_load(name).docs_iter())
            first = next(docs, None)
        for doc in itertools.chain([first] if first is not None else [], docs):
            yield Document(doc.doc_id, getattr(doc, "title", "") or "", doc.text)

    def queries(self) -> dict[str, str]:
        if self.queries_path is not None:
            return load_queries(self.queries_path)
        name = self.ir_datasets_id or self.name
        with _fetching(name):
            return {q.query_id: q.text for q in _ir_datasets_load(name).queries_iter()}

    def qrels(self) -> dict[str, dict[str, int]]:
        if self.qrels_path is not None:
            return load_qrels(self.qrels_path)
        qrels: dict[str, dict[str, int]] = {}
        name = self.ir_datasets_id or self.name
        with _fetching(name):
            for row in _ir_datasets_load(name).qrels_iter():
                qrels.setdefault(row.query_id, {})[row.doc_id] = int(row.relevance)
        return qrels

    @property
    def slug(self) -> str:
        """A file-system friendly name (``beir-scifact-test``)."""
        return self.name.strip("/").replace("/", "-")


def beir_folder(folder: str | Path, split: str = "test", name: str | None = None) -> Dataset:
    """A dataset from a BEIR folder; the corpus is required, queries and qrels optional."""
    folder = Path(folder)
    corpus = _first_existing(folder, ("corpus.jsonl", "corpus.jsonl.gz"))
    if corpus is None:
        raise UnknownDatasetError(f"{folder}: no corpus.jsonl or corpus.jsonl.gz in this folder")
    queries = _first_existing(folder, ("queries.jsonl", "queries.jsonl.gz"))
    qrels = folder / "qrels" / f"{split}.tsv"
    return Dataset(name or folder.name, split, corpus, queries, qrels if qrels.is_file() else None)


def resolve_dataset(name: str, split: str = "test") -> Dataset:
    """Resolve a dataset id or folder path (see the module docstring).

    Raises:
        UnknownDatasetError: listing the known ids when nothing matches.
    """
    if Path(name).is_dir():
        return beir_folder(name, split)
    if name not in LOCAL_DATASETS and f"{name.rstrip('/')}/test" in LOCAL_DATASETS:  # beir/<name>: its test split
        name = f"{name.rstrip('/')}/test"
    local = LOCAL_DATASETS.get(name)
    root = data_dir()
    if local is not None and root is not None and (root / local[0]).is_dir():
        folder = root / local[0]
        corpus = _first_existing(folder, ("corpus.jsonl", "corpus.jsonl.gz"))
        queries = _first_existing(folder, ("queries.jsonl", "queries.jsonl.gz"))
        qrels = folder / "qrels" / f"{local[1]}.tsv"
        return Dataset(name, local[1], corpus, queries, qrels if qrels.is_file() else None, ir_datasets_id=name)
    if local is not None or _ir_datasets_knows(name):
        return Dataset(name, name.rsplit("/", 1)[-1], ir_datasets_id=name)
    raise UnknownDatasetError(
        f"unknown dataset {name!r}: not a file, a BEIR folder or an ir_datasets id; local ids: "
        f"{', '.join(local_dataset_ids()) or 'none'} (any other ir_datasets id works where it can be downloaded)"
    )


def _ir_datasets_knows(name: str) -> bool:
    try:
        import ir_datasets
    except ImportError:
        return False
    return name in ir_datasets.registry


def _ir_datasets_load(name: str):
    try:
        import ir_datasets
    except ImportError as error:
        raise ImportError('ir_datasets is needed for this dataset: pip install "lsr-engine[eval]"') from error
    return ir_datasets.load(name)
