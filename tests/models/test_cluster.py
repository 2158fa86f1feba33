"""KMeans against scikit-learn on the same data, on both engines and 1/2/4 workers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.datasets import make_blobs

import shardlearn as sl
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import DataError, NotFittedError, SchemaError
from shardlearn.models import KMeans


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    X, _ = make_blobs(400, n_features=4, centers=5, cluster_std=2.0, random_state=0)
    return X


def test_lloyd_matches_sklearn_from_the_same_initial_centres(blobs, any_engine):
    init = blobs[:5].copy()
    ours = KMeans(5, init=init).fit(blobs)
    ref = SklearnKMeans(5, init=init, n_init=1).fit(blobs)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-9)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(ours.predict(blobs), ref.predict(blobs))
    np.testing.assert_allclose(ours.transform(blobs), ref.transform(blobs), atol=1e-9)


def test_kmeans_parallel_init_is_within_one_percent_of_sklearn_best_of_ten(blobs, any_engine):
    ours = KMeans(5, random_state=0).fit(blobs)
    ref = SklearnKMeans(5, n_init=10, random_state=0).fit(blobs)
    assert ours.inertia_ <= ref.inertia_ * 1.01


def test_one_two_and_four_workers_give_the_same_centres(blobs):
    results = []
    for workers in (1, 2, 4):
        with engine("local", workers=workers):
            results.append(KMeans(5, random_state=3, n_init=2).fit(blobs))
    for other in results[1:]:
        np.testing.assert_allclose(other.cluster_centers_, results[0].cluster_centers_, atol=1e-9)
        assert other.inertia_ == pytest.approx(results[0].inertia_, rel=1e-12)


def test_fits_a_dataset_and_fit_predict_labels_every_row(blobs, tmp_path):
    import pyarrow as pa

    columns = {f"f{j}": blobs[:, j] for j in range(blobs.shape[1])}
    columns["y"] = np.where(blobs[:, 0] > 0, "a", "b")
    ds = write_dataset(pa.table(columns), tmp_path / "ds", label="y", partitions=2)
    with engine("local", workers=1):
        model = KMeans(5, random_state=0).fit(ds)
        labels = KMeans(5, random_state=0).fit_predict(blobs)
    assert model.feature_names_in_ == ["f0", "f1", "f2", "f3"]
    table = ds.read("train")
    ref = SklearnKMeans(5, init=model.cluster_centers_, n_init=1, max_iter=1).fit(
        np.column_stack([table[f"f{j}"].to_numpy() for j in range(4)])
    )
    assert model.score(table) == pytest.approx(-ref.inertia_, rel=1e-6)
    assert labels.shape == (400,) and set(labels.tolist()) == set(range(5))


def test_round_trips_through_an_artifact(blobs, tmp_path):
    with engine("local", workers=1):
        model = KMeans(3, random_state=1).fit(blobs)
    loaded = sl.load(sl.save(model, tmp_path / "km"))
    np.testing.assert_array_equal(loaded.cluster_centers_, model.cluster_centers_)
    assert loaded.inertia_ == model.inertia_
    np.testing.assert_array_equal(loaded.predict(blobs), model.predict(blobs))


def test_bad_input_gets_clear_errors(blobs):
    with engine("local", workers=1):
        with pytest.raises(DataError, match="n_clusters=5 but the training data has 3 rows"):
            KMeans(5).fit(blobs[:3])
        with pytest.raises(DataError, match="init has shape"):
            KMeans(2, init=np.zeros((3, 4))).fit(blobs)
        with pytest.raises(DataError, match="only 2 distinct rows"):
            KMeans(3, random_state=0).fit(np.repeat([[0.0, 1.0], [2.0, 3.0]], 10, axis=0))
        with pytest.raises(ValueError, match="n_clusters"):
            KMeans(0).fit(blobs)
    with pytest.raises(NotFittedError):
        KMeans(2).predict(blobs)
    with engine("local", workers=1):
        model = KMeans(2, random_state=0).fit(blobs)
    with pytest.raises(SchemaError, match="fitted on 4 features"):
        model.predict(blobs[:, :2])


# ------------------------------------------------------------ datasets without a label column
@pytest.fixture
def label_free(blobs, tmp_path):
    """The blobs plus a categorical column, written as a dataset without a label column."""
    import pyarrow as pa

    columns = {f"f{j}": blobs[:, j] for j in range(blobs.shape[1])}
    columns["side"] = np.where(blobs[:, 1] > 0, "up", "down")
    return write_dataset(pa.table(columns), tmp_path / "ds", None, partitions=3, split=(0.8, 0.2))


def test_pipeline_kmeans_on_a_label_free_dataset_equals_sklearn_from_the_same_init(
    label_free, any_engine
):
    from shardlearn.models import Pipeline
    from shardlearn.preprocess import Preprocessor

    assert label_free.label is None
    pre = Preprocessor.auto(label_free.schema).fit(label_free)
    X = np.asarray(pre.transform(label_free.read("train")), dtype=np.float64)
    init = X[:5].copy()
    model = Pipeline(pre, KMeans(5, init=init)).fit(label_free)
    ref = SklearnKMeans(5, init=init, n_init=1).fit(X)
    kmeans = model.estimator
    assert kmeans.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)
    np.testing.assert_allclose(kmeans.cluster_centers_, ref.cluster_centers_, atol=1e-6)
    assert sum(kmeans.cluster_sizes_) == label_free.num_rows("train") == X.shape[0]
    np.testing.assert_array_equal(model.predict(label_free.read("train")), ref.labels_)


def test_a_bare_kmeans_fits_a_label_free_dataset_and_a_classifier_refuses_it(label_free):
    from shardlearn.models import LogisticRegression, Pipeline
    from shardlearn.preprocess import Preprocessor

    numeric = [f"f{j}" for j in range(4)]
    with engine("local", workers=1):
        with pytest.raises(SchemaError, match="non-numeric columns \\(side\\)"):
            KMeans(5, random_state=0).fit(label_free)  # same rule as for a labelled dataset
        for classifier in (
            LogisticRegression(),
            Pipeline(Preprocessor.auto(label_free.schema), LogisticRegression()),
        ):
            with pytest.raises(DataError, match="has no label column; ingest with --label COLUMN"):
                classifier.fit(label_free)
    table = label_free.read("train").select(numeric)
    with engine("local", workers=1):
        ds = write_dataset(table, label_free.uri + "-numeric", None, partitions=2)
        model = KMeans(5, init=table.to_pandas().to_numpy()[:5]).fit(ds)
    ref = SklearnKMeans(5, init=table.to_pandas().to_numpy()[:5], n_init=1).fit(
        table.to_pandas().to_numpy()
    )
    assert model.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


@pytest.mark.filterwarnings("ignore:The label column 'y' has a single class")
def test_kmeans_fits_a_single_class_dataset_that_a_classifier_refuses(blobs, tmp_path):
    import pyarrow as pa

    from shardlearn.models import LogisticRegression

    columns = {f"f{j}": blobs[:, j] for j in range(blobs.shape[1])}
    columns["y"] = ["only"] * blobs.shape[0]
    ds = write_dataset(pa.table(columns), tmp_path / "one", "y", partitions=2)
    init = blobs[:5].copy()
    with engine("local", workers=1):
        model = KMeans(5, init=init).fit(ds)
        with pytest.raises(DataError, match="at least two classes"):
            LogisticRegression().fit(ds)
    ref = SklearnKMeans(5, init=init, n_init=1).fit(blobs)
    assert model.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
