"""The early refit: on threads, a slot the last trials leave idle refits the best so far.

Kept only when the last trials leave the same refit to do; either way the refitted model is
the one the plain refit gives (same trees, same parameters, same test scores), and the refit's
phases are reported. One trial is held back (an Event the search's callback sets once the other
two have finished), so which refit starts early does not depend on timing.
"""

from __future__ import annotations

import json
import threading

import pytest

from shardlearn.engine import engine
from shardlearn.models._training.execution import PHASES
from shardlearn.search import _runner as runner
from shardlearn.search import loguniform, randint, search, uniform
from shardlearn.search._refit import EarlyRefit, refit_best
from shardlearn.testing import run_cli

SPACE = {"max_depth": randint(2, 6), "learning_rate": loguniform(0.05, 0.5), "n_estimators": 8,
         "subsample": uniform(0.5, 1.0)}  # fmt: skip
TRIALS, SEED = 3, 5
HOLD_TIMEOUT = 120  # seconds; only reached if the search never finishes the other trials


def _search(dataset, **kw):
    with engine("local", workers=2) as eng:
        return search(dataset, models="xgboost", space=SPACE, trials=TRIALS, seed=SEED,
                      engine=eng, verbose=0, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def ranking(split_dataset):
    """The trials, best first (no refit)."""
    return [row["trial"] for row in _search(split_dataset, refit=False).leaderboard]


def _held_back(dataset, monkeypatch, trial):
    """The search, with ``trial`` finishing only after the other two have."""
    release, real = threading.Event(), runner.run_trial

    def run_trial(context, spec, *args):
        if spec["trial"] == trial:
            assert release.wait(HOLD_TIMEOUT), "the other trials never finished"
        return real(context, spec, *args)

    def callback(board):
        if len(board) == TRIALS - 1:
            release.set()

    monkeypatch.setattr(runner, "run_trial", run_trial)
    return _search(dataset, callback=callback)


def _search_with_hooks(dataset, monkeypatch, cores, widen, run_trial):
    """The search, with the early refit's ``cores``/``widen`` and the trials' run replaced."""
    monkeypatch.setattr(EarlyRefit, "cores", cores)
    monkeypatch.setattr(EarlyRefit, "widen", widen)
    monkeypatch.setattr(runner, "run_trial", run_trial)
    return _search(dataset)


def _plain_refit(dataset, result):
    with engine("local", workers=1) as eng:
        return refit_best(dataset, result.best_model_name, result.refit_params, eng)


def _same_model(result, plain):
    fitted = result.best_model.estimator
    assert fitted.booster_.save_raw("ubj") == plain.fitted.estimator.booster_.save_raw("ubj")
    assert fitted.get_params() == plain.fitted.estimator.get_params()
    assert result.test_metrics == plain.metrics


def test_an_early_refit_of_the_final_best_is_kept_and_equals_the_plain_refit(
    split_dataset, ranking, monkeypatch
):
    result = _held_back(split_dataset, monkeypatch, ranking[-1])
    assert [row["trial"] for row in result.leaderboard] == ranking
    assert result.refit_started_early
    _same_model(result, _plain_refit(split_dataset, result))


def test_an_early_refit_of_a_config_the_last_trial_beats_is_not_kept(
    split_dataset, ranking, monkeypatch
):
    result = _held_back(split_dataset, monkeypatch, ranking[0])  # the best finishes last
    assert [row["trial"] for row in result.leaderboard] == ranking
    assert not result.refit_started_early
    _same_model(result, _plain_refit(split_dataset, result))


def test_the_refit_and_every_trial_report_their_phases_in_the_json_output(
    capsys, split_dataset, tmp_path
):
    code, out, err = run_cli(capsys, "search", split_dataset.uri, "--model", "xgboost",
                             "--trials", "2", "--workers", "2", "--out", str(tmp_path / "out"),
                             "--json")  # fmt: skip
    assert code == 0, out + err
    summary = json.loads(out)
    fits = [(row["timings"], row["seconds"]) for row in summary["leaderboard"]]
    fits.append((summary["refit_timings"], summary["refit_seconds"]))
    for timings, seconds in fits:
        assert tuple(timings) == PHASES
        assert all(value >= 0 for value in timings.values())
        assert timings["train"] > 0 and timings["evaluate"] > 0
        assert sum(timings.values()) <= seconds
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["refit_timings"] == summary["refit_timings"]


def test_boosting_asks_for_its_cores_every_round_and_keeps_its_trees():
    """sharing_cores: the thread count may change between rounds (a search's refit takes the
    cores its last trials free) without changing a tree."""
    import numpy as np

    from shardlearn.models import XGBoostClassifier, sharing_cores

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = (X[:, 0] + rng.normal(size=400) > 0).astype(int)
    params = {"n_estimators": 6, "max_depth": 3, "subsample": 0.7, "execution": "in_process"}
    asked = []

    def cores():
        asked.append(1 if len(asked) < 3 else 2)
        return asked[-1]

    with sharing_cores(cores):
        shared = XGBoostClassifier(**params).fit(X, y)
    plain = XGBoostClassifier(**params).fit(X, y)
    assert asked == [1, 1, 1, 2, 2, 2]  # once per round
    config = json.loads(shared.booster_.save_config())
    assert config["learner"]["generic_param"]["nthread"] == "2"
    assert shared.booster_.save_raw("ubj") == plain.booster_.save_raw("ubj")


def test_the_early_refit_takes_every_core_once_the_trials_have_finished(
    split_dataset, ranking, monkeypatch
):
    """The kept early refit starts on one slot's cores and, from the round after the last
    trial ends, uses all of them; its model is the plain refit's. The last trial ends after the
    refit's second round, and its third waits for the trials to end."""
    import os

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: trials run one at a time and no refit starts early")
    two_rounds, widened, seen, wide = threading.Event(), threading.Event(), [], []
    real_cores, real_widen, real_run = EarlyRefit.cores, EarlyRefit.widen, runner.run_trial

    def cores(self):
        if len(seen) == 2:
            two_rounds.set()
            assert widened.wait(HOLD_TIMEOUT), "the trials never finished"
        seen.append(real_cores(self))
        return seen[-1]

    def widen(self, cores):
        wide.append(real_widen(self, cores))
        widened.set()
        return wide[-1]

    def run_trial(context, spec, *args):
        if spec["trial"] == ranking[-1]:  # the worst: the early refit's is the final best
            assert two_rounds.wait(HOLD_TIMEOUT), "no refit started early"
        return real_run(context, spec, *args)

    result = _search_with_hooks(split_dataset, monkeypatch, cores, widen, run_trial)
    assert result.refit_started_early
    slot = max(1, os.cpu_count() // 2)
    # All the cores on an idle machine; fewer on one other processes keep busy (usable_cores).
    assert slot <= wide[0] <= os.cpu_count()
    assert seen == [slot] * 2 + wide * (SPACE["n_estimators"] - 2)
    _same_model(result, _plain_refit(split_dataset, result))


def test_the_refit_data_is_built_once_ahead_and_its_preprocessing_fitted_once(
    split_dataset, ranking, monkeypatch
):
    """On threads, the refit's preprocessor (train + valid), feature blocks (train + valid,
    test) and boosting matrix are built at the search's start; the refit reads, transforms and
    bins nothing, its test metrics are evaluate's, and an early refit that is not kept shares
    the preprocessor with the refit that is."""
    from shardlearn.search import _search

    ready, real = threading.Event(), _search.prepare_refit

    def prepare_refit(*args):
        try:
            return real(*args)
        finally:
            ready.set()

    real_run = runner.run_trial

    def run_trial(context, spec, *args):  # every trial after the data is built ahead
        assert ready.wait(HOLD_TIMEOUT), "the refit's data was never built"
        return real_run(context, spec, *args)

    monkeypatch.setattr(_search, "prepare_refit", prepare_refit)
    monkeypatch.setattr(runner, "run_trial", run_trial)
    result = _held_back(split_dataset, monkeypatch, ranking[0])  # the early refit is dropped
    assert not result.refit_started_early
    ahead, refit = result.reuse["refit_prepared"], result.reuse["refit"]
    assert ahead["block_builds"] == 2 and ahead["shard_reads"] == 4  # train + valid, test
    assert ahead["matrix_builds"] == 1  # boosting's training matrix (the space's max_bin)
    assert refit["block_builds"] == refit["shard_reads"] == refit["matrix_builds"] == 0
    assert refit["hits"]["block_builds"] == 2 and refit["hits"]["matrix_builds"] == 1
    assert refit["hits"]["shard_reads"] == 0  # its test scores read the test rows' block
    assert result.reuse["refit_preprocessor_fits"] == 1
    assert result.refit_timings["preprocess"] == 0
    _same_model(result, _plain_refit(split_dataset, result))


@pytest.mark.parametrize(
    ("others", "usable"), [(0.0, 4), (0.4, 4), (0.6, 3), (1.5, 2), (3.0, 1), (9.0, 1)]
)
def test_a_refit_takes_only_the_cores_other_processes_leave_idle(others, usable):
    """4 cores, a slot's share of 1: a core another process keeps busy is not taken (XGBoost's
    threads would wait for the one that does not get it)."""
    from shardlearn.search._refit import usable_cores

    assert usable_cores(4, others, 1) == usable


def test_a_final_refit_of_another_model_than_the_early_one_fits_its_own_preprocessing(
    split_dataset, monkeypatch
):
    """Two models: the early refit is the best logistic so far, the boosting trial held back
    wins; the final refit fits the boosting profile's preprocessor after the trials (on the
    preprocessors' engine, still open) and equals the plain refit."""

    started, real_start, real_run = threading.Event(), EarlyRefit.start, runner.run_trial

    def start(self, model, params):
        real_start(self, model, params)
        started.set()

    def run_trial(context, spec, *args):
        if spec["model"] == "xgboost":  # t0001 of seed 1, between two logistic trials
            assert started.wait(HOLD_TIMEOUT), "no refit started early"
        return real_run(context, spec, *args)

    monkeypatch.setattr(EarlyRefit, "start", start)
    monkeypatch.setattr(runner, "run_trial", run_trial)
    space = {"xgboost": {"max_depth": randint(2, 6), "n_estimators": 8},
             "logistic": {"C": loguniform(1e-3, 1e2)}}  # fmt: skip
    with engine("local", workers=2) as eng:
        result = search(split_dataset, models=["logistic", "xgboost"], space=space, trials=3,
                        seed=1, engine=eng, verbose=0)  # fmt: skip
    assert result.best_model_name == "xgboost" and not result.refit_started_early
    assert result.reuse["refit_preprocessor_fits"] == 2  # the early refit's, the final one's
    _same_model(result, _plain_refit(split_dataset, result))


def test_no_matrix_is_built_ahead_when_max_bin_is_searched(split_dataset):
    """The refit's matrix depends on max_bin: searched, it is built by the refit."""
    space = {**SPACE, "max_bin": [16, 32]}
    with engine("local", workers=2) as eng:
        result = search(split_dataset, models="xgboost", space=space, trials=TRIALS, seed=SEED,
                        engine=eng, verbose=0)  # fmt: skip
    assert result.reuse["refit_prepared"]["block_builds"] == 2  # train + valid, test
    assert result.reuse["refit_prepared"]["matrix_builds"] == 0
    assert result.reuse["refit"]["matrix_builds"] == 1
    _same_model(result, _plain_refit(split_dataset, result))


def test_an_early_refit_the_last_trial_beats_stops_when_the_trials_end(
    split_dataset, ranking, monkeypatch
):
    """The best trial finishes once the early refit (of another configuration) has asked for
    its first round's cores; the refit is held before its second round until the trials have
    ended, and then ends there instead of training all its rounds before the final refit may
    start. The final refit is the plain one."""

    first, ended, calls = threading.Event(), threading.Event(), []
    real_cores, real_widen, real_run = EarlyRefit.cores, EarlyRefit.widen, runner.run_trial

    def cores(self):
        if threading.current_thread().name == "shardlearn-early-refit":
            calls.append(1)
            first.set()
            if len(calls) == 2:
                assert ended.wait(HOLD_TIMEOUT), "the trials never finished"
        return real_cores(self)

    def widen(self, cores):  # the search calls it once the trials have ended
        ended.set()
        return real_widen(self, cores)

    def run_trial(context, spec, *args):
        if spec["trial"] == ranking[0]:
            assert first.wait(HOLD_TIMEOUT), "no refit started early"
        return real_run(context, spec, *args)

    result = _search_with_hooks(split_dataset, monkeypatch, cores, widen, run_trial)
    assert not result.refit_started_early
    assert len(calls) == 2 < SPACE["n_estimators"]  # the held one, asked again, ended it
    _same_model(result, _plain_refit(split_dataset, result))
