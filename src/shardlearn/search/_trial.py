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

Promotions continue (ASHA, halving). With a budget of rounds or epochs, a trial of a model that
can continue training (:data:`CONTINUED`: boosting, MLP) below the top rung keeps each fold's
fitted model in ``context["continue_dir"]`` (an artifact, :func:`shardlearn.registry.save`);
its promotion loads it and fits with ``warm_start=True``: boosting adds the rounds up to the new
budget to the same booster (the earlier trees unchanged), an MLP trains the missing epochs from
the same weights and optimiser state. The result says so (``warm_started``, ``warm_start``).

A trial runs in the search's warm scope (:mod:`shardlearn._warm`): the process that runs it
keeps the shard tables it read, the feature blocks and the XGBoost matrices for the next trial
on the same folds, so a process reads each shard once per search. The result says what the
trial built and reused (``reuse``) and where its time went (``timings``, per fit phase).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from shardlearn.search._stopping import (
    StoppingRule,
    kept_rounds,
    selected_rounds,
    stopping_rule,
)

__all__ = [
    "ALL_WORKERS",
    "IN_THREADS",
    "LOWER_IS_BETTER",
    "ONE_PROCESS",
    "TrialPlan",
    "budget_param",
    "fold_preprocessor",
    "routed_warnings",
    "run_trial",
    "trial_plan",
]

#: Where a trial's fits run (``context["placement"]``): in the one process that runs the
#: trial (small data: one trial per core), or on every worker of the current engine.
ONE_PROCESS, ALL_WORKERS = "one-process", "all-workers"
#: A one-process trial run on a thread of the search's own process (tiny data: no task
#: process to start; :func:`~shardlearn.search._runner.placement`).
IN_THREADS = "threads"

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


#: Models whose promotions continue the rung below's fitted models (``warm_start``).
CONTINUED = frozenset({"xgboost", "mlp"})

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


@dataclass
class TrialPlan:
    """What one trial fits and scores: the same on the driver and wherever the trial runs.

    Attributes
    ----------
    params : dict
        The estimator parameters (budget applied; early stopping off when no fold can watch
        an inner split).
    views : list of Dataset
        Per fold: the fold view (its ``valid`` split is what is scored).
    fit_views : list of Dataset
        Per fold: what the trainer is given (:func:`~shardlearn.search.cv.trainer_view`).
    rule : StoppingRule or None
    record : dict or None
        The start of the early-stopping record (see :func:`run_trial`).
    """

    params: dict[str, Any]
    views: list[Any]
    fit_views: list[Any]
    rule: StoppingRule | None
    record: dict[str, Any] | None


def trial_plan(dataset: Any, context: dict[str, Any], spec: dict[str, Any]) -> TrialPlan:
    """The folds, trainer views and parameters of the trial ``spec`` (deterministic).

    When a fold has no inner split to watch, every fold trains without early stopping
    (``params`` is changed), so the refit can repeat what was scored.
    """
    from shardlearn.models import model_class
    from shardlearn.search.cv import fold_views, holdout_view, trainer_view

    params, fraction = _trial_params(context, spec)
    k = context["cv"]
    views = fold_views(dataset, k, fraction) if k else [holdout_view(dataset, fraction)]
    rule = stopping_rule(model_class(spec["model"])(**params))
    seed = int(context.get("seed", 0))
    fits = [trainer_view(view, seed, fold, rule is not None) for fold, view in enumerate(views)]
    if rule is None:
        return TrialPlan(params, views, [fit for fit, _ in fits], None, None)
    record = {**rule.to_dict(), "watched": [inner for _, inner in fits], "rounds": [],
              "source": None, "selected": None, "note": None}  # fmt: skip
    if not all(inner for _, inner in fits):
        params[rule.switch] = rule.off
        fits = [trainer_view(view, seed, fold, False) for fold, view in enumerate(views)]
        record.update(watched=[], note=_NO_INNER_SPLIT)
    return TrialPlan(params, views, [fit for fit, _ in fits], rule, record)


def _estimator(model: str, params: dict[str, Any], threads: int | None = None) -> Any:
    """The trial's estimator: quiet, one checkpoint chunk, ``threads`` cores, unless the user
    set those parameters.

    A trial's own progress bar would draw from a task process over the search's leaderboard
    (the search shows every trial), so ``verbose`` is 0. A trial's fit has no worker to lose
    (it runs in one process, or is retried whole), so checkpoints only cost time; the interval
    never changes the model (the estimator contract). Trials running side by side get a share
    of the cores each (XGBoost's ``nthread``, a cluster-only setting the model does not keep),
    rather than each taking them all.
    """
    from shardlearn.models import model_class

    estimator = model_class(model)(**params)
    budget = _BUDGET_PARAMS.get(model)
    defaults = estimator.get_params(deep=False)
    if "checkpoint_interval" in defaults and "checkpoint_interval" not in params and budget:
        estimator.set_params(checkpoint_interval=max(1, int(defaults[budget])))
    if "verbose" in defaults and "verbose" not in params:
        estimator.set_params(verbose=0)
    extra = dict(defaults.get("xgb_params") or {})
    if threads and "xgb_params" in defaults and "nthread" not in extra:
        estimator.set_params(xgb_params={**extra, "nthread": threads})
    return estimator


