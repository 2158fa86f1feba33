"""XGBoostClassifier(warm_start=True): more rounds on the same booster, against
single-process XGBoost continuing its booster (``xgboost.train(..., xgb_model=booster)``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from sklearn.base import clone
from sklearn.datasets import make_classification

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import XGBoostClassifier
from shardlearn.registry import load, save

FEATURES = [f"f{j}" for j in range(6)]
PARAMS = {"max_depth": 3, "learning_rate": 0.2, "verbose": 0}
FIRST, TOTAL = 6, 15


def _table(n: int = 1500) -> pa.Table:
    """Features on a 0.1 grid and a key with 100 values: fewer distinct values than bins, so
    XGBoost's distributed sketch is exact and every worker count grows the same trees."""
    X, y = make_classification(n, len(FEATURES), n_informative=3, flip_y=0.2, random_state=4)
    columns = {name: np.round(X[:, j], 1) for j, name in enumerate(FEATURES)}
    return pa.table(columns | {"key": np.arange(n) % 100, "label": y})


def _arrays(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    X = np.column_stack([table.column(n).to_numpy() for n in [*FEATURES, "key"]])
    return X.astype(np.float32), table.column("label").to_numpy()


def _training_input(layout: str, tmp_path):
    """What the model is fitted on, and the same rows as arrays for the reference."""
    table = _table()
    if layout == "label-sorted arrays":
        X, y = _arrays(table)
        order = np.argsort(y, kind="stable")
        return (X[order], y[order]), (X[order], y[order])
    ds = write_dataset(table, tmp_path / "ds", "label", partitions=4, strategy=layout)
    return (ds,), _arrays(ds.read("train"))


def _reference(X: np.ndarray, y: np.ndarray) -> tuple[xgb.Booster, xgb.Booster]:
    """Single-process XGBoost: FIRST rounds, then that booster continued to TOTAL rounds."""
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 3,
              "eta": 0.2, "nthread": 1}  # fmt: skip
    dtrain = xgb.QuantileDMatrix(X, y)
    first = xgb.train(params, dtrain, FIRST)
    continued = xgb.train(params, dtrain, TOTAL - FIRST, xgb_model=first.copy())
    return first, continued


@pytest.mark.parametrize("execution", ["in_process", "workers"])
@pytest.mark.parametrize("layout", ["label-sorted arrays", "range:f0", "hash:key"])
def test_warm_start_adds_rounds_to_the_same_booster_as_xgboost_continuing(
    tmp_path, execution, layout
):
    fit_args, (X, y) = _training_input(layout, tmp_path)
    workers = 1 if execution == "in_process" else 2
    with engine("local", workers=workers):
        model = XGBoostClassifier(
            FIRST, **PARAMS, warm_start=True, execution=execution, checkpoint_interval=4
        ).fit(*fit_args)
        before = model.booster_.get_dump()
        assert model.set_params(n_estimators=TOTAL).fit(*fit_args) is model
    after = model.booster_.get_dump()
    assert model.execution_ == execution
    assert len(before) == FIRST and len(after) == model.n_estimators_ == TOTAL
    assert after[:FIRST] == before  # the earlier trees are kept as they were
    first, continued = _reference(X, y)
    assert continued.num_boosted_rounds() == TOTAL
    np.testing.assert_allclose(
        model.predict_proba(X)[:, 1], continued.predict(xgb.DMatrix(X)), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        xgb.Booster(model_file=bytearray(model.booster_[:FIRST].save_raw("ubj"))).predict(
            xgb.DMatrix(X)
        ),
        first.predict(xgb.DMatrix(X)),
        rtol=0,
        atol=1e-6,
    )


