"""Metric functions computed from merged accumulators, with scikit-learn's definitions.

Every function takes the (merged) accumulator it needs, so the same code serves one batch on
the driver, a whole distributed evaluation and the train/valid metrics every trainer records
(:func:`score_summary`). Classes are indices ``0..K-1``; their names only label the output.

Conventions follow ``sklearn.metrics``: precision, recall and F1 set a 0/0 to
``zero_division`` (0.0 by default, with an :class:`UndefinedMetricWarning`); balanced accuracy
skips classes with no true rows; Cohen's kappa is NaN when undefined; MCC is 0 when undefined.
One deliberate difference: ROC-AUC and average precision of a class with no positive (or no
negative) row are NaN with a warning and left out of the macro and weighted averages, where
scikit-learn returns NaN (ROC-AUC) or 0 (average precision) for the class and the average.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple, overload

import numpy as np
from scipy.special import ndtri

from shardlearn._json import json_default
from shardlearn.metrics.accumulators import (
    CalibrationBins,
    ConfusionMatrix,
    EvaluationAccumulator,
    LossSums,
    ScoreHistogram,
)

__all__ = [
    "Area",
    "UndefinedMetricWarning",
    "accuracy",
    "accuracy_interval",
    "average_precision",
    "balanced_accuracy",
    "brier_score",
    "calibration_curve",
    "cohen_kappa",
    "expected_calibration_error",
    "log_loss",
    "matthews_corrcoef",
    "pr_curve",
    "precision_recall_fscore",
    "roc_auc",
    "roc_curve",
    "score_summary",
    "summarize",
    "support",
    "wilson_interval",
]

AVERAGES = (None, "binary", "micro", "macro", "weighted")


class UndefinedMetricWarning(UserWarning):
    """A metric is ill-defined for this data (0/0) and was set to a fixed value."""


class Area(NamedTuple):
    """An area under a curve and the most it can differ from the exact (unbinned) area."""

    value: float
    error_bound: float


def _warn(message: str, zero_division: Any = "warn") -> None:
    if zero_division == "warn":
        warnings.warn(message, UndefinedMetricWarning, stacklevel=3)


def _zero_value(zero_division: Any) -> float:
    return 0.0 if zero_division == "warn" else float(zero_division)


def _check_average(average: str | None, allowed: Sequence[str | None]) -> None:
    if average not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"The 'average' parameter must be one of {shown}. Got {average!r}.")


def accuracy(cm: ConfusionMatrix) -> float:
    """Fraction (by weight) of rows whose predicted class is the true class."""
    total = cm.matrix.sum()
    return float(np.trace(cm.matrix) / total) if total > 0 else math.nan


def support(cm: ConfusionMatrix) -> np.ndarray:
    """Weight of true rows per class (the row sums of the confusion matrix)."""
    return cm.matrix.sum(axis=1)


def balanced_accuracy(cm: ConfusionMatrix) -> float:
    """Mean per-class recall over the classes present in ``y_true``, as sklearn."""
    true = cm.matrix.sum(axis=1)
    present = true > 0
    if np.any(~present & (cm.matrix.sum(axis=0) > 0)):
        warnings.warn("y_pred contains classes not in y_true", UserWarning, stacklevel=2)
    if not np.any(present):
        return math.nan
    return float(np.mean(np.diag(cm.matrix)[present] / true[present]))


def _divide(
    numerator: np.ndarray, denominator: np.ndarray, what: str, zero_division: Any
) -> np.ndarray:
    zero = denominator == 0
    result = numerator / np.where(zero, 1.0, denominator)
    if np.any(zero):
        result[zero] = _zero_value(zero_division)
        _warn(
            f"{what} is ill-defined and being set to {_zero_value(zero_division)} in labels "
            "with no matching samples. Use `zero_division` parameter to control this behavior.",
            zero_division,
        )
    return result


def precision_recall_fscore(
    cm: ConfusionMatrix, average: str | None = None, zero_division: Any = "warn"
) -> tuple[Any, Any, Any, np.ndarray]:
    """Precision, recall and F1 per class (``average=None``) or averaged, and the support.

    Parameters
    ----------
    cm : ConfusionMatrix
    average : {None, "binary", "micro", "macro", "weighted"}
        As ``sklearn.metrics.precision_recall_fscore_support`` with ``labels`` = every class;
        ``"binary"`` reports class index 1 of a two-class problem.
    zero_division : "warn", 0.0, 1.0 or nan
        Value of a 0/0; ``"warn"`` means 0.0 with an :class:`UndefinedMetricWarning`.

    Returns
    -------
    precision, recall, f1 : ndarray of shape (K,) or float
    support : ndarray of shape (K,)
    """
    _check_average(average, AVERAGES)
    matrix = cm.matrix
    tp, pred, true = np.diag(matrix).copy(), matrix.sum(axis=0), matrix.sum(axis=1)
    support_ = true.copy()
    if average == "micro":
        tp, pred, true = np.array([tp.sum()]), np.array([pred.sum()]), np.array([true.sum()])
    precision = _divide(tp, pred, "Precision", zero_division)
    recall = _divide(tp, true, "Recall", zero_division)
    f1 = _divide(2 * tp, true + pred, "F-score", zero_division)
    if average is None:
        return precision, recall, f1, support_
    if average == "binary":
        if cm.n_classes != 2:
            raise ValueError("average='binary' needs exactly 2 classes; use 'macro' or 'weighted'.")
        return float(precision[1]), float(recall[1]), float(f1[1]), support_
    weights = true if average == "weighted" else None
    if weights is not None and weights.sum() == 0:
        return math.nan, math.nan, math.nan, support_
    return (
        _nanaverage(precision, weights),
        _nanaverage(recall, weights),
        _nanaverage(f1, weights),
        support_,
    )


def _nanaverage(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Average ignoring NaN entries (as sklearn does with ``zero_division=nan``)."""
    keep = ~np.isnan(values)
    if weights is not None:
        keep &= weights > 0
        if not np.any(keep):
            return math.nan
        return float(np.average(values[keep], weights=weights[keep]))
    return float(np.mean(values[keep])) if np.any(keep) else math.nan


