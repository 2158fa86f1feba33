"""Every metric equals sklearn.metrics on the same predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import binomtest

from shardlearn.exceptions import DataError
from shardlearn.metrics import (
    EvaluationAccumulator,
    UndefinedMetricWarning,
    accuracy_interval,
    calibration_curve,
    roc_curve,
    score_summary,
    summarize,
    wilson_interval,
)

from ._reference import sklearn_calibration, sklearn_summary

EXACT = 1e-12
SCALARS = (
    "accuracy",
    "balanced_accuracy",
    "precision_micro",
    "recall_micro",
    "f1_micro",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "log_loss",
    "brier",
    "cohen_kappa",
    "mcc",
)


def predictions(n: int, k: int, seed: int, *, skill: float = 2.0) -> tuple[np.ndarray, ...]:
    """Labels, softmax probabilities that carry some signal, and positive weights."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    weights = rng.uniform(0.1, 3.0, n)
    return y, proba, weights


def summary_of(y, proba, w=None, **kw) -> dict:
    acc = EvaluationAccumulator(proba.shape[1], **kw).update(y, proba, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return summarize(acc, list(range(proba.shape[1])))


def assert_matches_sklearn(ours: dict, y, proba, w=None, area_tol: float = EXACT) -> None:
    ref = sklearn_summary(y, proba, w)
    for key in SCALARS:
        assert ours[key] == pytest.approx(ref[key], rel=EXACT, abs=EXACT, nan_ok=True), key
    per_class = ours["per_class"]
    for name in ("precision", "recall", "f1"):
        got = np.array([row[name] for row in per_class])
        np.testing.assert_allclose(got, ref[f"per_class_{name}"], rtol=EXACT, atol=EXACT)
    np.testing.assert_allclose(ours["confusion_matrix"], ref["confusion_matrix"], rtol=EXACT)
    for name in ("roc_auc", "pr_auc"):
        got = np.array([row[name] for row in per_class])
        np.testing.assert_allclose(got, ref[f"per_class_{name}"], atol=area_tol, rtol=0)


@pytest.mark.parametrize("k", [2, 3, 7])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_metric_equals_sklearn(k: int, weighted: bool) -> None:
    y, proba, w = predictions(2000, k, seed=k)
    w = w if weighted else None
    ours = summary_of(y, proba, w)
    assert ours["score_histogram_exact"]
    assert_matches_sklearn(ours, y, proba, w)


def test_binary_headline_areas_are_those_of_the_second_class() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, proba, _ = predictions(500, 2, seed=1)
    ours = summary_of(y, proba)
    assert ours["roc_auc"] == pytest.approx(roc_auc_score(y, proba[:, 1]), abs=EXACT)
    assert ours["pr_auc"] == pytest.approx(average_precision_score(y, proba[:, 1]), abs=EXACT)
    assert ours["roc_auc_error_bound"] == 0.0


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_multiclass_roc_auc_equals_sklearn_one_vs_rest(average: str) -> None:
    from sklearn.metrics import roc_auc_score

    y, proba, w = predictions(1500, 5, seed=3)
    ours = summary_of(y, proba, w)
    key = "roc_auc" if average == "macro" else "roc_auc_weighted"
    expected = roc_auc_score(y, proba, multi_class="ovr", average=average, sample_weight=w)
    assert ours[key] == pytest.approx(expected, abs=EXACT)


def test_float32_probabilities_clip_log_loss_as_sklearn() -> None:
    from sklearn.metrics import log_loss

    y, proba, _ = predictions(300, 3, seed=4, skill=40.0)  # many probabilities round to 0 or 1
    proba32 = proba.astype(np.float32)
    proba32 /= proba32.sum(axis=1, keepdims=True)
    ours = summary_of(y, proba32)
    # sklearn computes the logarithm in float32; the sums are float64 here.
    assert ours["log_loss"] == pytest.approx(log_loss(y, proba32), rel=1e-6)


def test_calibration_curve_equals_sklearn() -> None:
    y, proba, _ = predictions(3000, 3, seed=5)
    acc = EvaluationAccumulator(3, calibration_bins=8).update(y, proba)
    for k in range(3):
        prob_true, prob_pred, weight = calibration_curve(acc.calibration, k)
        ref_true, ref_pred = sklearn_calibration(y, proba, k, 8)
        np.testing.assert_allclose(prob_true, ref_true, rtol=EXACT)
        np.testing.assert_allclose(prob_pred, ref_pred, rtol=EXACT)
        assert weight.sum() == 3000


def test_calibration_bin_edges_go_to_the_lower_bin_as_sklearn() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p1 = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    proba = np.column_stack([1 - p1, p1])
    acc = EvaluationAccumulator(2, calibration_bins=10).update(y, proba)
    prob_true, prob_pred, _ = calibration_curve(acc.calibration, 1)
    ref_true, ref_pred = sklearn_calibration(y, proba, 1, 10)
    np.testing.assert_array_equal(prob_true, ref_true)
    np.testing.assert_array_equal(prob_pred, ref_pred)


def test_roc_curve_points_equal_sklearn_without_dropped_points() -> None:
    from sklearn.metrics import roc_curve as sk_roc_curve

    y, proba, w = predictions(400, 2, seed=6)
    proba = np.round(proba, 2)  # ties
    acc = EvaluationAccumulator(2).update(y, proba, w)
    fpr, tpr, thresholds = roc_curve(acc.scores, 1)
    ref_fpr, ref_tpr, ref_thr = sk_roc_curve(
        y, proba[:, 1], sample_weight=w, drop_intermediate=False
    )
    np.testing.assert_allclose(fpr, ref_fpr, atol=EXACT)
    np.testing.assert_allclose(tpr, ref_tpr, atol=EXACT)
    np.testing.assert_array_equal(thresholds, ref_thr)


@pytest.mark.parametrize(("successes", "n"), [(81, 263), (0, 10), (10, 10), (1, 1), (500, 1000)])
def test_wilson_interval_equals_scipy(successes: int, n: int) -> None:
    expected = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected.low, abs=EXACT)
    assert high == pytest.approx(expected.high, abs=EXACT)


