"""Where a fit runs (models._training.execution): forced modes agree, the automatic choice is a pure
function of the sizes and the machine, and the mode and per-phase timings are visible."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import make_classification

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import Pipeline, XGBoostClassifier
from shardlearn.models._training.execution import (
    PHASES,
    STARTUP_SECONDS,
    Machine,
    Work,
    choose_execution,
    describe_machine,
)
from shardlearn.models._training.fitting import prepare_training
from shardlearn.preprocess import Preprocessor
from shardlearn.testing import run_cli

# Column sampling and early stopping on the valid split: both must replay the same way in one
# process as across the workers.
PARAMS = {
    "n_estimators": 30,
    "max_depth": 3,
    "learning_rate": 0.3,
    "colsample_bytree": 0.8,
    "early_stopping_rounds": 3,
    "checkpoint_interval": 4,
    "verbose": False,
}
FEATURES = [f"f{j}" for j in range(6)]


def _table(n: int = 2000) -> pa.Table:
    """Features on a 0.1 grid and a key with 200 values: fewer distinct values than bins, so
    XGBoost's distributed sketch is exact and every worker count grows the same trees."""
    X, y = make_classification(n, len(FEATURES), n_informative=3, flip_y=0.2, random_state=3)
    columns = {name: np.round(X[:, j], 1) for j, name in enumerate(FEATURES)}
    return pa.table(columns | {"key": np.arange(n) % 200, "label": y})


def _fit(ds, execution: str, workers: int = 2) -> XGBoostClassifier:
    with engine("local", workers=workers):
        return XGBoostClassifier(**PARAMS, execution=execution).fit(ds)


@pytest.mark.parametrize("strategy", ["range:f0", "hash:key"])
def test_forced_in_process_and_workers_give_the_same_booster(tmp_path, strategy):
    # Ordered (rows sorted by a feature into shards) and keyed (hashed by a key) layouts.
    ds = write_dataset(
        _table(), tmp_path / "ds", "label", partitions=2, split=(0.7, 0.3, 0), strategy=strategy
    )
    here, there = _fit(ds, "in_process"), _fit(ds, "workers")
    assert (here.execution_, there.execution_) == ("in_process", "workers")
    X = ds.read("valid").select([*FEATURES, "key"]).to_pandas().to_numpy(np.float64)
    np.testing.assert_allclose(here.predict_proba(X), there.predict_proba(X), rtol=0, atol=1e-6)
    assert here.best_iteration_ == there.best_iteration_
    assert here.n_estimators_ == there.n_estimators_ < PARAMS["n_estimators"]  # it stopped
    np.testing.assert_allclose(
        here.evals_result_["valid"]["logloss"], there.evals_result_["valid"]["logloss"], atol=1e-6
    )


def test_forced_modes_agree_on_label_sorted_arrays():
    table = _table()
    X = np.column_stack([table.column(n).to_numpy() for n in [*FEATURES, "key"]])
    y = table.column("label").to_numpy()
    order = np.argsort(y, kind="stable")
    params = {**PARAMS, "early_stopping_rounds": None}
    with engine("local", workers=2):
        fits = {
            mode: XGBoostClassifier(**params, execution=mode).fit(X[order], y[order])
            for mode in ("in_process", "workers")
        }
    assert fits["in_process"].execution_ == "in_process"
    np.testing.assert_allclose(
        fits["in_process"].predict_proba(X), fits["workers"].predict_proba(X), rtol=0, atol=1e-6
    )


def test_auto_trains_in_process_on_the_local_engine_and_times_every_phase(tmp_path):
    ds = write_dataset(_table(), tmp_path / "ds", "label", partitions=2, split=(0.7, 0.3, 0))
    started = time.perf_counter()
    with engine("local", workers=2):
        pipeline = Pipeline(Preprocessor.auto(ds.schema), XGBoostClassifier(**PARAMS)).fit(ds)
    wall = time.perf_counter() - started
    model = pipeline.estimator
    assert model.execution_ == "in_process"
    assert list(model.fit_timings_) == list(PHASES)
    timings = model.fit_timings_
    # The preprocessor was fitted, blocks were read, trees trained, valid scores computed.
    assert timings["preprocess"] > 0 and timings["read"] > 0
    assert timings["train"] > 0 and timings["evaluate"] > 0
    # Phases are exclusive: they add up to no more than the fit's wall time.
    assert sum(timings.values()) <= wall


def _machine(engine_name: str = "local", cpus: float = 2, memory: int = 8 * 2**30) -> Machine:
    return Machine(
        engine=engine_name,
        workers=2,
        local_cpus=2,
        cluster_cpus=cpus,
        memory_bytes=memory,
        start_seconds=STARTUP_SECONDS[engine_name],
    )


