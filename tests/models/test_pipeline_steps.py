"""Pipeline with a PCA step before the classifier, and KMeans / PCA as the final step."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn import decomposition, linear_model
from sklearn.pipeline import make_pipeline

from shardlearn.base import clone
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import DataError, NotFittedError
from shardlearn.models import PCA, KMeans, LogisticRegression, Pipeline
from shardlearn.models.pipeline import FeatureChain
from shardlearn.preprocess import Preprocessor

TIGHT = {"tol": 1e-10, "max_iter": 5000}


def _table(n=600, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.normal(40.0, 12.0, n)
    income = 0.5 * age + rng.normal(0.0, 6.0, n)
    hours = rng.normal(38.0, 8.0, n)
    job = rng.choice(["clerk", "nurse", "pilot", "chef"], n)
    score = age / 10 + income / 20 + 2.0 * (job == "pilot") - (job == "chef")
    label = np.where(score + rng.normal(0, 1, n) > 6.5, "high", "low")
    return pa.table({"age": age, "income": income, "hours": hours, "job": job, "label": label})


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(
        _table(), tmp_path / "jobs", label="label", partitions=4, split=(0.8, 0.1, 0.1)
    )


def _fit_pca_logistic(dataset, workers):
    with engine("local", workers=workers):
        model = Pipeline(
            Preprocessor.auto(dataset.schema), PCA(n_components=3), LogisticRegression(**TIGHT)
        )
        return model.fit(dataset)


def _sklearn_reference(model, dataset):
    train = dataset.read("train")
    X = np.asarray(model.preprocessor.transform(train), dtype=np.float64)
    y = np.asarray(train.column("label").to_pylist())
    ref = make_pipeline(decomposition.PCA(3), linear_model.LogisticRegression(**TIGHT))
    return ref.fit(X, y), X


@pytest.mark.parametrize("workers", [1, 2])
def test_pca_then_logistic_equals_sklearn_make_pipeline(dataset, workers):
    model = _fit_pca_logistic(dataset, workers)
    ref, X = _sklearn_reference(model, dataset)
    pca, ref_pca = model.transformers[0], ref.named_steps["pca"]
    signs = np.sign((pca.components_ * ref_pca.components_).sum(1))
    np.testing.assert_allclose(pca.components_ * signs[:, None], ref_pca.components_, atol=1e-6)
    ref_coef = ref.named_steps["logisticregression"].coef_
    scale = np.abs(ref_coef).max()
    assert np.abs(model.estimator.coef_ * signs - ref_coef).max() <= 1e-4 * scale
    train = dataset.read("train")
    np.testing.assert_array_equal(model.predict(train), ref.predict(X))
    np.testing.assert_allclose(model.predict_proba(train), ref.predict_proba(X), atol=1e-5)
    assert model.estimator.n_features_in_ == 3
    assert model.estimator.feature_names_in_ == ["pca0", "pca1", "pca2"]
    assert list(model.classes_) == ["high", "low"]


def test_one_and_two_workers_give_the_same_pipeline(dataset):
    one, two = _fit_pca_logistic(dataset, 1), _fit_pca_logistic(dataset, 2)
    np.testing.assert_allclose(
        one.transformers[0].components_, two.transformers[0].components_, atol=1e-9
    )
    np.testing.assert_allclose(one.estimator.coef_, two.estimator.coef_, rtol=1e-6, atol=1e-8)


def test_pca_pipeline_artifact_round_trip_predicts_the_same(dataset, tmp_path):
    from shardlearn.registry import load, save

    model = _fit_pca_logistic(dataset, 1)
    save(model, tmp_path / "model")
    restored = load(tmp_path / "model")
    assert isinstance(restored.transformers[0], PCA)
    table = _table(80, seed=3)
    np.testing.assert_array_equal(restored.predict_proba(table), model.predict_proba(table))
    np.testing.assert_array_equal(
        restored.transform_features(table), model.transform_features(table)
    )


def test_keyword_form_clone_and_params(dataset):
    model = Pipeline(Preprocessor.auto(dataset.schema), PCA(2), LogisticRegression(C=2.0))
    same = Pipeline(
        Preprocessor.auto(dataset.schema), transformers=(PCA(2),), estimator=LogisticRegression()
    )
    assert same.transformers[0].n_components == 2 and same.estimator.C == 1.0
    params = model.get_params()
    assert params["estimator__C"] == 2.0 and params["transformers"][0].n_components == 2
    copy = clone(model)
    assert (
        copy.transformers[0].n_components == 2 and copy.transformers[0] is not model.transformers[0]
    )
    assert not hasattr(copy.transformers[0], "components_") and copy.estimator.C == 2.0
    # the two-argument form is unchanged
    plain = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression())
    assert plain.transformers == () and isinstance(plain.estimator, LogisticRegression)
    with pytest.raises(TypeError, match="not both"):
        Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression(), estimator=PCA())


def test_a_classifier_in_the_middle_is_a_clear_error(dataset):
    model = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression(), LogisticRegression())
    with engine("local", workers=1), pytest.raises(DataError, match="transformers such as PCA"):
        model.fit(dataset)


def test_kmeans_as_final_step_predicts_cluster_ids(dataset):
    with engine("local", workers=2):
        model = Pipeline(Preprocessor.auto(dataset.schema), KMeans(3, random_state=0))
        model.fit(dataset)
    table = dataset.read("test")
    ids = model.predict(table)
    X = np.asarray(model.transform_features(table), dtype=np.float64)
    np.testing.assert_array_equal(ids, model.estimator.predict(X))
    assert set(ids.tolist()) <= {0, 1, 2} and not hasattr(model, "classes_")
    assert model.transform(table).shape == (table.num_rows, 3)
    assert not hasattr(model, "predict_proba")
    with pytest.raises(AttributeError, match="KMeans has no predict_proba"):
        model.predict_proba(table)


def test_pca_as_final_step_transforms_and_refuses_predict(dataset):
    with engine("local", workers=1):
        model = Pipeline(Preprocessor.auto(dataset.schema), PCA(2)).fit(dataset)
    table = dataset.read("test")
    assert model.transform(table).shape == (table.num_rows, 2)
    assert not hasattr(model, "predict")
    with pytest.raises(AttributeError, match="use model.transform"):
        model.predict(table)


def test_unfitted_pipeline_says_so(dataset):
    with pytest.raises(NotFittedError, match="Pipeline is not fitted"):
        Pipeline(Preprocessor.auto(dataset.schema), PCA(2)).transform(_table(5))


def test_feature_chain_fingerprint_changes_with_the_fitted_step(dataset):
    with engine("local", workers=1):
        a = _fit_pca_logistic(dataset, 1)
        b = Pipeline(Preprocessor.auto(dataset.schema), PCA(2), LogisticRegression())
        b.fit(dataset)
    chain_a = FeatureChain(a.preprocessor, list(a.transformers))
    chain_b = FeatureChain(b.preprocessor, list(b.transformers))
    assert chain_a.fingerprint != chain_b.fingerprint
    assert chain_a.fingerprint != a.preprocessor.fingerprint
    assert chain_a.feature_names_out_ == ["pca0", "pca1", "pca2"]


def test_pca_pipeline_on_both_engines_equals_the_one_worker_fit(dataset, any_engine):
    model = Pipeline(
        Preprocessor.auto(dataset.schema), PCA(n_components=3), LogisticRegression(**TIGHT)
    ).fit(dataset)
    reference = _fit_pca_logistic(dataset, 1)
    np.testing.assert_allclose(
        model.transformers[0].components_, reference.transformers[0].components_, atol=1e-9
    )
    np.testing.assert_allclose(
        model.estimator.coef_, reference.estimator.coef_, rtol=1e-6, atol=1e-8
    )


def test_pca_and_kmeans_on_a_dataset_without_a_label_equal_sklearn(tmp_path):
    from sklearn.cluster import KMeans as SklearnKMeans

    table = _table().drop_columns(["label"])
    label_free = write_dataset(table, tmp_path / "nolabel", None, partitions=3, split=(0.8, 0.2))
    with engine("local", workers=2):
        pca = Pipeline(Preprocessor.auto(label_free.schema), PCA(3)).fit(label_free)
        X = np.asarray(pca.preprocessor.transform(label_free.read("train")), dtype=np.float64)
        ref = decomposition.PCA(3).fit(X)
        np.testing.assert_allclose(
            pca.estimator.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-6
        )
        Z = ref.transform(X)
        init = Z[:4].copy()
        chained = Pipeline(pca.preprocessor, pca.estimator, KMeans(4, init=init)).fit(label_free)
    km = SklearnKMeans(4, init=init, n_init=1).fit(Z)
    assert chained.estimator.inertia_ == pytest.approx(km.inertia_, rel=1e-6)


def test_pipeline_fit_on_a_table_without_a_label_for_kmeans_but_not_a_classifier():
    from shardlearn.data.ingest import schema_for_table

    table = _table(200).drop_columns(["label"])
    schema = schema_for_table(table, None)
    with engine("local", workers=1):
        model = Pipeline(Preprocessor.auto(schema), KMeans(3, random_state=0)).fit(table)
        assert model.predict(table).shape == (200,)
        with pytest.raises(DataError, match="name the label column with y="):
            Pipeline(Preprocessor.auto(schema), LogisticRegression()).fit(table)