def test_a_continued_sampling_fit_equals_one_that_trained_every_round_at_once():
    X, y = _arrays(_table())
    sampled = {**PARAMS, "subsample": 0.7, "colsample_bytree": 0.6, "random_state": 3}
    with engine("local", workers=1):
        once = XGBoostClassifier(TOTAL, **sampled).fit(X, y)
        warm = XGBoostClassifier(FIRST, **sampled, warm_start=True).fit(X, y)
        warm.set_params(n_estimators=TOTAL).fit(X, y)
    # Round i samples from (random_state, i) whichever fit trains it.
    assert warm.booster_.get_dump() == once.booster_.get_dump()


def test_warm_start_continues_a_model_loaded_from_its_artifact(tmp_path):
    X, y = _arrays(_table())
    with engine("local", workers=1):
        fitted = XGBoostClassifier(FIRST, **PARAMS, warm_start=True).fit(X, y)
        save(fitted, tmp_path / "model")
        loaded = load(tmp_path / "model").set_params(n_estimators=TOTAL).fit(X, y)
    assert loaded.booster_.get_dump()[:FIRST] == fitted.booster_.get_dump()
    assert loaded.n_estimators_ == TOTAL


def test_warm_start_at_the_same_n_estimators_keeps_the_model():
    X, y = _arrays(_table())
    with engine("local", workers=1):
        model = XGBoostClassifier(FIRST, **PARAMS, warm_start=True).fit(X, y)
        booster = model.booster_
        assert model.fit(X, y).booster_ is booster


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_estimators": FIRST - 1}, "'n_estimators' parameter .* must be larger than or equal"),
        ({"max_depth": 5}, r"trained with max_depth=3 \(now 5\)"),
        ({"learning_rate": 0.1}, r"eta=0.2 \(now 0.1\)"),
        ({"xgb_params": {"max_leaves": 4}}, r"max_leaves=None \(now 4\)"),
    ],
)
def test_warm_start_refuses_what_would_not_keep_the_trees(change, message):
    X, y = _arrays(_table())
    with engine("local", workers=1):
        model = XGBoostClassifier(FIRST, **PARAMS, warm_start=True).fit(X, y)
        with pytest.raises(ValueError, match=message):
            model.set_params(**change).fit(X, y)
        with pytest.raises(ValueError, match="same columns and classes"):
            model.set_params(n_estimators=TOTAL, **PARAMS, xgb_params=None).fit(X[:, :3], y)


def test_warm_start_is_a_parameter_that_clone_keeps():
    model = XGBoostClassifier(warm_start=True)
    assert model.get_params()["warm_start"] is True
    assert clone(model).warm_start is True
    assert XGBoostClassifier().set_params(warm_start=True).warm_start is True
    with pytest.raises(ValueError, match="'warm_start' parameter"):
        XGBoostClassifier(warm_start="yes").fit(*_arrays(_table(200)))


def test_warm_start_with_early_stopping_must_beat_the_fitted_best_round(tmp_path):
    ds = write_dataset(_table(), tmp_path / "ds", "label", partitions=2, split=(0.7, 0.3, 0))
    params = {**PARAMS, "learning_rate": 0.5, "early_stopping_rounds": 3, "warm_start": True}
    with engine("local", workers=1):
        model = XGBoostClassifier(40, **params).fit(ds)
        assert model.n_estimators_ < len(model.evals_result_["valid"]["logloss"])  # it stopped
        before = (model.booster_.get_dump(), model.best_iteration_, model.best_score_)
        # The rounds after the best one were cut off with their trees, and so are their scores.
        history = list(model.evals_result_["valid"]["logloss"][: model.n_estimators_])
        model.set_params(n_estimators=200).fit(ds)
    after = model.evals_result_["valid"]["logloss"]
    assert after[: len(history)] == history and len(after) > len(history)  # extended
    assert len(after) < 200  # it stopped, 3 rounds after the best (entry i is round i)
    assert len(after) == model.best_iteration_ + 1 + 3
    assert model.best_iteration_ >= before[1] and model.best_score_ <= before[2]
    assert model.best_iteration_ == int(np.argmin(after))  # the best over both fits
    assert model.n_estimators_ == model.best_iteration_ + 1
    assert model.booster_.get_dump()[: len(before[0])] == before[0]
