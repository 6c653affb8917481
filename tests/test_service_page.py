"""The search page in headless Chromium (Debian chromium + chromium-driver) against a real server."""

from __future__ import annotations

from lsr.eval.page_browser import search_and_explain
from lsr.eval.server_process import ServerProcess


def test_page_searches_highlights_and_explains(served_index, tmp_path):
    with ServerProcess(served_index, log_path=tmp_path / "server.log") as server:
        seen = search_and_explain(server.url, "stem cell differentiation", "hybrid", tmp_path / "page.png")
    assert seen["results"] == 10 and "results in" in seen["status"]
    assert seen["marks"], "matching terms are highlighted in the result texts"
    assert seen["explain_terms"], "the explain view lists the matching terms"
    screenshot = tmp_path / "page.png"
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:4] == b"\x89PNG"
