"""Evaluation and report of `eval/train_experiments.py`: each trained model on BEIR beside
the bundled SPLADE-tiny and BM25, the acceptance checks, tables and the efficiency plot."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from lsr.eval.beir_runner import BeirRunConfig, run_beir
from lsr.eval.report import machine_description

EVAL_ROOT = Path("runs/train-eval")
FINETUNE_LAMBDA_D = 0.001  # regularizer.document_weight of eval/configs/splade_scifact_finetune.yaml


def _system(report: dict, name: str, **extra) -> dict:
    system = report["systems"][name]
    return {"metrics": system["metrics"], "efficiency": system["efficiency"], **extra}


def _baselines(dataset: str) -> dict[str, dict]:
    """Bundled SPLADE-tiny (siamese), its documents with IDF queries (untrained inference-free),
    and BM25 with its postings touched and latency."""
    from lsr.eval.baselines.bm25 import bm25_efficiency
    from lsr.data.datasets import resolve_dataset
    from lsr.encoders.inference_free import InferenceFreeEncoder
    from lsr.evaluation import evaluate_index

    out = EVAL_ROOT / "baselines" / dataset.replace("/", "-")
    report = run_beir(BeirRunConfig(dataset=dataset, index_dir=out / "index", out_dir=out, baseline="bm25",
                                    command="eval/train_experiments.py"))
    data = resolve_dataset(dataset)
    queries = {q: t for q, t in data.queries().items() if q in data.qrels()}
    bm25 = _system(report, "bm25 (pyserini)")
    bm25["efficiency"].update(bm25_efficiency(out / "bm25-lucene" / "index", queries))
    # The bundled model's documents with tokenised IDF queries: the inference-free start point.
    start = InferenceFreeEncoder.from_corpus(None, (d.full_text() for d in data.iter_documents()))
    untrained = evaluate_index(start, out / "index", queries, data.qrels(), 1000)
    return {
        "bundled SPLADE-tiny (siamese)": _system(report, "splade"),
        "bundled documents + IDF queries (inference-free, untrained)": {
            "metrics": untrained["metrics"], "efficiency": untrained["efficiency"]},
        "BM25 (pyserini)": bm25,
    }


def _model_for(experiment, dataset: str) -> tuple[str, Path | None]:
    """The best checkpoint's model and, when the dev corpus is this dataset's, its index."""
    best = json.loads((experiment.run_dir / "best.json").read_text())
    model = best["model"]
    if dataset == "beir/scifact/test":  # dev split = held-out SciFact train queries, same corpus
        return model, Path(best["index"])
    settings = json.loads((Path(model) / "lsr_encoder.json").read_text())
    if settings["type"] == "inference-free" and settings.get("query_weighting") == "idf":
        model = _with_corpus_idf(model, dataset, experiment.run_dir / f"model-idf-{dataset.replace('/', '-')}")
    return model, None


def _with_corpus_idf(model: str, dataset: str, out: Path) -> str:
    """The model with IDF query weights of the corpus it will index."""
    from lsr.data.datasets import resolve_dataset
    from lsr.encoders.loading import load_encoder

    if not (out / "lsr_encoder.json").is_file():
        encoder = load_encoder(model)
        encoder.set_idf(d.full_text() for d in resolve_dataset(dataset).iter_documents())
        encoder.save(out)
    return str(out)


def _evaluate(experiment, dataset: str) -> dict:
    from lsr.index.commit import generations

    model, index_dir = _model_for(experiment, dataset)
    out = EVAL_ROOT / experiment.name / dataset.replace("/", "-")
    index_dir = index_dir or out / "index"
    report = run_beir(BeirRunConfig(dataset=dataset, index_dir=index_dir, out_dir=out,
                                    model=None if generations(index_dir) else model,
                                    command="eval/train_experiments.py"))
    best = json.loads((experiment.run_dir / "best.json").read_text())
    summary = json.loads((experiment.run_dir / "summary.json").read_text())
    row = _system(report, "splade", model=model, step=best["step"], train_seconds=summary["train_seconds"],
                  config=experiment.config, overrides=experiment.overrides)
    if (Path(model) / "query_0_SparseStaticEmbedding").is_dir():
        row["postings_by_idf"] = postings_by_idf(index_dir, Path(model))
    return row


def postings_by_idf(index_dir: Path, model: Path) -> dict:
    """Where an inference-free index's postings sit: their mean IDF (the query weight they
    meet) and the share held by the terms of lowest IDF, the long, little-weighted lists."""
    import numpy as np
    from safetensors.numpy import load_file

    from lsr.index.live import LiveIndex
    from lsr.evaluation import posting_list_lengths

    with LiveIndex(index_dir, writer="never") as index:
        df = posting_list_lengths(index).astype(np.float64)
    idf = load_file(str(model / "query_0_SparseStaticEmbedding" / "model.safetensors"))["weight"].astype(np.float64)
    total = df.sum()
    low = idf < np.percentile(idf[df > 0], 10)  # the 10% most frequent word pieces among those indexed
    return {"mean_idf_of_postings": float((df * idf).sum() / total), "share_in_lowest_idf_decile": float(df[low].sum() / total)}


def evaluate_experiments(experiments, out: Path) -> dict:
    datasets = sorted({d for e in experiments for d in e.datasets})
    results = {"datasets": {}, "machine": machine_description(),
               "command": "python " + shlex.join(sys.argv)}
    for dataset in datasets:
        rows = _baselines(dataset)
        for experiment in experiments:
            if dataset in experiment.datasets:
                rows[experiment.name] = _evaluate(experiment, dataset)
        results["datasets"][dataset] = rows
    results["checks"] = acceptance_checks(results["datasets"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    plot(results["datasets"].get("beir/scifact/test", {}), out.with_suffix(".png"))
    print(markdown(results))
    return results


def acceptance_checks(datasets: dict) -> dict:
    checks = {}
    scifact = datasets.get("beir/scifact/test", {})
    base, tuned = scifact.get("bundled SPLADE-tiny (siamese)"), scifact.get("splade_scifact_finetune")
    if base and tuned:
        gain = tuned["metrics"]["nDCG@10"] - base["metrics"]["nDCG@10"]
        flops = tuned["efficiency"]["flops_per_query"] / base["efficiency"]["flops_per_query"]
        checks["finetune"] = {"ndcg_gain": gain, "flops_ratio": flops, "met": gain >= 0.02 and flops <= 1.25}
    for dataset, rows in datasets.items():
        idf, plain = rows.get("inference_free_scifact_idf_flops"), rows.get("inference_free_scifact_flops")
        if idf and plain:
            gain = idf["metrics"]["nDCG@10"] - plain["metrics"]["nDCG@10"]
            flops = idf["efficiency"]["flops_per_query"] / plain["efficiency"]["flops_per_query"]
            checks[f"idf_flops_vs_flops {dataset}"] = {"ndcg_gain": gain, "flops_ratio": flops,
                                                       "met": gain > 0 and flops <= 1.0}
    return checks


COLUMNS = (("nDCG@10", "metrics", "{:.4f}"), ("Recall@100", "metrics", "{:.4f}"),
           ("mean_doc_nnz", "efficiency", "{:.1f}"), ("mean_query_nnz", "efficiency", "{:.1f}"),
           ("flops_per_query", "efficiency", "{:.0f}"), ("mean_query_encode_ms", "efficiency", "{:.2f}"),
           ("mean_search_ms", "efficiency", "{:.3f}"))


def markdown(results: dict) -> str:
    lines = ["# Trained encoders on BEIR (issue 4)", ""]
    for dataset, rows in results["datasets"].items():
        lines += [f"## {dataset}", "", "| system | " + " | ".join(c for c, _, _ in COLUMNS) + " |",
                  "|---" * (len(COLUMNS) + 1) + "|"]
        for name, row in rows.items():
            cells = []
            for column, part, fmt in COLUMNS:
                value = row.get(part, {}).get(column)
                cells.append(fmt.format(value) if value is not None else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Training runs", "", "| run | config | overrides | best step | train s | postings by IDF |",
              "|---|---|---|---|---|---|"]
    for dataset, rows in results["datasets"].items():
        for name, row in rows.items():
            if "config" in row:
                idf = row.get("postings_by_idf")
                where = (f"mean IDF {idf['mean_idf_of_postings']:.2f}, {idf['share_in_lowest_idf_decile']:.1%} "
                         "in the lowest-IDF decile" if idf else "-")
                lines.append(f"| {name} ({dataset}) | {row['config']} | {' '.join(row['overrides']) or '-'} | "
                             f"{row['step']} | {row['train_seconds']:.0f} | {where} |")
    lines += ["", "## Checks", ""]
    for name, check in results["checks"].items():
        lines.append(f"- {name}: nDCG@10 gain {check['ndcg_gain']:+.4f}, FLOPS ratio {check['flops_ratio']:.2f}, "
                     f"{'met' if check['met'] else 'NOT met'}")
    lines += ["", "flops_per_query: postings a query touches (sum of its terms' document frequencies); "
              "BM25's from its Lucene index. Latencies: one thread, single queries, k=1000.",
              f"Machine: {results['machine']['platform']}, {results['machine']['cpus']} CPUs.",
              f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


def plot(rows: dict, path: Path) -> None:
    """nDCG@10 against FLOPS per query and against mean latency: the lambda_d curve, BM25."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = [(float(n.rsplit("_", 1)[1]), r) for n, r in rows.items() if n.startswith("splade_scifact_lambda_d_")]
    if "splade_scifact_finetune" in rows:
        curve.append((FINETUNE_LAMBDA_D, rows["splade_scifact_finetune"]))
    curve.sort(key=lambda point: point[0])
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in ((axes[0], "flops_per_query", "FLOPS per query (postings touched)"),
                             (axes[1], "mean_search_ms", "mean query latency, ms (1 thread, k=1000)")):
        xs = [r["efficiency"][key] for _, r in curve]
        ys = [r["metrics"]["nDCG@10"] for _, r in curve]
        axis.plot(xs, ys, "o-", label="SPLADE fine-tuned, by lambda_d")
        for (weight, _), x, y in zip(curve, xs, ys):
            axis.annotate(f"{weight:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for name, marker in (("bundled SPLADE-tiny (siamese)", "s"), ("BM25 (pyserini)", "*"),
                             ("splade_scifact_distill_ensemble", "D"), ("unicoil_scifact", "^")):
            if name in rows:
                axis.plot(rows[name]["efficiency"][key], rows[name]["metrics"]["nDCG@10"], marker,
                          markersize=10, label=name)
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("nDCG@10 (SciFact test)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
