"""Self-training: pseudo-labels help on Adult with 90% of the train labels hidden."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import shardlearn as sl
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import DataError
from shardlearn.models import LogisticRegression, SelfTrainingClassifier
from shardlearn.models.semi_supervised import unlabelled_mask
from shardlearn.preprocess import Preprocessor


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X, dtype=np.float64)


@pytest.mark.slow
def test_self_training_beats_the_base_on_the_labelled_tenth_of_adult(shared_datasets, tmp_path):
    frame = pd.read_csv(shared_datasets / "adult" / "adult.data", skipinitialspace=True)
    ds = write_dataset(
        pa.Table.from_pandas(frame), tmp_path / "adult", label="Y", partitions=2, split=(0.8, 0.2)
    )
    with engine("local", workers=1):
        pre = Preprocessor.auto(ds.schema).fit(ds)
        train, valid = ds.read("train"), ds.read("valid")
        X = _dense(pre.transform(train.drop_columns(["Y"])))
        X_valid = _dense(pre.transform(valid.drop_columns(["Y"])))
        y, y_valid = np.asarray(train["Y"].to_pylist(), dtype=object), valid["Y"].to_numpy()
        y[np.random.default_rng(0).random(y.size) < 0.9] = None  # hide 90% of the labels
        labelled = ~unlabelled_mask(y)
        base = LogisticRegression().fit(X[labelled], y[labelled].astype(str))
        model = SelfTrainingClassifier("logistic", threshold=0.9, max_rounds=5).fit(
            X, y, validation_data=(X_valid, y_valid)
        )
    base_accuracy = base.score(X_valid, y_valid)
    assert model.history_[0]["valid_accuracy"] == pytest.approx(base_accuracy)
    assert model.history_[-1]["rows_pseudo_labelled"] > 10_000
    # Measured: 0.8510 -> 0.8534 (a small but real, deterministic gain on 6.5k valid rows).
    assert model.score(X_valid, y_valid) > base_accuracy


@pytest.fixture(scope="module")
def two_moons_like():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    X = rng.normal(size=(300, 3)) + y[:, None] * 1.5
    hidden = np.where(rng.random(300) < 0.9, -1, y)
    return X, y, hidden


def test_pseudo_labels_are_added_round_by_round_on_any_engine(two_moons_like, any_engine):
    X, y, hidden = two_moons_like
    model = SelfTrainingClassifier(threshold=0.8, max_rounds=3).fit(
        X, hidden, validation_data=(X, y)
    )
    history = model.history_
    assert [h["round"] for h in history] == list(range(len(history)))
    assert history[0]["rows_pseudo_labelled"] == 0 and history[1]["rows_added"] > 50
    assert model.n_rounds_ == len(history) - 1 >= 1
    assert model.classes_.tolist() == [0, 1]
    assert model.score(X, y) > 0.8


def test_one_and_two_workers_pseudo_label_the_same_rows(two_moons_like):
    X, _y, hidden = two_moons_like
    fitted = []
    for workers in (1, 2):
        with engine("local", workers=workers):
            fitted.append(SelfTrainingClassifier(threshold=0.8, max_rounds=2).fit(X, hidden))
    assert [h["rows_pseudo_labelled"] for h in fitted[0].history_] == [
        h["rows_pseudo_labelled"] for h in fitted[1].history_
    ]
    np.testing.assert_allclose(fitted[0].predict_proba(X), fitted[1].predict_proba(X), atol=1e-6)


def test_round_trips_through_an_artifact(two_moons_like, tmp_path):
    X, _y, hidden = two_moons_like
    with engine("local", workers=1):
        model = SelfTrainingClassifier(LogisticRegression(C=0.5), max_rounds=1).fit(X, hidden)
    loaded = sl.load(sl.save(model, tmp_path / "st"))
    assert loaded.history_ == model.history_
    assert loaded.base.get_params() == model.base.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_bad_input_gets_clear_errors(two_moons_like):
    X, _y, hidden = two_moons_like
    with engine("local", workers=1):
        with pytest.raises(DataError, match="every row is unlabelled"):
            SelfTrainingClassifier().fit(X, np.full(300, -1))
        with pytest.raises(DataError, match="needs a base with predict_proba"):
            SelfTrainingClassifier("linear_svc").fit(X, hidden)
        with pytest.raises(DataError, match="takes arrays X, y"):
            SelfTrainingClassifier().fit(X)
        with pytest.raises(ValueError, match="model"):
            SelfTrainingClassifier("no_such_model").fit(X, hidden)


def _run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from shardlearn.cli import app
    from shardlearn.cli._common import run_app

    with pytest.raises(SystemExit) as exit_info:
        run_app(app, list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture
def shop(tmp_path):
    rng = np.random.default_rng(0)
    income = rng.normal(50.0, 10.0, 300)
    city = rng.choice(["north", "south"], 300)
    y = np.where(income + 8.0 * (city == "north") + rng.normal(0, 5, 300) > 55, "yes", "no")
    table = pa.table({"income": income, "city": city, "bought": y})
    write_dataset(table, tmp_path / "shop", label="bought", partitions=2, split=(0.8, 0.2))
    return str(tmp_path / "shop"), table


def test_cli_trains_self_training_around_a_named_base(capsys, shop, tmp_path):
    path, table = shop
    out = tmp_path / "st"
    code, stdout, err = _run_cli(
        capsys, "train", path, "--model", "self_training", "--param", "base=logistic",
        "--workers", "1", "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    model = sl.load(out)
    assert type(model.estimator) is SelfTrainingClassifier
    assert type(model.estimator.estimator_) is LogisticRegression
    assert model.estimator.history_[0]["round"] == 0
    assert float(np.mean(model.predict(table) == table["bought"].to_numpy())) > 0.75


@pytest.mark.parametrize("name", ["kmeans", "pca"])
def test_cli_train_says_clustering_and_pca_are_python_only_for_now(capsys, shop, tmp_path, name):
    code, _, err = _run_cli(capsys, "train", shop[0], "--model", name, "--out", str(tmp_path / "m"))
    assert code == 1
    assert "is not a classifier" in err and "fit it from Python" in err
