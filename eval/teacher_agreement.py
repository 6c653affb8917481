"""How often the ensemble teacher agrees with the judged labels on the training groups.

    python eval/teacher_agreement.py --out eval/results/teacher_agreement

For each training query of a config's sources: every pair (judged positive, mined candidate
that is not a judged positive), and the share of pairs in which the teacher scores the
candidate higher. Reads the negatives and teacher scores training cached (computes them when
missing, as `lsr train` would). Issue 15's dev findings cite it: where the teacher and the
labels disagree, a KL from the teacher and a loss on the labels pull apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lsr.eval.report import publish

DEFAULT_CONFIG = "eval/configs/splade_scifact_nfcorpus.yaml"


def agreement(training_set, scores: dict[str, dict[str, float]], source_names: list[str]) -> dict:
    """Per source (by name; ``source_names`` in the order they were combined): queries, pairs,
    and the share of pairs whose candidate the teacher scores above the judged positive."""
    from lsr.training.data import source_of

    sources = {}
    for example in training_set.examples:
        source = source_names[source_of(example.query_id, len(source_names))]
        positives = set(example.positives)
        candidates = scores.get(example.query_id, {})
        judged = [candidates[d] for d in positives if d in candidates]
        others = [s for d, s in candidates.items() if d not in positives]
        counts = sources.setdefault(source, {"queries": 0, "pairs": 0, "candidate_above": 0})
        counts["queries"] += 1
        counts["pairs"] += len(judged) * len(others)
        counts["candidate_above"] += sum(other > positive for positive in judged for other in others)
    for counts in sources.values():
        counts["share_candidate_above"] = counts["candidate_above"] / counts["pairs"] if counts["pairs"] else None
    return sources


def markdown(report: dict) -> str:
    lines = ["# The ensemble teacher against the judged labels on the training groups", "",
             f"Config: `{report['config']}`; sources: {', '.join(report['source_names'])}.", "",
             "| source | queries | (positive, candidate) pairs | teacher scores the candidate higher |",
             "|---|---|---|---|"]
    for name, counts in report["sources"].items():
        share = "-" if counts["share_candidate_above"] is None else f"{counts['share_candidate_above']:.3f}"
        lines.append(f"| {name} | {counts['queries']} | {counts['pairs']} | {share} |")
    lines += ["", f"Command: `{report['command']}`; machine: {report['machine']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="a training config with an ensemble teacher")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    from lsr.training.config import load_config
    from lsr.training.run import _negatives, _sources_and_dev_splits
    from lsr.training.teacher import ensemble_teacher

    config = load_config(args.config)
    if config.loss.teacher != "ensemble":
        parser.error(f"{args.config}: loss.teacher is {config.loss.teacher!r}, not 'ensemble'")
    training_set, _ = _sources_and_dev_splits(config)
    scores = ensemble_teacher(training_set, _negatives(config, training_set), config.data.cache_dir)
    names = list(config.data.train) if isinstance(config.data.train, list) else [config.data.train]
    report = {"config": args.config, "source_names": names, "sources": agreement(training_set, scores, names)}
    publish(report, markdown, "teacher_agreement.py", argv, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
