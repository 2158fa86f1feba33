"""Edge cases: missing classes, one predicted class, empty input, 100 classes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning as SklearnUndefinedMetricWarning

from shardlearn.metrics import (
    EvaluationAccumulator,
    UndefinedMetricWarning,
    precision_recall_fscore,
    summarize,
)

from .test_accumulators import quiet_summary
from .test_functions import EXACT, assert_matches_sklearn, predictions


def test_a_class_missing_from_the_test_split_warns_and_matches_sklearn() -> None:
    y, proba, _ = predictions(500, 3, seed=21)
    y[y == 2] = 0  # class 2 exists in the model, not in the split
    acc = EvaluationAccumulator(3).update(y, proba)
    with pytest.warns(UserWarning) as record:  # UndefinedMetricWarning is a UserWarning
        ours = summarize(acc, ["a", "b", "c"])
    messages = " ".join(str(r.message) for r in record)
    assert "y_pred contains classes not in y_true" in messages  # balanced accuracy, as sklearn
    assert "Recall is ill-defined" in messages
    assert "ROC-AUC is undefined for class indices [2]" in messages
    assert math.isnan(ours["per_class"][2]["roc_auc"])
    assert_matches_sklearn(ours, y, proba)
    # macro ROC-AUC over the classes that are present
    expected = np.mean([skm.roc_auc_score(y == k, proba[:, k]) for k in (0, 1)])
    assert ours["roc_auc"] == pytest.approx(expected, abs=EXACT)


def test_all_predictions_one_class_zero_division_as_sklearn_with_a_warning() -> None:
    y, _, _ = predictions(200, 3, seed=22)
    proba = np.tile([0.2, 0.7, 0.1], (200, 1))
    acc = EvaluationAccumulator(3).update(y, proba)
    with pytest.warns(UndefinedMetricWarning, match="Precision is ill-defined"):
        precision, recall, f1, _ = precision_recall_fscore(acc.confusion)
    with pytest.warns(SklearnUndefinedMetricWarning, match="Precision is ill-defined"):
        ref = skm.precision_recall_fscore_support(y, np.ones(200, int), labels=[0, 1, 2])
    np.testing.assert_allclose(precision, ref[0], atol=EXACT)
    np.testing.assert_allclose(recall, ref[1], atol=EXACT)
    np.testing.assert_allclose(f1, ref[2], atol=EXACT)
    ours = quiet_summary(acc)
    assert_matches_sklearn(ours, y, proba)
    assert ours["mcc"] == 0.0
    assert ours["roc_auc"] == 0.5  # every score equal: a coin flip, exactly


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_zero_division_value_is_used_silently(zero_division: float) -> None:
    y = np.array([0, 0, 1, 1])
    acc = EvaluationAccumulator(3).update(y, np.tile([0.9, 0.05, 0.05], (4, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision, recall, _, _ = precision_recall_fscore(acc.confusion, None, zero_division)
    ref = skm.precision_recall_fscore_support(
        y, np.zeros(4, int), labels=[0, 1, 2], zero_division=zero_division
    )
    np.testing.assert_allclose(precision, ref[0])
    np.testing.assert_allclose(recall, ref[1])


def test_one_hundred_classes_match_sklearn() -> None:
    y, proba, w = predictions(4000, 100, seed=23)
    acc = EvaluationAccumulator(100).update(y, proba, w)
    assert acc.scores.bins == 2**13 and acc.scores.exact
    ours = quiet_summary(acc)
    assert_matches_sklearn(ours, y, proba, w)
    expected = skm.roc_auc_score(
        y, proba, multi_class="ovr", labels=list(range(100)), sample_weight=w
    )
    assert ours["roc_auc"] == pytest.approx(expected, abs=EXACT)


def test_one_hundred_classes_binned_stay_within_bound() -> None:
    y, proba, _ = predictions(4000, 100, seed=24)
    acc = EvaluationAccumulator(100, exact_limit=0).update(y, proba)
    ours = quiet_summary(acc)
    expected = skm.roc_auc_score(y, proba, multi_class="ovr", labels=list(range(100)))
    assert abs(ours["roc_auc"] - expected) <= ours["roc_auc_error_bound"] + EXACT


def test_an_empty_accumulator_summarizes_to_nan_not_an_error() -> None:
    acc = EvaluationAccumulator(2).update(np.zeros(0, int), np.zeros((0, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = summarize(acc, ["no", "yes"])
    assert ours["rows"] == 0
    assert all(math.isnan(ours[key]) for key in ("accuracy", "log_loss", "roc_auc"))


def test_zero_weight_rows_are_ignored_like_sklearn() -> None:
    y, proba, w = predictions(300, 2, seed=25)
    w[::3] = 0.0
    ours = quiet_summary(EvaluationAccumulator(2).update(y, proba, w))
    assert_matches_sklearn(ours, y, proba, w)


def test_summarize_names_a_class_count_mismatch() -> None:
    acc = EvaluationAccumulator(3)
    with pytest.raises(ValueError, match="2 class names given for an accumulator of 3 classes"):
        summarize(acc, ["a", "b"])
