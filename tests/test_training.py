"""The training loop on a tiny in-process model: the loss goes down, checkpoints load,
resume is exact, the dev evaluation runs, and NaN or collapse stops the run naming the step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lsr.training.config import load_config

WORDS = ["vitamin", "bone", "cell", "heart", "brain", "gene", "virus", "protein", "cancer", "blood",
         "muscle", "liver", "kidney", "lung", "skin", "sleep"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 1-layer BERT masked LM (random weights, no dropout) with the bundled tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from lsr.encoders.models import bundled_splade_path

    directory = tmp_path_factory.mktemp("tiny-mlm")
    tokenizer = AutoTokenizer.from_pretrained(bundled_splade_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = BertForMaskedLM(config)
    with torch.no_grad():  # most logits below zero: sparse vectors, as a trained SPLADE's
        model.get_output_embeddings().bias.fill_(-0.25)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    """Eight queries, each with one positive and two negatives built from distinct words."""
    lines = []
    for i in range(8):
        a, b = WORDS[i], WORDS[(i + 8) % 16]
        negatives = [f"{WORDS[(i + 3) % 16]} report", f"{WORDS[(i + 5) % 16]} study"]
        lines.append(json.dumps({"query": f"{a} {b}", "positive": f"{a} {b} findings", "negatives": negatives}))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tiny_model: Path, train_file: Path, out: Path, *extra: str):
    return load_config(None, [
        f"model.base={tiny_model}", "model.query_max_length=16", "model.doc_max_length=16",
        f"data.train={train_file}", "data.negatives=given", "data.num_negatives=2", f"data.cache_dir={out}/cache",
        "training.batch_size=8", "training.learning_rate=0.001", "training.max_steps=2", "training.logging_steps=1",
        "training.save_steps=1", f"training.output_dir={out}", *extra,
    ])


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_two_steps_lower_the_loss_and_write_a_loadable_checkpoint(tiny_model, train_file, tmp_path):
    from lsr.encoders.loading import load_encoder
    from lsr.training.run import run_training

    run_dir = tmp_path / "run"
    run_training(_config(tiny_model, train_file, run_dir, "regularizer.document_weight=0.0001",
                         "regularizer.query_weight=0.0001"))
    steps = [r for r in _log(run_dir) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    # Every step sees the same 8 examples (batch_size = the set), so step 2's loss is the
    # loss after one update on the very batch of step 1.
    assert steps[1]["ranking_loss"] < steps[0]["ranking_loss"] and steps[1]["loss"] < steps[0]["loss"]
    assert 0 < steps[0]["doc_active_dims"] < 5000
    for key in ("query_regularizer", "document_regularizer", "lambda_q", "lambda_d", "query_active_dims",
                "doc_active_dims", "learning_rate"):
        assert key in steps[0]
    encoder = load_encoder(str(run_dir / "checkpoints" / "step-2" / "model"))
    assert encoder.describe()["type"] == "splade" and encoder.encode_queries(["vitamin bone"]).nnz > 0
    assert (run_dir / "config.yaml").is_file() and (run_dir / "final" / "lsr_encoder.json").is_file()


def test_resume_continues_at_the_saved_step_and_matches_an_uninterrupted_run(tiny_model, train_file, tmp_path):
    import shutil

    from lsr.training.run import run_training

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_training(_config(tiny_model, train_file, straight, "training.max_steps=4", "training.save_steps=2"))
    run_training(_config(tiny_model, train_file, resumed, "training.max_steps=4", "training.save_steps=2"))
    # Make the second run look interrupted after step 2: drop what came later.
    shutil.rmtree(resumed / "checkpoints" / "step-4")
    shutil.rmtree(resumed / "final")
    state = torch.load(resumed / "checkpoints" / "step-2" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and state["optimizer"]["state"]  # Adam moments are saved
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(_config(tiny_model, train_file, resumed, "training.max_steps=4", "training.save_steps=2"))
    run_training(_config(tiny_model, train_file, resumed, "training.max_steps=4", "training.save_steps=2"),
                 resume=True)
    a = torch.load(straight / "checkpoints" / "step-4" / "trainer_state.pt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "step-4" / "trainer_state.pt", weights_only=False)
    for name, tensor in a["module"].items():
        torch.testing.assert_close(b["module"][name], tensor, rtol=0, atol=1e-6)
    torch.testing.assert_close(b["optimizer"]["state"][0]["exp_avg"], a["optimizer"]["state"][0]["exp_avg"])
    assert b["scheduler"]["last_epoch"] == a["scheduler"]["last_epoch"] == 4


def test_dev_evaluation_keeps_the_best_checkpoint(tiny_model, train_file, tmp_path):
    from lsr.training.run import run_training

    run_dir = tmp_path / "run"
    summary = run_training(_config(tiny_model, train_file, run_dir, "data.dev_holdout=2", "training.batch_size=4",
                                   "training.eval_steps=1"))
    evals = [r for r in _log(run_dir) if "dev_nDCG@10" in r]
    assert [r["step"] for r in evals] == [1, 2]
    for key in ("dev_mean_doc_nnz", "dev_mean_query_nnz", "dev_flops_per_query"):
        assert key in evals[0]
    best = json.loads((run_dir / "best.json").read_text())
    assert best["step"] == summary["best"]["step"]
    assert best["metrics"]["nDCG@10"] == max(r["dev_nDCG@10"] for r in evals)
    assert list(Path(best["index"]).glob("commit-*.json"))


def _trainer(tiny_model, train_file, out):
    from lsr.training.batches import BatchSampler
    from lsr.training.data import load_training_set
    from lsr.training.models import build_trainable
    from lsr.training.trainer import Trainer

    config = _config(tiny_model, train_file, out)
    training_set = load_training_set(str(train_file))
    negatives = {e.query_id: e.negatives for e in training_set.examples}
    sampler = BatchSampler(training_set, negatives, 8, 2, 0)
    trainable = build_trainable(config.model)
    return Trainer(config, trainable, sampler, []), trainable


def test_collapsed_vectors_stop_training_naming_the_step(tiny_model, train_file, tmp_path):
    from lsr.training.trainer import TrainingError

    trainer, trainable = _trainer(tiny_model, train_file, tmp_path / "run")
    with torch.no_grad():
        trainable.module.decoder.bias.fill_(-1e4)  # every logit negative: all-zero vectors
    with pytest.raises(TrainingError, match=r"step 0: every document vector .* all zeros"):
        trainer.train()


def test_nan_loss_stops_training_naming_the_step(tiny_model, train_file, tmp_path):
    from lsr.training.trainer import TrainingError

    trainer, trainable = _trainer(tiny_model, train_file, tmp_path / "run")
    with torch.no_grad():
        trainable.module.decoder.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"step 0: the loss is nan"):
        trainer.train()


def test_inference_free_and_unicoil_train_and_reload(tiny_model, train_file, tmp_path):
    from lsr.encoders.loading import load_encoder
    from lsr.training.run import run_training

    for kind, extra in (("inference-free", ["regularizer.document=idf_flops", "regularizer.document_weight=0.001"]),
                        ("unicoil", [])):
        run_dir = tmp_path / kind
        run_training(_config(tiny_model, train_file, run_dir, f"model.type={kind}", *extra))
        encoder = load_encoder(str(run_dir / "final"))
        assert encoder.describe()["type"] == kind
        queries = encoder.encode_queries(["vitamin bone"])
        if kind == "inference-free":  # tokenised queries weighted by IDF: one entry per word piece
            assert queries.nnz == 2 and np.all(queries.values > 0)
        assert _log(run_dir)[-1]["query_regularizer"] == 0.0 or kind == "unicoil"


@pytest.mark.parametrize("kind", ["marginmse", "kl", "infonce"])
def test_distillation_from_teacher_scores_in_the_file(tiny_model, tmp_path, kind):
    from lsr.training.run import run_training

    lines = []
    for i in range(8):
        a = WORDS[i]
        lines.append(json.dumps({"query": a, "positive": f"{a} result", "negatives": [f"{WORDS[i + 8]} note", "misc"],
                                 "scores": [9.0, 3.0 + i / 10, 1.0]}))
    train_file = tmp_path / "distill.jsonl"
    train_file.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / kind
    both = ["loss.distillation_weight=0.5"] if kind == "infonce" else []  # labels and teacher together
    run_training(_config(tiny_model, train_file, run_dir, f"loss.kind={kind}", "loss.teacher=file",
                         "loss.teacher_scale=1.0", *both))
    steps = [r for r in _log(run_dir) if "loss" in r]
    assert len(steps) == 2 and all(np.isfinite(r["ranking_loss"]) and r["ranking_loss"] > 0 for r in steps)
    assert steps[1]["ranking_loss"] < steps[0]["ranking_loss"]


def test_train_command_names_the_bad_config_key(tmp_path, capsys):
    from lsr.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  max_step: 3\n")
    assert main(["train", str(config)]) == 1
    assert "training.max_step" in capsys.readouterr().err


def test_gradient_accumulation_takes_that_many_micro_batches_a_step(tiny_model, train_file, tmp_path):
    from lsr.training.run import run_training

    run_dir = tmp_path / "run"
    run_training(_config(tiny_model, train_file, run_dir, "training.batch_size=4",
                         "training.gradient_accumulation_steps=2"))
    steps = [r for r in _log(run_dir) if "loss" in r]
    assert [r["epoch"] for r in steps] == [1.0, 2.0]  # 2 x 4 queries of the 8 per optimizer step


def test_two_sources_train_together_each_with_its_own_held_out_dev_split(tiny_model, train_file, tmp_path):
    """data.train as a list: ids of the two corpora never meet, each source holds its last
    queries out as a dev split of its own corpus, and the best checkpoint is chosen by the
    mean nDCG@10 over both splits."""
    from lsr.training.run import _sources_and_dev_splits, run_training

    second = tmp_path / "second.jsonl"
    second.write_text("".join(json.dumps({"query": f"{w} {w}", "positive": f"{w} {w} trial",
                                          "negatives": [f"{WORDS[(i + 1) % 16]} notes"]}) + "\n"
                              for i, w in enumerate(WORDS[:8])))
    run_dir = tmp_path / "run"
    config = _config(tiny_model, train_file, run_dir, f"data.train=[{train_file}, {second}]", "data.dev_holdout=2",
                     "data.num_negatives=1", "training.batch_size=4", "training.eval_steps=1")
    training_set, devs = _sources_and_dev_splits(config)
    assert len(training_set.examples) == 12 and len(devs) == 2
    assert len(training_set.corpus) == 24 + 16  # "t0" of each file stays two documents
    assert {doc.split(":")[0] for doc in training_set.corpus} == {"0", "1"}
    assert [set(d.queries) for d in devs] == [{"q7", "q8"}, {"q7", "q8"}]  # native ids, per corpus
    assert all(e.positives[0] in training_set.corpus and e.negatives[0] in training_set.corpus
               for e in training_set.examples)

    run_training(config)
    evals = [r for r in _log(run_dir) if "dev_nDCG@10" in r]
    assert len(evals) == 4 and {r["dev"] for r in evals} == {d.name for d in devs}
    best = json.loads((run_dir / "best.json").read_text())
    means = {step: np.mean([r["dev_nDCG@10"] for r in evals if r["step"] == step]) for step in (1, 2)}
    assert best["metrics"]["nDCG@10"] == pytest.approx(max(means.values()))
    assert best["step"] == max(means, key=means.get)
    assert [s["dev"] for s in best["splits"]] == [d.name for d in devs]
    assert all(list(Path(s["index"]).glob("commit-*.json")) for s in best["splits"])


def test_a_named_dev_split_covers_its_corpus_and_the_others_hold_out(monkeypatch, tiny_model, train_file, tmp_path):
    """A source whose corpus has a dev split in data.dev keeps all its queries."""
    from lsr.training import run

    config = _config(tiny_model, train_file, tmp_path / "run", "data.train=[beir/nfcorpus/train, beir/scifact/train]",
                     "data.dev=beir/nfcorpus/dev", "data.dev_holdout=100")
    training_set, devs = run._sources_and_dev_splits(config)
    assert [d.corpus_name for d in devs] == ["beir/nfcorpus", "beir/scifact"]
    assert devs[1].name.endswith("(last 100 queries held out)") and len(devs[1].queries) == 100
    nfcorpus = [e for e in training_set.examples if e.query_id.startswith("0:")]
    scifact = [e for e in training_set.examples if e.query_id.startswith("1:")]
    assert len(scifact) == 809 - 100 and len(nfcorpus) > 2000
    assert not set(devs[0].queries) & {e.query_id[2:] for e in nfcorpus}  # the dev queries are not trained on


def test_inference_free_dev_evaluation_takes_each_dev_corpus_idf(monkeypatch, tiny_model, train_file, tmp_path):
    """During a dev evaluation the IDF query weights are those of the dev corpus; after it,
    training goes on with the training corpus' IDF."""
    from lsr import evaluation
    from lsr.encoders.inference_free import compute_idf
    from lsr.training import run

    other_corpus = tmp_path / "other.jsonl"  # the training IDF comes from other texts than the dev corpus
    other_corpus.write_text("".join(json.dumps({"_id": f"o{i}", "text": f"{w} {WORDS[0]}"}) + "\n"
                                    for i, w in enumerate(WORDS)))
    config = _config(tiny_model, train_file, tmp_path / "run", "model.type=inference-free",
                     f"model.idf_corpus={other_corpus}", "regularizer.document=flops", "data.dev_holdout=2",
                     "training.batch_size=4")
    _, devs = run._sources_and_dev_splits(config)
    seen = []
    evaluate = evaluation.evaluate_index
    monkeypatch.setattr(evaluation, "evaluate_index",
                        lambda encoder, *args: (seen.append(encoder.module.query_weights.clone()), evaluate(encoder, *args))[1])
    training_idf = []
    build = run.build_trainable
    monkeypatch.setattr(run, "build_trainable", lambda *args: (t := build(*args), training_idf.append(t.query_weights.clone()))[0])
    run.run_training(config)

    dev_idf = compute_idf((d.full_text() for d in devs[0].documents()), _tokenizer(tiny_model), 16)
    assert len(seen) == 1 and torch.equal(seen[0], torch.from_numpy(dev_idf))
    assert not torch.equal(seen[0], training_idf[0])
    from lsr.encoders.loading import load_encoder

    assert torch.equal(load_encoder(str(tmp_path / "run" / "final")).module.query_weights, training_idf[0])


