"""The refit of the best configuration on train + valid, started early when a core is idle.

:func:`refit_choice` says what the search refits (the top configuration, its full budget,
early stopping off and the rounds its trials selected); :func:`refit_best` fits it on
:func:`~shardlearn.search.cv.refit_view`, scores the test split and times the fit's phases
(``start``, ``read``, ``preprocess``, ``train``, ``evaluate``: the test scores).

Early refit. When trials run on threads of the search's process and the strategy has no trial
left to ask for, a free slot would stay idle while the last trials finish. :class:`EarlyRefit`
refits the best configuration so far on it, with the slot's share of the cores (XGBoost's
``nthread``, which changes no tree: hist builds the same trees with any thread count, and the
fitted estimator gets its parameters back). When the last trials leave the same refit to do
-- the same model and refit parameters -- the search keeps that model; otherwise it refits the
new best as before, so the result never depends on the timing. The early refit's warnings are
recorded and raised again on the search's thread when its model is kept.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardlearn import _warm
from shardlearn.search._trial import _recorded_warnings, budget_param

__all__ = ["EarlyRefit", "Refit", "refit_best", "refit_choice"]


@dataclass
class Refit:
    """A refitted best configuration.

    Attributes
    ----------
    model, params
        The model name and the parameters it was refitted with.
    fitted : Pipeline
    metrics : dict
        Its metrics on the test split (empty without one).
    seconds : float
        Wall time of the refit (fit and test scores).
    timings : dict
        Seconds per fit phase (the test scores are ``evaluate``).
    reuse : dict or None
        What it built and reused in the search's warm scope.
    started_early : bool
        Whether it ran beside the last trials (:class:`EarlyRefit`).
    caught : list
        Warnings recorded while it ran beside the trials (raised again when it is kept).
    """

    model: str
    params: dict[str, Any]
    fitted: Any
    metrics: dict[str, Any]
    seconds: float
    timings: dict[str, float]
    reuse: dict[str, Any] | None
    started_early: bool = False
    caught: list[Any] = field(default_factory=list)


def _refit_params(best: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the refit trains them: early stopping off, the selected budget."""
    record = best.get("early_stopping")
    if record is None:
        return dict(params)
    # The refit has no valid split: it repeats the rounds selected during the search.
    refit = {**params, record["switch"]: record["off"]}
    if record["selected"] is not None:
        refit[record["param"]] = record["selected"]
    return refit


def refit_choice(
    board: list[dict[str, Any]], full: dict[str, int | None], budget: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """``(best row, best_params with the full budget, refit parameters)``, or None when no
    trial succeeded."""
    best = board[0] if board and board[0]["status"] == "ok" else None
    if best is None:
        return None
    params = dict(best["params"])
    name = budget_param(best["model"], budget) if best["model"] else None
    if name is not None and full.get(best["model"]) is not None:
        params[name] = full[best["model"]]
    return best, params, _refit_params(best, params)


def refit_best(
    dataset: Any,
    model: str,
    params: dict[str, Any],
    eng: Any,
    preprocess: Any = None,
    warm: str | None = None,
    threads: int | None = None,
) -> Refit:
    """Fit ``model(**params)`` on train + valid in the search's warm scope and score the test
    split; ``threads``: the cores XGBoost may use (the fitted model does not keep it)."""
    from shardlearn.metrics import evaluate
    from shardlearn.models import Pipeline, model_class, recording
    from shardlearn.preprocess import Preprocessor
    from shardlearn.search.cv import refit_view

    started = time.perf_counter()
    view = refit_view(dataset)
    estimator = model_class(model)(**params)
    given = estimator.get_params(deep=False).get("xgb_params")
    threaded = threads is not None and "xgb_params" in estimator.get_params(deep=False)
    if threaded and "nthread" not in (given or {}):
        estimator.set_params(xgb_params={**(given or {}), "nthread": threads})
    fitted = Pipeline(Preprocessor.for_schema(view.schema, preprocess), estimator)
    # In the search's warm scope: the shards the trials and their preprocessing read (here
    # or on the workers) are not read again.
    with _warm.scope(warm) as counters, recording() as timings:
        fitted.fit(view, engine=eng)
        if threaded:
            fitted.estimator.set_params(xgb_params=given)
        metrics: dict[str, Any] = {}
        if "test" in dataset.splits:
            with timings.phase("evaluate"):
                metrics = dict(evaluate(fitted, dataset, split="test", engine=eng).metrics)
    reuse = None if counters is None else counters.as_dict()
    return Refit(model, params, fitted, metrics, time.perf_counter() - started,
                 timings.as_dict(), reuse)  # fmt: skip


class EarlyRefit:
    """Refit the best configuration so far on a thread while the last trials run.

    Parameters
    ----------
    run : callable
        ``run(model, params) -> Refit``: :func:`refit_best` with the search's data, engine
        settings and the slot's share of the cores.
    """

    def __init__(self, run: Callable[[str, dict[str, Any]], Refit]) -> None:
        self._run = run
        self._thread: threading.Thread | None = None
        self._choice: tuple[str, dict[str, Any]] | None = None
        self._result: Refit | None = None
        self._error: BaseException | None = None

    def start(self, model: str, params: dict[str, Any]) -> None:
        """Refit ``model(**params)`` on a new thread (once per search)."""
        if self._thread is not None:
            return
        self._choice = (model, dict(params))
        self._thread = threading.Thread(
            target=self._target, args=self._choice, name="shardlearn-early-refit", daemon=True
        )
        self._thread.start()

    def _target(self, model: str, params: dict[str, Any]) -> None:
        try:
            with _recorded_warnings() as caught:
                result = self._run(model, params)
            result.started_early, result.caught = True, list(caught)
            self._result = result
        except BaseException as error:  # noqa: BLE001 -- the search refits again and meets it
            self._error = error

    def wait(self) -> None:
        """Wait for the early refit, if one started."""
        if self._thread is not None:
            self._thread.join()

    def kept(self, model: str, params: dict[str, Any]) -> Refit | None:
        """The early refit when it fitted ``model(**params)`` and succeeded, else None (the
        search refits: a failure is then raised on its thread). Its warnings are raised again
        here, on the calling thread."""
        self.wait()
        if self._result is None or self._choice != (model, dict(params)):
            return None
        for caught in self._result.caught:
            warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno)
        return self._result
