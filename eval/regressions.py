"""Regression figures: the bundled model's effectiveness on the local datasets, recorded once
and compared on every rerun within a tolerance (as pyserini's regressions do).

Each dataset runs as `lsr eval` runs it (a fresh index with the default settings, k = 1000) and
reports the dataset's own measures (``lsr.metrics.measures_for``): BEIR's for SciFact and
NFCorpus, TREC DL's (nDCG@10, R@1000 counting relevance >= 2) for the DL19 subset.

Usage:
    python eval/regressions.py --write            # rerun all and record eval/results/regressions.json
    python eval/regressions.py                    # rerun all and compare with the record
    python eval/regressions.py msmarco-dl19-mini  # one dataset
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "regressions.json"
DATASETS = ("beir/scifact/test", "beir/nfcorpus/test", "msmarco-dl19-mini")
TOLERANCE = 0.002  # machines and thread counts change float sums, never more than this


def run_dataset(dataset: str, work_dir: Path) -> dict[str, float]:
    """The bundled model's metrics on ``dataset`` (a fresh index in ``work_dir``)."""
    from lsr.eval.beir_runner import BeirRunConfig, run_beir

    report = run_beir(BeirRunConfig(dataset=dataset, out_dir=work_dir / dataset.replace("/", "-"),
                                    command=f"python eval/regressions.py {dataset}"))
    return report["systems"]["splade"]["metrics"]


def differences(expected: dict[str, float], found: dict[str, float], tolerance: float = TOLERANCE) -> list[str]:
    """One line per measure that is missing or moved by more than ``tolerance``."""
    problems = []
    for name, value in expected.items():
        if name not in found:
            problems.append(f"{name}: not reported")
        elif abs(found[name] - value) > tolerance:
            problems.append(f"{name}: {found[name]:.4f}, recorded {value:.4f} (tolerance {tolerance})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--write", action="store_true", help="record the figures instead of comparing")
    args = parser.parse_args(argv)
    from lsr.eval.report import machine_description

    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"tolerance": TOLERANCE, "datasets": {}}
    failed = False
    with tempfile.TemporaryDirectory() as work:
        for dataset in args.datasets:
            found = run_dataset(dataset, Path(work))
            if args.write:
                record["datasets"][dataset] = found
                print(f"{dataset}: recorded {found}")
                continue
            problems = differences(record["datasets"][dataset], found, record["tolerance"])
            failed |= bool(problems)
            print(f"{dataset}: {'OK' if not problems else '; '.join(problems)}")
    if args.write:
        record.update(model="bundled:splade-tiny", machine=machine_description(),
                      command="python eval/regressions.py --write " + " ".join(args.datasets))
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
