"""TREC run files and the in-memory run type ``{query_id: {doc_id: score}}``."""

from __future__ import annotations

from pathlib import Path

Run = dict[str, dict[str, float]]


def write_trec_run(run: Run, path: str | Path, tag: str) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, best first within each query."""
    with open(path, "w", encoding="utf-8") as out:
        for query_id, hits in run.items():
            ranked = sorted(hits.items(), key=lambda item: -item[1])  # stable: keeps engine order on ties
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                out.write(f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> Run:
    run: Run = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if len(fields) != 6:
                raise ValueError(f"{path}:{line_number}: expected 6 fields in a TREC run line, found {len(fields)}")
            run.setdefault(fields[0], {})[fields[2]] = float(fields[4])
    return run


def drop_self_hits(run: Run) -> Run:
    """BEIR's rule for some datasets (e.g. Quora, ArguAna): a doc whose id is the query id is removed."""
    return {qid: {doc: s for doc, s in hits.items() if doc != qid} for qid, hits in run.items()}
