"""Warm reuse across the trials of a search: each process reads each shard once and bins each
fold once; the results equal the uncached path's; a killed warm worker is replaced; every
trial's time is broken down by fit phase."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from shardlearn import _warm
from shardlearn.engine import engine
from shardlearn.models._training.execution import PHASES
from shardlearn.search import _runner as runner
from shardlearn.search import loguniform, randint, search

SPACE = {"max_depth": randint(2, 6), "learning_rate": loguniform(0.05, 0.5), "n_estimators": 8}
SHARDS = 4  # small_dataset: 4 train shards, 2 folds


@pytest.fixture(autouse=True)
def task_processes(monkeypatch):
    """These tests are about the engine's task processes, which a search on data this small
    would not start (its trials would run on threads of this process)."""
    monkeypatch.setattr(runner, "THREAD_CELLS", 0)


def _search(dataset, eng, **kw):
    return search(dataset, models="xgboost", space=SPACE, trials=10, cv=2, seed=3, engine=eng,
                  refit=False, verbose=0, **kw)  # fmt: skip


def _scores(result):
    return {t["trial"]: t["fold_scores"] for t in result.trials}


@pytest.fixture(scope="module")
def uncached(small_dataset):
    """The same search with nothing kept (a warm budget of 0 bytes): every trial reads,
    transforms and bins its folds itself, as before warm reuse."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(_warm.BUDGET_ENV, "0")
        with engine("local", workers=2) as eng:
            return _search(small_dataset, eng)


def test_uncached_path_reads_every_shard_in_every_trial_and_says_so(uncached):
    assert [t["status"] for t in uncached.trials] == ["ok"] * 10
    # Each trial reads all 4 shards twice (trained on in one fold, scored in the other).
    assert uncached.reuse["shard_reads"] == 10 * 2 * SHARDS
    assert uncached.reuse["matrix_builds"] == 10 * 2
    assert uncached.reuse["refused"] > 0
    assert any(_warm.BUDGET_ENV in note for note in uncached.notes)


def test_a_ten_trial_search_reads_each_shard_once_per_worker_and_bins_each_fold_once(
    small_dataset, uncached, tmp_path
):
    with engine("local", workers=2) as eng:
        result = _search(small_dataset, eng, out=tmp_path)
    reuse = result.reuse
    workers = reuse["workers"]
    assert workers == 2  # both task processes ran trials
    assert reuse["most_reads_of_a_shard"] == 1
    assert reuse["shard_reads"] == SHARDS * workers
    assert reuse["matrix_builds"] == 2 * workers  # one per fold per process
    assert reuse["hits"]["matrix_builds"] == 10 * 2 - 2 * workers
    assert reuse["refused"] == 0 and reuse["preprocessor_fits"] == 2
    # Identical to the uncached path, trial by trial and fold by fold.
    assert _scores(result) == _scores(uncached)
    assert result.best_score == uncached.best_score
    assert json.loads((tmp_path / "result.json").read_text())["reuse"] == reuse


def test_in_process_trials_find_the_shards_the_preprocessing_read(small_dataset, uncached):
    with engine("local", workers=1) as eng:
        result = _search(small_dataset, eng)
    assert result.reuse["preprocessor_shard_reads"] == SHARDS
    assert result.reuse["shard_reads"] == 0  # the trials ran in the process that read them
    assert result.reuse["matrix_builds"] == 2
    assert _scores(result) == _scores(uncached)


def test_a_killed_warm_worker_is_replaced_and_the_search_ends_the_same(small_dataset, uncached):
    before = {child.pid for child in psutil.Process().children()}
    killed: list[int] = []  # the pid, then how many trials had finished

    def kill_a_warm_worker(board):
        if killed:
            return
        # After the first finished trial (the event we synchronise on), the engine's task
        # processes are up, and one of them has read its shards and binned its folds.
        workers = sorted(c.pid for c in psutil.Process().children() if c.pid not in before)
        assert workers, "no task process to kill"
        os.kill(workers[0], signal.SIGKILL)
        killed.extend([workers[0], len(board)])

    with engine("local", workers=2) as eng:
        result = _search(small_dataset, eng, callback=kill_a_warm_worker)
    assert killed
    assert [t["status"] for t in result.trials] == ["ok"] * 10
    pids = [t["reuse"]["worker"] for t in result.trials]
    assert killed[0] not in pids[killed[1] :]  # nothing finished on it after the kill
    assert len(set(pids) - {killed[0]}) >= 2  # a replacement ran trials beside the survivor
    assert result.reuse["most_reads_of_a_shard"] == 1  # the replacement read its own shards
    assert _scores(result) == _scores(uncached)
    assert result.best_score == uncached.best_score


