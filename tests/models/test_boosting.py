"""XGBoostClassifier against single-process XGBoost on the same data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import DataError
from shardlearn.models import MODELS, Pipeline, XGBoostClassifier
from shardlearn.models.ensemble._xgboost import BoostingProgress
from shardlearn.preprocess import Preprocessor

# These tests are about the distributed trainer: execution="workers" keeps them on the workers
# (the automatic choice trains in-process on one machine; tests/models/test_execution_mode.py).
WORKERS = {"execution": "workers"}
PARAMS = {"n_estimators": 20, "max_depth": 4, "learning_rate": 0.1, "reg_lambda": 1.0, **WORKERS}


def _data(n_classes: int = 2, n: int = 12000, seed: int = 0):
    X, y = make_classification(
        n_samples=n,
        n_features=10,
        n_informative=6,
        n_classes=n_classes,
        flip_y=0.05,
        random_state=seed,
    )
    X = X.astype(np.float32)
    # A large test half keeps the AUC comparison about the models, not about sampling noise.
    cut = n // 2
    return X[:cut], y[:cut], X[cut:], y[cut:]


def _reference(X, y, n_classes: int, **extra) -> xgb.Booster:
    params = {
        "tree_method": "hist",
        "max_depth": PARAMS["max_depth"],
        "eta": PARAMS["learning_rate"],
        "lambda": PARAMS["reg_lambda"],
        "nthread": 1,
        **extra,
    }
    if n_classes == 2:
        params["objective"] = "binary:logistic"
    else:
        params |= {"objective": "multi:softprob", "num_class": n_classes}
    return xgb.train(params, xgb.QuantileDMatrix(X, y), PARAMS["n_estimators"])


def _auc(y, proba) -> float:
    if proba.ndim == 2 and proba.shape[1] == 2:
        proba = proba[:, 1]
    return float(roc_auc_score(y, proba, multi_class="ovr"))


@pytest.mark.parametrize("workers", [2, 4])
def test_binary_gbdt_matches_single_process_xgboost(engine_name, workers):
    X, y, X_test, y_test = _data()
    with engine(engine_name, workers=workers):
        model = XGBoostClassifier(**PARAMS, checkpoint_interval=7).fit(X, y)
    ref = _reference(X, y, 2)
    ours_auc = _auc(y_test, model.predict_proba(X_test))
    ref_auc = _auc(y_test, ref.predict(xgb.DMatrix(X_test)))
    assert abs(ours_auc - ref_auc) <= 0.002
    assert model.n_estimators_ == ref.num_boosted_rounds() == PARAMS["n_estimators"]
    assert len(model.booster_.get_dump()) == len(ref.get_dump())


def test_multiclass_gbdt_matches_single_process_xgboost(engine_name):
    X, y, X_test, y_test = _data(n_classes=3)
    with engine(engine_name, workers=2):
        model = XGBoostClassifier(**PARAMS).fit(X, y)
    ref = _reference(X, y, 3)
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(y_test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    ref_auc = _auc(y_test, ref.predict(xgb.DMatrix(X_test)))
    assert abs(_auc(y_test, proba) - ref_auc) <= 0.002
    # One tree per class and round, as in XGBoost.
    assert len(model.booster_.get_dump()) == len(ref.get_dump()) == 3 * PARAMS["n_estimators"]


def test_a_distributed_fit_prints_nothing_to_the_terminal(capfd):
    X, y, _, _ = _data(n=2000)
    with engine("local", workers=2):
        XGBoostClassifier(n_estimators=3, max_depth=2, **WORKERS).fit(X, y)
    out, _ = capfd.readouterr()  # workers share the test's file descriptors
    assert "got rank" not in out and out == ""


def test_one_worker_equals_xgboost_exactly():
    X, y, X_test, _ = _data()
    with engine("local", workers=1):
        model = XGBoostClassifier(**PARAMS, checkpoint_interval=6).fit(X, y)
    ref = _reference(X, y, 2)
    np.testing.assert_allclose(
        model.predict_proba(X_test)[:, 1], ref.predict(xgb.DMatrix(X_test)), rtol=1e-6
    )


def test_early_stopping_uses_the_valid_split_and_keeps_the_best_round(tmp_path):
    X, y = make_classification(3000, 8, n_informative=3, flip_y=0.3, random_state=1)
    table = pa.table({f"f{j}": X[:, j] for j in range(X.shape[1])} | {"label": y})
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=2, split=(0.7, 0.3, 0))
    progress: list[BoostingProgress] = []
    with engine("local", workers=2):
        pipeline = Pipeline(
            Preprocessor.auto(ds.schema),
            XGBoostClassifier(
                n_estimators=300,
                learning_rate=0.5,
                max_depth=6,
                early_stopping_rounds=5,
                checkpoint_interval=10,
                **WORKERS,
            ),
        ).fit(ds, callback=progress.append)
    model = pipeline.estimator
    history = model.evals_result_["valid"]["logloss"]
    assert model.best_iteration_ == int(np.argmin(history))
    assert model.n_estimators_ == model.best_iteration_ + 1
    assert len(history) == model.best_iteration_ + 1 + 5  # stopped after 5 bad rounds
    assert len(history) < 300
    assert progress[-1].rounds == len(history)
    # The same early stopping in single-process XGBoost on the same rows.
    train, valid = ds.read("train").to_pandas(), ds.read("valid").to_pandas()
    features = [f"f{j}" for j in range(X.shape[1])]
    dtrain = xgb.QuantileDMatrix(train[features].to_numpy(np.float32), train["label"])
    dvalid = xgb.QuantileDMatrix(valid[features].to_numpy(np.float32), valid["label"], ref=dtrain)
    ref = xgb.train(
        {"objective": "binary:logistic", "tree_method": "hist", "eta": 0.5, "max_depth": 6},
        dtrain,
        300,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=5,
        verbose_eval=False,
    )
    assert abs(model.best_iteration_ - ref.best_iteration) <= 2


SAMPLED = {
    "n_estimators": 20,
    "max_depth": 4,
    "learning_rate": 0.3,
    "subsample": 0.7,
    "colsample_bytree": 0.7,
    "xgb_params": {"colsample_bynode": 0.8},
    "random_state": 5,
    **WORKERS,
}


@pytest.mark.parametrize("workers", [1, 2])
def test_checkpoint_interval_does_not_change_a_model_that_samples_rows_and_columns(workers):
    X, y, X_test, _ = _data(n=4000)
    with engine("local", workers=workers):
        # 20 rounds in one chunk is the uncheckpointed run; 5 and 7 restart XGBoost mid-way.
        proba = {
            interval: XGBoostClassifier(**SAMPLED, checkpoint_interval=interval)
            .fit(X, y)
            .predict_proba(X_test)
            for interval in (20, 5, 7)
        }
        unsampled = XGBoostClassifier(
            **{**SAMPLED, "subsample": 1.0, "colsample_bytree": 1.0, "xgb_params": None}
        ).fit(X, y)
    assert np.array_equal(proba[5], proba[20])
    assert np.array_equal(proba[7], proba[20])
    # The sampling is really on (the equality above is not that of an unsampled model).
    assert np.abs(proba[20] - unsampled.predict_proba(X_test)).max() > 0.01


def _single_process_sampled(X, y, rounds: int, eta: float, **sampling) -> xgb.Booster:
    """The trainer's sampling scheme in one process: round i seeded from (seed, i)."""
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": 4,
        "eta": eta,
        "seed_per_iteration": True,
        **sampling,
    }
    dtrain = xgb.QuantileDMatrix(X, y)
    booster = xgb.Booster(params, [dtrain])
    for iteration in range(rounds):
        booster.load_config(booster.save_config())  # a fresh column sampler every round
        booster.update(dtrain, iteration=iteration)
    return booster


