"""Simulated power loss at every fsync of appends, flushes, commits and merges (``eval.crash_sim``)."""

from __future__ import annotations

import numpy as np
import pytest

from lsr.eval.crash_sim import IoRecorder, check_cut, initial_index, run_scenario
from lsr.index import storage


def record(tmp_path, seed: int, steps: int, kinds: tuple[str, ...]) -> IoRecorder:
    rng = np.random.default_rng(seed)
    path = tmp_path / "ix"
    initial = initial_index(path, rng, n=60)
    recorder = IoRecorder(path, initial)
    run_scenario(path, recorder, rng, steps, kinds, initial)
    return recorder


def failures(recorder: IoRecorder, tmp_path, every: int = 1) -> list[str]:
    rng = np.random.default_rng(99)
    problems = []
    for cut in recorder.cut_points[::every]:
        if problem := check_cut(recorder, cut, tmp_path, rng):
            problems.append(f"cut {cut}: {problem}")
    return problems


def test_every_cut_of_appends_flushes_merges_and_rebuilds_recovers(tmp_path):
    recorder = record(tmp_path, 0, 24, ("add", "add_many", "delete", "flush", "merge", "force_merge", "rebuild"))
    assert len(recorder.cut_points) > 100
    assert failures(recorder, tmp_path) == []


def test_the_harness_catches_an_append_acknowledged_before_its_fsync(tmp_path, monkeypatch):
    """A log whose appends skip fsync loses acknowledged writes at some cut: the check must see it."""
    real = storage.fsync_fd

    def fsync_all_but_appends(fd, path):
        if str(path).endswith(".wal") and __import__("os").fstat(fd).st_size > 0:
            return  # the bug: an append acknowledged without fsync
        real(fd, path)

    monkeypatch.setattr(storage, "fsync_fd", fsync_all_but_appends)
    recorder = record(tmp_path, 1, 8, ("add", "delete"))
    monkeypatch.setattr(storage, "fsync_fd", real)
    problems = failures(recorder, tmp_path)
    assert problems and all("missing" in p or "differ" in p for p in problems)


def test_the_harness_catches_a_commit_renamed_without_a_directory_fsync(tmp_path, monkeypatch):
    """A commit made visible without fsyncing its directory, then the log trimmed: a cut can
    lose both, so acknowledged writes vanish."""
    real = storage.write_atomic

    def no_directory_fsync(path, data):
        tmp = path.parent / f".{path.name}.tmp"
        tmp.write_bytes(data)
        storage.fsync_file(tmp)
        tmp.rename(path)  # the bug: the rename is never made durable

    monkeypatch.setattr(storage, "write_atomic", no_directory_fsync)
    monkeypatch.setattr("lsr.index.commit.storage.write_atomic", no_directory_fsync)
    recorder = record(tmp_path, 2, 10, ("add_many", "flush"))
    monkeypatch.setattr(storage, "write_atomic", real)
    problems = failures(recorder, tmp_path)
    assert problems, "a commit that is not durable must be caught"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_longer_scenarios_recover_at_every_cut(tmp_path, seed):
    recorder = record(tmp_path, 10 + seed, 60, ("add", "add_many", "delete", "flush", "merge", "force_merge", "rebuild"))
    assert failures(recorder, tmp_path) == []


def job_failures(tmp_path, seed: int, every: int) -> tuple[int, list[str]]:
    from lsr.eval.crash_job import check_job_cut, record_job

    recorder, collection, vectors, block_docs = record_job(tmp_path, np.random.default_rng(seed), num_docs=16)
    rng = np.random.default_rng(98)
    cuts = recorder.cut_points[::every] + recorder.cut_points[-1:]
    return len(recorder.cut_points), [f"cut {cut}: {problem}" for cut in cuts
                                      if (problem := check_job_cut(recorder, cut, collection, vectors, block_docs,
                                                                   tmp_path, rng))]


def test_cuts_of_an_indexing_job_recover_when_it_runs_again(tmp_path):
    cuts, problems = job_failures(tmp_path, 0, every=30)
    assert cuts > 100 and problems == []


def test_the_harness_catches_float_vectors_kept_without_fsync(tmp_path, monkeypatch):
    """A job whose blocks' float vectors (what the final merge reads) are not made durable
    before the block's commit cannot finish after some cuts: the check must see it."""
    real = storage.fsync_tree

    def skip_floats(root):
        if "floats-" not in str(root):
            real(root)

    monkeypatch.setattr(storage, "fsync_tree", skip_floats)
    monkeypatch.setattr("lsr.index.builder.storage.fsync_tree", skip_floats)
    _, problems = job_failures(tmp_path, 1, every=30)
    assert problems and all("after the job ran again" in p or "Error" in p for p in problems)


@pytest.mark.slow
def test_every_cut_of_an_indexing_job_recovers(tmp_path):
    cuts, problems = job_failures(tmp_path, 2, every=1)
    assert problems == []


def upgrade_recorder(tmp_path) -> IoRecorder:
    """An index of one format 1 segment with a delete file and logged writes, then
    ``lsr index upgrade`` run on it with its I/O recorded."""
    from lsr.eval.crash_sim import _vector
    from lsr.index.live import LiveIndex
    from lsr.index.upgrade import upgrade_index
    from tests.test_upgrade import _as_format_1

    rng = np.random.default_rng(7)
    path = tmp_path / "ix"
    acked = initial_index(path, rng, n=60)
    with LiveIndex(path, writer="required") as live:
        for doc_id in ("d3", "d17", "d40"):
            live.delete(doc_id)
            acked[doc_id] = None
        live.flush()  # the deletes become a delete file of the segment
        for i in range(4):  # and these stay in the log
            vector = _vector(rng)
            live.add_many([(f"n{i}", "", "", vector.indices, vector.data, None)])
            acked[f"n{i}"] = vector
    _as_format_1(path)
    recorder = IoRecorder(path, acked)
    storage.set_recorder(recorder)
    try:
        assert upgrade_index(path)["upgraded_segments"] == 1
    finally:
        storage.set_recorder(None)
    return recorder


def test_every_cut_of_a_segment_upgrade_recovers_when_it_runs_again(tmp_path):
    """Power lost at any fsync of `lsr index upgrade` (new segment, its deletes, the commit,
    the cleanup): running it again gives the index every acknowledged write, deletes kept,
    search equal to brute force."""
    from lsr.index.upgrade import upgrade_index

    recorder = upgrade_recorder(tmp_path)
    assert len(recorder.cut_points) > 10
    rng = np.random.default_rng(99)
    problems = [problem for cut in recorder.cut_points
                if (problem := check_cut(recorder, cut, tmp_path, rng, recover=upgrade_index))]
    assert problems == []
