"""``shardlearn train --model kmeans|pca`` and ``--pca N``: fit, tables, artifacts, registry,
batch prediction."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics.pairwise import euclidean_distances

from shardlearn.data import write_dataset
from shardlearn.testing import run_cli


def _blobs(n=360, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    group = rng.integers(0, 3, n)
    xy = centres[group] + rng.normal(0.0, 0.7, (n, 2))
    colour = np.where(rng.random(n) < 0.8, np.array(["red", "green", "blue"])[group], "grey")
    return pa.table(
        {"x": xy[:, 0], "y": xy[:, 1], "colour": colour, "kind": np.array(["a", "b", "c"])[group]}
    )


@pytest.fixture
def blobs(tmp_path):
    table = _blobs()
    write_dataset(table, tmp_path / "blobs", label="kind", partitions=3, split=(0.7, 0.1, 0.2))
    return str(tmp_path / "blobs")


def test_train_kmeans_shows_inertia_and_sizes_and_saves_a_loadable_model(capsys, blobs, tmp_path):
    from shardlearn.data import Dataset
    from shardlearn.registry import load

    out = tmp_path / "km"
    code, stdout, err = run_cli(
        capsys, "train", blobs, "--model", "kmeans", "--param", "n_clusters=3",
        "--param", "random_state=0", "--workers", "2", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "KMeans" in stdout and "inertia" in stdout and "cluster" in stdout
    model = load(out)
    kmeans = model.estimator
    train = Dataset.open(blobs).read("train")
    X = np.asarray(model.transform_features(train), dtype=np.float64)
    distances = euclidean_distances(X, kmeans.cluster_centers_, squared=True)
    assert kmeans.inertia_ == pytest.approx(distances.min(1).sum(), rel=1e-9)
    np.testing.assert_array_equal(
        np.bincount(distances.argmin(1), minlength=3), kmeans.cluster_sizes_
    )
    np.testing.assert_array_equal(model.predict(train), distances.argmin(1))


def test_train_kmeans_json_registers_and_models_show_does_not_crash(capsys, blobs, tmp_path):
    registry = tmp_path / "registry"
    args = ["--param", "n_clusters=3", "--param", "random_state=0", "--workers", "1", "--json"]
    code, stdout, err = run_cli(
        capsys, "train", blobs, "--model", "kmeans", *args, "--out", str(tmp_path / "km"),
        "--register", "blobs-km", "--registry", str(registry),
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["model"] == "KMeans" and len(summary["cluster_sizes"]) == 3
    assert sum(summary["cluster_sizes"]) == summary["rows"] and summary["inertia"] > 0
    assert summary["registered"] == "blobs-km:1"
    code, stdout, err = run_cli(
        capsys, "models", "show", "blobs-km", "--registry", str(registry), "--json"
    )
    assert code == 0, err
    shown = json.loads(stdout)
    assert shown["model_type"] == "Pipeline" and shown["classes"] == []
    assert shown["metrics"]["train_inertia"] == pytest.approx(summary["inertia"])
    assert shown["input_columns"] == ["x", "y", "colour"]


def test_predict_with_a_kmeans_model_writes_cluster_ids(capsys, blobs, tmp_path):
    from shardlearn.data import Dataset
    from shardlearn.registry import load

    out = tmp_path / "km"
    code, _, err = run_cli(
        capsys, "train", blobs, "--model", "kmeans", "--param", "n_clusters=3",
        "--param", "random_state=0", "--workers", "1", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    source = tmp_path / "new.parquet"
    test = Dataset.open(blobs).read("test").drop_columns(["kind"])
    pq.write_table(test, source)
    target = tmp_path / "clusters.parquet"
    code, _, err = run_cli(capsys, "predict", str(out), str(source), "--out", str(target))
    assert code == 0, err
    written = pq.read_table(target).column("prediction").to_numpy()
    np.testing.assert_array_equal(written, load(out).predict(test))
    assert set(written.tolist()) <= {0, 1, 2}
    code, _, err = run_cli(
        capsys, "predict", str(out), str(source), "--out", str(tmp_path / "p.parquet"), "--proba"
    )
    assert code == 1 and "KMeans has no predict_proba" in err


def test_train_pca_shows_explained_variance_and_predict_points_at_transform(
    capsys, blobs, tmp_path
):
    from sklearn.decomposition import PCA as SklearnPCA

    from shardlearn.data import Dataset
    from shardlearn.registry import load

    out = tmp_path / "pca"
    code, stdout, err = run_cli(
        capsys, "train", blobs, "--model", "pca", "--param", "n_components=3",
        "--workers", "2", "--json", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    model = load(out)
    X = np.asarray(model.preprocessor.transform(Dataset.open(blobs).read("train")), np.float64)
    ref = SklearnPCA(3).fit(X)
    np.testing.assert_allclose(
        summary["explained_variance_ratio"], ref.explained_variance_ratio_, atol=1e-6
    )
    np.testing.assert_allclose(
        summary["cumulative_explained_variance_ratio"],
        np.cumsum(ref.explained_variance_ratio_),
        atol=1e-6,
    )
    registry = str(tmp_path / "registry")
    code, stdout, err = run_cli(
        capsys, "train", blobs, "--model", "pca", "--out", str(tmp_path / "p2"),
        "--register", "blobs-pca", "--registry", registry,
    )  # fmt: skip
    assert code == 0, err
    assert "cumulative" in stdout and "pca0" in stdout
    code, stdout, err = run_cli(capsys, "models", "show", "blobs-pca", "--registry", registry)
    assert code == 0, err
    assert "explained_variance_ratio_total" in stdout
    source = tmp_path / "new.parquet"
    pq.write_table(Dataset.open(blobs).read("test"), source)
    code, _, err = run_cli(
        capsys, "predict", str(out), str(source), "--out", str(tmp_path / "o.parquet")
    )
    assert code == 1 and "transform" in err and "PCA makes no predictions" in err


def test_train_logistic_with_pca_option(capsys, blobs, tmp_path):
    from shardlearn.models import PCA
    from shardlearn.registry import load

    out = tmp_path / "lr"
    code, stdout, err = run_cli(
        capsys, "train", blobs, "--model", "gaussian_nb", "--pca", "2", "--workers", "1",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "PCA → GaussianNB" in stdout and "accuracy" in stdout
    model = load(out)
    assert isinstance(model.transformers[0], PCA) and model.estimator.n_features_in_ == 2


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "many"])
def test_bad_pca_option_is_a_clear_error(capsys, blobs, tmp_path, value):
    code, _, err = run_cli(capsys, "train", blobs, "--pca", value, "--out", str(tmp_path / "m"))
    assert code == 1 and "--pca expects a number of components" in err


def test_bad_kmeans_parameter_is_a_clear_error(capsys, blobs, tmp_path):
    code, _, err = run_cli(
        capsys, "train", blobs, "--model", "kmeans", "--param", "n_clusters=0",
        "--out", str(tmp_path / "m"),
    )  # fmt: skip
    assert code == 1 and "n_clusters" in err
