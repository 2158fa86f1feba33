"""GaussianNB and MultinomialNB from merged statistics equal scikit-learn's to 1e-10."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn import naive_bayes

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import DataError
from shardlearn.models import GaussianNB, MultinomialNB
from shardlearn.models.naive_bayes import merge_stacks as merge_moments


def _gaussian_data(n=900, p=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    # Large offsets and small spreads: sums of squares would lose digits, Chan's merge does not.
    X = 1e4 + rng.normal(size=(n, p)) * (0.01 + y[:, None]) + y[:, None]
    return X, y


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_gaussian_nb_equals_sklearn(workers):
    X, y = _gaussian_data()
    weights = np.random.default_rng(3).uniform(0.5, 2.0, size=y.size)
    with engine("local", workers=workers):
        ours = GaussianNB().fit(X, y, sample_weight=weights)
    ref = naive_bayes.GaussianNB().fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(ours.theta_, ref.theta_, rtol=1e-10)
    np.testing.assert_allclose(ours.var_, ref.var_, rtol=1e-10)
    np.testing.assert_allclose(ours.class_prior_, ref.class_prior_, rtol=1e-10)
    assert ours.epsilon_ == pytest.approx(ref.epsilon_, rel=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_gaussian_nb_on_both_engines(any_engine):
    X, y = _gaussian_data(n=300, k=3)
    ours = GaussianNB(var_smoothing=1e-6).fit(X, y)
    ref = naive_bayes.GaussianNB(var_smoothing=1e-6).fit(X, y)
    np.testing.assert_allclose(ours.var_, ref.var_, rtol=1e-10)
    np.testing.assert_allclose(ours.theta_, ref.theta_, rtol=1e-10)


def test_merge_moments_is_associative_and_equals_one_pass():
    rng = np.random.default_rng(0)
    parts = [rng.normal(5.0, 2.0, size=(n, 3)) for n in (7, 1, 12)]

    def moments(x):
        return np.stack((np.full(3, float(len(x))), x.mean(0), ((x - x.mean(0)) ** 2).sum(0)))

    a, b, c = (moments(x) for x in parts)
    left = merge_moments(merge_moments(a, b), c)
    right = merge_moments(a, merge_moments(b, c))
    np.testing.assert_allclose(left, right, rtol=1e-12)
    np.testing.assert_allclose(left, moments(np.concatenate(parts)), rtol=1e-12)


@pytest.mark.parametrize("workers", [1, 2])
def test_multinomial_nb_equals_sklearn(workers):
    rng = np.random.default_rng(1)
    X = rng.poisson(1.5, size=(500, 30)).astype(np.float32)
    y = rng.integers(0, 3, 500)
    with engine("local", workers=workers):
        ours = MultinomialNB(alpha=0.5).fit(X, y)
    ref = naive_bayes.MultinomialNB(alpha=0.5).fit(X, y)
    np.testing.assert_allclose(ours.feature_log_prob_, ref.feature_log_prob_, rtol=1e-10)
    np.testing.assert_allclose(ours.class_log_prior_, ref.class_log_prior_, rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-8, atol=1e-14)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_multinomial_nb_on_sparse_sms_spam(shared_datasets, tmp_path):
    from shardlearn.models import Pipeline
    from shardlearn.preprocess import Preprocessor

    lines = (shared_datasets / "sms_spam" / "SMSSpamCollection").read_text("latin-1")
    rows = [line.split("\t", 1) for line in lines.splitlines() if "\t" in line]
    table = pa.table({"label": [r[0] for r in rows], "text": [r[1] for r in rows]})
    ds = write_dataset(table, tmp_path / "sms", label="label", partitions=3, kinds={"text": "text"})
    spec = {"kind": "text", "n_features": 2048, "tfidf": False, "norm": None}
    with engine("local", workers=2):
        model = Pipeline(Preprocessor({"text": spec}, output="sparse"), MultinomialNB()).fit(ds)
    X = model.preprocessor.transform(ds.read("train"))
    y = np.asarray(ds.read("train").column("label").to_pylist())
    ref = naive_bayes.MultinomialNB().fit(X.astype(np.float64), y)
    np.testing.assert_allclose(model.estimator.feature_log_prob_, ref.feature_log_prob_, rtol=1e-10)
    np.testing.assert_array_equal(model.estimator.predict(X), ref.predict(X))
    assert (model.predict(ds.read("train")) == y).mean() > 0.95


def test_multinomial_nb_rejects_negative_features():
    X = np.array([[1.0, -2.0], [0.0, 3.0], [2.0, 1.0]])
    with engine("local", workers=1), pytest.raises(DataError, match="non-negative"):
        MultinomialNB().fit(X, [0, 1, 0])


def test_naive_bayes_single_class_and_nan_are_clear_errors():
    X, y = _gaussian_data(n=40)
    with engine("local", workers=1):
        with pytest.raises(DataError, match="at least two classes"):
            GaussianNB().fit(X, np.zeros(40, dtype=int))
        X[3, 2] = np.nan
        with pytest.raises(DataError, match="NaN"):
            GaussianNB().fit(X, y)


def test_naive_bayes_artifact_round_trip():
    X, y = _gaussian_data(n=100)
    with engine("local", workers=1):
        model = GaussianNB().fit(X, y)
    restored = GaussianNB._from_artifact(*model._to_artifact())
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
