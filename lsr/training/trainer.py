"""The training loop.

A hand-written loop rather than the transformers `Trainer`: the regulariser weights follow
the optimizer step (quadratic warm-up), every checkpoint and the best model are saved in our
encoder format (indexable as they are), the dev evaluation builds a real index and searches
it like `lsr eval`, and a NaN or collapsed (all-zero) batch stops the run naming the step.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lsr.losses.contrastive import InfoNceLoss, group_scores
from lsr.losses.distillation import KlDivergenceLoss, MarginMseLoss
from lsr.losses.regularizers import build_regularizer, quadratic_warmup
from lsr.training.batches import BatchSampler
from lsr.training.checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from lsr.training.config import ExperimentConfig

MAX_GRAD_NORM = 1.0


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, collapsed vectors); the message names the step."""


@dataclass
class DevSplit:
    """A dev split: documents (re-iterable), queries and qrels."""

    name: str
    documents: object  # callable returning an iterator of Document
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus_name: str = ""


class Trainer:
    """Args:
        config: the resolved experiment config.
        trainable: a `TrainableEncoder`.
        sampler: the `BatchSampler` of the training set.
        devs: the dev splits (none: no evaluation, the final model is the best); the best
            checkpoint has the highest mean nDCG@10 over them.
    """

    def __init__(self, config: ExperimentConfig, trainable, sampler: BatchSampler, devs: list[DevSplit]) -> None:
        self.config = config
        self.trainable = trainable
        self.sampler = sampler
        self.devs = list(devs)
        self._dev_idf: dict[int, np.ndarray] = {}
        self.run_dir = Path(config.training.output_dir)
        reg = config.regularizer
        idf = trainable.query_weights.detach().clone().cpu() if trainable.inference_free else None
        self.query_regularizer = None if trainable.inference_free else build_regularizer(reg.query, reg.threshold)
        self.doc_regularizer = build_regularizer(reg.document, reg.threshold, idf, reg.min_idf)
        self.doc_groups = 1 + config.data.num_negatives if reg.per_group else 1
        if self.doc_regularizer is not None:
            self.doc_regularizer.to(trainable.device)
        self.ranking_loss = self._ranking_loss()
        t = config.training
        self.optimizer = torch.optim.AdamW(_parameter_groups(trainable, t), lr=t.learning_rate, weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)

    def _lr_factor(self, step: int) -> float:
        t = self.config.training
        if step < t.lr_warmup_steps:
            return (step + 1) / t.lr_warmup_steps
        return max(0.0, (t.max_steps - step) / max(1, t.max_steps - t.lr_warmup_steps))

    def _ranking_loss(self):
        loss = self.config.loss
        # The student's scores the teacher's are compared with: each query's own group, or (in-batch
        # distillation) every document of the batch, in the teacher matrix's column order.
        student = (lambda q, d: q @ d.T) if loss.teacher_in_batch else group_scores
        if loss.kind == "infonce" and loss.distillation_weight > 0:
            infonce = InfoNceLoss(loss.temperature, loss.in_batch_negatives)
            kl = KlDivergenceLoss(loss.temperature)
            return lambda q, d, teacher: (infonce(q, d) + loss.distillation_weight
                                          * kl(student(q, d), teacher * loss.teacher_scale))
        if loss.kind == "infonce":
            infonce = InfoNceLoss(loss.temperature, loss.in_batch_negatives)
            return lambda q, d, teacher: infonce(q, d)
        distill = MarginMseLoss() if loss.kind == "marginmse" else KlDivergenceLoss(loss.temperature)
        return lambda q, d, teacher: distill(student(q, d), teacher * loss.teacher_scale)

    # -- one optimizer step -------------------------------------------------------------

    def _micro_step(self, step: int, micro_batch: int) -> dict:
        batch = self.sampler.batch(micro_batch)
        queries = self.trainable.encode_queries(batch.queries)  # (batch, vocab)
        documents = self.trainable.encode_documents(batch.documents)  # (batch * group, vocab)
        self._check_collapse(step, queries, documents)
        teacher = None if batch.teacher is None else torch.from_numpy(batch.teacher).to(queries.device)
        ranking = self.ranking_loss(queries, documents, teacher)
        reg = self.config.regularizer
        lambda_q = quadratic_warmup(reg.query_weight, step, reg.warmup_steps)
        lambda_d = quadratic_warmup(reg.document_weight, step, reg.warmup_steps)
        query_reg = self.query_regularizer(queries) if self.query_regularizer is not None else queries.new_zeros(())
        doc_reg = (_per_group(self.doc_regularizer, documents, self.doc_groups) if self.doc_regularizer is not None
                   else queries.new_zeros(()))
        total = ranking + lambda_q * query_reg + lambda_d * doc_reg
        if not torch.isfinite(total):
            raise TrainingError(f"step {step}: the loss is {total.item()} (ranking {ranking.item()}, "
                                f"query regularizer {query_reg.item()}, document regularizer {doc_reg.item()}); "
                                "lower training.learning_rate or check the teacher scores")
        (total / self.config.training.gradient_accumulation_steps).backward()
        return {"loss": total.item(), "ranking_loss": ranking.item(), "query_regularizer": query_reg.item(),
                "document_regularizer": doc_reg.item(), "lambda_q": lambda_q, "lambda_d": lambda_d,
                "query_active_dims": _active(queries), "doc_active_dims": _active(documents)}

    def _check_collapse(self, step: int, queries: torch.Tensor, documents: torch.Tensor) -> None:
        if documents.count_nonzero() == 0:
            raise TrainingError(f"step {step}: every document vector of the batch is all zeros (collapsed); "
                                "lower regularizer.document_weight or raise regularizer.warmup_steps")
        if not self.trainable.inference_free and queries.count_nonzero() == 0:
            raise TrainingError(f"step {step}: every query vector of the batch is all zeros (collapsed); "
                                "lower regularizer.query_weight or raise regularizer.warmup_steps")

    def _optimizer_step(self, step: int) -> dict:
        accumulation = self.config.training.gradient_accumulation_steps
        parts = [self._micro_step(step, step * accumulation + i) for i in range(accumulation)]
        torch.nn.utils.clip_grad_norm_(self.trainable.module.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {key: float(np.mean([p[key] for p in parts])) for key in parts[0]}

    # -- the loop -----------------------------------------------------------------------

    def train(self, resume: str | bool = False) -> dict:
        """Run to ``training.max_steps``; returns the summary (also in ``summary.json``)."""
        t = self.config.training
        self.run_dir.mkdir(parents=True, exist_ok=True)
        step, best = 0, None
        checkpoint = resolve_resume(self.run_dir, resume)
        if checkpoint is not None:
            step, best = load_checkpoint(checkpoint, self.trainable, self.optimizer, self.scheduler)
            print(f"resumed from {checkpoint} at step {step}")
        self.trainable.module.train()
        log = open(self.run_dir / "train_log.jsonl", "a")
        progress = tqdm(total=t.max_steps, initial=step, desc="training", unit="step")
        started = time.perf_counter()
        window: list[dict] = []  # the steps since the last log line, averaged into it
        try:
            while step < t.max_steps:
                step_started = time.perf_counter()
                window.append({**self._optimizer_step(step), "seconds_per_step": time.perf_counter() - step_started})
                step += 1
                progress.update(1)
                if step % t.logging_steps == 0 or step == t.max_steps:
                    values = {key: float(np.mean([w[key] for w in window])) for key in window[0]}
                    window = []
                    record = {"step": step, "epoch": round(self.sampler.epoch_of(step * t.gradient_accumulation_steps), 3),
                              "learning_rate": self.scheduler.get_last_lr()[0], **values}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    progress.set_postfix(loss=f"{values['loss']:.3f}", rank=f"{values['ranking_loss']:.3f}",
                                         q_reg=f"{values['query_regularizer']:.2f}",
                                         d_reg=f"{values['document_regularizer']:.2f}",
                                         q_dims=f"{values['query_active_dims']:.0f}",
                                         d_dims=f"{values['doc_active_dims']:.0f}")
                evaluate_now = (t.eval_steps and step % t.eval_steps == 0) or step == t.max_steps
                if evaluate_now and self.devs:
                    best = self._evaluate(step, best, log)
                if step % t.save_steps == 0 or step == t.max_steps:
                    save_checkpoint(self.run_dir, step, self.trainable, self.optimizer, self.scheduler, best,
                                    t.save_total_limit)
        finally:
            progress.close()
            log.close()
        self.trainable.save(self.run_dir / "final")
        summary = {"steps": step, "train_seconds": round(time.perf_counter() - started, 1), "best": best,
                   "final_model": str(self.run_dir / "final")}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _evaluate(self, step: int, best: dict | None, log) -> dict | None:
        """Save the model, index each dev corpus with it, search, score; keep the best by the
        mean nDCG@10 over the dev splits."""
        folder = self.run_dir / "evals" / f"step-{step}"
        encoder = self.trainable.encoder
        self.trainable.module.eval()
        try:
            self.trainable.save(folder / "model")
            saved_name, encoder.model_name = encoder.model_name, str(folder / "model")
            try:
                splits = [self._evaluate_split(number, dev, folder) for number, dev in enumerate(self.devs)]
            finally:
                encoder.model_name = saved_name
        finally:
            self.trainable.module.train()
        metrics = _mean([split["metrics"] for split in splits])
        efficiency = _mean([split["efficiency"] for split in splits])
        for split in splits:
            record = {"step": step, "dev": split["dev"], **{f"dev_{k}": v for k, v in split["metrics"].items()},
                      **{f"dev_{k}": split["efficiency"][k] for k in ("mean_doc_nnz", "mean_query_nnz", "flops_per_query")}}
            log.write(json.dumps(record) + "\n")
            print(f"step {step}: {split['dev']}: dev nDCG@10 {split['metrics']['nDCG@10']:.4f}, "
                  f"FLOPS/query {split['efficiency']['flops_per_query']:.0f}")
        log.flush()
        if len(splits) > 1:
            print(f"step {step}: mean dev nDCG@10 {metrics['nDCG@10']:.4f}")
        if best is None or metrics["nDCG@10"] > best["metrics"]["nDCG@10"]:
            if best is not None:
                shutil.rmtree(best["folder"], ignore_errors=True)
            best = {"step": step, "metrics": metrics, "efficiency": efficiency, "folder": str(folder),
                    "model": str(folder / "model"), "index": splits[0]["index"], "splits": splits}
            (self.run_dir / "best.json").write_text(json.dumps(best, indent=2) + "\n")
        else:
            shutil.rmtree(folder, ignore_errors=True)
        return best

    def _evaluate_split(self, number: int, dev: DevSplit, folder: Path) -> dict:
        """One dev split: its corpus indexed with the current model, its queries scored. An
        inference-free model with IDF query weights takes the IDF of that corpus for the
        duration, as it would when indexing it (`lsr eval`)."""
        from lsr.evaluation import evaluate_index
        from lsr.indexing import index_corpus

        index_dir = folder / ("index" if number == 0 else f"index-{number}")
        encoder = self.trainable.encoder
        swap_idf = self.trainable.inference_free and getattr(encoder, "query_weighting", "") == "idf"
        if swap_idf:
            weights = encoder.module.query_weights
            training_idf = weights.detach().clone()
            if number not in self._dev_idf:
                from lsr.encoders.inference_free import compute_idf

                texts = (doc.full_text() for doc in dev.documents())
                self._dev_idf[number] = compute_idf(texts, encoder.tokenizer, encoder.doc_max_length)
            with torch.no_grad():
                weights.copy_(torch.from_numpy(self._dev_idf[number]))
        try:
            index_corpus(dev.documents(), encoder, index_dir, dev.name, overwrite=True, show_progress=False)
            result = evaluate_index(encoder, index_dir, dev.queries, dev.qrels, self.config.training.eval_k)
        finally:
            if swap_idf:
                with torch.no_grad():
                    weights.copy_(training_idf)
        return {"dev": dev.name, "corpus": dev.corpus_name, "metrics": result["metrics"],
                "efficiency": result["efficiency"], "index": str(index_dir)}


def _parameter_groups(trainable, training) -> list[dict]:
    """The model's trainable parameters; learned query weights of an inference-free model get
    their own learning rate (a weight of about 1 to 10 per word piece moves nowhere at a
    transformer's rate) and no weight decay (which would pull every weight towards 0)."""
    table = trainable.query_weights if trainable.inference_free else None
    learned = table is not None and isinstance(table, torch.nn.Parameter)
    rest = [p for p in trainable.module.parameters() if p.requires_grad and not (learned and p is table)]
    groups = [{"params": rest}]
    if learned:
        rate = training.query_weights_learning_rate or training.learning_rate
        groups.append({"params": [table], "lr": rate, "weight_decay": 0.0})
    return groups


def _per_group(regularizer, documents: torch.Tensor, groups: int) -> torch.Tensor:
    """The regulariser of each group position's documents (rows ``g, g + groups, ...``), summed."""
    if groups == 1:
        return regularizer(documents)
    return sum(regularizer(documents[position::groups]) for position in range(groups))


def _mean(rows: list[dict]) -> dict:
    """Key by key mean of dicts of numbers (the first row's keys)."""
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]
            if all(isinstance(row.get(key), (int, float)) for row in rows)}


def _active(vectors: torch.Tensor) -> float:
    """Mean number of nonzero dimensions per row."""
    return float((vectors.detach() != 0).sum(dim=1).float().mean())