def test_one_worker_with_sampling_equals_the_same_scheme_in_one_process():
    X, y, X_test, _ = _data(n=4000)
    with engine("local", workers=1):
        model = XGBoostClassifier(**SAMPLED, checkpoint_interval=6).fit(X, y)
    ref = _single_process_sampled(
        X, y, 20, 0.3, seed=5, subsample=0.7, colsample_bytree=0.7, colsample_bynode=0.8
    )
    assert np.array_equal(model.predict_proba(X_test)[:, 1], ref.predict(xgb.DMatrix(X_test)))


def test_in_process_sampling_with_changing_threads_equals_a_reload_every_round():
    # The in-process loop loads one saved configuration per round (not save + load each
    # round) and saves it again when its thread count changes: the same trees as the scheme
    # of a full reload every round, and the booster keeps XGBoost's parameter check.
    import json

    from shardlearn.models import sharing_cores

    X, y, X_test, _ = _data(n=3000)
    asked = []

    def cores():
        asked.append(1 if len(asked) < 8 else 2)
        return asked[-1]

    with sharing_cores(cores):
        model = XGBoostClassifier(**{**SAMPLED, "execution": "in_process"}).fit(X, y)
    assert model.execution_ == "in_process" and asked[7:9] == [1, 2]
    ref = _single_process_sampled(
        X, y, 20, 0.3, seed=5, subsample=0.7, colsample_bytree=0.7, colsample_bynode=0.8
    )
    assert np.array_equal(model.predict_proba(X_test)[:, 1], ref.predict(xgb.DMatrix(X_test)))
    config = json.loads(model.booster_.save_config())["learner"]["generic_param"]
    assert config["validate_parameters"] == "1" and config["nthread"] == "2"


