"""The label-free flow end to end: ``ingest`` without ``--label`` -> ``train --model kmeans|pca``
-> ``evaluate`` / ``predict``; a classifier on such a dataset is a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.decomposition import PCA as SklearnPCA
from sklearn.metrics import silhouette_score
from sklearn.metrics.pairwise import euclidean_distances

from shardlearn.data import Dataset
from shardlearn.testing import run_cli

SHARDLEARN = Path(sys.executable).with_name("shardlearn")


@pytest.fixture(scope="module")
def points(tmp_path_factory) -> str:
    """Three blobs in three numeric columns, no label column, ingested by a real process."""
    root = tmp_path_factory.mktemp("label-free")
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0], [0.0, 6.0, 6.0]])
    xyz = centres[rng.integers(0, 3, 300)] + rng.normal(0.0, 1.0, (300, 3))
    source = root / "pts.csv"
    source.write_text("a,b,c\n" + "".join(f"{a:.5f},{b:.5f},{c:.5f}\n" for a, b, c in xyz))
    out = root / "ds"
    proc = subprocess.run(
        [str(SHARDLEARN), "ingest", str(source), "--out", str(out), "--partitions", "3"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "rows_written=300" in proc.stdout and "no label column" in proc.stdout
    return str(out)


@pytest.fixture(scope="module")
def kmeans_model(points, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("km") / "km"
    proc = subprocess.run(
        [str(SHARDLEARN), "train", points, "--model", "kmeans", "--param", "n_clusters=3",
         "--param", "random_state=0", "--workers", "2", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["model"] == "KMeans" and summary["rows"] == Dataset.open(points).num_rows(
        "train"
    )
    return str(out)


def test_kmeans_on_a_label_free_dataset_matches_sklearn_inertia(points, kmeans_model):
    from shardlearn.registry import load

    model = load(kmeans_model)
    kmeans = model.estimator
    X = np.asarray(model.transform_features(Dataset.open(points).read("train")), np.float64)
    best = SklearnKMeans(3, n_init=10, random_state=0).fit(X)
    assert kmeans.inertia_ == pytest.approx(best.inertia_, rel=0.01)
    # From our centres scikit-learn's Lloyd does not move: the same optimum, the same clusters.
    same_init = SklearnKMeans(3, init=kmeans.cluster_centers_, n_init=1).fit(X)
    assert kmeans.inertia_ == pytest.approx(same_init.inertia_, rel=1e-6)
    np.testing.assert_array_equal(model.predict(Dataset.open(points).read("train")),
                                  same_init.labels_)  # fmt: skip
    np.testing.assert_array_equal(np.bincount(same_init.labels_, minlength=3),
                                  kmeans.cluster_sizes_)  # fmt: skip


def test_pca_on_a_label_free_dataset_matches_sklearn(capsys, points, tmp_path):
    from shardlearn.registry import load

    out = tmp_path / "pca"
    code, stdout, err = run_cli(
        capsys, "train", points, "--model", "pca", "--param", "n_components=2",
        "--workers", "2", "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    model = load(out)
    X = np.asarray(model.transform_features(Dataset.open(points).read("train")), np.float64)
    ref = SklearnPCA(2).fit(X)
    np.testing.assert_allclose(summary["explained_variance_ratio"], ref.explained_variance_ratio_,
                               rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize("model_name", ["logistic", "gaussian_nb"])
def test_a_classifier_on_a_label_free_dataset_is_a_one_line_error(
    capsys, points, tmp_path, model_name
):
    out = tmp_path / "m"
    code, stdout, err = run_cli(capsys, "train", points, "--model", model_name, "--out", str(out))
    assert code == 1
    assert f"{points} has no label column; ingest with --label COLUMN" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + stdout
    assert not out.exists()


def test_evaluate_kmeans_without_labels_reports_no_ari_nmi(capsys, points, kmeans_model):
    from shardlearn.registry import load

    code, stdout, err = run_cli(
        capsys, "evaluate", kmeans_model, points, "--json", "-", "--workers", "2",
        "--sample-size", "100000",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads(stdout)["metrics"]
    assert not {"adjusted_rand_index", "normalized_mutual_info", "labelled_rows"} & set(metrics)
    model = load(kmeans_model)
    test = Dataset.open(points).read("test")
    X = np.asarray(model.transform_features(test), np.float64)
    distances = euclidean_distances(X, model.estimator.cluster_centers_, squared=True)
    assert metrics["rows"] == test.num_rows
    assert metrics["inertia"] == pytest.approx(distances.min(1).sum(), rel=1e-6)
    assert metrics["cluster_sizes"] == np.bincount(distances.argmin(1), minlength=3).tolist()
    assert metrics["silhouette"] == pytest.approx(
        silhouette_score(X, distances.argmin(1)), rel=1e-6
    )
    code, stdout, err = run_cli(capsys, "evaluate", kmeans_model, points, "--workers", "1")
    assert code == 0, err
    assert "inertia" in stdout and "silhouette" in stdout and "Cluster sizes" in stdout
    assert "adjusted Rand" not in stdout and "no label column" in stdout


def test_predict_a_label_free_dataset_writes_cluster_ids(capsys, points, kmeans_model, tmp_path):
    from shardlearn.registry import load

    target = tmp_path / "clusters.parquet"
    code, _, err = run_cli(capsys, "predict", kmeans_model, points, "--out", str(target),
                        "--split", "test")  # fmt: skip
    assert code == 0, err
    written = pq.read_table(target).column("prediction").to_numpy()
    test = Dataset.open(points).read("test")
    np.testing.assert_array_equal(written, load(kmeans_model).predict(test))
    assert len(written) == test.num_rows and set(written.tolist()) <= {0, 1, 2}


def test_evaluating_a_classifier_on_a_label_free_dataset_says_why_not(capsys, points, tmp_path):
    import pyarrow as pa

    from shardlearn.data import write_dataset

    labelled = Dataset.open(points).read("train")
    labelled = labelled.append_column("side", pa.array(np.where(
        labelled["a"].to_numpy() > 2.0, "right", "left")))  # fmt: skip
    write_dataset(labelled, tmp_path / "labelled", "side", partitions=2)
    out = tmp_path / "lr"
    code, _, err = run_cli(capsys, "train", str(tmp_path / "labelled"), "--model", "logistic",
                        "--workers", "1", "--out", str(out))  # fmt: skip
    assert code == 0, err
    for command in (["evaluate", str(out)], ["compare", str(out), str(out)]):
        code, _, err = run_cli(capsys, *command, points)
        assert code == 1
        assert "has no label column, so a classifier cannot be scored on it" in err
        assert "--label COLUMN" in err and "shardlearn predict" in err