def cohen_kappa(cm: ConfusionMatrix) -> float:
    """Cohen's kappa of predicted against true classes (NaN with a warning when undefined)."""
    matrix = cm.matrix
    total = matrix.sum()
    if total == 0:
        _warn("Cohen's kappa is undefined: there are no rows.")
        return math.nan
    expected = np.outer(matrix.sum(axis=0), matrix.sum(axis=1)) / total
    off_diagonal = ~np.eye(cm.n_classes, dtype=bool)
    denominator = expected[off_diagonal].sum()
    if denominator == 0:
        _warn("Cohen's kappa is undefined: true and predicted classes share one label only.")
        return math.nan
    return float(1 - matrix[off_diagonal].sum() / denominator)


def matthews_corrcoef(cm: ConfusionMatrix) -> float:
    """Matthews correlation coefficient (multiclass R_K); 0.0 when undefined, as sklearn."""
    matrix = cm.matrix
    true, pred = matrix.sum(axis=1), matrix.sum(axis=0)
    correct, total = np.trace(matrix), pred.sum()
    cov_true_pred = correct * total - np.dot(true, pred)
    cov_pred = total**2 - np.dot(pred, pred)
    cov_true = total**2 - np.dot(true, true)
    if cov_pred * cov_true == 0:
        return 0.0
    return float(cov_true_pred / np.sqrt(cov_pred * cov_true))


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n``.

    Examples
    --------
    >>> [round(x, 4) for x in wilson_interval(81, 263)]
    [0.2553, 0.3662]
    """
    if not 0 < confidence < 1:
        raise ValueError(f"The confidence must be in (0, 1). Got {confidence}.")
    if n <= 0:
        return math.nan, math.nan
    z = float(ndtri(0.5 + confidence / 2))
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def accuracy_interval(acc: EvaluationAccumulator, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval of the accuracy; with sample weights, n is Kish's effective size."""
    losses = acc.losses
    if losses.weight_squared == 0:
        return math.nan, math.nan
    n_effective = losses.weight**2 / losses.weight_squared
    return wilson_interval(accuracy(acc.confusion) * n_effective, n_effective, confidence)


def log_loss(losses: LossSums) -> float:
    """Weighted mean of ``-log p(true class)``, probabilities clipped as sklearn does."""
    return losses.log_loss / losses.weight if losses.weight > 0 else math.nan


