"""Evaluation reports: one JSON with everything that moves the numbers, and a markdown table."""

from __future__ import annotations

import json
import platform
import shlex
import sys
from pathlib import Path

from lsr.metrics import MEASURES


def machine_description() -> dict:
    import os

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}


def markdown_table(systems: dict[str, dict]) -> str:
    """One row per system: the metrics, then efficiency columns where known."""
    measures = list(next(iter(systems.values()))["metrics"]) if systems else list(MEASURES)  # the dataset's
    columns = measures + ["mean doc nnz", "mean query nnz", "index MB", "encode s", "query encode ms", "search ms"]
    lines = ["| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, system in systems.items():
        cells = [f"{system['metrics'][m]:.4f}" for m in measures]
        eff = system.get("efficiency", {})
        for key, fmt in (
            ("mean_doc_nnz", "{:.1f}"),
            ("mean_query_nnz", "{:.1f}"),
            ("index_mb", "{:.1f}"),
            ("encode_seconds", "{:.1f}"),
            ("mean_query_encode_ms", "{:.2f}"),
            ("mean_search_ms", "{:.3f}"),
        ):
            cells.append(fmt.format(eff[key]) if eff.get(key) is not None else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


STAGES = ("sparse_encode", "sparse_search", "dense_encode", "dense_search", "fusion")


def stage_table(systems: dict[str, dict]) -> str:
    """Mean latency of each stage (ms per query) of the systems that record stages."""
    lines = ["| system | " + " | ".join(s.replace("_", " ") for s in STAGES) + " | total |",
             "|---" * (len(STAGES) + 2) + "|"]
    for name, system in systems.items():
        stages = system.get("efficiency", {}).get("stages_ms")
        if stages is None:
            continue
        cells = [f"{stages[s]:.3f}" if s in stages else "-" for s in STAGES]
        cells.append(f"{stages.get('total', sum(stages.get(s, 0.0) for s in STAGES)):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_result(out: Path, report: dict, markdown: str) -> None:
    """``OUT.json`` (the report) and ``OUT.md`` (its markdown) beside each other in eval/results."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown)


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2))
    md = [
        f"# {report['dataset']} ({report['split']}, {report['num_queries']} queries)",
        "",
        markdown_table(report["systems"]),
        "",
        "`query encode ms`: each query encoded alone, as a service does (mean over the first "
        "500 queries); `batched_query_encode_ms` in report.json encodes them all in batches.",
        "",
        *(["Latency per stage (ms per query, one query at a time):", "", stage_table(report["systems"]), ""]
          if any("stages_ms" in s.get("efficiency", {}) for s in report["systems"].values()) else []),
        "Settings: " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()),
        "",
        f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs.",
        f"Command: `{report['command']}`",
        "",
    ]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md))
    return json_path, md_path


def command_line(script: str, argv: list[str] | None) -> str:
    """How the report was made: ``python eval/SCRIPT ARGS`` (``argv`` None: this process's)."""
    return f"python eval/{script} " + shlex.join(sys.argv[1:] if argv is None else argv)


def publish(report: dict, markdown, script: str, argv: list[str] | None, out: Path | None) -> None:
    """Add the machine and the command to ``report``, print its ``markdown(report)``, and save
    both to ``out`` (`save_result`) when given."""
    report.update(machine=machine_description(), command=command_line(script, argv))
    text = markdown(report)
    print(text)
    if out:
        save_result(out, report, text)
