"""Warm reuse on the engine's worker group: a search whose trials are forced onto the workers
(``execution="workers"``) has each worker process read each of its shards once and build each
fold's feature block and XGBoost matrix once, not once per trial; workers killed mid-search
are replaced and the search ends with the same scores; nothing depends on whether warm data
was kept; the refit reads only what the trials did not."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from shardlearn import _warm
from shardlearn.engine import engine, local
from shardlearn.search import loguniform, randint, search

SPACE = {"max_depth": randint(2, 6), "learning_rate": loguniform(0.05, 0.5), "n_estimators": 4,
         "execution": "workers"}  # fmt: skip
SHARDS, FOLDS, WORKERS = 4, 2, 2  # small_dataset: 4 train shards


def _search(dataset, **kw):
    with engine("local", workers=WORKERS) as eng:
        return search(dataset, models="xgboost", space=SPACE, trials=10, cv=FOLDS, seed=3,
                      engine=eng, refit=False, verbose=0, **kw)  # fmt: skip


def _scores(result):
    return {t["trial"]: t["fold_scores"] for t in result.trials}


@pytest.fixture(scope="module")
def uncached(small_dataset):
    """The same search keeping nothing (a warm budget of 0 bytes in every process)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(_warm.BUDGET_ENV, "0")
        return _search(small_dataset)


def test_without_warm_data_every_trial_reads_its_shards_on_the_workers(uncached):
    assert [t["status"] for t in uncached.trials] == ["ok"] * 10
    reuse = uncached.reuse
    assert reuse["readers"] == WORKERS  # the reads happened on the worker processes
    # Every trial trains on a fold's shards and scores the other fold's: all 4, twice.
    assert reuse["shard_reads"] == 10 * FOLDS * SHARDS
    assert reuse["block_builds"] == 10 * FOLDS * WORKERS  # a training block per fold and worker
    assert reuse["matrix_builds"] == 10 * FOLDS * WORKERS  # and its share of XGBoost's matrix


def test_forced_worker_trials_read_each_shard_once_per_worker(small_dataset, uncached):
    result = _search(small_dataset)
    reuse = result.reuse
    assert reuse["workers"] == 1  # trials ran one at a time from this process
    assert reuse["preprocessor_fits"] == FOLDS  # preprocessing fitted once per fold
    # The preprocessing fits read every shard, each on one worker; the trials then read none.
    assert reuse["preprocessor_shard_reads"] == SHARDS
    assert reuse["shard_reads"] == 0 and reuse["hits"]["shard_reads"] > 0
    # One training block per fold and worker, reused by every later trial.
    assert reuse["block_builds"] == FOLDS * WORKERS
    assert reuse["hits"]["block_builds"] == 9 * FOLDS * WORKERS
    # XGBoost's matrices too: each worker bins its share of a fold once (with its peers).
    assert reuse["matrix_builds"] == FOLDS * WORKERS
    assert reuse["hits"]["matrix_builds"] == 9 * FOLDS * WORKERS
    assert reuse["refused"] == 0
    assert _scores(result) == _scores(uncached)
    assert result.best_score == uncached.best_score


def _is_worker(process: psutil.Process) -> bool:
    try:
        return any("main_from_fd" in part for part in process.cmdline())
    except psutil.NoSuchProcess:
        return False


def test_killed_warm_workers_are_replaced_and_the_search_ends_the_same(small_dataset, uncached):
    killed: list[int] = []

    def kill_the_warm_workers(board):
        if killed:
            return
        # After the first trial the group's processes wait, idle between fits, holding their
        # shards: the last ones put back in the idle pool. Only they are killed, not processes
        # of other engines (earlier tests' idle workers, task processes).
        workers = [proc.pid for proc in local._IDLE[-WORKERS:]]
        assert len(workers) == WORKERS
        assert all(_is_worker(psutil.Process(pid)) for pid in workers)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        killed.extend(workers)

    result = _search(small_dataset, callback=kill_the_warm_workers)
    assert killed
    assert [t["status"] for t in result.trials] == ["ok"] * 10
    reuse = result.reuse
    # The replacements read the shards again, each once, and kept them for later trials.
    assert reuse["shard_reads"] == SHARDS and reuse["readers"] == WORKERS
    assert reuse["most_reads_of_a_shard"] == 1
    assert reuse["block_builds"] == 2 * FOLDS * WORKERS  # before and after the kill
    assert reuse["matrix_builds"] == 2 * FOLDS * WORKERS  # rebuilt together with the survivors
    assert not set(killed) & set(psutil.pids())
    assert _scores(result) == _scores(uncached)
    assert result.best_score == uncached.best_score


@pytest.mark.parametrize("execution", ["auto", "workers"])
def test_the_refit_reads_only_what_the_trials_did_not(split_dataset, monkeypatch, execution):
    def refit(budget):
        monkeypatch.setenv(_warm.BUDGET_ENV, budget)
        with engine("local", workers=WORKERS) as eng:
            result = search(split_dataset, models="xgboost", trials=2, seed=3, engine=eng,
                            space={"max_depth": randint(2, 6), "n_estimators": 4,
                                   "execution": execution}, verbose=0)  # fmt: skip
        probabilities = result.best_model.predict_proba(split_dataset.read("test"))
        return result.reuse["refit"], result.test_metrics, probabilities

    warm, metrics, probabilities = refit("1000000000")
    cold, cold_metrics, cold_probabilities = refit("0")
    splits = {split: len(split_dataset.shards(split)) for split in ("train", "valid", "test")}
    # Without warm data the refit reads train + valid to train and the test shards to score;
    # on the workers also train + valid to fit the preprocessor (on threads it is fitted
    # ahead of the refit, once per search: FoldPreprocessors.for_refit).
    assert cold["shard_reads"] >= sum(splits.values()) + (execution == "workers") * (
        splits["train"] + splits["valid"]
    )
    # With it, the train shards (read by the trials' preprocessing and fits, in this process
    # or on the same workers) are not read again, and no shard is read twice by one process.
    assert warm["shard_reads"] <= splits["valid"] + splits["test"]
    if execution == "workers":
        assert warm["hits"]["shard_reads"] >= splits["train"]
    else:  # on threads its feature blocks (train + valid, test) were built ahead: no shard
        assert warm["shard_reads"] == warm["hits"]["shard_reads"] == 0
        assert warm["hits"]["block_builds"] == 2
    assert metrics == cold_metrics
    assert (probabilities == cold_probabilities).all()