def _coarse_label_sorted(n: int = 3000):
    """Features on a 0.1 grid (fewer distinct values than bins: XGBoost's distributed sketch
    is then exact, so every worker count grows the same trees), rows sorted by label."""
    X, y = make_classification(n, 8, n_informative=3, flip_y=0.3, random_state=1)
    order = np.argsort(y, kind="stable")
    return np.round(X[order], 1).astype(np.float32), y[order]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_worker_count_does_not_change_the_model_when_the_sketch_is_exact(workers):
    X, y = _coarse_label_sorted()
    with engine("local", workers=workers):
        plain = XGBoostClassifier(**PARAMS).fit(X, y)
        by_columns = XGBoostClassifier(
            **PARAMS, colsample_bytree=0.6, xgb_params={"colsample_bynode": 0.8}
        ).fit(X, y)
    ref = _reference(X, y, 2)
    assert np.array_equal(plain.predict_proba(X)[:, 1], ref.predict(xgb.DMatrix(X)))
    # Column samples are drawn once for all workers: the same as on one worker in one process.
    rounds, eta = PARAMS["n_estimators"], PARAMS["learning_rate"]
    sampled = _single_process_sampled(
        X, y, rounds, eta, seed=0, colsample_bytree=0.6, colsample_bynode=0.8
    )
    assert np.array_equal(by_columns.predict_proba(X)[:, 1], sampled.predict(xgb.DMatrix(X)))


@pytest.mark.parametrize("workers", [2, 4])
def test_label_sorted_rows_stay_within_the_sketch_tolerance_of_xgboost(workers):
    # Continuous features: each worker sketches its own rows (here one class each), so the
    # bin cuts differ a little from single-process XGBoost's and so do a few splits.
    X, y, X_test, y_test = _data(n=6000)
    order = np.argsort(y, kind="stable")
    with engine("local", workers=workers):
        model = XGBoostClassifier(**PARAMS).fit(X[order], y[order])
    ref = _reference(X, y, 2).predict(xgb.DMatrix(X_test))
    proba = model.predict_proba(X_test)[:, 1]
    assert abs(_auc(y_test, proba) - _auc(y_test, ref)) <= 0.002
    assert np.abs(proba - ref).mean() <= 0.03


@pytest.mark.parametrize("metric", ["auc", "aucpr"])
def test_early_stopping_on_ranking_metrics_does_not_depend_on_the_layout(tmp_path, metric):
    X, y = _coarse_label_sorted()
    features = [f"f{j}" for j in range(X.shape[1])]
    table = pa.table({name: X[:, j] for j, name in enumerate(features)} | {"label": y})
    params = {"objective": "binary:logistic", "tree_method": "hist", "eta": 0.3, "max_depth": 6}
    fits = {}
    for strategy in ("random", "range:f0"):
        ds = write_dataset(
            table,
            tmp_path / strategy,
            "label",
            partitions=2,
            split=(0.7, 0.3, 0),
            strategy=strategy,
        )
        for workers in (1, 2):
            with engine("local", workers=workers):
                fits[strategy, workers] = XGBoostClassifier(
                    n_estimators=200,
                    learning_rate=0.3,
                    early_stopping_rounds=5,
                    eval_metric=metric,
                    checkpoint_interval=10,
                    **WORKERS,
                ).fit(ds)
        train, valid = ds.read("train").to_pandas(), ds.read("valid").to_pandas()
        dtrain = xgb.QuantileDMatrix(train[features].to_numpy(np.float32), train["label"])
        dvalid = xgb.QuantileDMatrix(
            valid[features].to_numpy(np.float32), valid["label"], ref=dtrain
        )
        history: dict = {}
        ref = xgb.train(
            params | {"eval_metric": metric},
            dtrain,
            200,
            evals=[(dvalid, "valid")],
            evals_result=history,
            early_stopping_rounds=5,
            verbose_eval=False,
        )
        for workers in (1, 2):
            model = fits[strategy, workers]
            # XGBoost's own value is exact in one process: ours is that value, on any layout
            # (to rounding: numpy's log and the C library's may differ in the last bit).
            ours = model.evals_result_["valid"][metric]
            np.testing.assert_allclose(ours, history["valid"][metric], rtol=1e-14, atol=0)
            assert model.best_iteration_ == ref.best_iteration
            assert model.n_estimators_ == ref.best_iteration + 1
    assert len({model.best_iteration_ for model in fits.values()}) == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_depth": -1}, "'max_depth' parameter of XGBoostClassifier"),
        ({"learning_rate": 0}, "'learning_rate' parameter of XGBoostClassifier"),
        ({"subsample": 1.5}, "'subsample' parameter"),
        ({"eval_metric": "rmse"}, "'eval_metric' parameter"),
        ({"xgb_params": {"max_leafs": 4}}, "Did you mean 'max_leaves'"),
        ({"xgb_params": {"objective": "reg:squarederror"}}, "may not set 'objective'"),
        ({"xgb_params": {"eta": 0.1}}, "use learning_rate"),
        ({"xgb_params": {"grow_policy": "best"}}, "'grow_policy' parameter"),
        ({"eval_metric": "mlogloss"}, "for a binary problem"),
    ],
)
def test_bad_params_are_clear_errors_naming_the_param(params, message):
    X, y, _, _ = _data(n=200)
    with engine("local", workers=1), pytest.raises(ValueError, match=message) as info:
        XGBoostClassifier(n_estimators=2, **params).fit(X, y)
    assert "XGBoostError" not in repr(info.value)


