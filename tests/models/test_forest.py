"""RandomForestClassifier / ExtraTreesClassifier against scikit-learn on the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import ensemble
from sklearn.datasets import make_classification
from sklearn.tree import DecisionTreeClassifier

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import MODELS, ExtraTreesClassifier, Pipeline, RandomForestClassifier
from shardlearn.models.forest import _merge_trees, _tree_arrays
from shardlearn.preprocess import Preprocessor

# Rows of KDD Cup 99 (10% file, 494,021 rows) used here: a seeded random sample keeps the
# suite's run time low on a 2-core CI machine; the comparison stays on identical rows.
KDD_ROWS = 60_000


def _codes(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    for name in columns:
        frame[name] = pd.factorize(frame[name])[0]
    return frame


def _adult(root):
    names = pd.read_csv(root / "adult" / "adult.data", skipinitialspace=True, nrows=0).columns
    frames = [
        pd.read_csv(root / "adult" / f, skipinitialspace=True, names=names, header=0)
        for f in ("adult.data", "adult.test")
    ]
    both = pd.concat(frames, ignore_index=True)
    both = _codes(
        both, [c for c in names if not pd.api.types.is_numeric_dtype(both[c]) and c != "Y"]
    )
    y = (both.pop("Y").str.rstrip(".") == ">50K").to_numpy().astype(int)
    X = both.to_numpy(np.float32)
    n_train = len(frames[0])
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def _kdd(root):
    names = (root / "kddcup99" / "columns.txt").read_text().split()
    frame = pd.read_csv(root / "kddcup99" / "kddcup.data_10_percent.gz", names=names)
    frame = frame.sample(n=KDD_ROWS, random_state=0)
    frame = _codes(frame, ["protocol_type", "service", "flag"])
    y = frame.pop("label").to_numpy()
    X = frame.to_numpy(np.float32)
    cut = int(0.8 * len(y))
    return X[:cut], y[:cut], X[cut:], y[cut:]


def _accuracy_gap(X, y, X_test, y_test, **params) -> tuple[float, float]:
    with engine("local", workers=2):
        ours = RandomForestClassifier(**params, random_state=0).fit(X, y)
    ref = ensemble.RandomForestClassifier(**params, random_state=0).fit(X, y)
    return ours.score(X_test, y_test), ref.score(X_test, y_test)


def test_forest_accuracy_within_one_point_of_sklearn_on_adult(shared_datasets):
    ours, ref = _accuracy_gap(*_adult(shared_datasets), n_estimators=40)
    assert ours >= ref - 0.01, (ours, ref)


def test_forest_accuracy_within_one_point_of_sklearn_on_kddcup99(shared_datasets):
    ours, ref = _accuracy_gap(*_kdd(shared_datasets), n_estimators=30)
    assert ours >= ref - 0.01, (ours, ref)


def _data(n: int = 3000, n_classes: int = 3, seed: int = 0):
    X, y = make_classification(
        n, 12, n_informative=6, n_classes=n_classes, flip_y=0.02, random_state=seed
    )
    return X[: n * 2 // 3], y[: n * 2 // 3], X[n * 2 // 3 :], y[n * 2 // 3 :]


def test_node_array_prediction_equals_sklearn_trees_exactly():
    X, y, X_test, _ = _data()
    trees = [
        DecisionTreeClassifier(max_features="sqrt", random_state=s).fit(X, y) for s in range(4)
    ]
    model = RandomForestClassifier()
    for key, value in _merge_trees([_tree_arrays(t, 3) for t in trees], 3).items():
        setattr(model, key, value)
    model.max_depth_ = max(t.tree_.max_depth for t in trees)
    model.classes_, model.n_features_in_ = np.arange(3), X.shape[1]
    expected = np.mean([t.predict_proba(X_test) for t in trees], axis=0)
    np.testing.assert_array_equal(model.predict_proba(X_test), expected)


def test_same_random_state_and_workers_give_the_same_forest(any_engine):
    X, y, X_test, _ = _data()
    fits = [
        RandomForestClassifier(n_estimators=8, random_state=seed).fit(X, y) for seed in (3, 3, 4)
    ]
    for key in ("children_left_", "children_right_", "feature_", "threshold_", "value_"):
        np.testing.assert_array_equal(getattr(fits[0], key), getattr(fits[1], key))
    np.testing.assert_array_equal(fits[0].predict_proba(X_test), fits[1].predict_proba(X_test))
    assert not np.array_equal(fits[0].predict_proba(X_test), fits[2].predict_proba(X_test))


def test_extra_trees_accuracy_near_sklearn():
    X, y, X_test, y_test = _data(n=4500)
    with engine("local", workers=2):
        ours = ExtraTreesClassifier(n_estimators=40, random_state=0).fit(X, y)
    ref = ensemble.ExtraTreesClassifier(n_estimators=40, random_state=0).fit(X, y)
    assert ours.bootstrap is False
    assert ours.score(X_test, y_test) >= ref.score(X_test, y_test) - 0.03


def test_weights_max_samples_and_depth_are_honoured():
    X, y, X_test, _ = _data(n_classes=2)
    with engine("local", workers=2):
        model = RandomForestClassifier(
            n_estimators=6,
            max_depth=3,
            max_samples=0.5,
            class_weight="balanced_subsample",
            min_samples_leaf=5,
            random_state=0,
        ).fit(X, y, sample_weight=np.linspace(0.5, 1.5, len(y)))
    assert model.max_depth_ <= 3
    assert model.n_estimators_ == 6
    proba = model.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_pipeline_on_a_dataset_with_categorical_columns(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], 1200)
    size = rng.normal(size=1200)
    label = np.where((colour == "red") ^ (size > 0.5), "yes", "no")
    table = pa.table({"colour": colour, "size": size, "label": label})
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=4, split=(0.8, 0, 0.2))
    with engine("local", workers=2):
        model = Pipeline(
            Preprocessor.auto(ds.schema), RandomForestClassifier(n_estimators=10, random_state=0)
        ).fit(ds)
    test = ds.read("test")
    accuracy = np.mean(model.predict(test) == np.asarray(test["label"]))
    assert accuracy > 0.95
    assert set(model.classes_) == {"no", "yes"}


def test_artifact_is_plain_arrays_and_round_trips():
    X, y, X_test, _ = _data()
    with engine("local", workers=1):
        model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    meta, arrays, files = model._to_artifact()
    assert files == {}
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    assert {"children_left_", "threshold_", "value_", "feature_importances_"} <= set(arrays)
    restored = RandomForestClassifier._from_artifact(meta, arrays, files)
    np.testing.assert_array_equal(restored.predict_proba(X_test), model.predict_proba(X_test))


def test_importances_gain_and_split_counts():
    X, y, _, _ = _data()
    with engine("local", workers=1):
        model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    both = model.importances()
    assert sum(both["gain"].values()) == pytest.approx(1.0)
    assert sum(both["split"].values()) == np.count_nonzero(model.feature_ >= 0)
    assert list(both["gain"]) == model.feature_names_in_


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_estimators": 0}, "'n_estimators' parameter of RandomForestClassifier"),
        ({"max_features": "half"}, "'max_features' parameter"),
        ({"class_weight": "auto"}, "'class_weight' parameter"),
        ({"bootstrap": False, "max_samples": 0.5}, "max_samples=0.5 needs bootstrap=True"),
    ],
)
def test_bad_params_are_clear_errors(params, message):
    X, y, _, _ = _data(n=300)
    with engine("local", workers=1), pytest.raises(ValueError, match=message):
        RandomForestClassifier(**params).fit(X, y)


def test_registered_names():
    assert MODELS["random_forest"] is RandomForestClassifier
    assert MODELS["extra_trees"] is ExtraTreesClassifier
