"""Every shardlearn estimator is a scikit-learn estimator (issue #20, finding 9).

Two halves:

* scikit-learn's own conformance suite, ``parametrize_with_checks``, on every estimator of
  ``shardlearn.models``; a check an estimator cannot pass is declared on its class
  (``_sklearn_expected_failures``: check name -> reason) and run as a strict xfail, so an entry
  that starts passing fails this module and the list cannot go stale;
* scikit-learn's tooling -- ``cross_val_score``, ``make_pipeline``, ``GridSearchCV``,
  ``CalibratedClassifierCV``, ``clone`` -- on four representative classifiers, whose scores are
  compared with scikit-learn's estimator of the same family on the same data.

Everything runs on the in-process engine (``engine("local", workers=1)``) with small budgets:
the checks fit each estimator dozens of times. Layout and worker-count invariance are tested by
``shardlearn.testing.check_estimator``, not here.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import sklearn.base
import sklearn.ensemble
import sklearn.exceptions
import sklearn.linear_model
import sklearn.naive_bayes
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_classification
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

import shardlearn as sl
from shardlearn.base import clone as shardlearn_clone
from shardlearn.exceptions import ConvergenceWarning, NotFittedError


def _estimators() -> list:
    """One instance per estimator, with budgets small enough for dozens of fits."""
    estimators = [
        sl.LogisticRegression(),
        sl.LinearSVC(),
        sl.GaussianNB(),
        sl.MultinomialNB(),
        sl.SGDClassifier(random_state=0),
        sl.RandomForestClassifier(n_estimators=10, random_state=0),
        sl.ExtraTreesClassifier(n_estimators=10, random_state=0),
        sl.XGBoostClassifier(n_estimators=10),
        sl.SelfTrainingClassifier(),
        sl.KMeans(n_clusters=3, random_state=0),
        sl.PCA(n_components=2),
    ]
    try:
        import torch  # noqa: F401
    except ImportError:
        return estimators
    return [
        *estimators,
        sl.MLPClassifier(hidden_layer_sizes=(16,), epochs=20, learning_rate=1e-2, random_state=0),
        sl.ConvNetClassifier(
            channels=(4,), hidden_layer_sizes=(8,), epochs=20, learning_rate=1e-2, random_state=0
        ),
    ]


@pytest.fixture(autouse=True)
def _in_process_engine():
    with sl.engine("local", workers=1) as eng:
        yield eng


def _expected_failed_checks(estimator: sklearn.base.BaseEstimator) -> dict[str, str]:
    return type(estimator)._expected_failed_checks()


@parametrize_with_checks(
    _estimators(), expected_failed_checks=_expected_failed_checks, xfail_strict=True
)
def test_passes_scikit_learn_estimator_checks(estimator, check) -> None:
    # Small check data leaves iterative trainers short of their tolerance; that warning is
    # expected here and says nothing about the contract being checked.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        check(estimator)


def test_every_expected_failure_names_a_reason() -> None:
    for estimator in _estimators():
        for check, reason in type(estimator)._expected_failed_checks().items():
            assert check.startswith("check_") and len(reason) > 20, (estimator, check)


# ------------------------------------------------------------------ scikit-learn's tooling
def _classification(n_samples: int = 600) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=n_samples, n_features=10, n_informative=5, random_state=0)


# (ours, scikit-learn's of the same family, largest difference of mean CV accuracy)
PAIRS = {
    "LogisticRegression": (
        lambda: sl.LogisticRegression(C=1.0),
        lambda: sklearn.linear_model.LogisticRegression(C=1.0),
        1e-9,  # same objective, same optimum
    ),
    "GaussianNB": (
        lambda: sl.GaussianNB(),
        lambda: sklearn.naive_bayes.GaussianNB(),
        1e-12,  # same sufficient statistics
    ),
    "RandomForestClassifier": (
        lambda: sl.RandomForestClassifier(n_estimators=30, random_state=0),
        lambda: sklearn.ensemble.RandomForestClassifier(n_estimators=30, random_state=0),
        0.04,  # other bootstrap draws
    ),
    "XGBoostClassifier": (
        lambda: sl.XGBoostClassifier(n_estimators=30, learning_rate=0.3, max_depth=6),
        lambda: sklearn.ensemble.HistGradientBoostingClassifier(
            max_iter=30, learning_rate=0.3, max_depth=6, early_stopping=False
        ),
        0.04,  # XGBoost hist vs scikit-learn's hist gradient boosting
    ),
}
CV = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_cross_val_score_matches_scikit_learn(name: str) -> None:
    ours, theirs, tolerance = PAIRS[name]
    X, y = _classification()
    scores = cross_val_score(ours(), X, y, cv=CV)
    reference = cross_val_score(theirs(), X, y, cv=CV)
    assert scores.shape == (3,)
    assert scores.mean() > 0.75
    assert abs(scores.mean() - reference.mean()) <= tolerance


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_make_pipeline_with_a_scaler_matches_scikit_learn(name: str) -> None:
    ours, theirs, tolerance = PAIRS[name]
    X, y = _classification()
    X = X * np.linspace(1, 1000, X.shape[1])  # badly scaled columns: the scaler matters
    pipe = make_pipeline(StandardScaler(), ours())
    assert sklearn.base.is_classifier(pipe)
    scores = cross_val_score(pipe, X, y, cv=CV)
    reference = cross_val_score(make_pipeline(StandardScaler(), theirs()), X, y, cv=CV)
    assert scores.mean() > 0.75
    # One row in a fold of 200 (0.0017 of the mean) may sit on the decision boundary, where
    # two solvers stopping at their tolerance can disagree.
    assert abs(scores.mean() - reference.mean()) <= max(tolerance, 1 / 600) + 1e-12


GRIDS = {
    "LogisticRegression": {"C": [1e-3, 1.0]},
    "GaussianNB": {"var_smoothing": [1e-9, 10.0]},
    "RandomForestClassifier": {"max_depth": [1, None]},
    "XGBoostClassifier": {"max_depth": [1, 6]},
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_grid_search_cv_picks_what_scikit_learn_picks(name: str) -> None:
    ours, theirs, tolerance = PAIRS[name]
    X, y = _classification()
    search = GridSearchCV(ours(), GRIDS[name], cv=CV).fit(X, y)
    reference = GridSearchCV(theirs(), GRIDS[name], cv=CV).fit(X, y)
    assert search.best_params_ == reference.best_params_
    assert abs(search.best_score_ - reference.best_score_) <= tolerance
    assert isinstance(search.best_estimator_, type(ours()))
    assert search.best_estimator_.get_params()[next(iter(GRIDS[name]))] == next(
        iter(search.best_params_.values())
    )
    assert search.score(X, y) > 0.75


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_calibrated_classifier_cv_gives_calibrated_probabilities(name: str) -> None:
    ours, theirs, tolerance = PAIRS[name]
    X, y = _classification()
    train, test = slice(0, 400), slice(400, None)
    calibrated = CalibratedClassifierCV(ours(), cv=3, method="sigmoid").fit(X[train], y[train])
    reference = CalibratedClassifierCV(theirs(), cv=3, method="sigmoid").fit(X[train], y[train])
    proba = calibrated.predict_proba(X[test])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    loss = log_loss(y[test], proba)
    assert loss < 0.5
    assert abs(loss - log_loss(y[test], reference.predict_proba(X[test]))) <= 10 * tolerance + 0.03


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_clone_gives_an_unfitted_copy_with_the_same_params(name: str) -> None:
    X, y = _classification(200)
    fitted = PAIRS[name][0]().fit(X, y)
    for copy in (sklearn.base.clone(fitted), shardlearn_clone(fitted)):
        assert type(copy) is type(fitted) and copy is not fitted
        assert copy.get_params() == fitted.get_params()
        with pytest.raises(sklearn.exceptions.NotFittedError):
            copy.predict(X)
        np.testing.assert_array_equal(copy.fit(X, y).predict(X), fitted.predict(X))


# ------------------------------------------------------------------ the protocol's details
def test_tags_say_what_each_estimator_is() -> None:
    assert sklearn.base.is_classifier(sl.LogisticRegression())
    assert sklearn.base.is_clusterer(sl.KMeans())
    assert get_tags(sl.PCA()).transformer_tags is not None
    assert get_tags(sl.MultinomialNB()).input_tags.positive_only
    assert get_tags(sl.RandomForestClassifier()).input_tags.sparse
    pipeline = sl.Pipeline(None, sl.LogisticRegression())
    assert sklearn.base.is_classifier(pipeline)


def test_errors_and_warnings_are_scikit_learn_s() -> None:
    with pytest.raises(sklearn.exceptions.NotFittedError):
        sl.LogisticRegression().predict(np.zeros((2, 3)))
    assert issubclass(NotFittedError, sl.exceptions.ShardlearnError)
    assert issubclass(ConvergenceWarning, sklearn.exceptions.ConvergenceWarning)
    assert issubclass(ConvergenceWarning, UserWarning)


def test_our_parameter_errors_keep_their_format_inside_scikit_learn_tools() -> None:
    X, y = _classification(200)
    with pytest.raises(
        ValueError, match=r"The 'C' parameter of LogisticRegression must be a number > 0\. Got -1"
    ):
        cross_val_score(sl.LogisticRegression(C=-1), X, y, cv=CV, error_score="raise")


def test_a_dataframe_s_column_names_become_feature_names() -> None:
    pd = pytest.importorskip("pandas")
    X, y = _classification(200)
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    model = sl.LogisticRegression().fit(frame, y)
    assert list(model.feature_names_in_) == list(frame.columns)
    shuffled = frame[list(reversed(frame.columns))]  # read by name, not position
    np.testing.assert_allclose(model.predict_proba(shuffled), model.predict_proba(X))
    on_array = sl.LogisticRegression().fit(X, y)
    with pytest.warns(UserWarning, match="fitted without feature names"):
        np.testing.assert_allclose(on_array.predict_proba(frame), model.predict_proba(X))


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_fitted_state_holds_only_our_attributes_and_round_trips(name: str, tmp_path) -> None:
    X, y = _classification(200)
    model = make_pipeline(StandardScaler(), PAIRS[name][0]()).fit(X, y)[-1]
    assert not [k for k in vars(model) if k.startswith("_sklearn") or k == "_metadata_request"]
    restored = pickle.loads(pickle.dumps(model))
    assert sorted(vars(restored)) == sorted(vars(model))
    sl.save(model, tmp_path / "model")
    loaded = sl.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
