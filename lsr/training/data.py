"""Training examples: a query, its positive documents, optional negatives and teacher scores.

Three sources, all turned into one `TrainingSet` (examples referring to documents by id, plus
the corpus mapping ids to text, which hard-negative mining indexes):

- a dataset id with a split (``beir/scifact/train``): queries with a qrel above 0;
- JSONL, one ``{"query": str, "positive": str, "negatives": [str]?, "scores": [float]?}``
  per line, where ``scores`` are teacher scores of the positive then each negative;
- MS MARCO-style triples TSV, ``query<TAB>positive<TAB>negative`` per line (lines with the
  same query are one example with several negatives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lsr.data.loaders import DataFormatError, iter_jsonl, open_text


@dataclass
class TrainingExample:
    query_id: str
    query: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    scores: list[float] | None = None  # teacher scores of positives[0] then each negative


@dataclass
class TrainingSet:
    name: str
    examples: list[TrainingExample]
    corpus: dict[str, str]  # doc id -> text (title and body)
    corpus_name: str = ""  # the dataset whose corpus this is (``beir/scifact``); the name if none

    def split_holdout(self, count: int) -> tuple["TrainingSet", dict[str, str], dict[str, dict[str, int]]]:
        """Hold the last ``count`` examples out as a dev split: (rest, dev queries, dev qrels)."""
        if count <= 0:
            return self, {}, {}
        if count >= len(self.examples):
            raise ValueError(f"data.dev_holdout={count} leaves no training example out of {len(self.examples)}")
        kept, held = self.examples[:-count], self.examples[-count:]
        queries = {e.query_id: e.query for e in held}
        qrels = {e.query_id: {doc: 1 for doc in e.positives} for e in held}
        return TrainingSet(self.name, kept, self.corpus, self.corpus_name), queries, qrels


def combine_training_sets(parts: list[TrainingSet]) -> TrainingSet:
    """Several sources trained on together. Each source's query and document ids get the
    prefix ``N:`` (its position) so that two corpora's ids never meet; one source stays as it is."""
    if len(parts) == 1:
        return parts[0]
    examples, corpus = [], {}
    for number, part in enumerate(parts):
        prefix = f"{number}:"
        corpus.update({prefix + doc_id: text for doc_id, text in part.corpus.items()})
        examples.extend(TrainingExample(prefix + e.query_id, e.query, [prefix + d for d in e.positives],
                                        [prefix + d for d in e.negatives], e.scores) for e in part.examples)
    return TrainingSet(" + ".join(part.name for part in parts), examples, corpus, " + ".join(p.corpus_name for p in parts))


def source_of(query_id: str, sources: int) -> int:
    """The position of the source a query id of `combine_training_sets` came from (its ``N:``
    prefix); 0 when there was one source, whose ids carry no prefix (and may hold a colon)."""
    return int(query_id.split(":", 1)[0]) if sources > 1 else 0


def corpus_name(dataset) -> str:
    """``beir/scifact`` for the dataset ``beir/scifact/train`` (any split of one corpus)."""
    suffix = f"/{dataset.split}"
    return dataset.name[: -len(suffix)] if dataset.name.endswith(suffix) else dataset.name


def load_training_set(source: str) -> TrainingSet:
    """Read training examples from a dataset id, a JSONL file or a triples TSV."""
    path = Path(source)
    if path.is_file() and ".jsonl" in path.suffixes:
        return _from_jsonl(path)
    if path.is_file() and (".tsv" in path.suffixes or ".txt" in path.suffixes):
        return _from_triples(path)
    if path.is_file():
        raise DataFormatError(f"{path}: expected a .jsonl or .tsv training file")
    return _from_dataset(source)


def _from_dataset(name: str) -> TrainingSet:
    from lsr.data.datasets import resolve_dataset

    dataset = resolve_dataset(name, split="train")
    qrels = dataset.qrels()
    queries = dataset.queries()
    corpus = {doc.doc_id: doc.full_text() for doc in dataset.iter_documents()}
    examples = []
    for query_id, judged in qrels.items():
        positives = [doc for doc, rel in judged.items() if rel > 0 and doc in corpus]
        if positives and query_id in queries:
            examples.append(TrainingExample(query_id, queries[query_id], positives))
    if not examples:
        raise ValueError(f"{name}: no query with a relevant document in split {dataset.split!r}")
    return TrainingSet(dataset.name, examples, corpus, corpus_name(dataset))


class _Corpus:
    """Gives each distinct text one id (``t0``, ``t1``, ...)."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def add(self, text: str) -> str:
        return self.ids.setdefault(text, f"t{len(self.ids)}")

    def texts(self) -> dict[str, str]:
        return {doc_id: text for text, doc_id in self.ids.items()}


def _string(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{where}: field {key!r} must be a non-empty string")
    return value


def _from_jsonl(path: Path) -> TrainingSet:
    corpus = _Corpus()
    examples = []
    for line_number, record in iter_jsonl(path):
        where = f"{path}:{line_number}"
        query = _string(record, "query", where)
        positive = corpus.add(_string(record, "positive", where))
        negatives = record.get("negatives", [])
        if not isinstance(negatives, list) or not all(isinstance(n, str) and n.strip() for n in negatives):
            raise DataFormatError(f"{where}: field 'negatives' must be a list of non-empty strings")
        scores = record.get("scores")
        if scores is not None:
            if (not isinstance(scores, list) or len(scores) != 1 + len(negatives)
                    or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)
                               for s in scores)):
                raise DataFormatError(f"{where}: field 'scores' must hold 1 + len(negatives) = "
                                      f"{1 + len(negatives)} finite numbers (the positive first)")
            scores = [float(s) for s in scores]
        negative_ids = [corpus.add(n) for n in negatives]
        if len(set([positive] + negative_ids)) != 1 + len(negative_ids):
            raise DataFormatError(f"{where}: field 'negatives' repeats a text or contains the positive")
        examples.append(TrainingExample(f"q{line_number}", query, [positive], negative_ids, scores))
    if not examples:
        raise DataFormatError(f"{path}: no training examples")
    return TrainingSet(str(path), examples, corpus.texts(), str(path))


def _from_triples(path: Path) -> TrainingSet:
    corpus = _Corpus()
    by_query: dict[tuple[str, str], TrainingExample] = {}
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or not all(p.strip() for p in parts):
                raise DataFormatError(f"{path}:{line_number}: expected 'query<TAB>positive<TAB>negative', "
                                      f"found {len(parts)} fields")
            query, positive, negative = parts
            key = (query, positive)
            example = by_query.get(key)
            if example is None:
                example = by_query[key] = TrainingExample(f"q{len(by_query)}", query, [corpus.add(positive)])
            example.negatives.append(corpus.add(negative))
    if not by_query:
        raise DataFormatError(f"{path}: no training triples")
    return TrainingSet(str(path), list(by_query.values()), corpus.texts(), str(path))
