"""`lsr` end to end on a 200-document SciFact subset with the bundled SPLADE model."""

import json
import subprocess
import sys


from lsr.cli import main


def lsr(*args):
    """Run the installed console script, as a user does."""
    return subprocess.run([sys.executable, "-m", "lsr.cli", *map(str, args)], capture_output=True, text=True)


def test_help_lists_only_working_commands():
    out = lsr("--help")
    assert out.returncode == 0
    for command in ("index", "search", "eval"):
        assert command in out.stdout


def test_index_verify_search_eval(tmp_path, scifact_subset):
    index_dir = tmp_path / "ix"
    out = lsr("index", scifact_subset / "corpus.jsonl", "--out", index_dir)
    assert out.returncode == 0, out.stderr
    assert "indexed 200 documents" in out.stdout

    out = lsr("index", "verify", index_dir)
    assert out.returncode == 0 and "every checksum and structure check passed" in out.stdout

    first = json.loads((scifact_subset / "corpus.jsonl").read_text().splitlines()[0])
    out = lsr("search", index_dir, first["title"], "-k", "3")
    assert out.returncode == 0, out.stderr
    rows = out.stdout.splitlines()[1:]
    assert len(rows) == 3 and rows[0].split()[1] == first["_id"]  # a doc's title finds it first
    assert first["title"][:40] in rows[0]

    run_dir = tmp_path / "run"
    assert main(["eval", "beir", str(scifact_subset), "--index", str(index_dir), "--out", str(run_dir), "-k", "100"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    metrics = report["systems"]["splade"]["metrics"]
    assert set(metrics) == {"nDCG@10", "Recall@100", "Recall@1000", "MRR@10"}
    assert metrics["nDCG@10"] > 0.5  # every judged doc is in this small corpus
    efficiency = report["systems"]["splade"]["efficiency"]
    assert efficiency["mean_doc_nnz"] > 50 and efficiency["mean_query_nnz"] > 5
    assert efficiency["index_mb"] > 0 and efficiency["mean_search_ms"] > 0
    assert (run_dir / "report.md").read_text().startswith("# ")
    assert len((run_dir / "run.splade.trec").read_text().splitlines()) > 0


def test_eval_builds_the_index_when_missing(tmp_path, scifact_subset):
    run_dir = tmp_path / "run"
    assert main(["eval", "beir", str(scifact_subset), "--out", str(run_dir), "-k", "10"]) == 0
    assert next((run_dir / "index").glob("commit-*.json")).is_file()
    assert (run_dir / "doc-vectors" / "values.npy").is_file()


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2"}\n')
    assert main(["index", str(bad), "--out", str(tmp_path / "ix")]) == 1
    assert "bad.jsonl:2: missing field 'text'" in capsys.readouterr().err
    assert not (tmp_path / "ix").exists()

    assert main(["eval", "beir", "beir/unknown/test"]) == 1
    assert "local ids:" in capsys.readouterr().err

    assert main(["index", "verify", str(tmp_path)]) == 1
    assert "is not an index: it has no commit file" in capsys.readouterr().out


def test_dense_index_hybrid_eval_and_compact(tmp_path, scifact_subset, encoder):
    import numpy as np

    from lsr.index.dense import read_dense_meta
    from lsr.index.live import LiveIndex, open_single_segment
    from lsr.encoders.dense import DenseEncoder

    index_dir = tmp_path / "ix"
    out = lsr("index", scifact_subset / "corpus.jsonl", "--out", index_dir, "--dense", "--dense-index", "hnsw",
              "--hnsw-m", "8", "--hnsw-ef-search", "32", "--segment-docs", "120")
    assert out.returncode == 0, out.stderr
    meta = read_dense_meta(open_single_segment(index_dir).path)  # two segments, merged into one
    assert (meta["kind"], meta["hnsw_m"], meta["ef_search"], meta["num_docs"]) == ("hnsw", 8, 32, 200)

    run_dir = tmp_path / "run"
    assert main(["eval", "beir", str(scifact_subset), "--index", str(index_dir), "--out", str(run_dir),
                 "-k", "100", "--mode", "hybrid"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert list(report["systems"]) == ["splade", "dense", "hybrid (adaptive)"]
    stages = report["systems"]["hybrid (adaptive)"]["efficiency"]["stages_ms"]
    assert set(stages) == {"sparse_encode", "sparse_search", "dense_encode", "dense_search", "fusion", "total"}
    assert report["settings"]["dense_index"] == "hnsw" and "Latency per stage" in (run_dir / "report.md").read_text()
    assert all(s["metrics"]["nDCG@10"] > 0.4 for s in report["systems"].values())

    first_id = open_single_segment(index_dir).doc_ids[0]
    live = LiveIndex(index_dir, writer="never")
    terms, weights = encoder.encode_documents(["a note on quokkas"]).row(0)
    live.add("quokka", "Quokka", "a note on quokkas", terms, weights, DenseEncoder().encode_documents(["a note on quokkas"])[0])
    live.delete(first_id)
    before = live.search_sparse(terms, weights, 1)
    out = lsr("index", "compact", index_dir)
    assert out.returncode == 0 and "2 logged writes into 1 segment of 200 documents" in out.stdout, out.stderr
    compacted = open_single_segment(index_dir)
    assert "quokka" in {compacted.doc_ids[i] for i in range(compacted.num_docs)}
    assert read_dense_meta(compacted.path)["kind"] == "hnsw" and lsr("index", "verify", index_dir).returncode == 0
    after = live.search_sparse(terms, weights, 1)  # the same reader, after the merge's commit
    assert after[0] == before[0] == ["quokka"] and np.isclose(after[1][0], before[1][0], rtol=0.02)


def test_eval_dense_mode_adds_the_dense_part(tmp_path, scifact_subset):
    index_dir = tmp_path / "plain"
    assert lsr("index", scifact_subset / "corpus.jsonl", "--out", index_dir, "--no-texts").returncode == 0
    from lsr.index.live import open_single_segment

    assert open_single_segment(index_dir).dense is None
    run_dir = tmp_path / "run"
    assert main(["eval", "beir", str(scifact_subset), "--index", str(index_dir), "--out", str(run_dir),
                 "-k", "10", "--mode", "dense"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    segment = open_single_segment(index_dir)  # replaced by a copy with a dense part (hard links)
    assert list(report["systems"]) == ["dense"] and segment.dense.num_docs == 200
    assert lsr("index", "verify", index_dir).returncode == 0
