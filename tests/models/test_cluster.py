"""KMeans against scikit-learn on the same data, on both engines and 1/2/4 workers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.datasets import make_blobs

import shardlearn as sl
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import ConvergenceWarning, DataError, NotFittedError, SchemaError
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
    with pytest.raises(SchemaError, match="(fitted on|expecting) 4 features"):
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


# ------------------------------------------------------------ sample weights, centring, budget
@pytest.fixture(scope="module")
def small_blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """300 rows in 4 blobs, integer weights 0..3 (a quarter of them 0), and 4 initial centres
    taken from rows of positive weight."""
    X, y = make_blobs(300, n_features=3, centers=4, cluster_std=2.5, random_state=1)
    weights = np.random.default_rng(1).integers(0, 4, X.shape[0]).astype(np.float64)
    init = X[np.flatnonzero(weights > 0)[:4]].copy()
    return X, weights, init


def _sklearn_tol(X: np.ndarray, weights: np.ndarray, tol: float) -> float:
    """scikit-learn's ``tol`` that scales to ours: theirs uses the unweighted variance."""
    mean = weights @ X / weights.sum()
    weighted_variance = (weights @ (X - mean) ** 2 / weights.sum()).mean()
    return tol * weighted_variance / np.var(X, axis=0).mean()


@pytest.mark.parametrize("tol", [0.0, 1e-4, 3e-2])
def test_weighted_fit_equals_sklearn_weighted_lloyd_from_the_same_start(small_blobs, tol):
    X, weights, init = small_blobs
    weights = weights * 0.7  # not integers
    with engine("local", workers=2):
        ours = KMeans(4, init=init, tol=tol).fit(X, sample_weight=weights)
    ref = SklearnKMeans(
        4, init=init, n_init=1, algorithm="lloyd", tol=_sklearn_tol(X, weights, tol)
    ).fit(X, sample_weight=weights)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-6)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(ours.predict(X), ref.labels_)
    np.testing.assert_allclose(
        ours.cluster_sizes_, np.bincount(ref.labels_, weights=weights, minlength=4)
    )
    assert ours.score(X, sample_weight=weights) == pytest.approx(ref.score(X, None, weights))


def test_integer_weights_equal_repeated_rows(small_blobs):
    X, weights, init = small_blobs
    repeated = np.repeat(X, weights.astype(int), axis=0)
    with engine("local", workers=2):
        weighted = KMeans(4, init=init).fit(X, sample_weight=weights)
        copies = KMeans(4, init=init).fit(repeated)
    np.testing.assert_allclose(weighted.cluster_centers_, copies.cluster_centers_, atol=1e-9)
    assert weighted.inertia_ == pytest.approx(copies.inertia_, rel=1e-9)
    assert weighted.n_iter_ == copies.n_iter_
    np.testing.assert_allclose(weighted.cluster_sizes_, copies.cluster_sizes_)


@pytest.mark.parametrize("workers", [1, 2])
def test_integer_weights_equal_repeated_rows_with_the_kmeans_parallel_init(small_blobs, workers):
    X, weights, _ = small_blobs
    repeated = np.repeat(X, weights.astype(int), axis=0)
    with engine("local", workers=workers):
        for seed in range(3):
            weighted = KMeans(5, random_state=seed).fit(X, sample_weight=weights)
            copies = KMeans(5, random_state=seed).fit(repeated)
            np.testing.assert_allclose(
                weighted.cluster_centers_, copies.cluster_centers_, atol=1e-9
            )
            assert weighted.inertia_ == pytest.approx(copies.inertia_, rel=1e-9)


def test_large_weights_still_draw_enough_kmeans_parallel_candidates(small_blobs):
    # Every row weighs 1000: the cost is 1000 times larger but each row is drawn once, so the
    # first rounds draw almost nothing and the rate must rise (else "only 1 distinct row").
    X, _, _ = small_blobs
    with engine("local", workers=2):
        heavy = KMeans(4, random_state=0, n_init=3).fit(X, sample_weight=np.full(X.shape[0], 1e3))
    best = SklearnKMeans(4, n_init=10, random_state=0).fit(X)
    assert heavy.inertia_ / 1000 <= best.inertia_ * 1.01


def test_zero_weight_rows_have_no_influence_even_on_the_kmeans_parallel_init(small_blobs):
    X, weights, _ = small_blobs
    kept = weights > 0
    outliers = np.full((20, 3), 1e3) + np.arange(60).reshape(20, 3)  # would be centres if seen
    padded = np.vstack([X, outliers])
    padded_weights = np.concatenate([weights, np.zeros(20)])
    with engine("local", workers=2):
        with_zeros = KMeans(4, random_state=5).fit(padded, sample_weight=padded_weights)
        without = KMeans(4, random_state=5).fit(X[kept], sample_weight=weights[kept])
    np.testing.assert_allclose(with_zeros.cluster_centers_, without.cluster_centers_, atol=1e-9)
    assert with_zeros.inertia_ == pytest.approx(without.inertia_, rel=1e-9)
    assert with_zeros.n_iter_ == without.n_iter_