def _trial_engine(context: dict[str, Any]) -> Any:
    """Where a trial fits: a large trial on every worker of the current engine, a small one
    in the process that runs it (several trials share the machine, one per core)."""
    from shardlearn.engine import engine, get_engine

    if context.get("placement") == ALL_WORKERS:
        return engine(get_engine())
    return engine("local", workers=1)


def warm_scope_name(dataset: Any) -> str:
    """The warm scope of a search on ``dataset`` (:mod:`shardlearn._warm`): its files.

    Every value kept in a scope is keyed by what it depends on, so searches on the same data
    may share one; the name only decides when a process drops the values.
    """
    return f"{dataset.uri}@{dataset.manifest_sha256}"


def _fit_and_score(
    context: dict[str, Any],
    spec: dict[str, Any],
    preprocessors: list[Any] | None,
    timings: Any,
) -> tuple[list[float], dict[str, Any] | None]:
    """Fold scores and the early-stopping record (``None`` when the model does not stop);
    every fold's phases are added to ``timings``."""
    from shardlearn.data import Dataset
    from shardlearn.models import Pipeline

    plan = trial_plan(Dataset.open(context["dataset"]), context, spec)
    record = plan.record
    if preprocessors is None:
        preprocessors = [fold_preprocessor(context, view) for view in plan.fit_views]
    scores = []
    with _trial_engine(context) as eng:
        folds = zip(plan.views, plan.fit_views, preprocessors, strict=True)
        for fold, (view, fit_view, pre) in enumerate(folds):
            estimator = _fold_estimator(context, spec, plan.params, fold)
            # What the fit does not time itself (estimators without fit_timings_) is training.
            with timings.phase("train"):
                model = Pipeline(pre, estimator).fit(fit_view, engine=eng)
            # Scored on the fold's held-out shards, which fit_view does not contain.
            with timings.phase("evaluate"):
                metrics = fold_metrics(model, view, eng, context.get("placement"))
            scores.append(float(metrics[context["metric"]]))
            _keep_for_promotion(context, spec, fold, estimator)
            if plan.rule is not None and record is not None and record["watched"]:
                count, record["source"] = kept_rounds(estimator, plan.rule)
                record["rounds"].append(count)
    if record is not None and record["rounds"]:
        record["selected"] = selected_rounds(record["rounds"])
    return scores, record


def fold_metrics(model: Any, view: Any, eng: Any, placement: str | None) -> dict[str, Any]:
    """The metrics of ``model`` on the fold's scored (``valid``) shards, as
    :func:`shardlearn.metrics.evaluate` computes them.

    A trial fitting in one process scores the feature block of those shards instead of their
    raw rows: the block is transformed once per fold's preprocessor and kept in the search's
    warm scope (:func:`shardlearn.preprocess.load_block`), so the next trial on the fold only
    predicts. The rows, their order, the features (the preprocessor transforms row by row)
    and the accumulators merged shard by shard are evaluate's, and so are the metrics (tests
    compare them). A model with middle steps, classes other than the dataset's, or trials on
    every worker are scored by ``evaluate``.
    """
    from shardlearn.metrics import evaluate, summarize

    classes = list(view.classes)
    plain = not model.transformers and [_plain(c) for c in model.classes_] == classes
    if placement == ALL_WORKERS or not plain or view.num_rows("valid") == 0:
        return dict(evaluate(model, view, split="valid", engine=eng).metrics)
    shards = view.shards("valid")
    with eng.workers(1) as group:
        group.assign(shards)
        group.put("preprocessor", model.preprocessor)
        group.put("classes", classes)
        group.put("label", view.label)
        group.put("scorer", model.estimator)
        accumulator = group.run(_score_block, len(classes))[0]
    return summarize(accumulator, classes)


def _plain(value: Any) -> Any:
    """A class label as the dataset lists it (numpy scalars as Python values)."""
    return value.item() if isinstance(value, np.generic) else value


