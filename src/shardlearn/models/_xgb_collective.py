"""XGBoost's collective over a WorkerGroup: rendezvous, per-worker DMatrix, chunked training.

The driver runs XGBoost's ``RabitTracker``; every worker joins the communicator with
``xgboost.collective.CommunicatorContext`` (rank = worker rank, through ``dmlc_task_id`` and the
tracker's ``sortby="task"``) and trains with ``xgboost.train`` on its own rows; XGBoost
allreduces the gradient histograms, so all workers hold the same booster.

Training runs in *chunks* of ``checkpoint_interval`` rounds. Between chunks the driver keeps
the booster (the checkpoint); each chunk is one ``group.run`` with a fresh tracker and
continues from the checkpoint (``xgb_model=``). The workers keep their ``QuantileDMatrix`` in
``state.cache`` under a *session* id, so the quantile sketch is built once per session.

Failure handling. The collective cannot absorb a new member mid-session: a replacement worker
(empty cache) must not join a running group, and the survivors' cached matrices no longer
match a replacement's. So:

* before each chunk a cheap ``ping`` run tells whether every worker still holds the session's
  matrix; a worker replaced since the last chunk answers "missing" and a new session starts
  (every worker rebuilds its matrix under a new tracker);
* a worker that dies *during* a chunk makes the survivors' allreduce fail at once (its sockets
  close); they report ``comm_failed`` instead of raising, the engine's retry of the dead rank
  finds an empty cache and reports ``replaced`` without joining, and the driver resumes from the
  last checkpoint in a new session.

These functions are impure on purpose: they start sockets and global communicator state in the
worker process, which is why they run as one pinned call per worker and never concurrently.
"""

from __future__ import annotations

import contextlib
import io
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from shardlearn.models._fitting import training_block

__all__ = ["Rendezvous", "boost_worker", "build_worker", "ping_worker"]

_CACHE_KEY = "shardlearn.models.boosting.dmatrix"
#: Seconds the tracker waits for all workers to connect (and to say goodbye). Blocks are
#: loaded before a tracker starts, so this only covers process scheduling jitter.
TRACKER_TIMEOUT = 120
#: Seconds a worker waits inside one collective operation before giving up on its peers.
COMM_TIMEOUT = 600
# Substrings of XGBoost errors that mean "a peer went away", not "your data/params are bad".
_COMM_MARKERS = (
    "allreduce",
    "allgather",
    "broadcast",
    "socket",
    "connection",
    "bootstrap",
    "poll",
    "tracker",
    "communicator",
)


