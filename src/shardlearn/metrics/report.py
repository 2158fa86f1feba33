"""Evaluation reports: a dict/JSON of every metric and a self-contained HTML page.

A :class:`Report` is built from a merged :class:`EvaluationAccumulator`; it computes the
metrics once (warnings about ill-defined metrics are raised then) and keeps the curves the
page plots, thinned to at most :data:`MAX_CURVE_POINTS` points per curve. ``to_html`` writes
one file with the figures inline (PNG, base64), no scripts and no external resources, so it can
be mailed or archived as is. :func:`compare` ranks several reports in a leaderboard.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shardlearn._json import to_json
from shardlearn.metrics import _plots
from shardlearn.metrics.accumulators import EvaluationAccumulator
from shardlearn.metrics.functions import (
    SUMMARY_KEYS,
    calibration_curve,
    pr_curve,
    roc_curve,
    summarize,
)

__all__ = ["Comparison", "Report", "compare"]

MAX_CURVE_POINTS = 600
HEADLINE = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("f1_macro", "F1 (macro)"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("log_loss", "Log loss"),
    ("brier", "Brier score"),
    ("mcc", "MCC"),
    ("cohen_kappa", "Cohen's kappa"),
    ("expected_calibration_error", "Calibration error"),
)
LOWER_IS_BETTER = {"log_loss", "brier"}
#: The leaderboard's columns: the headline metrics, as in every score_summary.
LEADERBOARD = SUMMARY_KEYS


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    """Keep at most MAX_CURVE_POINTS evenly spaced points (always the first and last)."""
    n = len(arrays[0])
    if n > MAX_CURVE_POINTS:
        keep = np.unique(np.linspace(0, n - 1, MAX_CURVE_POINTS).round().astype(int))
        arrays = tuple(a[keep] for a in arrays)
    return [[_json_number(v) for v in a] for a in arrays]


def _json_number(value: Any) -> Any:
    """A float for JSON: NaN and infinities become None (strict JSON has neither)."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def _json_safe(value: Any) -> Any:
    """Strict JSON (non-finite numbers as None); any other object as its repr."""
    return to_json(value, repr, finite=True)


class Report:
    """Every metric of one evaluation, with curves, dataset and model summaries.

    Parameters
    ----------
    accumulator : EvaluationAccumulator
        The merged state of the evaluation.
    classes : sequence
        Class labels, in the accumulator's class order.
    dataset, model, evaluation : dict, optional
        Summaries shown in the report (uri, split, rows...; type, params...; engine, time...).
    title : str, optional

    Attributes
    ----------
    metrics : dict
        :func:`shardlearn.metrics.summarize` of the accumulator.
    curves : dict
        ``roc``, ``pr`` and ``calibration`` curves per plotted class.
    """

    def __init__(
        self,
        accumulator: EvaluationAccumulator,
        classes: Sequence[Any],
        *,
        dataset: Mapping[str, Any] | None = None,
        model: Mapping[str, Any] | None = None,
        evaluation: Mapping[str, Any] | None = None,
        title: str | None = None,
    ) -> None:
        self.accumulator = accumulator
        self.classes = list(classes)
        self.dataset = dict(dataset or {})
        self.model = dict(model or {})
        self.evaluation = dict(evaluation or {})
        kind = self.model.get("type", "a model")
        if self.model.get("estimator"):
            kind = f"{kind}({self.model['estimator']})"
        self.title = title or f"Evaluation of {kind}"
        self.created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        self.metrics = summarize(accumulator, self.classes)
        self.curves = self._curves()

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def __repr__(self) -> str:
        return (
            f"Report(rows={self.metrics['rows']}, accuracy={self.metrics['accuracy']:.4f}, "
            f"roc_auc={self.metrics['roc_auc']:.4f}, log_loss={self.metrics['log_loss']:.4f})"
        )

    def _plotted_classes(self) -> list[int]:
        """Class 1 of two; otherwise the largest classes (by support), up to MAX_CURVES."""
        if len(self.classes) == 2:
            return [1]
        support = [row["support"] for row in self.metrics["per_class"]]
        order = sorted(range(len(self.classes)), key=lambda k: (-support[k], k))
        return sorted(order[: _plots.MAX_CURVES])

    def _curves(self) -> dict[str, dict[str, Any]]:
        acc = self.accumulator
        roc, pr, calibration = {}, {}, {}
        areas = self.metrics["per_class"]
        for k in self._plotted_classes():
            name = str(self.classes[k])
            if acc.scores.positive[k].sum() == 0 or acc.scores.negative[k].sum() == 0:
                continue  # no curve for a class without positives or negatives
            fpr, tpr, _ = roc_curve(acc.scores, k)
            roc[name] = dict(zip(("fpr", "tpr"), _thin(fpr, tpr), strict=True))
            roc[name]["auc"] = areas[k]["roc_auc"]
            precision, recall, _ = pr_curve(acc.scores, k)
            recall_full = np.concatenate([[0.0], recall])
            precision_full = np.concatenate([[precision[0]], precision])
            pr[name] = dict(
                zip(("recall", "precision"), _thin(recall_full, precision_full), strict=True)
            )
            pr[name]["ap"] = areas[k]["pr_auc"]
        # Two classes: the positive class's reliability curve. More: the top-label curve
        # (accuracy against confidence); ten one-vs-rest curves on one axis are unreadable.
        k, name = (1, str(self.classes[1])) if len(self.classes) == 2 else (-1, "top label")
        observed, predicted, weight = calibration_curve(acc.calibration, k)
        if weight.size:
            calibration[name] = dict(
                zip(
                    ("observed", "predicted", "weight"),
                    _thin(observed, predicted, weight),
                    strict=True,
                )
            )
        return {"roc": roc, "pr": pr, "calibration": calibration}

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as JSON-able data (NaN becomes None)."""
        return _json_safe(
            {
                "title": self.title,
                "created": self.created,
                "classes": self.classes,
                "metrics": {
                    k: v
                    for k, v in self.metrics.items()
                    if k not in ("per_class", "confusion_matrix")
                },
                "per_class": self.metrics["per_class"],
                "confusion_matrix": self.metrics["confusion_matrix"],
                "curves": self.curves,
                "dataset": self.dataset,
                "model": self.model,
                "evaluation": self.evaluation,
            }
        )

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``; returns the path."""
        target = Path(path)
        target.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return target

    def figures(self) -> dict[str, bytes]:
        """The report's PNG figures by name: confusion, roc, pr, calibration."""
        figures = {
            "confusion": _plots.confusion_png(self.metrics["confusion_matrix"], self.classes)
        }
        if self.curves["roc"]:
            figures["roc"] = _plots.roc_png(self.curves["roc"])
            figures["pr"] = _plots.pr_png(self.curves["pr"])
            figures["calibration"] = _plots.calibration_png(self.curves["calibration"])
        return figures

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """The report as one self-contained HTML page; also written to ``path`` if given."""
        from shardlearn.metrics._html import render_report

        page = render_report(self)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page


