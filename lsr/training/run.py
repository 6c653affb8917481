"""`run_training`: from a resolved config to a trained model (data, negatives, teacher, loop)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from lsr.training.batches import BatchSampler, given_scores
from lsr.training.checkpoint import list_checkpoints
from lsr.training.config import ExperimentConfig, as_list, save_config
from lsr.training.data import TrainingSet, combine_training_sets, corpus_name, load_training_set
from lsr.training.models import build_trainable
from lsr.training.trainer import DevSplit, Trainer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_training(config: ExperimentConfig, resume: str | bool = False) -> dict:
    """Train as configured; the run directory gets ``config.yaml``, logs, checkpoints and models."""
    run_dir = Path(config.training.output_dir)
    if not resume and list_checkpoints(run_dir):
        raise FileExistsError(f"{run_dir} already has checkpoints: pass --resume to continue it, "
                              "or another training.output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    seed_everything(config.training.seed)

    training_set, devs = _sources_and_dev_splits(config)
    trainable = build_trainable(config.model, _idf_texts(config, training_set), config.training.device)
    negatives = _negatives(config, training_set)
    teacher = _teacher(config, training_set, negatives)
    sampler = BatchSampler(training_set, negatives, config.training.batch_size, config.data.num_negatives,
                           config.training.seed, teacher)
    print(f"training on {len(sampler.examples)} examples of {training_set.name} "
          f"({len(training_set.corpus)} documents); dev: {'; '.join(d.name for d in devs) or 'none'}")
    return Trainer(config, trainable, sampler, devs).train(resume)


def _sources_and_dev_splits(config: ExperimentConfig) -> tuple[TrainingSet, list[DevSplit]]:
    """The training sources combined, and the dev splits: the named ones, then a held-out
    split of each source whose corpus has none of them."""
    from lsr.data.datasets import resolve_dataset

    devs = []
    for name in as_list(config.data.dev):
        dataset = resolve_dataset(name)
        qrels = dataset.qrels()
        queries = {q: text for q, text in dataset.queries().items() if q in qrels}
        devs.append(DevSplit(dataset.name, dataset.iter_documents, queries, qrels, corpus_name(dataset)))
    covered = {dev.corpus_name for dev in devs}
    kept = []
    for source in (load_training_set(name) for name in as_list(config.data.train)):
        if config.data.dev_holdout and source.corpus_name not in covered:
            source, queries, qrels = source.split_holdout(config.data.dev_holdout)
            devs.append(DevSplit(f"{source.name} (last {config.data.dev_holdout} queries held out)",
                                 _documents_of(source), queries, qrels, source.corpus_name))
        kept.append(source)
    return combine_training_sets(kept), devs


def _documents_of(training_set: TrainingSet):
    from lsr.data.loaders import Document

    return lambda: (Document(doc_id, "", text) for doc_id, text in training_set.corpus.items())


def _idf_texts(config: ExperimentConfig, training_set: TrainingSet):
    if config.model.type != "inference-free":
        return None
    if config.model.idf_corpus:
        from lsr.data.sources import open_corpus

        _, documents = open_corpus(config.model.idf_corpus)
        return (doc.full_text() for doc in documents)
    return iter(training_set.corpus.values())


def _negatives(config: ExperimentConfig, training_set: TrainingSet) -> dict[str, list[str]]:
    data = config.data
    if data.negatives == "none" or data.num_negatives == 0:
        return {}
    if data.negatives == "given":
        return {e.query_id: e.negatives for e in training_set.examples if e.negatives}
    from lsr.encoders.loading import load_encoder
    from lsr.training.mining import mine_hard_negatives

    miner = load_encoder(data.mining_model or config.model.base)
    return mine_hard_negatives(training_set, miner, data.cache_dir, data.mining_depth, data.mining_skip)


def _teacher(config: ExperimentConfig, training_set: TrainingSet, negatives: dict[str, list[str]]):
    if config.loss.teacher == "none":
        return None
    if config.loss.teacher == "file":
        return given_scores(training_set)
    from lsr.training.teacher import candidate_vectors, ensemble_teacher

    if config.loss.teacher_in_batch:  # any (query, document) pair of a batch is scored as it comes
        return candidate_vectors(training_set, negatives, config.data.cache_dir)
    return ensemble_teacher(training_set, negatives, config.data.cache_dir)
