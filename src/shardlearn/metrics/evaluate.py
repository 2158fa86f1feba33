"""``evaluate(model, dataset)``: predict and score every shard where it lives, merge, report.

The driver sends the model once (``group.put("model", ...)``) with a small evaluation context
(label column, class order, how the model's probability columns map onto the dataset's
classes). Each worker then reads its shards batch by batch, calls ``model.predict_proba`` on
the raw input columns and folds the batch into an :class:`EvaluationAccumulator` in the same
pass: no prediction leaves the worker. The driver tree-merges one accumulator per worker and
builds the :class:`Report`.

The model is duck-typed (any fitted classifier whose ``predict_proba`` takes a pyarrow Table
of raw input columns, and ``classes_``), so this module does not import ``shardlearn.models``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardlearn._json import json_default
from shardlearn.exceptions import DataError, NotFittedError
from shardlearn.metrics.accumulators import DEFAULT_CALIBRATION_BINS, EvaluationAccumulator
from shardlearn.metrics.report import Report

__all__ = ["evaluate"]

DEFAULT_BATCH_SIZE = 65536


def _plain_list(values: Any) -> list[Any]:
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return [json_default(v) if isinstance(v, np.generic) else v for v in values]


def _check_model(model: Any) -> list[Any]:
    if not callable(getattr(model, "predict_proba", None)) and not callable(
        getattr(model, "decision_function", None)
    ):
        raise TypeError(
            f"evaluate() needs a classifier with predict_proba or decision_function; "
            f"{type(model).__name__} has neither."
        )
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise NotFittedError(
            f"This {type(model).__name__} is not fitted yet. Call 'fit' before evaluate()."
        )
    return _plain_list(classes)


def _class_order(
    dataset_classes: list[Any], model_classes: list[Any]
) -> tuple[list[Any], list[int]]:
    """Evaluation classes (the dataset's, then any extra the model knows) and column mapping."""
    classes = list(dataset_classes)
    for c in model_classes:
        if c not in classes:
            classes.append(c)
    return classes, [classes.index(c) for c in model_classes]


def _simple_params(estimator: Any) -> dict[str, Any]:
    if not hasattr(estimator, "get_params"):
        return {}
    return {
        k: v if isinstance(v, int | float | str | bool | type(None)) else repr(v)
        for k, v in sorted(estimator.get_params(deep=False).items())
    }


def _model_summary(model: Any, model_classes: list[Any]) -> dict[str, Any]:
    """Type, parameters and classes; a Pipeline shows its classifier's parameters."""
    summary: dict[str, Any] = {"type": type(model).__name__}
    estimator = getattr(model, "estimator", None)
    if estimator is not None and not isinstance(estimator, str):
        summary["estimator"] = type(estimator).__name__
        summary["params"] = _simple_params(estimator)
        preprocessor = getattr(model, "preprocessor", None)
        names = getattr(preprocessor, "feature_names_out_", None)
        if preprocessor is not None:
            summary["preprocessor"] = type(preprocessor).__name__ + (
                f" ({len(names)} features out)" if names is not None else ""
            )
    else:
        summary["params"] = _simple_params(model)
    summary["classes"] = model_classes
    if hasattr(model, "n_features_in_"):
        summary["n_features_in"] = int(model.n_features_in_)
    return summary


def _dataset_summary(dataset: Any, split: str, shards: Sequence[Any]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for shard in shards:
        for key, value in getattr(shard, "class_counts", {}).items():
            counts[key] = counts.get(key, 0) + value
    return {
        "uri": str(dataset.uri),
        "split": split,
        "label": dataset.label,
        "rows": sum(s.rows for s in shards),
        "shards": len(shards),
        "classes": list(dataset.classes),
        "class_counts": counts,
        "manifest_sha256": getattr(dataset, "manifest_sha256", ""),
    }


def _open_dataset(dataset: Any, weight_column: str | None) -> Any:
    from shardlearn.data import Dataset

    if not isinstance(dataset, Dataset):
        dataset = Dataset.open(dataset)
    if dataset.label is None:
        raise DataError(f"Dataset {dataset.uri!r} has no label column; it cannot be evaluated.")
    if weight_column is not None and weight_column not in dataset.schema.names:
        raise DataError(f"The weight column {weight_column!r} is not in dataset {dataset.uri!r}.")
    return dataset


def _class_indices(labels: pa.ChunkedArray, value_set: pa.Array, label: str) -> np.ndarray:
    """Position of each label in ``value_set``; an unknown or missing label is a DataError."""
    if labels.null_count:
        raise DataError(f"The label column {label!r} has missing values; evaluation needs a label.")
    try:
        values = value_set.cast(labels.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = value_set
    index = pc.index_in(labels, value_set=values)
    if index.null_count:
        unknown = pc.filter(labels, pc.is_null(index))[0].as_py()
        raise DataError(
            f"The label column {label!r} holds {unknown!r}, which is neither one of the "
            f"dataset's classes nor one the model knows: {values.to_pylist()}."
        )
    return index.to_numpy(zero_copy_only=False).astype(np.int64)


def scores_of(model: Any, table: pa.Table) -> np.ndarray:
    """Class scores: ``predict_proba``, or for a margin model (LinearSVC, hinge SGD) its
    ``decision_function`` squashed by a sigmoid (binary) or softmax (multiclass).

    The squashing keeps the ranking, so accuracy, the confusion matrix and ROC/PR curves are
    exact; log loss, Brier and calibration then describe these scores, not calibrated
    probabilities (the report says so).
    """
    if callable(getattr(model, "predict_proba", None)):
        return np.asarray(model.predict_proba(table))
    margins = np.asarray(model.decision_function(table), dtype=np.float64)
    if margins.ndim == 1:
        positive = 1.0 / (1.0 + np.exp(-margins))
        return np.column_stack([1.0 - positive, positive])
    shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _evaluate_worker(state: Any, split: str) -> tuple[EvaluationAccumulator, list[dict[str, Any]]]:
    """On a worker: predict this worker's shards of ``split`` and accumulate, shard by shard."""
    config = state.context["evaluation"]
    model = state.context["model"]
    label, weight_column = config["label"], config["weight_column"]
    value_set = pa.array(config["classes"])
    columns = config["model_columns"]
    n_classes = len(config["classes"])
    worker_acc = EvaluationAccumulator(n_classes, config["bins"], config["calibration_bins"])
    per_shard = []
    for shard in state.shards:
        if shard.split != split:
            continue
        acc = EvaluationAccumulator(n_classes, config["bins"], config["calibration_bins"])
        for batch in shard.iter_batches(batch_size=config["batch_size"]):
            table = pa.Table.from_batches([batch])
            y = _class_indices(table.column(label), value_set, label)
            weight = None
            dropped = [label]
            if weight_column is not None:
                weight = table.column(weight_column).to_numpy().astype(np.float64)
                dropped.append(weight_column)
            proba = scores_of(model, table.drop_columns(dropped))
            if proba.ndim != 2 or proba.shape[1] != len(columns):
                raise DataError(
                    f"The model's scores have shape {proba.shape}; expected "
                    f"({table.num_rows}, {len(columns)}), one column per entry of classes_."
                )
            if columns != list(range(n_classes)):
                full = np.zeros((proba.shape[0], n_classes), dtype=proba.dtype)
                full[:, columns] = proba
                proba = full
            acc.update(y, proba, weight)
        per_shard.append(
            {"shard": shard.index, "rows": acc.losses.rows, "accuracy": _accuracy(acc)}
        )
        worker_acc.merge(acc)
    return worker_acc, per_shard


def _accuracy(acc: EvaluationAccumulator) -> float | None:
    total = acc.confusion.matrix.sum()
    return float(np.trace(acc.confusion.matrix) / total) if total > 0 else None


def _combine(
    a: tuple[EvaluationAccumulator, list[dict[str, Any]]],
    b: tuple[EvaluationAccumulator, list[dict[str, Any]]],
) -> tuple[EvaluationAccumulator, list[dict[str, Any]]]:
    return a[0].merge(b[0]), a[1] + b[1]


def evaluate(
    model: Any,
    dataset: Any,
    split: str = "test",
    engine: Any = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    bins: int | None = None,
    calibration_bins: int = DEFAULT_CALIBRATION_BINS,
    weight_column: str | None = None,
    title: str | None = None,
) -> Report:
    """Evaluate a fitted classifier on one split of a sharded dataset, in parallel.

    Parameters
    ----------
    model : fitted classifier
        Anything with ``classes_`` and ``predict_proba(table)`` taking a pyarrow Table of the
        raw input columns (a :class:`shardlearn.Pipeline`, for instance).
    dataset : Dataset or str
        A :class:`shardlearn.data.Dataset` or its path/URI.
    split : str, default "test"
    engine : Engine or str, optional
        Where to run; default the current engine (see :func:`shardlearn.engine.get_engine`).
    batch_size : int, default 65536
        Rows per prediction batch on a worker.
    bins : int, optional
        Score-histogram bins per class (default 2**16; see :mod:`~.accumulators`).
    calibration_bins : int, default 10
    weight_column : str, optional
        A column of non-negative sample weights (not passed to the model).
    title : str, optional
        Title of the HTML report.

    Returns
    -------
    Report

    Examples
    --------
    >>> import shardlearn as sl
    >>> from shardlearn.data.demo import write_loans_csv
    >>> ds = sl.ingest(write_loans_csv("loans.csv", rows=400), label="default", out="data/loans")
    >>> with sl.engine("local", workers=1):
    ...     model = sl.Pipeline(sl.Preprocessor.auto(ds.schema), sl.LogisticRegression()).fit(ds)
    ...     report = evaluate(model, "data/loans", split="test")
    >>> round(report["roc_auc"], 2)
    0.76
    >>> _ = report.to_html("report.html")
    """
    from shardlearn.engine import get_engine

    model_classes = _check_model(model)
    dataset = _open_dataset(dataset, weight_column)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter must be an int >= 1. Got {batch_size!r}.")
    shards = dataset.shards(split)
    classes, model_columns = _class_order(list(dataset.classes), model_classes)
    # Checks bins and calibration_bins here, not as a failed task on every worker.
    EvaluationAccumulator(len(classes), bins, calibration_bins)
    config = {
        "label": dataset.label,
        "weight_column": weight_column,
        "classes": classes,
        "model_columns": model_columns,
        "bins": bins,
        "calibration_bins": calibration_bins,
        "batch_size": batch_size,
    }
    eng = get_engine(engine)
    started = time.perf_counter()
    with eng.workers(max(1, min(eng.n_workers, len(shards)))) as group:
        group.assign(shards)
        group.put("model", model)
        group.put("evaluation", config)
        accumulator, per_shard = group.reduce(_evaluate_worker, split, combine=_combine)
        workers = group.size
    seconds = time.perf_counter() - started
    evaluation = {
        "engine": eng.name,
        "workers": workers,
        "seconds": round(seconds, 3),
        "batch_size": batch_size,
        "score_bins": accumulator.scores.bins,
        "scores": (
            "predict_proba"
            if callable(getattr(model, "predict_proba", None))
            else "decision_function (sigmoid/softmax): log loss and Brier are not of "
            "calibrated probabilities"
        ),
        "per_shard": sorted(per_shard, key=lambda s: s["shard"]),
    }
    return Report(
        accumulator,
        classes,
        dataset=_dataset_summary(dataset, split, shards),
        model=_model_summary(model, model_classes),
        evaluation=evaluation,
        title=title,
    )
