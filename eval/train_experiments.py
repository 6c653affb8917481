"""Issue 4's acceptance runs: train every experiment config, evaluate each model on BEIR, report.

    python eval/train_experiments.py --out eval/results/training_scifact

Each experiment is `lsr train CONFIG [overrides]` (skipped when its run directory already has
``summary.json``), then the best checkpoint (by dev nDCG@10) is evaluated on SciFact test (and
NFCorpus test for the inference-free models) with the same code as `lsr eval beir`, beside the
bundled SPLADE-tiny and BM25. The report (JSON, markdown, plot) goes to ``--out``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"


@dataclass
class Experiment:
    name: str
    config: str
    overrides: list[str] = field(default_factory=list)
    datasets: tuple[str, ...] = ("beir/scifact/test",)

    @property
    def run_dir(self) -> Path:
        return Path("runs/train") / self.name


def _curve_point(weight: str, eval_steps: int = 0) -> Experiment:
    """splade_scifact_finetune.yaml (lambda_d = 0.001) with another document regulariser weight."""
    name = f"splade_scifact_lambda_d_{weight}"
    return Experiment(name, "splade_scifact_finetune.yaml",
                      [f"regularizer.document_weight={weight}", f"training.output_dir=runs/train/{name}",
                       f"training.eval_steps={eval_steps}"])


BOTH = ("beir/scifact/test", "beir/nfcorpus/test")
EXPERIMENTS = [
    Experiment("splade_scifact_finetune", "splade_scifact_finetune.yaml"),  # lambda_d = 0.001
    Experiment("splade_scifact_distill_ensemble", "splade_scifact_distill_ensemble.yaml"),
    _curve_point("0.01", eval_steps=75),
    _curve_point("0.03"),
    _curve_point("0.1"),
    Experiment("inference_free_scifact_idf_flops", "inference_free_scifact_idf_flops.yaml", datasets=BOTH),
    Experiment("inference_free_scifact_flops", "inference_free_scifact_flops.yaml", datasets=BOTH),
    Experiment("unicoil_scifact", "unicoil_scifact.yaml"),
]


def train(experiment: Experiment) -> None:
    """`lsr train` in a child process (a clean process per run), unless already done."""
    if (experiment.run_dir / "summary.json").is_file():
        print(f"{experiment.name}: trained already ({experiment.run_dir})")
        return
    resume = ["--resume"] if (experiment.run_dir / "checkpoints").is_dir() else []
    command = [sys.executable, "-m", "lsr.cli", "train", str(CONFIGS / experiment.config),
               *experiment.overrides, *resume]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def train_chosen(description: str, experiments: list, argv: list[str] | None, default_out: Path | None,
                 out_help: str = "the report's path, without suffix") -> tuple[list, Path | None] | None:
    """The command line of an experiments script: train the experiments ``--only`` names (all by
    default; an unknown name is an error), then return them and ``--out`` for the report, or
    None with ``--train-only``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=default_out, help=out_help)
    parser.add_argument("--only", nargs="*", help="experiment names to run (default: all)")
    parser.add_argument("--train-only", action="store_true", help="train, do not evaluate")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - {e.name for e in experiments})
    if unknown:
        parser.error(f"unknown experiment {', '.join(unknown)}; known: {', '.join(e.name for e in experiments)}")
    chosen = [e for e in experiments if not args.only or e.name in args.only]
    for experiment in chosen:
        train(experiment)
    return None if args.train_only else (chosen, args.out)


def main(argv: list[str] | None = None) -> int:
    to_report = train_chosen(__doc__.splitlines()[0], EXPERIMENTS, argv, Path("eval/results/training_scifact"))
    if to_report is not None:
        from lsr.eval.train_report import evaluate_experiments

        evaluate_experiments(*to_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