@pytest.mark.parametrize(
    ("work", "machine", "mode"),
    [
        # The benchmark's airline fit: 80k x 8, 100 trees of depth 10, 2 cores.
        (Work("hist_boosting", 80_000, 8, 1000), _machine(), "in_process"),
        # Local workers share this machine's cores: in-process whenever the rows fit.
        (Work("hist_boosting", 10_000_000, 30, 1000), _machine(memory=64 * 2**30), "in_process"),
        # Rows beyond a quarter of this machine's memory go to the workers.
        (Work("hist_boosting", 10_000_000, 30, 1000), _machine(), "workers"),
        # A Ray cluster with 64 cores: small fits stay here, big ones go to the cluster.
        (Work("hist_boosting", 20_000, 8, 600), _machine("ray", 64), "in_process"),
        (Work("hist_boosting", 2_000_000, 30, 1000), _machine("ray", 64, 64 * 2**30), "ray"),
    ],
)
def test_the_automatic_choice_is_a_function_of_size_and_machine(work, machine, mode):
    plans = [choose_execution(work, machine) for _ in range(3)]
    assert [p.mode for p in plans] == [mode] * 3
    assert plans[0] == plans[1] == plans[2]  # estimates and reason included


def test_a_forced_mode_is_honoured_whatever_the_estimate():
    huge = Work("hist_boosting", 10_000_000, 30, 1000)
    assert choose_execution(huge, _machine(), "in_process").mode == "in_process"
    tiny = Work("hist_boosting", 100, 2, 10)
    assert choose_execution(tiny, _machine("ray", 64), "workers").mode == "ray"


def test_the_machine_description_of_an_engine_is_stable():
    with engine("local", workers=2) as eng:
        assert describe_machine(eng) == describe_machine(eng)
        assert describe_machine(eng).engine == "local"


def test_an_unknown_execution_is_refused_naming_the_parameter():
    X, y = make_classification(200, 4, random_state=0)
    with pytest.raises(ValueError, match="'execution' parameter of XGBoostClassifier"):
        XGBoostClassifier(execution="threads").fit(X, y, engine="local")


def test_in_process_is_refused_on_workers_a_caller_already_started():
    X, y = make_classification(200, 4, random_state=0)
    model = XGBoostClassifier(n_estimators=2, execution="in_process", verbose=False)
    with engine("local", workers=2) as eng, prepare_training(model, X, y, engine=eng) as ctx:
        with pytest.raises(ValueError, match="execution='in_process' cannot be honoured"):
            model._fit_context(ctx)


@pytest.mark.parametrize("execution", ["in_process", "workers"])
def test_progress_shows_rounds_with_the_valid_metric(tmp_path, capsys, monkeypatch, execution):
    ds = write_dataset(_table(600), tmp_path / "ds", "label", partitions=2, split=(0.7, 0.3, 0))
    params = {**PARAMS, "verbose": True, "early_stopping_rounds": None, "n_estimators": 8}
    monkeypatch.setenv("SHARDLEARN_PROGRESS", "always")
    with engine("local", workers=2):
        XGBoostClassifier(**params, execution=execution).fit(ds)
    err = capsys.readouterr().err
    assert "XGBoostClassifier rounds" in err and "8/8" in err
    assert "valid logloss" in err
    monkeypatch.setenv("SHARDLEARN_PROGRESS", "auto")  # stderr is not a terminal here
    with engine("local", workers=2):
        XGBoostClassifier(**params, execution=execution).fit(ds)
    assert capsys.readouterr().err == ""


def test_no_progress_with_verbose_0_even_when_forced(tmp_path, capsys, monkeypatch):
    ds = write_dataset(_table(600), tmp_path / "ds", "label", partitions=2, split=(0.7, 0.3, 0))
    monkeypatch.setenv("SHARDLEARN_PROGRESS", "always")
    with engine("local", workers=2):
        XGBoostClassifier(n_estimators=4, verbose=0).fit(ds)
    assert capsys.readouterr().err == ""


def test_train_json_and_summary_show_the_mode_and_the_timings(tmp_path, capsys):
    path = tmp_path / "ds"
    write_dataset(_table(600), path, "label", partitions=2, split=(0.7, 0.3, 0))
    args = ["train", str(path), "--model", "xgboost", "--param", "n_estimators=5", "-w", "2"]
    code, stdout, err = run_cli(capsys, *args, "--out", str(tmp_path / "m1"), "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["execution"] == "in_process"
    assert list(summary["timings"]) == list(PHASES)
    assert summary["timings"]["train"] > 0 and summary["timings"]["evaluate"] > 0
    forced = ["--param", "execution=workers", "--out", str(tmp_path / "m2")]
    code, stdout, err = run_cli(capsys, *args, *forced)
    assert code == 0, err
    assert "Ran workers; time by phase: start" in stdout
