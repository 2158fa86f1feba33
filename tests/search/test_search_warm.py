"""Search that keeps every core busy: preprocessing once per fold, slots instead of waves,
one leaderboard per seed whatever the concurrency, asynchronous ASHA with a slow trial."""

from __future__ import annotations

import os
import threading

import pytest

from shardlearn.engine import engine
from shardlearn.preprocess import Preprocessor
from shardlearn.search import loguniform, randint, search, uniform
from shardlearn.search._trial import run_trial
from shardlearn.search.space import parse_space
from shardlearn.testing import SYNC_TIMEOUT
from tests.search._gated_objectives import gated
from tests.search._objectives import negative_branin


def _without_times(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_a_ten_trial_search_fits_preprocessing_once_per_fold(small_dataset, monkeypatch):
    fits = []
    original = Preprocessor.fit_group

    def counting(self, *args, **kwargs):
        fits.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Preprocessor, "fit_group", counting)
    with engine("local", workers=1) as eng:
        result = search(small_dataset, models="logistic", space={"C": loguniform(1e-2, 1e2)},
                        trials=10, cv=2, engine=eng, refit=False, verbose=0)  # fmt: skip
    assert len(result.trials) == 10 and all(t["status"] == "ok" for t in result.trials)
    assert len(fits) == 2 == result.preprocessor_fits  # one per fold, not one per trial and fold
    # The shared fitted preprocessor gives the score a trial fitting its own gets.
    trial = result.trials[3]
    spec = {k: trial[k] for k in ("trial", "rung", "model", "params", "budget")}
    context = {"dataset": small_dataset.uri, "cv": 2, "metric": "roc_auc", "budget": "auto",
               "seed": 0}  # fmt: skip
    with engine("local", workers=1):
        own = run_trial(context, spec)
    assert own["fold_scores"] == trial["fold_scores"]


@pytest.mark.parametrize("strategy", ["random", "tpe", "halving"])
def test_one_leaderboard_per_seed_whatever_the_slots(strategy):
    space = {"x": uniform(-5, 10), "y": uniform(0, 15)}
    boards = []
    for workers in (1, 2):  # one slot, then two trials at a time on two processes
        with engine("local", workers=workers) as eng:
            result = search(objective=negative_branin, space=space, strategy=strategy,
                            trials=12, seed=5, engine=eng, verbose=0)  # fmt: skip
        boards.append(_without_times(result.leaderboard))
    assert boards[0] == boards[1]
    assert len({row["params"]["x"] for row in boards[0]}) > 1


def _release(gate) -> None:
    """Open the gate for writing from a thread: it returns once the slow trial reads it."""

    def write() -> None:
        with open(gate, "w") as release:
            release.write("go")

    threading.Thread(target=write, daemon=True).start()


def test_asha_keeps_the_other_slots_busy_while_one_trial_is_slow(tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    space = {"x": list(range(1, 28)), "gate": str(gate)}
    # The slow configuration is the first one ASHA starts.
    slow = parse_space(space, None)[0].sample(27, 0)[0]["x"]
    space["slow"] = slow
    finished: list[dict] = []
    enough = threading.Event()
    outcome: dict = {}

    def watch(board):
        finished[:] = board
        others = [row for row in board if row["params"]["x"] != slow]
        if len(others) == len(board) >= 8 and any(row["rung"] >= 1 for row in others):
            enough.set()  # eight finished, one of them promoted, and the slow one still running

    def run():
        with engine("local", workers=2) as eng:
            outcome["result"] = search(objective=gated, space=space, strategy="asha",
                                       trials=27, eta=3, rungs=3, engine=eng, seed=0,
                                       callback=watch, verbose=0)  # fmt: skip

    driver = threading.Thread(target=run)
    driver.start()
    try:
        # With a barrier (waves), nothing after the slow trial's wave could finish first.
        kept_busy = enough.wait(SYNC_TIMEOUT)
    finally:
        _release(gate)
        driver.join(SYNC_TIMEOUT)
    assert kept_busy, f"only {len(finished)} configurations finished beside the slow trial"
    result = outcome["result"]
    assert result.leaderboard[0]["params"]["x"] == 27 and result.leaderboard[0]["rung"] == 2
    assert {t["params"]["x"] for t in result.trials if t["rung"] == 0} == set(range(1, 28))


def test_promotions_say_they_refit(small_dataset):
    with engine("local", workers=1) as eng:
        result = search(small_dataset, models="logistic", space={"C": loguniform(1e-2, 1e2)},
                        strategy="asha", trials=9, eta=3, rungs=2, cv=2, engine=eng, refit=False,
                        verbose=0)  # fmt: skip
    promoted = [t for t in result.trials if t["rung"] == 1]
    assert promoted
    assert all(t["warm_start"].startswith("refit") for t in promoted)
    assert all(t["warm_start"] is None for t in result.trials if t["rung"] == 0)


def test_xgboost_trials_score_the_same_one_or_two_at_a_time(split_dataset):
    # Two at a time, each trial trains with one of the two cores (nthread=1): same models.
    space = {"max_depth": randint(2, 6), "learning_rate": loguniform(0.05, 0.5),
             "n_estimators": 10}  # fmt: skip
    boards = []
    for workers in (1, 2):
        with engine("local", workers=workers) as eng:
            result = search(split_dataset, models="xgboost", space=space, trials=4, seed=1,
                            engine=eng, refit=False, verbose=0)  # fmt: skip
        assert all(t["status"] == "ok" for t in result.trials), result.trials
        boards.append([(r["trial"], r["score"]) for r in result.leaderboard])
    assert boards[0] == boards[1]


def test_large_data_runs_one_trial_at_a_time_on_every_worker(small_dataset, monkeypatch):
    import shardlearn.search._runner as runner

    space = {"C": loguniform(1e-2, 1e2)}
    with engine("local", workers=1) as eng:
        alone = search(small_dataset, models="logistic", space=space, trials=3, cv=2,
                       engine=eng, refit=False, verbose=0)  # fmt: skip
    monkeypatch.setattr(runner, "SMALL_CELLS", 0)  # every dataset counts as large
    with engine("local", workers=2) as eng:
        assert runner.placement(small_dataset, eng) == (runner.ALL_WORKERS, 1)
        spread = search(small_dataset, models="logistic", space=space, trials=3, cv=2,
                        engine=eng, refit=False, verbose=0)  # fmt: skip
    assert [t["status"] for t in spread.trials] == ["ok"] * 3
    for mine, theirs in zip(alone.leaderboard, spread.leaderboard, strict=True):
        assert mine["trial"] == theirs["trial"]
        assert mine["score"] == pytest.approx(theirs["score"], abs=1e-6)