def test_every_trial_breaks_its_time_down_by_fit_phase(small_dataset, tmp_path):
    with engine("local", workers=1) as eng:
        result = search(small_dataset, models="xgboost", space=SPACE, trials=2, cv=2, seed=3,
                        engine=eng, refit=False, verbose=0, out=tmp_path)  # fmt: skip
    for trial in result.trials:
        assert tuple(trial["timings"]) == PHASES
        assert trial["timings"]["train"] > 0 and trial["timings"]["evaluate"] > 0
        assert sum(trial["timings"].values()) <= trial["seconds"]
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["timings"] for line in logged] == [t["timings"] for t in result.trials]
    board = result.to_dict()["leaderboard"]
    assert all(tuple(row["timings"]) == PHASES for row in board)


def test_a_search_shares_the_default_warm_budget_among_its_processes(monkeypatch):
    monkeypatch.delenv(_warm.BUDGET_ENV, raising=False)
    whole = _warm.default_budget()
    assert whole > 0 and abs(_warm.default_budget(3) - whole / 3) <= 1
    monkeypatch.setenv(_warm.BUDGET_ENV, "1000")  # an explicit budget is per process
    assert _warm.default_budget(3) == 1000


def test_warm_data_beyond_the_budget_is_built_again_and_counted():
    builds: list[int] = []

    def build():
        builds.append(1)
        return b"x" * 10

    with _warm.scope("budget-test", budget=15) as counters:
        for key in ("a", "a", "b", "b"):
            _warm.fetch("block_builds", key, build, len)
    assert len(builds) == 3  # "a" kept; "b" did not fit beside it, so it was built twice
    assert counters.builds["block_builds"] == 3 and counters.hits["block_builds"] == 1
    assert counters.refused == 2
    with _warm.scope("another-search") as counters:  # a new scope drops the old values
        _warm.fetch("block_builds", "a", build, len)
    assert counters.builds["block_builds"] == 1
    _warm.release("another-search")
    assert _warm.fetch("block_builds", "a", build, len) == b"x" * 10  # outside: just built
    assert not _warm.active()


def test_shards_read_in_a_scope_give_what_the_files_give(small_dataset):
    shard = small_dataset.shards("train")[0]
    columns = ["x0", "y"]
    plain = (shard.read(), shard.read(["x1", "missing"]), list(shard.iter_batches(50, columns)))
    with _warm.scope("shard-test", budget=10**9) as counters:
        warm = (shard.read(), shard.read(["x1", "missing"]), list(shard.iter_batches(50, columns)))
        with pytest.raises(KeyError):  # as Parquet's iter_batches says of a missing column
            list(shard.iter_batches(columns=["missing"]))
    _warm.release("shard-test")
    assert counters.builds["shard_reads"] == 1 and counters.hits["shard_reads"] == 3
    assert warm[0].equals(plain[0]) and warm[1].equals(plain[1])
    assert [b.num_rows for b in warm[2]] == [b.num_rows for b in plain[2]]
    assert all(a.equals(b) for a, b in zip(warm[2], plain[2], strict=True))


def test_read_ahead_reads_each_shard_once_into_the_scope_on_its_threads(small_dataset, monkeypatch):
    """The preprocessing's shards are read ahead, several at once, into the calling code's
    scope: each file once, on the read-ahead threads, and the fit's reads are hits; outside a
    scope nothing is read."""
    import threading

    from shardlearn.data.dataset import Shard
    from shardlearn.search._runner import read_ahead

    shards = small_dataset.shards("train")
    readers, real = [], Shard._warm_table

    def warm_table(self):
        readers.append(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(Shard, "_warm_table", warm_table)
    read_ahead(shards)
    assert readers == []  # no scope: nothing would be kept
    with _warm.scope("read-ahead-test", budget=10**9) as counters:
        read_ahead(shards)
        tables = [shard.read() for shard in shards]
    _warm.release("read-ahead-test")
    assert counters.builds["shard_reads"] == len(shards) > 1
    assert counters.hits["shard_reads"] == len(shards)
    assert all(name.startswith("shardlearn-read") for name in readers[: len(shards)])
    assert all(table.equals(shard.read()) for table, shard in zip(tables, shards, strict=True))
