"""Sparse-dense fusion chosen on dev, then measured once on test, against the better single system.

    python eval/fusion_sweep.py [--work runs/fusion] [--out eval/results/fusion_sweep]

For each dataset an index with both parts (the bundled SPLADE-tiny and the bundled
all-MiniLM-L6-v2) is built once under ``--work``; its dev and test queries are searched by each
system (k = 1000). Every fusion setting (RRF with k in 10, 20, 60, 100; convex over min-max or
z-scores with the sparse weight 0.1 to 0.9; adaptive, weighted per query by each list's score
distribution, `index.fusion.adaptive_fusion`) is scored on dev; the best by nDCG@10 on dev is
the dataset's choice, and every setting is then scored on test once. Dev splits: NFCorpus dev;
SciFact's train queries (the bundled model never trained on them). The DL19 subset has no dev
split: it gets the settings chosen on the other datasets' dev splits, applied as they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lsr.eval.report import publish

DATASETS = {  # test split -> the dev split its settings are chosen on (None: none)
    "beir/scifact/test": "beir/scifact/train",
    "beir/nfcorpus/test": "beir/nfcorpus/dev",
    "msmarco-dl19-mini": None,
}
SETTINGS = ([("rrf", {"rrf_k": k}) for k in (10, 20, 60, 100)]
            + [("convex", {"alpha": a / 10, "normalization": n}) for n in ("minmax", "zscore") for a in range(1, 10)]
            + [("adaptive", {})])
TOLERANCE = 0.005  # the issue's "at least the better single system minus 0.005"


def setting_name(method: str, options: dict) -> str:
    if method == "rrf":
        return f"rrf k={options['rrf_k']}"
    if method == "convex":
        return f"convex {options['normalization']} alpha={options['alpha']:.1f}"
    return method


def system_runs(dataset: str, index_dir: Path, out_dir: Path) -> tuple[dict, dict, dict, str, dict]:
    """The sparse and dense runs of ``dataset``'s queries (k = 1000), its qrels, main measure and measures."""
    from lsr.data.datasets import resolve_dataset
    from lsr.eval.beir_runner import BeirRunConfig, run_beir
    from lsr.eval.runfile import read_trec_run
    from lsr.metrics import measures_for

    run_beir(BeirRunConfig(dataset=dataset, index_dir=index_dir, out_dir=out_dir, mode="hybrid",
                           command=f"lsr eval beir {dataset} --mode hybrid --index {index_dir}"))
    measures = measures_for(dataset)
    return (read_trec_run(out_dir / "run.splade.trec"), read_trec_run(out_dir / "run.dense.trec"),
            resolve_dataset(dataset).qrels(), next(iter(measures)), measures)


def score_all(sparse: dict, dense: dict, qrels: dict, measures: dict, main: str) -> dict:
    from lsr.hybrid import fuse_runs
    from lsr.metrics import evaluate

    scores = {"sparse": evaluate(sparse, qrels, measures)[main], "dense": evaluate(dense, qrels, measures)[main]}
    for method, options in SETTINGS:
        fused, _ = fuse_runs(sparse, dense, 1000, method, **options)
        scores[setting_name(method, options)] = evaluate(fused, qrels, measures)[main]
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/fusion"))
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    results = {}
    for test, dev in DATASETS.items():
        index_dir = args.work / test.replace("/", "-") / "index"
        entry = {"dev_split": dev}
        for split, dataset in (("dev", dev), ("test", test)):
            if dataset is None:
                continue
            sparse, dense, qrels, main_measure, measures = system_runs(dataset, index_dir,
                                                                       args.work / dataset.replace("/", "-"))
            entry["measure"] = main_measure
            entry[split] = score_all(sparse, dense, qrels, measures, main_measure)
            print(test, split, json.dumps(entry[split]), flush=True)
        if dev is not None:
            fused = {name: value for name, value in entry["dev"].items() if name not in ("sparse", "dense")}
            entry["chosen_on_dev"] = max(fused, key=fused.get)
        results[test] = entry
    chosen = sorted({entry["chosen_on_dev"] for entry in results.values() if "chosen_on_dev" in entry})
    for entry in results.values():
        if "chosen_on_dev" not in entry:
            entry["applied_from_other_datasets"] = chosen
    publish({"datasets": results}, markdown, "fusion_sweep.py", argv, args.out)


def markdown(report: dict) -> str:
    lines = ["# Fusion of the bundled SPLADE-tiny and all-MiniLM-L6-v2: chosen on dev, measured on test", "",
             "| dataset (measure) | dev split | sparse | dense | better single | rrf k=60 | adaptive | chosen on dev | "
             "its test score | chosen - better single |", "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, entry in report["datasets"].items():
        test = entry["test"]
        better = max(test["sparse"], test["dense"])
        choices = [entry["chosen_on_dev"]] if "chosen_on_dev" in entry else entry["applied_from_other_datasets"]
        for choice in choices:
            margin = test[choice] - better
            flag = "" if margin >= -TOLERANCE else " (below)"
            lines.append(f"| {dataset} ({entry['measure']}) | {entry['dev_split'] or 'none: settings of the others'} | "
                         f"{test['sparse']:.4f} | {test['dense']:.4f} | {better:.4f} | {test['rrf k=60']:.4f} | "
                         f"{test['adaptive']:.4f} | {choice} | {test[choice]:.4f} | {margin:+.4f}{flag} |")
    lines += ["", "Every setting on every split (nDCG@10; DL19: its measure):", "",
              "| setting | " + " | ".join(f"{d} {s}" for d, e in report["datasets"].items() for s in ("dev", "test")
                                          if s in e) + " |",
              "|---|" + "---|" * sum(1 for e in report["datasets"].values() for s in ("dev", "test") if s in e)]
    names = list(next(iter(report["datasets"].values()))["test"])
    for name in names:
        cells = [f"{e[s][name]:.4f}" for e in report["datasets"].values() for s in ("dev", "test") if s in e]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{report['command']}`; machine: {report['machine']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
