"""What sentence-transformers' `SparseEncoderTrainer` does as our loop does: exact resume, memory.

    python eval/st_trainer_check.py [--steps 8] [--out eval/results/st_trainer_check]

Two measurements behind the README's note on why training keeps its own loop.

1. Exact resume.
Our loop's resume is tested equal to an uninterrupted run (`tests/test_training.py`): weights
within 1e-6 after the same steps. Here the same check for the library's trainer: the bundled
SPLADE-tiny as a `SparseEncoder` (a fill-mask Transformer + max SpladePooling), SciFact train triples
(query, a relevant document, a random other one), `SpladeLoss` over
`SparseMultipleNegativesRankingLoss` with FLOPS on queries and documents (its quadratic weight
warm-up callback included). Run A trains ``--steps`` steps straight, saving a checkpoint half
way; run B is a fresh trainer resumed from A's half-way checkpoint (``resume_from_checkpoint``),
as after a crash. The report gives the largest weight difference between A and B at the end,
and the losses each logged after the checkpoint. One process, CPU, one thread.

2. Memory of one SPLADE training step on documents (forward, sum, backward; 16 SciFact
documents of up to 256 tokens, the bundled SPLADE-tiny, one thread): the library's modules
(the fill-mask Transformer's full ``(batch, tokens, vocab)`` logits, then SpladePooling)
against ours (`SpladeModule`: the vocabulary projected chunk by chunk and pooled, each chunk
recomputed in the backward pass). Each side runs in three fresh processes; the figure is the
growth of peak resident memory over the step, median of the three (dropout is on: the
vectors differ a little from run to run).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lsr.eval.report import publish


def triples(count: int, seed: int = 0) -> list[dict]:
    from lsr.data.datasets import resolve_dataset

    data = resolve_dataset("beir/scifact/train")
    texts = {doc.doc_id: doc.text for doc in data.iter_documents()}
    ids, queries, rows = sorted(texts), data.queries(), []
    generator = random.Random(seed)
    for query_id, relevant in sorted(data.qrels().items()):
        positive = next((d for d, grade in relevant.items() if grade > 0 and d in texts), None)
        if positive is None or query_id not in queries:
            continue
        negative = generator.choice([d for d in generator.sample(ids, 5) if d not in relevant])
        rows.append({"query": queries[query_id], "positive": texts[positive], "negative": texts[negative]})
        if len(rows) == count:
            break
    return rows


def train(rows: list[dict], out: Path, steps: int, resume_from: Path | None = None):
    from datasets import Dataset
    from sentence_transformers.sparse_encoder import (SparseEncoder, SparseEncoderTrainer,
                                                      SparseEncoderTrainingArguments)
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    from lsr.encoders.models import bundled_splade_path

    torch.manual_seed(0)
    model = SparseEncoder(modules=[Transformer(str(bundled_splade_path()), transformer_task="fill-mask",
                                               max_seq_length=64),
                                   SpladePooling(pooling_strategy="max")], device="cpu")
    loss = SpladeLoss(model, SparseMultipleNegativesRankingLoss(model), document_regularizer_weight=3e-3,
                      query_regularizer_weight=5e-3)
    arguments = SparseEncoderTrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=2e-5, warmup_ratio=0.1,
        save_steps=steps // 2, logging_steps=1, seed=0, data_seed=0, report_to=[], use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = SparseEncoderTrainer(model=model, args=arguments, train_dataset=Dataset.from_list(rows), loss=loss)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    losses = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}, losses


def step_memory(side: str) -> dict:
    """Peak resident memory before and after one forward/backward on 16 documents (this process)."""
    import resource

    from lsr.data.datasets import resolve_dataset
    from lsr.encoders.models import bundled_splade_path

    torch.set_num_threads(1)
    texts = [doc.text for _, doc in zip(range(16), resolve_dataset("beir/scifact/train").iter_documents())]
    if side == "sentence-transformers":
        from sentence_transformers.sparse_encoder import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

        model = SparseEncoder(modules=[Transformer(str(bundled_splade_path()), transformer_task="fill-mask",
                                                   max_seq_length=256), SpladePooling(pooling_strategy="max")],
                              device="cpu")
        model.train()
        features = model.tokenize(texts)
        encode = lambda: model(features)["sentence_embedding"]  # noqa: E731
    else:
        from lsr.training.config import ModelConfig
        from lsr.training.models import build_trainable

        trainable = build_trainable(ModelConfig(base=str(bundled_splade_path()), doc_max_length=256))
        trainable.module.train()
        encode = lambda: trainable.encode_documents(texts)  # noqa: E731
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    vectors = encode()
    vectors.sum().backward()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mb_before": before, "peak_mb_after": after, "step_mb": after - before, "seconds": seconds,
            "vocab": int(vectors.shape[1]), "nonzero_per_doc": float((vectors != 0).sum(1).float().mean())}


def measure_in_fresh_process(side: str) -> dict:
    output = subprocess.run([sys.executable, __file__, "--memory-probe", side], check=True, capture_output=True,
                            text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--memory-probe", choices=["sentence-transformers", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        print(json.dumps(step_memory(args.memory_probe)))
        return
    memory = {}
    for side in ("sentence-transformers", "ours"):  # three fresh processes each: the peak moves run to run
        runs = [measure_in_fresh_process(side) for _ in range(3)]
        memory[side] = {"runs": runs, "step_mb": float(np.median([r["step_mb"] for r in runs])),
                        "seconds": float(np.median([r["seconds"] for r in runs])),
                        "nonzero_per_doc": float(np.median([r["nonzero_per_doc"] for r in runs]))}
    torch.set_num_threads(1)
    rows = triples(8 * args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        straight, straight_losses = train(rows, Path(tmp) / "a", args.steps)
        checkpoint = Path(tmp) / "a" / f"checkpoint-{args.steps // 2}"
        resumed, resumed_losses = train(rows, Path(tmp) / "b", args.steps, resume_from=checkpoint)
    difference = max(float((straight[name] - resumed[name]).abs().max()) for name in straight)
    import sentence_transformers
    import transformers

    after = [step for step in sorted(straight_losses) if step > args.steps // 2]
    report = {
        "versions": {"sentence-transformers": sentence_transformers.__version__,
                     "transformers": transformers.__version__, "torch": torch.__version__},
        "steps": args.steps, "checkpoint_step": args.steps // 2,
        "max_weight_difference": difference, "exact_within_1e-6": difference <= 1e-6,
        "losses_after_checkpoint": {str(s): {"straight": straight_losses[s], "resumed": resumed_losses.get(s)}
                                    for s in after},
        "one_document_step_memory": memory,
    }
    publish(report, markdown, "st_trainer_check.py", argv, args.out)


def markdown(report: dict) -> str:
    lines = [f"sentence-transformers {report['versions']['sentence-transformers']} `SparseEncoderTrainer`: "
             f"{report['steps']} steps straight against resumed from the step-{report['checkpoint_step']} checkpoint.",
             "", f"- largest weight difference at the end: **{report['max_weight_difference']:.3g}** "
             f"({'exact' if report['exact_within_1e-6'] else 'not exact'} at our resume test's 1e-6)", "",
             "| step | loss straight | loss resumed |", "|---|---|---|"]
    lines += [f"| {s} | {v['straight']:.6f} | {v['resumed'] if v['resumed'] is None else format(v['resumed'], '.6f')} |"
              for s, v in report["losses_after_checkpoint"].items()]
    lines += ["", "One SPLADE training step on 16 documents of up to 256 tokens (forward, backward; fresh process each):",
              "", "| modules | peak memory growth MB (median of 3; each run) | seconds | nonzero dims per doc |",
              "|---|---|---|---|"]
    for side, m in report["one_document_step_memory"].items():
        each = ", ".join(f"{run['step_mb']:.0f}" for run in m["runs"])
        lines.append(f"| {side} | {m['step_mb']:.0f} ({each}) | {m['seconds']:.2f} | {m['nonzero_per_doc']:.0f} |")
    lines += ["", f"Command: `{report['command']}`; machine: {report['machine']}."]
    return "\n".join(lines)

if __name__ == "__main__":
    main()
