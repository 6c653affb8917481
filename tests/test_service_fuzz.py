"""Schemathesis against the service's own OpenAPI schema, on a real uvicorn server (slow)."""

from __future__ import annotations

import pytest

from lsr.eval.fuzz_service import run_fuzz


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(served_index_template, tmp_path):
    result = run_fuzz(served_index_template, max_examples=100, workdir=tmp_path)
    assert result["returncode"] == 0, result["output"][-5000:]
    assert "No issues found" in result["output"] and result["server_errors"] == 0