class Rendezvous:
    """One XGBoost tracker on the driver for one collective session of ``n_workers``.

    Parameters
    ----------
    n_workers : int
        Workers that will join.
    host : str
        Address the workers can reach the driver at.
    """

    def __init__(self, n_workers: int, host: str) -> None:
        from xgboost.tracker import RabitTracker

        self._tracker = RabitTracker(
            n_workers=n_workers, host_ip=host, sortby="task", timeout=TRACKER_TIMEOUT
        )
        self._tracker.start()
        self.worker_args: dict[str, Any] = dict(self._tracker.worker_args())
        self.error: str | None = None
        self._thread = threading.Thread(target=self._wait, name="xgboost-tracker", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        from xgboost.core import XGBoostError

        tracker = self._tracker
        try:
            tracker.wait_for()
        except XGBoostError as error:  # a worker vanished; the driver already knows
            self.error = str(error)
        try:
            tracker.free()
        except XGBoostError:  # freeing a tracker that timed out reports the timeout again
            pass

    def close(self, wait: float = 30.0) -> None:
        """Wait (briefly) for a healthy session's tracker to finish; a broken one times out."""
        self._thread.join(wait)


def new_session() -> str:
    """A fresh session id (a new set of per-worker matrices)."""
    return uuid.uuid4().hex


def ping_worker(state: Any, session: str | None, splits: tuple[str, ...]) -> dict[str, Any]:
    """Load this worker's blocks (cached) and say whether it holds ``session``'s matrices."""
    train = training_block(state, "train")
    valid_rows = training_block(state, "valid").n_rows if "valid" in splits else 0
    cached = state.cache.get(_CACHE_KEY)
    return {
        "has_session": cached is not None and cached["session"] == session,
        "rows": train.n_rows,
        "valid_rows": valid_rows,
        "counts": np.bincount(np.asarray(train.y, np.int64), minlength=1).tolist(),
    }


def _is_comm_failure(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _COMM_MARKERS)


@contextlib.contextmanager
def _communicator(state: Any, worker_args: dict[str, Any]) -> Iterator[None]:
    """Join the collective as ``state.rank`` (the tracker sorts workers by task id).

    XGBoost prints "Task N got rank N" through Python's stdout when a worker joins; that
    line is swallowed so a fit does not write to the user's terminal.
    """
    from xgboost import collective

    context = collective.CommunicatorContext(
        **worker_args, dmlc_task_id=f"{state.rank:06d}", dmlc_timeout=COMM_TIMEOUT
    )
    with contextlib.redirect_stdout(io.StringIO()):
        context.__enter__()
    try:
        yield
    finally:
        context.__exit__(None, None, None)


def build_worker(
    state: Any, session: str, worker_args: dict[str, Any], max_bin: int, use_valid: bool
) -> dict[str, Any]:
    """Build this worker's QuantileDMatrix (global sketch through the collective) and cache it."""
    import xgboost as xgb
    from xgboost.core import XGBoostError

    state.cache.pop(_CACHE_KEY, None)
    train = training_block(state, "train")
    valid = training_block(state, "valid") if use_valid else None
    try:
        with _communicator(state, worker_args):
            dtrain = xgb.QuantileDMatrix(
                train.X, train.y, weight=train.sample_weight, max_bin=max_bin
            )
            dvalid = None
            if valid is not None:
                dvalid = xgb.QuantileDMatrix(
                    valid.X, valid.y, weight=valid.sample_weight, ref=dtrain, max_bin=max_bin
                )
    except XGBoostError as error:
        if _is_comm_failure(str(error)):
            return {"status": "comm_failed", "error": str(error)[:300]}
        raise
    state.cache[_CACHE_KEY] = {"session": session, "train": dtrain, "valid": dvalid}
    return {"status": "ok"}


def boost_worker(
    state: Any,
    session: str,
    worker_args: dict[str, Any],
    params: dict[str, Any],
    rounds: int,
    model: bytes | None,
    stopping: dict[str, Any] | None,
) -> dict[str, Any]:
    """Train ``rounds`` more rounds from ``model``; rank 0 returns the booster and history."""
    import xgboost as xgb
    from xgboost.core import XGBoostError

    cached = state.cache.get(_CACHE_KEY)
    if cached is None or cached["session"] != session:
        # A replacement worker: it cannot join a collective that has already failed.
        return {"status": "replaced"}
    evals = [(cached["valid"], "valid")] if cached["valid"] is not None else []
    history: dict[str, Any] = {}
    callbacks = [ResumableEarlyStopping(**stopping)] if stopping else []
    start = None if model is None else xgb.Booster(model_file=bytearray(model))
    try:
        with _communicator(state, worker_args):
            booster = xgb.train(
                params,
                cached["train"],
                num_boost_round=rounds,
                evals=evals,
                evals_result=history,
                verbose_eval=False,
                xgb_model=start,
                callbacks=callbacks,
            )
    except XGBoostError as error:
        if _is_comm_failure(str(error)):
            return {"status": "comm_failed", "error": str(error)[:300]}
        raise
    if state.rank != 0:
        return {"status": "ok"}
    return {
        "status": "ok",
        "model": bytes(booster.save_raw("ubj")),
        "history": history,
        "stopping": callbacks[0].state() if callbacks else None,
    }


def _stopping_base() -> type:
    import xgboost as xgb

    return xgb.callback.TrainingCallback


_MAXIMIZE_PREFIXES = ("auc", "aucpr", "pre", "map", "ndcg")


class ResumableEarlyStopping(_stopping_base()):  # type: ignore[misc]
    """Early stopping whose state survives across chunks (xgboost's own restarts each call).

    Parameters
    ----------
    rounds : int
        Stop after this many rounds without improvement of the last metric on "valid".
    best_score, best_iteration, since_best : optional
        State carried over from the previous chunk.
    """

    def __init__(
        self,
        rounds: int,
        best_score: float | None = None,
        best_iteration: int | None = None,
        since_best: int = 0,
    ) -> None:
        super().__init__()
        self.rounds = rounds
        self.best_score = best_score
        self.best_iteration = best_iteration
        self.since_best = since_best

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        metric, values = list(evals_log["valid"].items())[-1]
        score = float(values[-1])
        maximize = metric.startswith(_MAXIMIZE_PREFIXES) and metric != "mape"
        iteration = model.num_boosted_rounds() - 1
        better = self.best_score is None or (
            score > self.best_score if maximize else score < self.best_score
        )
        if better:
            self.best_score, self.best_iteration, self.since_best = score, iteration, 0
        else:
            self.since_best += 1
        return self.since_best >= self.rounds

    def state(self) -> dict[str, Any]:
        """Keyword arguments that resume this callback in the next chunk."""
        return {
            "rounds": self.rounds,
            "best_score": self.best_score,
            "best_iteration": self.best_iteration,
            "since_best": self.since_best,
        }
