"""A flipped byte or a truncation in any file of a segment or a commit: detected, never a crash,
never a silent answer (``eval/corruption_test.py`` runs the full 20 flips per file)."""

from __future__ import annotations

from lsr.eval.corruption_test import run


def test_one_flip_and_one_truncation_per_file(tmp_path):
    report = run(flips=1, work=tmp_path, seed=3)
    totals = report["totals"]
    assert totals["trials"] > 50 and len(report["by_file"]) >= 29  # every kind of file was damaged
    assert totals["crashes"] == 0, report["failures"]
    assert totals["verify_detects"] == totals["trials"], report["failures"]
    assert totals["checked_silent"] == 0 and totals["checked_unclear"] == 0, report["failures"]
