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
from shardlearn.search._refit import refit_best
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
