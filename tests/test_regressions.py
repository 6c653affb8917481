"""The bundled model's recorded effectiveness (eval/results/regressions.json), rerun (slow:
minutes per dataset; `python eval/regressions.py` runs the same)."""

import json

import pytest

from lsr.eval.regressions import DATASETS, RESULTS, differences, run_dataset


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_rerun_matches_the_record(tmp_path, dataset):
    record = json.loads(RESULTS.read_text())
    assert differences(record["datasets"][dataset], run_dataset(dataset, tmp_path), record["tolerance"]) == []


def test_differences_name_what_moved():
    assert differences({"nDCG@10": 0.5, "R@1000": 0.9}, {"nDCG@10": 0.5015}) == ["R@1000: not reported"]
    assert differences({"nDCG@10": 0.5}, {"nDCG@10": 0.497}) == ["nDCG@10: 0.4970, recorded 0.5000 (tolerance 0.002)"]