def test_accuracy_interval_uses_the_row_count_without_weights() -> None:
    y, proba, _ = predictions(250, 3, seed=7)
    acc = EvaluationAccumulator(3).update(y, proba)
    correct = int((np.argmax(proba, axis=1) == y).sum())
    expected = binomtest(correct, 250).proportion_ci(method="wilson")
    assert accuracy_interval(acc) == pytest.approx((expected.low, expected.high), abs=EXACT)


def test_score_summary_accepts_labels_and_indices_alike() -> None:
    y, proba, w = predictions(200, 3, seed=8)
    classes = ["cat", "dog", "eel"]
    by_index = score_summary(y, proba, classes, w)
    by_label = score_summary(np.array(classes)[y], proba, classes, w)
    assert by_index == by_label
    ref = sklearn_summary(y, proba, w)
    assert by_index["f1_macro"] == pytest.approx(ref["f1_macro"], abs=EXACT)
    assert by_index["log_loss"] == pytest.approx(ref["log_loss"], abs=EXACT)
    assert set(by_index) >= {"accuracy", "f1_macro", "roc_auc", "log_loss", "rows"}


def test_score_summary_names_an_unknown_label() -> None:
    with pytest.raises(ValueError, match="'owl'.*not among the classes"):
        score_summary(np.array(["cat", "owl"]), np.full((2, 2), 0.5), ["cat", "dog"])


@pytest.mark.parametrize(
    ("y", "proba", "match"),
    [
        (np.array([0, 1]), np.full((2, 3), 1 / 3), r"shape \(n_rows, 2\)"),
        (np.array([0, 1, 1]), np.full((2, 2), 0.5), "one class index per row"),
        (np.array([0, 2]), np.full((2, 2), 0.5), "class index 2, outside 0..1"),
        (np.array([0.0, 1.0]), np.full((2, 2), 0.5), "integer class indices"),
        (np.array([0, 1]), np.array([[0.5, np.nan], [0.5, 0.5]]), "NaN"),
        (np.array([0, 1]), np.array([[1.5, -0.5], [0.5, 0.5]]), r"within \[0, 1\]"),
    ],
)
def test_bad_input_is_a_data_error_that_says_what_to_fix(y, proba, match) -> None:
    with pytest.raises(DataError, match=match):
        EvaluationAccumulator(2).update(y, proba)


def test_negative_weights_are_rejected() -> None:
    with pytest.raises(DataError, match="sample_weight must be finite and >= 0"):
        EvaluationAccumulator(2).update(np.array([0, 1]), np.full((2, 2), 0.5), np.array([1, -1]))


def test_top_label_calibration_and_ece_equal_sklearn_on_confidence() -> None:
    from sklearn.calibration import calibration_curve as sk_calibration_curve

    from shardlearn.metrics import expected_calibration_error

    y, proba, _ = predictions(2500, 4, seed=9)
    acc = EvaluationAccumulator(4).update(y, proba)
    correct = (np.argmax(proba, axis=1) == y).astype(int)
    confidence = proba.max(axis=1)
    observed, predicted, weight = calibration_curve(acc.calibration, -1)
    ref_observed, ref_predicted = sk_calibration_curve(correct, confidence, n_bins=10)
    np.testing.assert_allclose(observed, ref_observed, rtol=EXACT)
    np.testing.assert_allclose(predicted, ref_predicted, rtol=EXACT)
    expected = np.dot(weight, np.abs(ref_observed - ref_predicted)) / 2500
    assert expected_calibration_error(acc.calibration) == pytest.approx(expected, rel=EXACT)
