"""``shardlearn evaluate`` on a KMeans model: table, --json, sample options, clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.metrics.pairwise import euclidean_distances

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import PCA, KMeans, LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import save
from shardlearn.testing import run_cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    group = rng.integers(0, 3, 500)
    xy = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 5.0]])[group] + rng.normal(0, 1.0, (500, 2))
    table = pa.table({"x": xy[:, 0], "y": xy[:, 1], "kind": np.array(["a", "b", "c"])[group]})
    ds = write_dataset(table, root / "ds", label="kind", partitions=3, split=(0.6, 0.0, 0.4))
    paths = {}
    with engine("local", workers=1):
        for name, step in (("km", KMeans(3, random_state=0)), ("pca", PCA(1))):
            paths[name] = str(
                save(Pipeline(Preprocessor.auto(ds.schema), step).fit(ds), root / name)
            )
        lr = Pipeline(Preprocessor.auto(ds.schema), LogisticRegression()).fit(ds)
        paths["lr"] = str(save(lr, root / "lr"))
    return ds, paths


def test_evaluate_kmeans_json_matches_sklearn(capsys, setup):
    from shardlearn.registry import load

    ds, paths = setup
    code, stdout, err = run_cli(
        capsys, "evaluate", paths["km"], str(ds.uri), "--json", "-", "--workers", "2",
        "--sample-size", "100000", "--seed", "3",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    metrics = result["metrics"]
    assert result["kind"] == "clustering" and result["dataset"]["split"] == "test"
    model = load(paths["km"])
    parts = [s.read() for s in sorted(ds.shards("test"), key=lambda s: s.index)]
    X = np.concatenate([np.asarray(model.transform_features(t), np.float64) for t in parts])
    y = np.concatenate([t.column("kind").to_numpy(zero_copy_only=False) for t in parts])
    distances = euclidean_distances(X, model.estimator.cluster_centers_, squared=True)
    labels = distances.argmin(1)
    assert metrics["inertia"] == pytest.approx(distances.min(1).sum(), rel=1e-10)
    assert metrics["silhouette"] == pytest.approx(silhouette_score(X, labels), rel=1e-10)
    assert metrics["adjusted_rand_index"] == pytest.approx(adjusted_rand_score(y, labels))
    assert metrics["cluster_sizes"] == np.bincount(labels, minlength=3).tolist()
    assert metrics["silhouette_seed"] == 3


def test_evaluate_kmeans_prints_the_tables(capsys, setup):
    ds, paths = setup
    code, stdout, err = run_cli(
        capsys, "evaluate", paths["km"], str(ds.uri), "--workers", "1", "--sample-size", "50"
    )
    assert code == 0, err
    for text in ("inertia", "silhouette", "sample of 50 rows, seed 0", "adjusted Rand index",
                 "normalized mutual info", "Cluster sizes"):  # fmt: skip
        assert text in stdout


def test_non_classifier_misuse_is_a_clear_error(capsys, setup):
    ds, paths = setup
    code, _, err = run_cli(capsys, "evaluate", paths["pca"], str(ds.uri), "--workers", "1")
    assert code == 1 and "PCA (a transformer)" in err
    code, _, err = run_cli(
        capsys, "evaluate", paths["km"], str(ds.uri), "--report", "r.html", "--workers", "1"
    )
    assert code == 1 and "use --json for a clustering model" in err
    code, _, err = run_cli(capsys, "compare", paths["lr"], paths["km"], str(ds.uri))
    assert code == 1 and "compare ranks classifiers" in err
    code, _, err = run_cli(capsys, "evaluate", paths["km"], str(ds.uri), "--sample-size", "1")
    assert code == 2


def test_evaluate_classifier_is_unchanged(capsys, setup):
    ds, paths = setup
    code, stdout, err = run_cli(capsys, "evaluate", paths["lr"], str(ds.uri), "--workers", "1")
    assert code == 0, err
    assert "accuracy" in stdout and "Per class" in stdout