def test_early_stopping_without_a_valid_split_is_a_data_error():
    X, y, _, _ = _data(n=200)
    with engine("local", workers=1), pytest.raises(DataError, match="needs a valid split"):
        XGBoostClassifier(n_estimators=2, early_stopping_rounds=3).fit(X, y)


def test_artifact_is_ubjson_and_round_trips_without_cluster_settings():
    X, y, X_test, _ = _data(n=800)
    with engine("local", workers=1):
        model = XGBoostClassifier(n_estimators=5).fit(X, y)
    meta, arrays, files = model._to_artifact()
    assert set(files) == {"booster.ubj"}
    assert files["booster.ubj"][:1] == b"{"  # UBJSON object marker, not a pickle
    assert "nthread" not in meta["attributes"]["params_"]
    restored = XGBoostClassifier._from_artifact(meta, arrays, files)
    np.testing.assert_array_equal(restored.predict_proba(X_test), model.predict_proba(X_test))


def test_importances_gain_and_split_counts():
    X, y, _, _ = _data(n=1000)
    with engine("local", workers=1):
        model = XGBoostClassifier(n_estimators=10).fit(X, y)
    both = model.importances()
    assert set(both) == {"gain", "split"}
    assert sum(both["gain"].values()) == pytest.approx(1.0)
    assert np.allclose(model.feature_importances_.sum(), 1.0)
    assert sum(both["split"].values()) == sum(tree.count("<") for tree in model.booster_.get_dump())


def test_registered_as_xgboost():
    assert MODELS["xgboost"] is XGBoostClassifier


@pytest.mark.parametrize(
    ("sampling", "reloads"),
    [
        ({}, 0),
        ({"subsample": 0.7}, 11),
        ({"colsample_bytree": 0.7}, 11),
        ({"xgb_params": {"colsample_bynode": 0.8}}, 11),
    ],
)
def test_only_a_fit_that_samples_reloads_the_booster_every_round(monkeypatch, sampling, reloads):
    # The reload (a fresh updater, whose sampler is seeded from the round's RNG) is 15-25% of a
    # small fit's training; a fit that samples nothing draws no random number and skips it.
    # A sampling fit reloads before every round but the first (its booster's updater is new)
    # and saves the configuration it reloads once.
    calls, saves = [], []
    load_config, save_config = xgb.Booster.load_config, xgb.Booster.save_config

    def counted(self, config):
        calls.append(config)
        return load_config(self, config)

    def saved(self):
        saves.append(1)
        return save_config(self)

    monkeypatch.setattr(xgb.Booster, "load_config", counted)
    monkeypatch.setattr(xgb.Booster, "save_config", saved)
    X, y, X_test, _ = _data(n=2000)
    with engine("local", workers=1):
        model = XGBoostClassifier(
            n_estimators=12, max_depth=3, random_state=5, execution="in_process", **sampling
        ).fit(X, y)
    assert model.execution_ == "in_process"
    assert len(calls) == reloads
    assert len(saves) == min(reloads, 1)
    if not sampling:
        # Without the reload, still single-process XGBoost exactly.
        ref = xgb.train(
            {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 3, "eta": 0.3},
            xgb.QuantileDMatrix(X, y),
            12,
        )
        proba = model.predict_proba(X_test)[:, 1]
        assert np.array_equal(proba, ref.predict(xgb.DMatrix(X_test)))
