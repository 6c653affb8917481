"""`run_training`: from a resolved config to a trained model (data, negatives, teacher, loop)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from lsr.training.batches import BatchSampler, given_scores
from lsr.training.checkpoint import list_checkpoints
from lsr.training.config import ExperimentConfig, save_config
from lsr.training.data import TrainingSet, load_training_set
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

    training_set = load_training_set(config.data.train)
    training_set, dev = _dev_split(config, training_set)
    trainable = build_trainable(config.model, _idf_texts(config, training_set), config.training.device)
    negatives = _negatives(config, training_set)
    teacher = _teacher(config, training_set, negatives)
    sampler = BatchSampler(training_set, negatives, config.training.batch_size, config.data.num_negatives,
                           config.training.seed, teacher)
    print(f"training on {len(sampler.examples)} examples of {training_set.name} "
          f"({len(training_set.corpus)} documents); dev: {dev.name if dev else 'none'}")
    return Trainer(config, trainable, sampler, dev).train(resume)


def _dev_split(config: ExperimentConfig, training_set: TrainingSet) -> tuple[TrainingSet, DevSplit | None]:
    from lsr.data.loaders import Document

    if config.data.dev_holdout:
        kept, queries, qrels = training_set.split_holdout(config.data.dev_holdout)
        documents = lambda: (Document(d, "", text) for d, text in training_set.corpus.items())
        return kept, DevSplit(f"{training_set.name} (last {config.data.dev_holdout} queries held out)",
                              documents, queries, qrels)
    if config.data.dev:
        from lsr.data.datasets import resolve_dataset

        dataset = resolve_dataset(config.data.dev)
        qrels = dataset.qrels()
        queries = {q: text for q, text in dataset.queries().items() if q in qrels}
        return training_set, DevSplit(dataset.name, dataset.iter_documents, queries, qrels)
    return training_set, None


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
    from lsr.training.teacher import ensemble_teacher

    return ensemble_teacher(training_set, negatives, config.data.cache_dir)
