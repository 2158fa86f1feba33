"""One trial: a configuration fitted and scored on every fold -- the function of a task node.

:func:`run_trial` is module-level (the task graph sends it to workers by reference) and
returns a JSON-able dict, so the graph's result cache stores it and a resumed search loads it
instead of running the trial again. An exception raised by the model or the objective is caught
and recorded in the result (``status="error"``): one broken configuration must not end a
search of hundreds.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

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


def budget_param(model: str, kind: str) -> str | None:
    """The parameter a budget sets: ``None`` for the ``rows`` budget (a fraction of shards)."""
    if kind == "rows":
        return None
    if kind in ("auto", "iterations", "rounds"):
        return _BUDGET_PARAMS.get(model)
    return kind


def _fit_and_score(context: dict[str, Any], spec: dict[str, Any]) -> list[float]:
    from shardlearn.data import Dataset
    from shardlearn.engine import engine
    from shardlearn.metrics import evaluate
    from shardlearn.models import Pipeline
    from shardlearn.models._registry import model_class
    from shardlearn.preprocess import Preprocessor
    from shardlearn.search.cv import fold_views, holdout_view

    params = dict(spec["params"])
    fraction = 1.0
    if spec.get("budget") is not None:
        name = budget_param(spec["model"], context["budget"])
        if name is None:
            fraction = float(spec["budget"])
        else:
            params[name] = int(spec["budget_value"])
    dataset = Dataset.open(context["dataset"])
    k = context["cv"]
    views = fold_views(dataset, k, fraction) if k else [holdout_view(dataset, fraction)]
    scores = []
    # One in-process worker per trial: concurrent trials share the machine, not one trial.
    with engine("local", workers=1) as eng:
        for view in views:
            estimator = model_class(spec["model"])(**params)
            model = Pipeline(Preprocessor.auto(view.schema), estimator).fit(view, engine=eng)
            report = evaluate(model, view, split="valid", engine=eng)
            scores.append(float(report.metrics[context["metric"]]))
    return scores


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
        ``fold_scores``, ``seconds`` and ``error``.
    """
    started = time.perf_counter()
    result = {**spec, "status": "ok", "score": None, "score_std": None, "fold_scores": []}
    result["error"] = None
    try:
        # Warnings (convergence, ill-defined side metrics) are recorded with the trial rather
        # than raised or printed once per trial and fold.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if objective is not None:
                scores = [float(objective(dict(spec["params"]), spec.get("budget")))]
            else:
                scores = _fit_and_score(context, spec)
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
