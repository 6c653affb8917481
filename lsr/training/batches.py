"""Deterministic training batches: which queries, which positive, which negatives at each step.

Everything is a function of (seed, micro-batch number), never of earlier draws, so a run
resumed at step N sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsr.training.data import TrainingExample, TrainingSet


@dataclass
class Batch:
    queries: list[str]
    documents: list[str]  # per query: its positive, then its negatives (groups of equal size)
    # Teacher scores: (batch, group), each query's own documents, positive first; or, from
    # `TeacherVectors` (in-batch distillation), (batch, batch * group), every document of the batch.
    teacher: np.ndarray | None
    group_size: int


class BatchSampler:
    """Draws micro-batches of ``batch_size`` queries, each with a positive and its negatives.

    Args:
        training_set: examples and corpus.
        negatives: per query id, the pool negatives are drawn from (mined or given).
        batch_size: queries per micro-batch.
        num_negatives: negatives per query (0: in-batch negatives only).
        seed: the run's seed.
        teacher: per query id, teacher scores of documents; or a `TeacherVectors`, which scores
            each query against every document of its batch; None: no teacher.
    """

    def __init__(self, training_set: TrainingSet, negatives: dict[str, list[str]], batch_size: int,
                 num_negatives: int, seed: int, teacher=None) -> None:
        self.examples = [e for e in training_set.examples if num_negatives == 0 or negatives.get(e.query_id)]
        if len(self.examples) < batch_size:
            raise ValueError(f"{len(self.examples)} usable training examples, fewer than batch_size={batch_size}")
        self.corpus = training_set.corpus
        self.negatives = negatives
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.seed = seed
        self.teacher = teacher

    def epoch_of(self, micro_batch: int) -> float:
        return micro_batch * self.batch_size / len(self.examples)

    def batch(self, micro_batch: int) -> Batch:
        """The ``micro_batch``-th batch of the run (0-based)."""
        n = len(self.examples)
        first = micro_batch * self.batch_size
        picked = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, n)
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            picked.append(self.examples[order[offset]])
        rng = np.random.default_rng([self.seed, 1_000_003, micro_batch])
        groups = [self._group(example, rng) for example in picked]
        queries = [example.query for example in picked]
        documents = [self.corpus[d] for group in groups for d in group]
        if self.teacher is None:
            teacher = None
        elif hasattr(self.teacher, "scores"):
            teacher = self.teacher.scores([e.query_id for e in picked], [d for group in groups for d in group])
        else:
            teacher = [[self.teacher[e.query_id][d] for d in group] for e, group in zip(picked, groups)]
        teacher = None if teacher is None else np.asarray(teacher, dtype=np.float32)
        return Batch(queries, documents, teacher, 1 + self.num_negatives)

    def _group(self, example: TrainingExample, rng: np.random.Generator) -> list[str]:
        positive = example.positives[int(rng.integers(len(example.positives)))]
        if self.num_negatives == 0:
            return [positive]
        pool = self.negatives[example.query_id]
        replace = len(pool) < self.num_negatives
        chosen = rng.choice(len(pool), size=self.num_negatives, replace=replace)
        return [positive] + [pool[i] for i in chosen]


def given_scores(training_set: TrainingSet) -> dict[str, dict[str, float]]:
    """Teacher scores that came with the examples (``loss.teacher: file``)."""
    table = {}
    for example in training_set.examples:
        if example.scores is None:
            raise ValueError(f"loss.teacher=file but example {example.query_id} has no 'scores'")
        docs = [example.positives[0]] + example.negatives
        table[example.query_id] = dict(zip(docs, example.scores))
    return table
