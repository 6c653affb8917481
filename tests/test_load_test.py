"""The load test drives a real `lsr serve` with locust (headless, its own process) (slow)."""

from __future__ import annotations

import pytest

from lsr.eval import load_test


@pytest.mark.slow
def test_locust_load_with_a_crash_loses_no_acknowledged_write(served_index, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = load_test.run(served_index, clients=4, duration=12.0, write_fraction=0.3, restart_at=5, workers=1,
                           dataset="beir/scifact/test", work_dir=work)
    assert result["load_generator"].startswith("locust ")
    assert result["answered"] > 20 and result["5xx"] == 0 and result["4xx"] == 0
    assert result["restart"]["at_s"] == pytest.approx(5, abs=1)
    # locust counted every request the users logged; the failures are the refused or reset ones
    assert result["locust"]["requests"] == result["requests"]
    assert result["locust"]["failures"] == result["connection_errors"]
    writes = sum(result["by_kind"].get(kind, {"ok": 0})["ok"] for kind in ("add", "delete"))
    assert writes > 0
    for check in ("writes_verified_after_run", "writes_verified_after_second_restart"):
        assert result[check]["documents_checked"] > 0 and result[check]["lost_acknowledged_writes"] == 0
