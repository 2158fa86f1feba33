"""evaluate() on real datasets and engines equals sklearn.metrics on the same predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest

from shardlearn.data import write_dataset
from shardlearn.exceptions import DataError, NotFittedError, ShardlearnError
from shardlearn.metrics import Report, UndefinedMetricWarning, evaluate

from ._models import ScoreColumnModel, TableLogisticRegression
from ._reference import sklearn_summary
from .test_functions import EXACT, SCALARS, assert_matches_sklearn, predictions

CLASSES = ["ant", "bee", "cat"]


def prediction_table(n: int, k: int = 3, seed: int = 0) -> pa.Table:
    """Rows with a label, two features, stored probabilities p0..p{k-1} and a weight."""
    y, proba, w = predictions(n, k, seed)
    rng = np.random.default_rng(seed)
    columns = {"x1": rng.normal(size=n) + y, "x2": rng.normal(size=n) - y}
    columns.update({f"p{j}": proba[:, j] for j in range(k)})
    columns["w"] = w
    columns["label"] = np.array(CLASSES[:k] if k <= 3 else [f"c{j:03d}" for j in range(k)])[y]
    return pa.table(columns)


def arrays_of(table: pa.Table, classes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.array([lookup[v] for v in table.column("label").to_pylist()])
    proba = np.column_stack([table.column(f"p{j}").to_numpy() for j in range(len(classes))])
    return y, proba, table.column("w").to_numpy()


@pytest.fixture
def in_process():
    """The in-process local engine (workers=1): fast, for tests about metrics, not engines."""
    from shardlearn.engine import engine

    with engine("local", workers=1) as eng:
        yield eng


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return fn(*args, **kw)


def test_evaluate_equals_sklearn_on_every_engine(any_engine, tmp_path) -> None:
    table = prediction_table(900)
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=6, split=(0.0, 0.0, 1.0))
    report = quiet(evaluate, ScoreColumnModel(CLASSES), ds, weight_column="w", batch_size=64)
    y, proba, w = arrays_of(ds.read("test"), ds.classes)
    assert_matches_sklearn(report.metrics, y, proba, w)
    assert report.evaluation["engine"] == any_engine.name
    assert report.evaluation["workers"] == 2
    assert sum(s["rows"] for s in report.evaluation["per_shard"]) == 900


def test_many_shards_equal_one_shard(any_engine, tmp_path) -> None:
    table = prediction_table(700, seed=1)
    one = write_dataset(table, tmp_path / "one", label="label", partitions=1, split=(0, 0, 1))
    many = write_dataset(table, tmp_path / "many", label="label", partitions=13, split=(0, 0, 1))
    assert len(many.shards("test")) > 8
    model = ScoreColumnModel(CLASSES)
    a = quiet(evaluate, model, one, weight_column="w").metrics
    b = quiet(evaluate, model, many, weight_column="w", batch_size=7).metrics
    for key in (*SCALARS, "roc_auc", "pr_auc", "roc_auc_weighted"):
        assert a[key] == pytest.approx(b[key], rel=EXACT, abs=EXACT), key


def test_one_row_shards(in_process, tmp_path) -> None:
    table = prediction_table(12, seed=2)
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=12, split=(0, 0, 1))
    assert min(s.rows for s in ds.shards("test")) == 1
    report = quiet(evaluate, ScoreColumnModel(CLASSES), ds)
    y, proba, _ = arrays_of(ds.read("test"), ds.classes)
    assert_matches_sklearn(report.metrics, y, proba)


def test_a_real_fitted_model_matches_sklearn_on_its_own_predictions(in_process, tmp_path) -> None:
    table = prediction_table(1200, seed=3)
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=4, split=(0.6, 0.0, 0.4))
    model = TableLogisticRegression(["x1", "x2"]).fit(ds.read("train"), "label")
    report = evaluate(model, ds, split="test")
    test = ds.read("test")
    y = np.array([ds.classes.index(v) for v in test.column("label").to_pylist()])
    proba = model.predict_proba(test)
    assert_matches_sklearn(report.metrics, y, proba)
    assert report.model["type"] == "TableLogisticRegression"
    assert report.model["params"]["C"] == 1.0
    assert report.dataset["rows"] == test.num_rows
    assert "<img" in report.to_html()


def test_a_class_the_model_knows_but_the_split_lacks(in_process, tmp_path) -> None:
    table = prediction_table(300, k=2, seed=4)  # labels ant, bee only
    table = table.append_column("p2", pa.array(np.zeros(300)))
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=3, split=(0, 0, 1))
    model = ScoreColumnModel(["ant", "bee", "zebra"])
    with pytest.warns(UndefinedMetricWarning) as record:
        report = evaluate(model, ds)
    assert any("ROC-AUC is undefined for class indices [2]" in str(r.message) for r in record)
    assert report.classes == ["ant", "bee", "zebra"]
    assert report.metrics["per_class"][2]["support"] == 0
    y, proba, _ = arrays_of(ds.read("test"), ["ant", "bee", "zebra"])
    ref = sklearn_summary(y, proba)
    assert report.metrics["accuracy"] == pytest.approx(ref["accuracy"], abs=EXACT)


def test_model_columns_in_another_order_are_mapped_to_the_dataset_classes(
    in_process, tmp_path
) -> None:
    table = prediction_table(400, seed=5)
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=2, split=(0, 0, 1))
    # The model lists classes in reverse, and returns its columns in that order.
    swapped = table.rename_columns(
        [{"p0": "p2", "p2": "p0"}.get(name, name) for name in table.column_names]
    )
    ds_swapped = write_dataset(
        swapped, tmp_path / "sw", label="label", partitions=2, split=(0, 0, 1)
    )
    straight = quiet(evaluate, ScoreColumnModel(CLASSES), ds).metrics
    reverse = quiet(evaluate, ScoreColumnModel(CLASSES[::-1]), ds_swapped).metrics
    for key in SCALARS:
        assert straight[key] == pytest.approx(reverse[key], rel=EXACT, abs=EXACT), key


def test_bad_models_and_data_get_clear_errors(in_process, tmp_path) -> None:
    table = prediction_table(50, seed=6)
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=2, split=(0, 0, 1))
    with pytest.raises(TypeError, match="predict_proba or decision_function"):
        evaluate(object(), ds)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        evaluate(TableLogisticRegression(["x1"]), ds)
    with pytest.raises(DataError, match="no 'train' split"):
        evaluate(ScoreColumnModel(CLASSES), ds, split="train")
    with pytest.raises(DataError, match="weight column 'nope'"):
        evaluate(ScoreColumnModel(CLASSES), ds, weight_column="nope")
    with pytest.raises(ValueError, match="number of score bins must be >= 1"):
        evaluate(ScoreColumnModel(CLASSES), ds, bins=0)
    with pytest.raises(ValueError, match="calibration bins must be an int >= 1"):
        evaluate(ScoreColumnModel(CLASSES), ds, calibration_bins=0)
    with pytest.raises(ValueError, match="'batch_size' parameter must be an int >= 1"):
        evaluate(ScoreColumnModel(CLASSES), ds, batch_size=0)
    # Raised on a worker: the engine reports it as TaskFailed with the original message.
    with pytest.raises(ShardlearnError, match="scores have shape"):
        evaluate(ScoreColumnModel(CLASSES, columns=2), ds)


def test_evaluate_opens_a_dataset_path_and_returns_a_report(in_process, tmp_path) -> None:
    write_dataset(
        prediction_table(80, seed=7), tmp_path / "ds", label="label", partitions=2, split=(0, 0, 1)
    )
    report = quiet(evaluate, ScoreColumnModel(CLASSES), str(tmp_path / "ds"))
    assert isinstance(report, Report)
    assert report.dataset["uri"].endswith("ds")


def test_margin_models_are_evaluated_from_decision_function(tmp_path):
    """LinearSVC has no predict_proba: ranking metrics come from its decision function."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    from shardlearn.engine import engine
    from shardlearn.models import LinearSVC

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    y = np.where(x @ [1.0, -2.0, 0.5] + rng.normal(0, 0.5, 600) > 0, "yes", "no")
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
    dataset = write_dataset(table, tmp_path / "ds", "y", partitions=3, split=(0.5, 0.0, 0.5))
    with engine("local", workers=1):
        model = LinearSVC().fit(dataset)
        report = evaluate(model, dataset, split="test")
    test = dataset.read("test")
    features = np.column_stack([test.column(c).to_numpy() for c in "abc"])
    truth = test.column("y").to_numpy(zero_copy_only=False)
    assert report["accuracy"] == pytest.approx(accuracy_score(truth, model.predict(features)))
    margins = model.decision_function(features)
    assert report["roc_auc"] == pytest.approx(roc_auc_score(truth == "yes", margins), abs=1e-12)
    assert "decision_function" in report.evaluation["scores"]
