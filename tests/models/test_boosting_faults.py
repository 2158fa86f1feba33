"""A worker of a distributed XGBoost fit killed at a chosen point of the protocol.

The fit must notice, stop the other workers at once, restart from its last checkpoint (counted
in ``restarts_``) and end with the same model as a fit that lost nothing. The worker kills
itself (SIGKILL) when it reaches the chosen point: a function run on it through the fit's own
worker group replaces one function of its ``_xgb_collective`` module with one that dies there,
so the kill happens at that point on every run, with no timing involved. Before the fix, the
other worker waited for a victim lost before it joined in XGBoost's tracker until its 120 s
timeout (``boost_worker``, and ``build_worker`` on Ray); ``pytest.mark.timeout(120)`` turns such
a wait into a failure, without any time assertion. A victim lost inside a chunk left its
tracker waiting for ever (a thread per failure).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification

from shardlearn.engine import engine
from shardlearn.models import XGBoostClassifier
from shardlearn.models._training.fitting import prepare_training
from shardlearn.models.ensemble import _xgb_collective

PARAMS = {
    "n_estimators": 30,
    "max_depth": 3,
    "learning_rate": 0.1,
    "checkpoint_interval": 10,
    "execution": "workers",
    "verbose": 0,
}
#: The worker that dies (of 2).
VICTIM = 1
# What a patched function of a worker process was, to put it back (per worker process).
_ORIGINALS: dict[str, Callable] = {}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(2000, 8, n_informative=5, random_state=0)
    return X.astype(np.float32), y


def _is_second_chunk(name: str, args: tuple) -> bool:
    """Whether the call ``name(*args)`` starts the second chunk (rounds 10-19), or, for the
    matrices' build, whether it is the first build."""
    if name == "build_worker":
        return True
    first_round = args[4] if name == "boost_worker" else args[2]  # else _boost_rounds
    return first_round == PARAMS["checkpoint_interval"]


def _die_at(state: Any, name: str) -> None:
    """On the victim: make ``_xgb_collective.<name>`` kill this process where it applies.

    ``boost_worker``: on receiving the second chunk, before joining the collective;
    ``_boost_rounds``: inside the second chunk, after joining it (the peers are connected);
    ``build_worker``: on receiving the first build of the matrices, before joining.
    """
    if state.rank != VICTIM:
        return
    original = getattr(_xgb_collective, name)
    _ORIGINALS[name] = original

    def dying(*args: Any, **kwargs: Any) -> Any:
        if _is_second_chunk(name, args):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(_xgb_collective, name, dying)


def _heal(state: Any) -> None:
    """Undo :func:`_die_at` in a worker that did not die (the fit failed before the kill)."""
    for name, original in _ORIGINALS.items():
        setattr(_xgb_collective, name, original)
    _ORIGINALS.clear()


def _pid(state: Any) -> int:
    return os.getpid()


def _fit_losing_a_worker(X: np.ndarray, y: np.ndarray, where: str) -> XGBoostClassifier:
    model = XGBoostClassifier(**PARAMS)
    with prepare_training(model, X, y) as ctx:
        victim_pid = ctx.group.run(_pid)[VICTIM]
        ctx.group.run(_die_at, where)
        try:
            model._fit_context(ctx)
        finally:
            ctx.group.run(_heal)
        assert ctx.group.run(_pid)[VICTIM] != victim_pid  # it died and was replaced
    return model


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "where",
    [
        # The case that waited 120 s: the survivor waited in the tracker for a peer that
        # never came, and the replacement (no matrices) does not join a broken session.
        "boost_worker",
        # The peers are connected: the survivor's collective fails as the victim's sockets
        # close; it leaves the stopped tracker without waiting for it.
        "_boost_rounds",
        # While the quantile sketch is built: the session is over, the replacement is refused.
        "build_worker",
    ],
)
def test_a_worker_lost_during_a_collective_run_restarts_once_and_gives_the_same_model(
    engine_name, data, where
):
    X, y = data
    with engine(engine_name, workers=2):
        lost = _fit_losing_a_worker(X, y, where)
        undisturbed = XGBoostClassifier(**PARAMS).fit(X, y)
    assert undisturbed.restarts_ == 0
    assert lost.restarts_ == 1  # the session that lost a worker was started again, once
    assert lost.n_estimators_ == PARAMS["n_estimators"]
    # Resuming from the checkpoint rebuilds the same sketch: the same model as without a kill.
    np.testing.assert_array_equal(lost.predict_proba(X), undisturbed.predict_proba(X))
    assert lost.booster_.get_dump() == undisturbed.booster_.get_dump()
    # Every tracker was stopped, the broken session's too (it waited for the lost worker).
    assert not [t for t in threading.enumerate() if t.name == "xgboost-tracker"]
