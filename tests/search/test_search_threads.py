"""A search on tiny data runs its trials on threads of the calling process: no task process
starts, the refit and its test scores stay in the process, and every trial, its warnings and
the refitted model equal those of the same search on the engine's task processes."""

from __future__ import annotations

import os

import psutil
import pytest

from shardlearn.engine import engine
from shardlearn.search import _runner as runner
from shardlearn.search import loguniform, randint, search, uniform

# Row subsampling too: XGBoost draws its rows from a per-thread generator, so two trials training
# at once on threads of one process must draw what they would draw alone in a process.
SPACE = {"max_depth": randint(2, 6), "learning_rate": loguniform(0.05, 0.5), "n_estimators": 8,
         "subsample": uniform(0.5, 1.0)}  # fmt: skip


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def _search(dataset, **kw):
    with engine("local", workers=2) as eng:
        return search(dataset, engine=eng, verbose=0, seed=3, **kw)


def _trials(result):
    keys = ("trial", "rung", "params", "fold_scores", "status", "warnings")
    return sorted(tuple(repr(t[k]) for k in keys) for t in result.trials)


def _close(got, expected):
    if isinstance(expected, float):
        return got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if isinstance(expected, dict):
        return got.keys() == expected.keys() and all(_close(got[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return len(got) == len(expected) and all(map(_close, got, expected))
    return got == expected


@pytest.fixture(scope="module")
def on_task_processes(split_dataset):
    """The reference: the same search with its trials on the engine's task processes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "THREAD_CELLS", 0)
        return _search(split_dataset, models="xgboost", space=SPACE, trials=6)


def test_tiny_data_starts_no_process_and_gives_the_task_processes_results(
    split_dataset, on_task_processes
):
    with engine("local", workers=2) as eng:
        assert runner.placement(split_dataset, eng) == (runner.IN_THREADS, 2)
    before = _children()
    seen: list[set[int]] = []
    result = _search(split_dataset, models="xgboost", space=SPACE, trials=6,
                     callback=lambda board: seen.append(_children() - before))  # fmt: skip
    assert seen and not any(seen)  # no process started while the trials ran
    assert not _children() - before  # nor for the refit and its test scores
    assert {t["reuse"]["worker"] for t in result.trials} == {os.getpid()}
    assert result.reuse["most_reads_of_a_shard"] == 1
    assert _trials(result) == _trials(on_task_processes)
    assert result.best_params == on_task_processes.best_params
    # Scored here by one worker, there by two: sums of floats in another order.
    assert _close(result.test_metrics, on_task_processes.test_metrics)


def test_each_trial_on_a_thread_keeps_its_own_warnings(split_dataset):
    # max_iter=1 stops L-BFGS before it converges (a ConvergenceWarning); 200 converges.
    space = {"C": loguniform(1e-2, 1e2), "max_iter": [1, 200]}
    kw = {"models": "logistic", "space": space, "trials": 8, "refit": False}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "THREAD_CELLS", 0)
        reference = _search(split_dataset, **kw)
    result = _search(split_dataset, **kw)
    assert {t["reuse"]["worker"] for t in result.trials} == {os.getpid()}
    warned = {t["trial"]: bool(t["warnings"]) for t in result.trials}
    assert warned == {t["trial"]: t["params"]["max_iter"] == 1 for t in result.trials}
    assert any(warned.values()) and not all(warned.values())
    assert _trials(result) == _trials(reference)


def test_larger_data_keeps_the_task_processes(split_dataset, monkeypatch):
    with engine("local", workers=2) as eng:
        monkeypatch.setattr(runner, "THREAD_CELLS", split_dataset.num_rows("train") * 5 - 1)
        assert runner.placement(split_dataset, eng) == (runner.ONE_PROCESS, 2)