class Comparison:
    """A leaderboard of several reports on the same data, best first.

    Attributes
    ----------
    rows : list of dict
        One per model: ``rank``, ``model`` and the :data:`LEADERBOARD` metrics.
    sort_by : str
        The metric the ranking uses (higher is better, except log loss and Brier).
    """

    def __init__(self, reports: Mapping[str, Report], sort_by: str = "roc_auc") -> None:
        if sort_by not in LEADERBOARD:
            raise ValueError(
                f"The 'sort_by' parameter must be one of {', '.join(LEADERBOARD)}. Got {sort_by!r}."
            )
        self.reports = dict(reports)
        self.sort_by = sort_by
        sign = 1.0 if sort_by in LOWER_IS_BETTER else -1.0

        def key(item: tuple[str, Report]) -> tuple[float, str]:
            value = item[1].metrics[sort_by]
            return (math.inf if value is None or math.isnan(value) else sign * value, item[0])

        rows = []
        for rank, (name, report) in enumerate(sorted(self.reports.items(), key=key), start=1):
            row: dict[str, Any] = {"rank": rank, "model": name}
            row.update({m: report.metrics[m] for m in LEADERBOARD})
            rows.append(row)
        self.rows = rows

    def to_dict(self) -> dict[str, Any]:
        """The leaderboard as JSON-able data."""
        return _json_safe({"sort_by": self.sort_by, "leaderboard": self.rows})

    def plot_png(self) -> bytes:
        """The comparison plot: every model's leaderboard metrics as grouped bars."""
        return _plots.comparison_png(self.rows, LEADERBOARD)

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """Leaderboard and plot as one self-contained HTML page (written to ``path`` if given)."""
        from shardlearn.metrics._html import render_comparison

        page = render_comparison(self)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page


def compare(
    reports: Mapping[str, Report] | Sequence[Report], sort_by: str = "roc_auc"
) -> Comparison:
    """Rank reports of several models on the same data.

    Parameters
    ----------
    reports : mapping of name to Report, or a sequence of Reports
        A sequence is named by each report's model type (numbered when repeated).
    sort_by : str, default "roc_auc"
        Leaderboard metric to rank by.
    """
    if not isinstance(reports, Mapping):
        named: dict[str, Report] = {}
        for report in reports:
            base = str(report.model.get("name") or report.model.get("type") or "model")
            name, n = base, 2
            while name in named:
                name, n = f"{base} #{n}", n + 1
            named[name] = report
        reports = named
    if not reports:
        raise ValueError("compare() needs at least one report.")
    return Comparison(reports, sort_by)
