"""Pipeline: preprocessing fitted on the workers, then the classifier, as one model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn import linear_model

from shardlearn.base import clone
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import GaussianNB, LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor


def _table(n=500, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.normal(40.0, 12.0, n)
    job = rng.choice(["clerk", "nurse", "pilot", "chef"], n)
    score = age / 10 + 2.0 * (job == "pilot") - (job == "chef") + rng.normal(0, 1, n)
    label = np.where(score > 4.5, "high", "low")
    return pa.table({"age": age, "job": job, "label": label})


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(_table(), tmp_path / "jobs", label="label", partitions=4)


def test_pipeline_on_a_dataset_equals_sklearn_on_the_same_features(dataset):
    tight = {"tol": 1e-9, "max_iter": 5000}
    with engine("local", workers=2):
        model = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression(**tight))
        model.fit(dataset)
    train = dataset.read("train")
    X = model.preprocessor.transform(train)
    y = np.asarray(train.column("label").to_pylist())
    ref = linear_model.LogisticRegression(**tight).fit(X.astype(np.float64), y)
    scale = np.abs(ref.coef_).max()
    assert np.abs(model.estimator.coef_ - ref.coef_).max() <= 1e-4 * scale
    np.testing.assert_array_equal(model.predict(train), ref.predict(X))
    assert list(model.classes_) == ["high", "low"]
    assert model.estimator.feature_names_in_ == model.preprocessor.feature_names_out_


def test_pipeline_fits_an_in_memory_table():
    table = _table(300)
    with engine("local", workers=1):
        model = Pipeline(Preprocessor({"age": "numeric", "job": "categorical"}), GaussianNB())
        model.fit(table, y="label")
    assert model.score(table, table.column("label").to_numpy(zero_copy_only=False)) > 0.7
    assert model.predict_proba(table).shape == (300, 2)


def test_pipeline_artifact_round_trip(dataset):
    with engine("local", workers=1):
        model = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression()).fit(dataset)
    meta, arrays, files = model._to_artifact()
    assert any(k.startswith("preprocessor/") for k in arrays)
    assert any(k.startswith("estimator/") for k in arrays)
    restored = Pipeline._from_artifact(meta, arrays, files)
    table = _table(50, seed=1)
    np.testing.assert_array_equal(restored.predict_proba(table), model.predict_proba(table))


def test_pipeline_params_are_nested_and_clone_is_unfitted(dataset):
    model = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression(C=2.0))
    params = model.get_params()
    assert params["estimator__C"] == 2.0
    model.set_params(estimator__C=0.3)
    assert model.estimator.C == 0.3
    copy = clone(model)
    assert copy.estimator.C == 0.3 and not hasattr(copy, "classes_")