def _score_block(state: Any, n_classes: int) -> Any:
    """On the worker: the kept feature block of its ``valid`` shards scored, and accumulated
    shard by shard as :func:`shardlearn.metrics.evaluate` does."""
    from shardlearn.exceptions import DataError
    from shardlearn.metrics import EvaluationAccumulator
    from shardlearn.metrics.evaluate import scores_of
    from shardlearn.preprocess import load_block

    block = load_block(state, "valid")
    labels = block.y
    if labels is None:
        raise DataError(
            f"The label column {state.context['label']!r} is missing or empty in a scored "
            "shard of this fold; every train and valid shard of a search needs labels."
        )
    proba = scores_of(state.context["scorer"], block.X)
    total, start = EvaluationAccumulator(n_classes), 0
    for shard in sorted((s for s in state.shards if s.split == "valid"), key=lambda s: s.index):
        rows = slice(start, start + shard.rows)
        weight = None if block.sample_weight is None else block.sample_weight[rows]
        total.merge(EvaluationAccumulator(n_classes).update(labels[rows], proba[rows], weight))
        start += shard.rows
    return total


def _scored(
    context: dict[str, Any], spec: dict[str, Any], preprocessors: list[Any] | None
) -> tuple[list[float], dict[str, Any] | None, dict[str, Any], dict[str, float]]:
    """:func:`_fit_and_score` in the search's warm scope, with what it reused and its phases.

    The scope keeps this process's shard tables, feature blocks and XGBoost matrices for the
    next trial (:mod:`shardlearn._warm`); ``reuse`` says what this trial built and reused, and
    in which process (``worker``: its pid; ``readers``: the pid that read each of ``shards``,
    this one or a worker of the engine's group).
    """
    from shardlearn import _warm
    from shardlearn.models import recording

    name, budget = context.get("warm"), _warm.default_budget(context.get("warm_processes", 1))
    with _warm.scope(name, budget) as counters, recording() as timings:
        scores, record = _fit_and_score(context, spec, preprocessors, timings)
    reuse: dict[str, Any] = {"worker": os.getpid()}
    if counters is not None:
        # readers: the process that read each shard (this one, or a worker of the group).
        shards = [key[0] for key in counters.shards]
        reuse.update(counters.as_dict(), shards=shards, readers=list(counters.readers))
    return scores, record, reuse, timings.as_dict()


def fold_preprocessor(context: dict[str, Any], view: Any) -> Any:
    """An unfitted preprocessor for a trainer view: the search's spec, or ``auto``."""
    from shardlearn.preprocess import Preprocessor

    return Preprocessor.for_schema(view.schema, context.get("preprocess"))


def _kept_model(context: dict[str, Any], spec: dict[str, Any], rung: int, fold: int) -> Any:
    """Where the trial's fitted model of ``fold`` at ``rung`` is kept for its promotion; None
    when promotions of this search and model refit (see the module notes)."""
    folder, model = context.get("continue_dir"), spec["model"]
    if folder is None or model not in CONTINUED or spec.get("budget") is None:
        return None
    if budget_param(model, context["budget"]) != _BUDGET_PARAMS[model]:
        return None  # a budget of rows: the promotion trains on other rows
    from pathlib import Path

    return Path(folder) / f"{spec['trial']}-r{rung}-f{fold}"


def _fold_estimator(
    context: dict[str, Any], spec: dict[str, Any], params: dict[str, Any], fold: int
) -> Any:
    """The fold's estimator: a new one, or for a promotion the rung below's fitted model set
    to continue (``warm_start``) up to this rung's budget."""
    estimator = _estimator(spec["model"], params, context.get("threads"))
    rung = int(spec.get("rung") or 0)
    if rung < context.get("top_rung", 0) and _kept_model(context, spec, rung, fold):
        # Kept for the promotion: an MLP then saves its optimiser state with its weights.
        estimator.set_params(warm_start=True)
    below = _kept_model(context, spec, rung - 1, fold) if rung else None
    if below is None or not below.exists():
        return estimator
    from shardlearn.registry import load

    fitted = load(below)
    wanted = {**estimator.get_params(deep=False), "warm_start": True}
    if spec["model"] == "mlp":  # epochs are the epochs to add (scikit-learn's max_iter)
        wanted["epochs"] = max(1, wanted["epochs"] - fitted.n_iter_)
    return fitted.set_params(**wanted)


def _keep_for_promotion(
    context: dict[str, Any], spec: dict[str, Any], fold: int, estimator: Any
) -> None:
    """Save the fold's fitted model for the trial's promotion (below the top rung only)."""
    rung = int(spec.get("rung") or 0)
    path = _kept_model(context, spec, rung, fold)
    if path is None or rung >= context.get("top_rung", 0):
        return
    from shardlearn.registry import save

    save(estimator, path, overwrite=True)