def brier_score(losses: LossSums, n_classes: int) -> float:
    """Mean of ``sum_k (onehot_k - p_k)^2``, halved for two classes (sklearn's convention)."""
    if losses.weight <= 0:
        return math.nan
    score = losses.brier / losses.weight
    return 0.5 * score if n_classes < 3 else score


def roc_curve(hist: ScoreHistogram, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates of class ``k`` against the rest, and the thresholds.

    Starts at (0, 0) with threshold ``inf`` like sklearn; one point per distinct score (exact
    mode) or per non-empty bin.
    """
    positive, negative = hist.counts(k)
    tps, fps = np.cumsum(positive), np.cumsum(negative)
    total_positive = tps[-1] if tps.size else 0.0
    total_negative = fps[-1] if fps.size else 0.0
    tpr = np.concatenate([[0.0], tps / total_positive]) if total_positive > 0 else None
    fpr = np.concatenate([[0.0], fps / total_negative]) if total_negative > 0 else None
    if tpr is None or fpr is None:
        nan = np.full(tps.size + 1, math.nan)
        tpr, fpr = (nan if tpr is None else tpr), (nan if fpr is None else fpr)
    return fpr, tpr, np.concatenate([[np.inf], hist.thresholds(k)])


def pr_curve(hist: ScoreHistogram, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of class ``k`` against the rest per threshold, highest first."""
    positive, negative = hist.counts(k)
    tps, fps = np.cumsum(positive), np.cumsum(negative)
    total_positive = tps[-1] if tps.size else 0.0
    precision = tps / np.maximum(tps + fps, np.finfo(float).tiny)
    recall = tps / total_positive if total_positive > 0 else np.full(tps.size, math.nan)
    return precision, recall, hist.thresholds(k)


def _class_roc_auc(hist: ScoreHistogram, k: int) -> Area:
    positive, negative = hist.counts(k)
    total_positive, total_negative = positive.sum(), negative.sum()
    if total_positive == 0 or total_negative == 0:
        return Area(math.nan, math.nan)
    positive_above = np.cumsum(positive) - positive
    pairs = total_positive * total_negative
    value = float(np.dot(negative, positive_above + 0.5 * positive) / pairs)
    bound = 0.0 if hist.exact else float(0.5 * np.dot(positive, negative) / pairs)
    return Area(min(max(value, 0.0), 1.0), bound)


def _class_average_precision(hist: ScoreHistogram, k: int) -> Area:
    positive, negative = hist.counts(k)
    total_positive = positive.sum()
    if total_positive == 0 or negative.sum() == 0:
        return Area(math.nan, math.nan)
    tps, fps = np.cumsum(positive), np.cumsum(negative)
    value = float(np.dot(positive / total_positive, tps / (tps + fps)))
    if hist.exact:
        return Area(value, 0.0)
    tp_above, fp_above = tps - positive, fps - negative
    low_denominator = tp_above + fp_above + negative
    low = np.divide(tp_above, low_denominator, out=np.ones_like(tps), where=low_denominator > 0)
    high_denominator = tps + fp_above
    high = np.divide(tps, high_denominator, out=np.ones_like(tps), where=high_denominator > 0)
    bound = float(np.dot(positive / total_positive, high - low))
    return Area(value, bound)


def _average_areas(
    hist: ScoreHistogram, area: Any, average: str | None, name: str, zero_division: Any
) -> Area | list[Area]:
    _check_average(average, (None, "binary", "macro", "weighted"))
    if average == "binary":
        if hist.n_classes != 2:
            raise ValueError(f"{name} with average='binary' needs exactly 2 classes.")
        result = area(hist, 1)
        if math.isnan(result.value):
            _warn(f"{name} is undefined: y_true holds only one class.", zero_division)
        return result
    per_class = [area(hist, k) for k in range(hist.n_classes)]
    undefined = [k for k, a in enumerate(per_class) if math.isnan(a.value)]
    if undefined:
        _warn(
            f"{name} is undefined for class indices {undefined} (no positive or no negative "
            "row); they are NaN and left out of the averages.",
            zero_division,
        )
    if average is None:
        return per_class
    values = np.array([a.value for a in per_class])
    bounds = np.array([a.error_bound for a in per_class])
    weights = None
    if average == "weighted":
        weights = np.array([hist.positive[k].sum() for k in range(hist.n_classes)])
    return Area(_nanaverage(values, weights), _nanaverage(bounds, weights))


# An average gives one Area, average=None a list of them (one per class).
@overload
def roc_auc(hist: ScoreHistogram, average: str = ..., zero_division: Any = ...) -> Area: ...
@overload
def roc_auc(hist: ScoreHistogram, average: None, zero_division: Any = ...) -> list[Area]: ...
def roc_auc(
    hist: ScoreHistogram, average: str | None = "macro", zero_division: Any = "warn"
) -> Area | list[Area]:
    """ROC-AUC one-vs-rest with its error bound (0 in exact mode).

    Parameters
    ----------
    hist : ScoreHistogram
    average : {"binary", "macro", "weighted", None}
        ``"binary"``: class index 1 of two (``roc_auc_score(y, proba[:, 1])``); ``"macro"`` /
        ``"weighted"`` (by support): ``roc_auc_score(..., multi_class="ovr")``; None: a list
        with one :class:`Area` per class.
    zero_division : "warn" or a number
        Anything but ``"warn"`` silences the warning about undefined classes.
    """
    return _average_areas(hist, _class_roc_auc, average, "ROC-AUC", zero_division)


@overload
def average_precision(
    hist: ScoreHistogram, average: str = ..., zero_division: Any = ...
) -> Area: ...
@overload
def average_precision(
    hist: ScoreHistogram, average: None, zero_division: Any = ...
) -> list[Area]: ...
def average_precision(
    hist: ScoreHistogram, average: str | None = "macro", zero_division: Any = "warn"
) -> Area | list[Area]:
    """Average precision (PR-AUC, sklearn's step-wise definition) one-vs-rest, with its bound.

    ``average`` as :func:`roc_auc`; equals ``average_precision_score`` per class.
    """
    return _average_areas(
        hist, _class_average_precision, average, "Average precision", zero_division
    )


def calibration_curve(bins: CalibrationBins, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of positives, mean predicted probability and weight per non-empty bin.

    For a class ``k`` the first two equal ``sklearn.calibration.calibration_curve(y == k,
    proba[:, k], n_bins=bins.bins)``; ``k = -1`` gives the top-label (confidence) curve:
    accuracy against mean highest probability.
    """
    weight = bins.weight[k]
    nonzero = weight > 0
    return (
        bins.positive[k][nonzero] / weight[nonzero],
        bins.proba_sum[k][nonzero] / weight[nonzero],
        weight[nonzero],
    )


def expected_calibration_error(bins: CalibrationBins) -> float:
    """Top-label ECE: weighted mean over bins of |accuracy - mean highest probability|."""
    observed, predicted, weight = calibration_curve(bins, -1)
    if weight.sum() == 0:
        return math.nan
    return float(np.dot(weight, np.abs(observed - predicted)) / weight.sum())


def _areas(acc: EvaluationAccumulator, zero_division: Any) -> dict[str, Any]:
    """Headline and per-class ROC-AUC and average precision."""
    hist = acc.scores
    with warnings.catch_warnings():
        # The per-class call below warns once about undefined classes; the averages would
        # repeat the same warning.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if acc.n_classes == 2:
            roc_headline = roc_auc(hist, "binary", zero_division)
            ap_headline = average_precision(hist, "binary", zero_division)
        else:
            roc_headline = roc_auc(hist, "macro", zero_division)
            ap_headline = average_precision(hist, "macro", zero_division)
        roc_weighted = roc_auc(hist, "weighted", zero_division)
        ap_weighted = average_precision(hist, "weighted", zero_division)
    roc_per_class = roc_auc(hist, None, zero_division)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        ap_per_class = average_precision(hist, None, zero_division)
    return {
        "roc_auc": roc_headline.value,
        "roc_auc_weighted": roc_weighted.value,
        "roc_auc_error_bound": roc_headline.error_bound,
        "pr_auc": ap_headline.value,
        "pr_auc_weighted": ap_weighted.value,
        "pr_auc_error_bound": ap_headline.error_bound,
        "score_histogram_exact": hist.exact,
        "_roc_per_class": roc_per_class,
        "_ap_per_class": ap_per_class,
    }


def summarize(
    acc: EvaluationAccumulator, classes: Sequence[Any], zero_division: Any = "warn"
) -> dict[str, Any]:
    """Every metric of a (merged) accumulator, as a JSON-able dict.

    Two-class problems report ROC-AUC and PR-AUC of ``classes[1]`` (sklearn's binary
    convention); more classes report the one-vs-rest macro average. ``*_weighted`` keys
    weight classes by support. ``per_class`` lists, per class, support, precision, recall,
    F1, ROC-AUC and PR-AUC; ``confusion_matrix`` is rows = true, columns = predicted.
    """
    classes = list(classes)
    if len(classes) != acc.n_classes:
        raise ValueError(
            f"{len(classes)} class names given for an accumulator of {acc.n_classes} classes."
        )
    cm = acc.confusion
    result: dict[str, Any] = {"rows": acc.losses.rows, "weight": acc.losses.weight}
    result["accuracy"] = accuracy(cm)
    result["accuracy_interval_95"] = list(accuracy_interval(acc))
    result["balanced_accuracy"] = balanced_accuracy(cm)
    precision, recall, f1, support_ = precision_recall_fscore(cm, None, zero_division)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # warned per class above
        for average in ("micro", "macro", "weighted"):
            p, r, f, _ = precision_recall_fscore(cm, average, zero_division)
            result.update({f"precision_{average}": p, f"recall_{average}": r})
            result[f"f1_{average}"] = f
    areas = _areas(acc, zero_division)
    roc_per_class, ap_per_class = areas.pop("_roc_per_class"), areas.pop("_ap_per_class")
    result.update(areas)
    result["log_loss"] = log_loss(acc.losses)
    result["brier"] = brier_score(acc.losses, acc.n_classes)
    result["expected_calibration_error"] = expected_calibration_error(acc.calibration)
    result["cohen_kappa"] = cohen_kappa(cm)
    result["mcc"] = matthews_corrcoef(cm)
    result["per_class"] = [
        {
            "class": _plain(name),
            "support": float(support_[k]),
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "roc_auc": roc_per_class[k].value,
            "pr_auc": ap_per_class[k].value,
        }
        for k, name in enumerate(classes)
    ]
    result["confusion_matrix"] = cm.matrix.tolist()
    return result


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (JSON-able); anything else unchanged."""
    return json_default(value) if isinstance(value, np.generic) else value


SUMMARY_KEYS = (
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "mcc",
)


def score_summary(
    y_true: Any,
    proba: Any,
    classes: Sequence[Any],
    sample_weight: Any = None,
    *,
    zero_division: Any = "warn",
) -> dict[str, float]:
    """The headline metrics of one set of predictions, for trainers' train/valid records.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Class indices (positions in ``classes``); an array of non-integer labels is mapped
        to indices through ``classes``.
    proba : array-like of shape (n, len(classes))
        ``predict_proba`` output, columns in the order of ``classes``.
    classes : sequence
        The class labels.
    sample_weight : array-like of shape (n,), optional
    zero_division : "warn" or a number
        As :func:`precision_recall_fscore`; a number also silences AUC warnings.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``f1_macro``, ``roc_auc``, ``pr_auc``,
        ``log_loss``, ``brier``, ``mcc`` and ``rows``; the same definitions as
        :func:`shardlearn.evaluate`.

    Examples
    --------
    >>> import numpy as np
    >>> s = score_summary(np.array([0, 1, 1]), np.array([[.9, .1], [.2, .8], [.6, .4]]), ["a", "b"])
    >>> round(s["accuracy"], 4), s["roc_auc"]
    (0.6667, 1.0)
    """
    classes = list(classes)
    y = np.asarray(y_true)
    if y.dtype.kind not in "iu":
        lookup = {_plain(c): i for i, c in enumerate(classes)}
        try:
            y = np.array([lookup[_plain(v)] for v in y], dtype=np.int64)
        except KeyError as error:
            raise ValueError(
                f"y_true holds the label {error.args[0]!r}, which is not among the classes "
                f"{classes}."
            ) from None
    acc = EvaluationAccumulator(len(classes)).update(y, np.asarray(proba), sample_weight)
    full = summarize(acc, classes, zero_division)
    summary = {key: full[key] for key in SUMMARY_KEYS}
    summary["rows"] = full["rows"]
    return summary
