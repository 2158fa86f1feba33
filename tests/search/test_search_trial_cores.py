"""On threads, the last trials of a search take the cores the finished ones leave idle.

Once the strategy has no trial left to start, a trial still running asks, before each boosting
round, for its slot's share plus an equal part of the idle cores (``TrialCores``); the early
refit's threads are not given away. XGBoost's thread count changes no tree, so the scores are
those of the same search without it. The other processes' load is fixed at 0 (``IdleCores``),
so the counts do not depend on the machine's.
"""

from __future__ import annotations

import os
import threading

import pytest

from shardlearn.engine import engine
from shardlearn.models.ensemble import _xgb_collective
from shardlearn.search import _runner as runner
from shardlearn.search import loguniform, randint, search, uniform
from shardlearn.search._refit import IdleCores
from shardlearn.search._runner import TrialCores

SPACE = {"max_depth": randint(2, 6), "learning_rate": loguniform(0.05, 0.5), "n_estimators": 8,
         "subsample": uniform(0.5, 1.0)}  # fmt: skip
TRIALS, SEED = 3, 5
HOLD_TIMEOUT = 120  # seconds; only reached if the search never widens


def _search(dataset, **kw):
    with engine("local", workers=2) as eng:
        return search(dataset, models="xgboost", space=SPACE, trials=TRIALS, seed=SEED,
                      engine=eng, verbose=0, refit=False, **kw)  # fmt: skip


def _scores(result):
    return {row["trial"]: row["fold_scores"] for row in result.trials}


def test_the_last_trial_takes_the_cores_the_finished_trials_leave_idle(split_dataset, monkeypatch):
    """The last trial starts once the others have finished and the trials have widened: each
    of its rounds runs on every core (the others' rounds on a slot's share), and every score is
    the one the same search gives with the trials kept to their shares."""
    cpus = os.cpu_count() or 1
    if cpus < 2:
        pytest.skip("one core: trials run one at a time")
    with monkeypatch.context() as kept:  # the same search, every trial on its slot's share
        kept.setattr(TrialCores, "widen", lambda self: self.share)
        narrow = _scores(_search(split_dataset))
    monkeypatch.setattr(IdleCores, "others", lambda self: 0.0)
    widened, asked = threading.Event(), {}
    real_widen, real_run = TrialCores.widen, runner.run_trial
    real_cores = _xgb_collective.round_cores

    def widen(self):
        usable = real_widen(self)
        widened.set()
        return usable

    def run_trial(context, spec, *args):
        if spec["trial"] == f"t{TRIALS - 1:04d}":  # the last: the others leave it alone
            assert widened.wait(HOLD_TIMEOUT), "the trials never widened"
        return real_run(context, spec, *args)

    def round_cores():
        value = real_cores()
        asked.setdefault(threading.current_thread().name, []).append(value)
        return value

    monkeypatch.setattr(TrialCores, "widen", widen)
    monkeypatch.setattr(runner, "run_trial", run_trial)
    monkeypatch.setattr(_xgb_collective, "round_cores", round_cores)
    result = _search(split_dataset)
    assert _scores(result) == narrow
    rounds, share = SPACE["n_estimators"], max(1, cpus // 2)
    # Two threads ran the trials: one a trial, the other a trial and then the last one.
    first, second = sorted(asked.values(), key=len)
    assert first == [share] * rounds
    assert second == [share] * rounds + [cpus] * rounds


@pytest.mark.parametrize(
    ("usable", "running", "elsewhere", "threads"),
    [(None, 1, 0, 1), (2, 1, 0, 2), (2, 2, 0, 1), (2, 1, 1, 1), (4, 1, 0, 4), (4, 2, 0, 2),
     (4, 3, 0, 1), (4, 2, 1, 1), (1, 1, 0, 1)],
)  # fmt: skip
def test_running_trials_split_the_cores_nothing_else_uses(usable, running, elsewhere, threads):
    """A slot's share of 1: before widen (usable None) the share; after, the share plus an
    equal part of the usable cores the running trials and the early refit leave."""
    cores = TrialCores(1, lambda: elsewhere)
    cores._usable = usable
    cores._running = running
    assert cores() == threads