def test_weights_are_refused_when_no_cluster_can_be_weighed(small_blobs):
    X, _, _ = small_blobs
    with engine("local", workers=1):
        with pytest.raises(DataError, match="only 3 of the 300 training rows have a positive"):
            KMeans(4).fit(X, sample_weight=np.r_[np.ones(3), np.zeros(297)])
        with pytest.raises(DataError, match="sample_weight must hold 300 finite non-negative"):
            KMeans(4).fit(X, sample_weight=-np.ones(300))
        with pytest.raises(TypeError, match="class_weight"):
            KMeans(4).fit(X, class_weight="balanced")


def test_an_offset_of_1e8_converges_like_sklearn_and_labels_every_row_to_its_nearest_centre(
    small_blobs,
):
    X, _, init = small_blobs
    far = X + 1e8
    with engine("local", workers=2):
        ours = KMeans(4, init=init + 1e8).fit(far)
    ref = SklearnKMeans(4, init=init + 1e8, n_init=1, algorithm="lloyd").fit(far)
    distances = np.sqrt(((far[:, None, :] - ours.cluster_centers_[None]) ** 2).sum(2))
    assert ours.n_iter_ == ref.n_iter_ < 300
    np.testing.assert_array_equal(ours.predict(far), distances.argmin(1))
    np.testing.assert_array_equal(distances.argmin(1), ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-6)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)
    np.testing.assert_allclose(ours.transform(far), distances, rtol=1e-6)


@pytest.mark.parametrize("max_iter", [1, 2, 3])
def test_max_iter_is_a_hard_budget_of_lloyd_steps_with_a_convergence_warning(small_blobs, max_iter):
    X, weights, init = small_blobs
    with engine("local", workers=2):
        with pytest.warns(ConvergenceWarning, match=f"max_iter={max_iter} Lloyd iterations"):
            ours = KMeans(4, init=init, max_iter=max_iter).fit(X, sample_weight=weights)
    ref = SklearnKMeans(4, init=init, n_init=1, algorithm="lloyd", max_iter=max_iter).fit(
        X, sample_weight=weights
    )
    assert ours.n_iter_ == ref.n_iter_ == max_iter
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-9)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


def test_a_budget_that_is_just_enough_converges_without_a_warning(small_blobs):
    X, weights, init = small_blobs
    ref = SklearnKMeans(4, init=init, n_init=1, algorithm="lloyd", tol=0.0).fit(
        X, sample_weight=weights
    )
    with engine("local", workers=1):  # filterwarnings=error: a ConvergenceWarning would fail
        ours = KMeans(4, init=init, tol=0.0, max_iter=ref.n_iter_).fit(X, sample_weight=weights)
    assert ours.n_iter_ == ref.n_iter_ > 3
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-9)


@pytest.mark.parametrize("order", ["label", "feature"])
def test_sorted_arrays_on_one_two_and_four_workers_give_sklearns_weighted_centres(
    small_blobs, order
):
    X, weights, init = small_blobs
    _, labels = make_blobs(300, n_features=3, centers=4, cluster_std=2.5, random_state=1)
    rows = np.argsort(labels if order == "label" else X[:, 0], kind="stable")
    ref = SklearnKMeans(4, init=init, n_init=1, algorithm="lloyd", tol=0.0).fit(
        X, sample_weight=weights
    )
    for workers in (1, 2, 4):
        with engine("local", workers=workers):
            ours = KMeans(4, init=init, tol=0.0).fit(X[rows], sample_weight=weights[rows])
        np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-9)
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
        assert ours.n_iter_ == ref.n_iter_


@pytest.mark.parametrize("strategy", ["range:f0", "hash:y"])
def test_a_weight_column_of_a_keyed_dataset_gives_sklearns_weighted_centres(
    small_blobs, tmp_path, strategy
):
    import pyarrow as pa

    X, weights, init = small_blobs
    columns = {f"f{j}": X[:, j] for j in range(3)}
    columns |= {"w": weights, "y": np.where(X[:, 1] > X[:, 1].mean(), "a", "b")}
    ds = write_dataset(pa.table(columns), tmp_path / "ds", "y", partitions=4, strategy=strategy)
    ref = SklearnKMeans(4, init=init, n_init=1, algorithm="lloyd", tol=0.0).fit(
        X, sample_weight=weights
    )
    for workers in (1, 2):
        with engine("local", workers=workers):
            ours = KMeans(4, init=init, tol=0.0).fit(ds, sample_weight="w")
        assert ours.feature_names_in_ == ["f0", "f1", "f2"]
        np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-9)
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


def test_an_empty_cluster_moves_to_the_farthest_row_as_in_sklearn(small_blobs):
    X, weights, _ = small_blobs
    weights = weights + 0.5  # every row may be the one moved
    init = X[:4].copy()
    init[2] = 100.0  # no row is closest to it: empty after the first assignment
    ref = SklearnKMeans(4, init=init, n_init=1, algorithm="lloyd", tol=0.0).fit(
        X, sample_weight=weights
    )
    for workers in (1, 2, 4):
        with engine("local", workers=workers):
            ours = KMeans(4, init=init, tol=0.0).fit(X, sample_weight=weights)
        np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-9)
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
        assert ours.n_iter_ == ref.n_iter_
