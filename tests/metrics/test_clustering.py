"""evaluate_clustering against scikit-learn on the same data, centres and sample."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.metrics.pairwise import euclidean_distances

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.metrics import evaluate_clustering
from shardlearn.metrics.clustering import ClusteringAccumulator, sample_draws
from shardlearn.models import PCA, KMeans, Pipeline
from shardlearn.preprocess import Preprocessor


def _blobs(n=900, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 1.0], [5.0, 0.0, 0.0], [0.0, 5.0, -1.0]])
    group = rng.integers(0, 3, n)
    xyz = centres[group] + rng.normal(0.0, 1.2, (n, 3))
    kind = np.array(["a", "b", "c"])[np.where(rng.random(n) < 0.85, group, rng.integers(0, 3, n))]
    return pa.table({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "kind": kind})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    ds = write_dataset(_blobs(), root / "blobs", label="kind", partitions=4, split=(0.5, 0.0, 0.5))
    with engine("local", workers=2):
        model = Pipeline(Preprocessor.auto(ds.schema), KMeans(3, random_state=0)).fit(ds)
    return ds, model


def _test_rows(ds, model):
    """The test split in shard order: features, true labels, draws of seed 0..."""
    parts = [(s, s.read()) for s in sorted(ds.shards("test"), key=lambda s: s.index)]
    X = np.concatenate([np.asarray(model.transform_features(t), np.float64) for _, t in parts])
    y = np.concatenate([t.column("kind").to_numpy(zero_copy_only=False) for _, t in parts])
    return parts, X, y


def test_inertia_equals_sklearn_kmeans_score_on_the_same_centres(fitted):
    ds, model = fitted
    with engine("local", workers=2):
        report = evaluate_clustering(model, ds, split="test")
    _, X, _ = _test_rows(ds, model)
    centres = model.estimator.cluster_centers_
    # Fitting on the centres themselves, started at them, leaves them in place (to the last
    # bit after setting them back): then scikit-learn's own KMeans.score is minus their inertia.
    reference = SklearnKMeans(3, init=centres, n_init=1).fit(centres)
    np.testing.assert_allclose(reference.cluster_centers_, centres, rtol=1e-12, atol=1e-15)
    reference.cluster_centers_ = centres.copy()
    assert report["inertia"] == pytest.approx(-reference.score(X), rel=1e-10)
    labels = reference.predict(X)
    assert report["cluster_sizes"] == np.bincount(labels, minlength=3).tolist()
    assert report["rows"] == X.shape[0]
    assert report["mean_squared_distance"] == pytest.approx(report["inertia"] / X.shape[0])


def test_silhouette_on_all_rows_and_ari_nmi_equal_sklearn(fitted):
    ds, model = fitted
    with engine("local", workers=1):
        report = evaluate_clustering(model, ds, split="test", sample_size=10_000)
    _, X, y = _test_rows(ds, model)
    predicted = euclidean_distances(X, model.estimator.cluster_centers_).argmin(1)
    assert report["silhouette_sample_size"] == X.shape[0]
    assert report["silhouette"] == pytest.approx(silhouette_score(X, predicted), rel=1e-10)
    assert report["adjusted_rand_index"] == pytest.approx(adjusted_rand_score(y, predicted))
    assert report["normalized_mutual_info"] == pytest.approx(
        normalized_mutual_info_score(y, predicted)
    )
    assert report["labelled_rows"] == X.shape[0]
    assert 0.5 < report["adjusted_rand_index"] < 1.0  # 15% of the labels are noise


def test_sampled_silhouette_equals_sklearn_on_the_same_sample_for_1_and_2_workers(fitted):
    ds, model = fitted
    reports = []
    for workers in (1, 2):
        with engine("local", workers=workers):
            reports.append(evaluate_clustering(model, ds, split="test", sample_size=150, seed=7))
    parts, X, _ = _test_rows(ds, model)
    draws = np.concatenate([sample_draws(7, shard.index, table.num_rows) for shard, table in parts])
    sample = X[np.argsort(draws, kind="stable")[:150]]
    labels = euclidean_distances(sample, model.estimator.cluster_centers_).argmin(1)
    expected = silhouette_score(sample, labels)
    for report in reports:
        assert report["silhouette_sample_size"] == 150
        assert report["silhouette"] == pytest.approx(expected, rel=1e-10)
    assert reports[0].metrics["cluster_sizes"] == reports[1].metrics["cluster_sizes"]
    assert reports[0]["inertia"] == pytest.approx(reports[1]["inertia"], rel=1e-12)
    with engine("local", workers=1):
        other_seed = evaluate_clustering(model, ds, split="test", sample_size=150, seed=8)
    assert other_seed["silhouette"] != reports[0]["silhouette"]


def test_accumulator_merge_equals_one_pass():
    rng = np.random.default_rng(1)
    X, centres = rng.normal(size=(60, 2)), rng.normal(size=(3, 2))
    keys, classes = rng.random(60), rng.integers(-1, 2, 60)
    whole = ClusteringAccumulator(3, 2, 10).update(X, centres, keys, classes)
    left = ClusteringAccumulator(3, 2, 10).update(X[:25], centres, keys[:25], classes[:25])
    right = ClusteringAccumulator(3, 2, 10).update(X[25:], centres, keys[25:], classes[25:])
    merged = right.merge(left)
    assert merged.inertia == pytest.approx(whole.inertia)
    np.testing.assert_array_equal(merged.sizes, whole.sizes)
    np.testing.assert_array_equal(merged.contingency, whole.contingency)
    np.testing.assert_array_equal(merged.sample_X, whole.sample_X)
    assert merged.contingency.sum() == np.count_nonzero(classes >= 0)


def test_bare_kmeans_on_numeric_columns_is_evaluated_too(tmp_path):
    ds = write_dataset(_blobs(300), tmp_path / "b", label="kind", partitions=2, split=(0.5, 0, 0.5))
    with engine("local", workers=1):
        model = KMeans(3, random_state=0).fit(ds)
        report = evaluate_clustering(model, ds, split="test")
    X = np.column_stack([ds.read("test").column(c).to_numpy() for c in ("x", "y", "z")])
    assert report["inertia"] == pytest.approx(-model.score(X), rel=1e-9)


def test_bad_inputs_are_clear_errors(fitted):
    ds, model = fitted
    with pytest.raises(ValueError, match="'sample_size' parameter must be an int >= 2"):
        evaluate_clustering(model, ds, sample_size=1)
    with pytest.raises(ValueError, match="'seed' parameter"):
        evaluate_clustering(model, ds, seed=-1)
    with engine("local", workers=1):
        pca = Pipeline(Preprocessor.auto(ds.schema), PCA(2)).fit(ds)
    with pytest.raises(TypeError, match="needs a fitted clustering model"):
        evaluate_clustering(pca, ds)
