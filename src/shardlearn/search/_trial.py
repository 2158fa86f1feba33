"""One trial: a configuration fitted and scored on every fold -- the function of a task node.

:func:`run_trial` is module-level (the task graph sends it to workers by reference) and
returns a JSON-able dict, so the graph's result cache stores it and a resumed search loads it
instead of running the trial again. An exception raised by the model or the objective is caught
and recorded in the result (``status="error"``): one broken configuration must not end a
search of hundreds.

Each fold's model is fitted on :func:`~shardlearn.search.cv.trainer_view` of the fold -- its
training shards only -- and scored on the fold's held-out shards. A model that stops early
watches an inner split of those training shards; the trial records the rounds or epochs each
fold kept and their median (``early_stopping``), which the refit trains
(:mod:`shardlearn.search._stopping`). When a fold has too few shards for an inner split, the
trial trains every fold without early stopping and its record says so.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from shardlearn.search._stopping import (
    StoppingRule,
    kept_rounds,
    selected_rounds,
    stopping_rule,
)

__all__ = ["LOWER_IS_BETTER", "budget_param", "run_trial"]

#: Distinct warning messages kept per trial.
MAX_WARNINGS = 5

#: Metrics where smaller is better; every other metric is maximised.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "expected_calibration_error"})

#: The parameter that is a model's natural budget (boosting rounds, trees, epochs).
_BUDGET_PARAMS = {
    "xgboost": "n_estimators",
    "random_forest": "n_estimators",
    "extra_trees": "n_estimators",
    "sgd": "max_iter",
    "logistic": "max_iter",
    "linear_svc": "max_iter",
    "mlp": "epochs",
    "convnet": "epochs",
}


#: Why a trial of an early-stopping model trained without it.
_NO_INNER_SPLIT = (
    "early stopping off in this trial: a fold has fewer than two non-empty training shards, "
    "so no inner valid split could be carved without scoring on the watched rows; re-ingest "
    "with more partitions to stop early"
)


def budget_param(model: str, kind: str) -> str | None:
    """The parameter a budget sets: ``None`` for the ``rows`` budget (a fraction of shards)."""
    if kind == "rows":
        return None
    if kind in ("auto", "iterations", "rounds"):
        return _BUDGET_PARAMS.get(model)
    return kind


def _trial_params(context: dict[str, Any], spec: dict[str, Any]) -> tuple[dict, float]:
    """The estimator parameters (budget applied) and the share of training shards to use."""
    params = dict(spec["params"])
    fraction = 1.0
    if spec.get("budget") is not None:
        name = budget_param(spec["model"], context["budget"])
        if name is None:
            fraction = float(spec["budget"])
        else:
            params[name] = int(spec["budget_value"])
    return params, fraction


def _fit_views(
    views: list[Any], rule: StoppingRule | None, seed: int, params: dict[str, Any]
) -> tuple[list[Any], dict[str, Any] | None]:
    """Each fold's trainer view, and the start of the trial's early-stopping record.

    When a fold has no inner split to watch, every fold trains without early stopping
    (``params`` is changed), so the refit can repeat what was scored.
    """
    from shardlearn.search.cv import trainer_view

    fits = [trainer_view(view, seed, fold, rule is not None) for fold, view in enumerate(views)]
    if rule is None:
        return [fit for fit, _ in fits], None
    record = {**rule.to_dict(), "watched": [inner for _, inner in fits], "rounds": [],
              "source": None, "selected": None, "note": None}  # fmt: skip
    if not all(inner for _, inner in fits):
        params[rule.switch] = rule.off
        fits = [trainer_view(view, seed, fold, False) for fold, view in enumerate(views)]
        record.update(watched=[], note=_NO_INNER_SPLIT)
    return [fit for fit, _ in fits], record


def _fit_and_score(
    context: dict[str, Any], spec: dict[str, Any]
) -> tuple[list[float], dict[str, Any] | None]:
    """Fold scores and the early-stopping record (``None`` when the model does not stop)."""
    from shardlearn.data import Dataset
    from shardlearn.engine import engine
    from shardlearn.metrics import evaluate
    from shardlearn.models import Pipeline
    from shardlearn.models._registry import model_class
    from shardlearn.preprocess import Preprocessor
    from shardlearn.search.cv import fold_views, holdout_view

    params, fraction = _trial_params(context, spec)
    dataset = Dataset.open(context["dataset"])
    k = context["cv"]
    views = fold_views(dataset, k, fraction) if k else [holdout_view(dataset, fraction)]
    rule = stopping_rule(model_class(spec["model"])(**params))
    fit_views, record = _fit_views(views, rule, int(context.get("seed", 0)), params)
    scores = []
    # One in-process worker per trial: concurrent trials share the machine, not one trial.
    with engine("local", workers=1) as eng:
        for view, fit_view in zip(views, fit_views, strict=True):
            estimator = model_class(spec["model"])(**params)
            pre = Preprocessor.for_schema(view.schema, context.get("preprocess"))
            model = Pipeline(pre, estimator).fit(fit_view, engine=eng)
            # Scored on the fold's held-out shards, which fit_view does not contain.
            report = evaluate(model, view, split="valid", engine=eng)
            scores.append(float(report.metrics[context["metric"]]))
            if record is not None and record["watched"]:
                count, record["source"] = kept_rounds(estimator, rule)
                record["rounds"].append(count)
    if record is not None and record["rounds"]:
        record["selected"] = selected_rounds(record["rounds"])
    return scores, record


def run_trial(
    context: dict[str, Any],
    spec: dict[str, Any],
    objective: Callable[[dict[str, Any], Any], float] | None = None,
) -> dict[str, Any]:
    """Fit and score one configuration; never raises for a failing configuration.

    Parameters
    ----------
    context : dict
        The search-wide settings: dataset URI, ``cv``, ``metric``, budget kind.
    spec : dict
        This trial: ``trial`` (id), ``rung``, ``model``, ``params``, ``budget``.
    objective : callable, optional
        ``objective(params, budget) -> float`` (maximised) instead of fitting a model.

    Returns
    -------
    dict
        ``spec`` plus ``status`` ("ok" or "error"), ``score`` (mean over folds), ``score_std``,
        ``fold_scores``, ``seconds``, ``error`` and ``early_stopping``: ``None`` for a model
        that does not stop early, else ``param`` (the budget parameter), ``switch`` and ``off``
        (how to turn stopping off), ``watched`` (per fold, the train shard indices its early
        stopping watched), ``rounds`` (per fold, the rounds or epochs kept), ``source`` (the
        fitted attribute they were read from), ``selected`` (their median: what the refit
        trains) and ``note`` (why stopping was off, if it was).
    """
    started = time.perf_counter()
    result = {**spec, "status": "ok", "score": None, "score_std": None, "fold_scores": []}
    result["error"] = None
    result["early_stopping"] = None
    try:
        # Warnings (convergence, ill-defined side metrics) are recorded with the trial rather
        # than raised or printed once per trial and fold.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if objective is not None:
                scores = [float(objective(dict(spec["params"]), spec.get("budget")))]
            else:
                scores, result["early_stopping"] = _fit_and_score(context, spec)
        messages = dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught)
        result["warnings"] = list(messages)[:MAX_WARNINGS]
        if not all(math.isfinite(s) for s in scores):
            raise ValueError(f"the score is not finite: {scores}")
        result["fold_scores"] = scores
        result["score"] = float(np.mean(scores))
        result["score_std"] = float(np.std(scores))
    except Exception as error:  # recorded, not raised: the search goes on (module docstring)
        result["status"] = "error"
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc(limit=8)
    result["seconds"] = round(time.perf_counter() - started, 4)
    return result