def _warm_start_note(context: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """How a promoted trial (rung > 0) gets its larger budget: continued or refitted."""
    rung = int(spec.get("rung") or 0)
    if not rung:
        return None
    folds = [_kept_model(context, spec, rung - 1, f) for f in range(context.get("cv") or 1)]
    if all(path is not None and path.exists() for path in folds):
        more = "rounds on the same booster" if spec["model"] == "xgboost" else "epochs"
        param = _BUDGET_PARAMS[spec["model"]]
        return (
            f"continued {spec['trial']}-r{rung - 1}: {more} up to "
            f"{param}={spec.get('budget_value')}"
        )
    from shardlearn.models import model_class

    name = model_class(spec["model"]).__name__
    if spec["model"] not in CONTINUED:
        why = f"{name} cannot continue a fitted model"
    else:
        why = "the budget is not its rounds or epochs, or the rung below kept no model"
    return f"refit: {why}, so the promotion trained from scratch"


#: The warnings of the trial running on this thread, while :func:`routed_warnings` is on.
_TRIAL_WARNINGS: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "shardlearn_trial_warnings", default=None
)
_ROUTER_LOCK = threading.Lock()
_ROUTERS = 0  # routed_warnings blocks open in this process


@contextlib.contextmanager
def routed_warnings() -> Iterator[None]:
    """Record each trial's warnings with its trial while trials run on threads of this process.

    ``warnings.catch_warnings`` swaps process-wide state, so trials on two threads cannot each
    open one (the first to leave would restore the filters under the other). This opens one
    for the whole search: every warning is shown ("always", as in a task process), and
    :func:`showwarning` hands it to the trial that raised it (its thread's
    :func:`_recorded_warnings`), or prints it as usual when no trial runs on that thread.
    """
    global _ROUTERS
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        shown = warnings.showwarning

        def route(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            caught = _TRIAL_WARNINGS.get()
            if caught is None:
                shown(message, category, filename, lineno, file, line)
            else:
                caught.append(
                    warnings.WarningMessage(message, category, filename, lineno, file, line)
                )

        warnings.showwarning = route
        with _ROUTER_LOCK:
            _ROUTERS += 1
        try:
            yield
        finally:
            with _ROUTER_LOCK:
                _ROUTERS -= 1


@contextlib.contextmanager
def _recorded_warnings() -> Iterator[list[Any]]:
    """The warnings raised in the block: through :func:`routed_warnings` when it is on, else
    with ``catch_warnings`` (a task process runs one trial at a time)."""
    if not _ROUTERS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
        return
    caught = []
    token = _TRIAL_WARNINGS.set(caught)
    try:
        yield caught
    finally:
        _TRIAL_WARNINGS.reset(token)


def run_trial(
    context: dict[str, Any],
    spec: dict[str, Any],
    objective: Callable[[dict[str, Any], Any], float] | None = None,
    preprocessors: list[Any] | None = None,
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
    preprocessors : list of Preprocessor, optional
        Per fold, the preprocessor fitted on that fold's trainer view (the search fits each
        once and every trial reuses it); fitted here when not given.

    Returns
    -------
    dict
        ``spec`` plus ``status`` ("ok" or "error"), ``score`` (mean over folds), ``score_std``,
        ``fold_scores``, ``seconds``, ``error`` and ``early_stopping``: ``None`` for a model
        that does not stop early, else ``param`` (the budget parameter), ``switch`` and ``off``
        (how to turn stopping off), ``watched`` (per fold, the train shard indices its early
        stopping watched), ``rounds`` (per fold, the rounds or epochs kept), ``source`` (the
        fitted attribute they were read from), ``selected`` (their median: what the refit
        trains) and ``note`` (why stopping was off, if it was); ``warm_start``: ``None`` at
        rung 0, else how the promotion got its budget (``"continued t0003-r0: ..."`` or
        ``"refit: ..."``), ``warm_started``: whether it continued; ``timings``: seconds
        per phase (``start``, ``read``, ``preprocess``, ``train``, ``evaluate``) over all folds;
        ``reuse``: the process that ran it (``worker``, a pid) and what it built in the
        search's warm scope (``shard_reads``, ``block_builds``, ``matrix_builds``, ``hits``,
        ``refused``, ``shards``: the files read). Both ``None`` for an objective.
    """
    started = time.perf_counter()
    result = {**spec, "status": "ok", "score": None, "score_std": None, "fold_scores": []}
    result["error"] = None
    result["early_stopping"] = None
    result["reuse"] = result["timings"] = None
    note = _warm_start_note(context, spec) if objective is None else None
    result["warm_start"] = note
    result["warm_started"] = note is not None and note.startswith("continued")
    try:
        # Warnings (convergence, ill-defined side metrics) are recorded with the trial rather
        # than raised or printed once per trial and fold.
        with _recorded_warnings() as caught:
            if objective is not None:
                scores = [float(objective(dict(spec["params"]), spec.get("budget")))]
            else:
                scores, result["early_stopping"], result["reuse"], result["timings"] = _scored(
                    context, spec, preprocessors
                )
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
