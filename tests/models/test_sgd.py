"""SGDClassifier: parallel epochs with parameter averaging, partial_fit and warm start."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import linear_model
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from shardlearn.engine import engine
from shardlearn.exceptions import ConvergenceWarning, DataError
from shardlearn.models import SGDClassifier


def _split(n_classes, n=3000, seed=0):
    X, y = make_classification(
        n_samples=n,
        n_features=20,
        n_informative=8,
        n_classes=n_classes,
        n_clusters_per_class=2,
        flip_y=0.02,
        random_state=seed,
    )
    X = StandardScaler().fit_transform(X)
    half = n * 2 // 3
    return X[:half], y[:half], X[half:], y[half:]


@pytest.mark.parametrize("loss", ["log_loss", "hinge"])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_sgd_accuracy_within_one_point_of_sklearn(loss, n_classes):
    X, y, X_test, y_test = _split(n_classes)
    with engine("local", workers=2):
        ours = SGDClassifier(loss=loss, max_iter=30, tol=None).fit(X, y)
    ref = linear_model.SGDClassifier(loss=loss, random_state=0).fit(X, y)
    ours_acc = ours.score(X_test, y_test)
    ref_acc = ref.score(X_test, y_test)
    assert ours_acc >= ref_acc - 0.01, (ours_acc, ref_acc)
    if loss == "log_loss":
        proba = ours.predict_proba(X_test)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_array_equal(ours.classes_[proba.argmax(1)], ours.predict(X_test))


def test_sgd_on_both_engines(any_engine):
    X, y, X_test, y_test = _split(2, n=900)
    ours = SGDClassifier(loss="log_loss", max_iter=20, tol=None).fit(X, y)
    ref = linear_model.SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    assert ours.score(X_test, y_test) >= ref.score(X_test, y_test) - 0.01


def test_partial_fit_continues_training_on_new_data():
    X, y, X_test, y_test = _split(3)
    chunks = np.array_split(np.arange(len(y)), 4)
    model = SGDClassifier(loss="log_loss")
    with engine("local", workers=1):
        model.partial_fit(X[chunks[0]], y[chunks[0]], classes=[0, 1, 2])
        first_steps = model.t_
        for _ in range(3):
            for rows in chunks[1:]:
                model.partial_fit(X[rows], y[rows])
    assert model.t_ > first_steps
    ref = linear_model.SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    assert model.score(X_test, y_test) >= ref.score(X_test, y_test) - 0.02


def test_partial_fit_accepts_a_batch_with_one_class_once_classes_are_known():
    X, y, _, _ = _split(2, n=300)
    with engine("local", workers=1):
        model = SGDClassifier().partial_fit(X, y, classes=[0, 1])
        model.partial_fit(X[y == 1], y[y == 1])
    assert list(model.classes_) == [0, 1]


def test_first_partial_fit_needs_classes():
    X, y, _, _ = _split(2, n=100)
    with pytest.raises(DataError, match="classes="):
        SGDClassifier().partial_fit(X, y)


def test_warm_start_continues_from_previous_weights():
    X, y, _, _ = _split(2, n=600)
    with engine("local", workers=1):
        model = SGDClassifier(max_iter=3, tol=None, warm_start=True).fit(X, y)
        steps, coef = model.t_, model.coef_.copy()
        model.fit(X, y)
        cold = SGDClassifier(max_iter=3, tol=None).fit(X, y)
    assert model.t_ == pytest.approx(2 * steps)
    assert not np.allclose(model.coef_, coef)
    np.testing.assert_allclose(cold.coef_, coef)  # same seed, same schedule, same model


def test_unknown_label_in_continued_training_is_a_clear_error():
    X, y, _, _ = _split(2, n=200)
    with engine("local", workers=1):
        model = SGDClassifier(max_iter=2, tol=None, warm_start=True).fit(X, y)
        with pytest.raises(DataError, match=r"labels \[7\] are not among"):
            model.fit(X, np.where(y == 1, 7, 0))


def test_hinge_has_no_predict_proba():
    X, y, _, _ = _split(2, n=200)
    with engine("local", workers=1):
        model = SGDClassifier(max_iter=2, tol=None).fit(X, y)
    # scikit-learn's available_if: hasattr is False, and the cause says why.
    assert not hasattr(model, "predict_proba")
    with pytest.raises(AttributeError, match="predict_proba") as caught:
        model.predict_proba(X)
    assert "loss='log_loss' only" in str(caught.value.__cause__)


def test_one_vs_rest_class_weight_weights_only_the_positive_class():
    # scikit-learn's SGDClassifier (like liblinear) fits class k's binary problem with
    # class_weight[k] on class k's rows and weight 1 on the rest: weighting class 2 leaves the
    # problems of classes 0 and 1, and with the same seed their coefficients, unchanged.
    X, y, _, _ = _split(3, n=900)
    order = np.argsort(y, kind="stable")
    X, y = X[order], y[order]
    with engine("local", workers=2):
        plain = SGDClassifier(loss="log_loss", max_iter=5, tol=None).fit(X, y)
        weighted = SGDClassifier(loss="log_loss", max_iter=5, tol=None, class_weight={2: 5.0})
        weighted.fit(X, y)
    np.testing.assert_allclose(weighted.coef_[:2], plain.coef_[:2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(weighted.intercept_[:2], plain.intercept_[:2], rtol=1e-12)
    assert not np.allclose(weighted.coef_[2], plain.coef_[2])


@pytest.mark.parametrize("max_iter", [1, 2])
def test_max_iter_is_a_hard_budget_that_warns_with_tol(max_iter):
    X, y, _, _ = _split(2, n=300)
    with engine("local", workers=1):
        with pytest.warns(ConvergenceWarning, match=f"max_iter={max_iter}"):
            model = SGDClassifier(max_iter=max_iter, tol=1e-3).fit(X, y)
        assert model.n_iter_ == max_iter
        model = SGDClassifier(max_iter=max_iter, tol=None).fit(X, y)  # no tol: no warning
    assert model.n_iter_ == max_iter


def test_max_iter_zero_is_refused():
    X, y, _, _ = _split(2, n=100)
    with pytest.raises(ValueError, match=r"'max_iter' parameter of SGDClassifier must be"):
        SGDClassifier(max_iter=0).fit(X, y)