def _tokenizer(directory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def test_labels_and_teacher_loss_adds_the_weighted_kl_to_infonce():
    from lsr.losses.contrastive import InfoNceLoss, group_scores
    from lsr.losses.distillation import KlDivergenceLoss
    from lsr.training.trainer import Trainer

    config = load_config(None, ["loss.teacher=file", "loss.distillation_weight=0.25", "loss.teacher_scale=2.0"])
    trainer = Trainer.__new__(Trainer)
    trainer.config = config
    loss = trainer._ranking_loss()
    generator = torch.Generator().manual_seed(0)
    queries, documents = torch.rand(2, 30, generator=generator), torch.rand(6, 30, generator=generator)
    teacher = torch.rand(2, 3, generator=generator)
    expected = InfoNceLoss()(queries, documents) + 0.25 * KlDivergenceLoss()(group_scores(queries, documents), teacher * 2.0)
    torch.testing.assert_close(loss(queries, documents, teacher), expected)


def test_distillation_weight_needs_infonce_and_a_teacher():
    from lsr.training.config import ConfigError

    with pytest.raises(ConfigError, match="distillation_weight"):
        load_config(None, ["loss.distillation_weight=0.5"])
    with pytest.raises(ConfigError, match="distillation_weight"):
        load_config(None, ["loss.kind=kl", "loss.teacher=ensemble", "loss.distillation_weight=0.5"])


def test_per_group_flops_is_the_reference_formula():
    """Documents come query-major (query i owns rows i*g .. i*g+g-1); the reference reshapes
    them to (queries, group, vocab) and sums the FLOPS of each group position."""
    from lsr.losses.regularizers import FlopsLoss
    from lsr.training.trainer import _per_group

    documents = torch.rand(4 * 3, 20, generator=torch.Generator().manual_seed(1))
    reference = (documents.reshape(4, 3, 20).abs().mean(dim=0) ** 2).sum()
    torch.testing.assert_close(_per_group(FlopsLoss(), documents, 3), reference)
    torch.testing.assert_close(_per_group(FlopsLoss(), documents, 1), (documents.mean(dim=0) ** 2).sum())


def test_learned_query_weights_train_at_their_own_rate(monkeypatch, tiny_model, train_file, tmp_path):
    """model.query_weights: learned: the table moves (at training.query_weights_learning_rate,
    without weight decay) and the saved model searches with the learned weights."""
    from lsr.encoders.loading import load_encoder
    from lsr.training import run
    from lsr.training.run import build_trainable, run_training
    from lsr.training.trainer import _parameter_groups

    config = _config(tiny_model, train_file, tmp_path / "run", "model.type=inference-free", "model.query_weights=learned",
                     "regularizer.document=flops", "training.query_weights_learning_rate=0.5")
    trainable = build_trainable(config.model, iter(["vitamin bone findings", "cell heart"]))
    groups = _parameter_groups(trainable, config.training)
    assert groups[1] == {"params": [trainable.query_weights], "lr": 0.5, "weight_decay": 0.0}
    assert all(p is not trainable.query_weights for p in groups[0]["params"])
    starts = []
    monkeypatch.setattr(run, "build_trainable",
                        lambda *args: (t := build_trainable(*args), starts.append(t.query_weights.detach().clone()))[0])
    run_training(config)
    start = starts[0]
    final = load_encoder(str(tmp_path / "run" / "final"))
    assert final.describe()["query_weighting"] == "learned"
    moved = (final.module.query_weights - start).abs()
    assert moved.max() > 0.1  # a transformer's 0.001 would move them by about 0.002 in two steps
    assert int((moved > 0).sum()) < 200  # only word pieces of the training queries moved


def test_in_batch_distillation_scores_every_document_of_the_batch():
    """loss.teacher_in_batch: the sampler asks the teacher for each query against every
    document of the batch (column order = the batch's documents), and the loss compares them
    with the student's full score matrix."""
    from lsr.losses.distillation import KlDivergenceLoss
    from lsr.training.batches import BatchSampler
    from lsr.training.data import TrainingExample, TrainingSet
    from lsr.training.trainer import Trainer

    class Pairs:  # a teacher that names the pair it scored
        def scores(self, query_ids, doc_ids):
            return np.array([[int(q[1:]) * 100 + int(d[1:]) for d in doc_ids] for q in query_ids], dtype=np.float32)

    examples = [TrainingExample(f"q{i}", f"query {i}", [f"d{i}"]) for i in range(4)]
    corpus = {f"d{i}": f"document {i}" for i in range(12)}
    negatives = {f"q{i}": [f"d{4 + i}", f"d{8 + i}"] for i in range(4)}
    batch = BatchSampler(TrainingSet("t", examples, corpus), negatives, 2, 1, seed=3, teacher=Pairs()).batch(0)
    assert batch.teacher.shape == (2, 4)
    doc_numbers = [int(text.split()[1]) for text in batch.documents]
    query_numbers = [int(text.split()[1]) for text in batch.queries]
    assert batch.teacher.tolist() == [[q * 100 + d for d in doc_numbers] for q in query_numbers]

    config = load_config(None, ["loss.kind=kl", "loss.teacher=ensemble", "loss.teacher_in_batch=true",
                                "loss.teacher_scale=2.0"])
    trainer = Trainer.__new__(Trainer)
    trainer.config = config
    generator = torch.Generator().manual_seed(0)
    queries, documents = torch.rand(2, 30, generator=generator), torch.rand(4, 30, generator=generator)
    teacher = torch.rand(2, 4, generator=generator)
    torch.testing.assert_close(trainer._ranking_loss()(queries, documents, teacher),
                               KlDivergenceLoss()(queries @ documents.T, teacher * 2.0))


def test_in_batch_distillation_trains_with_the_real_ensemble_teacher(tiny_model, train_file, tmp_path):
    """End to end with the bundled dense and SPLADE teachers: their vectors are cached, and the
    in-batch KL loss is finite and goes down."""
    from lsr.training.run import run_training

    run_dir = tmp_path / "in-batch"
    run_training(_config(tiny_model, train_file, run_dir, "loss.kind=kl", "loss.teacher=ensemble",
                         "loss.teacher_in_batch=true", "loss.teacher_scale=5.0"))
    steps = [r for r in _log(run_dir) if "loss" in r]
    assert len(steps) == 2 and all(np.isfinite(r["ranking_loss"]) and r["ranking_loss"] > 0 for r in steps)
    assert steps[1]["ranking_loss"] < steps[0]["ranking_loss"]
    assert len(list((run_dir / "cache").glob("teacher-vectors-*.npz"))) == 1


def test_in_batch_distillation_needs_the_ensemble_teacher_and_a_kl_term():
    from lsr.training.config import ConfigError

    for bad in (["loss.kind=kl", "loss.teacher=file"], ["loss.kind=marginmse", "loss.teacher=ensemble"],
                ["loss.kind=infonce"]):
        with pytest.raises(ConfigError, match="teacher_in_batch"):
            load_config(None, [*bad, "loss.teacher_in_batch=true"])
    load_config(None, ["loss.teacher=ensemble", "loss.distillation_weight=1", "loss.teacher_in_batch=true"])
