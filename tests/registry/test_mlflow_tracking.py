"""``--mlflow URI`` of train, search and run, against a real MLflow SQLite tracking store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import shardlearn as sl
from shardlearn.data import write_dataset
from shardlearn.testing import run_cli

ROWS = 300
PARENT_TAG = "mlflow.parentRunId"


def _frame(seed: int, rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.normal(50.0, 10.0, rows),
            "city": rng.choice(["north", "south", "east"], rows),
        }
    )
    noise = rng.normal(0, 5, rows)
    frame["bought"] = np.where(
        frame["income"] + 8.0 * (frame["city"] == "north") + noise > 55, "yes", "no"
    )
    return frame


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, object]:
    """A SQLite tracking store whose ``shardlearn`` experiment keeps artifacts in tmp."""
    pytest.importorskip("mlflow.pyfunc")  # first import: its own import-time warning muted
    import mlflow

    root = tmp_path_factory.mktemp("mlflow-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment("shardlearn", artifact_location=(root / "artifacts").as_uri())
    return uri, client


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("mlflow-data") / "shop"
    table = pa.Table.from_pandas(_frame(0), preserve_index=False)
    write_dataset(table, out, label="bought", partitions=2, split=(0.6, 0.2, 0.2))
    return str(out)


@pytest.fixture(autouse=True)
def default_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("SHARDLEARN_MLFLOW_URI", raising=False)


def _children(client, parent_id: str) -> dict[str, object]:
    run = client.get_run(parent_id)
    found = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'"
    )
    return {child.info.run_name: child for child in found}


def _artifacts(client, run_id: str) -> set[str]:
    return {entry.path for entry in client.list_artifacts(run_id)}


def _logged_models(client, run) -> dict[str, str]:
    """Name -> artifact location of the models a run logged (MLflow 3 keeps them apart)."""
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    return {model.name: model.artifact_location for model in found}


def test_train_logs_params_metrics_report_and_model(capsys, store, dataset, tmp_path):
    import mlflow.pyfunc

    uri, client = store
    out = tmp_path / "model"
    code, stdout, err = run_cli(
        capsys, "train", dataset, "--param", "C=0.5", "--workers", "1", "--out", str(out),
        "--json", "--mlflow", uri,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "train LogisticRegression"
    assert run.data.params["model"] == "LogisticRegression"
    assert run.data.params["param.C"] == "0.5"
    assert run.data.params["dataset"] == dataset
    assert run.data.metrics["valid_accuracy"] == summary["splits"]["valid"]["accuracy"]
    assert run.data.metrics["train_roc_auc"] == summary["splits"]["train"]["roc_auc"]
    assert "report.html" in _artifacts(client, run.info.run_id)
    report = client.download_artifacts(run.info.run_id, "report.html", str(tmp_path))
    assert Path(report).read_text().startswith("<!DOCTYPE html>")

    logged = mlflow.pyfunc.load_model(_logged_models(client, run)["model"])
    frame = _frame(5, 40).drop(columns="bought")
    expected = sl.load(out).predict_proba(frame)
    np.testing.assert_array_equal(logged.predict(frame).to_numpy(), expected)


def test_search_logs_one_nested_run_per_trial(capsys, store, dataset, tmp_path):
    uri, client = store
    space = tmp_path / "space.yaml"
    space.write_text("logistic:\n  C: {loguniform: [0.01, 10]}\n")
    code, stdout, err = run_cli(
        capsys, "search", dataset, "--model", "logistic", "--space", str(space), "--trials", "3",
        "--workers", "1", "--out", str(tmp_path / "search"), "--json", "--mlflow", uri,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.data.params["strategy"] == "random"
    assert parent.data.metrics["cv_roc_auc"] == summary["best_score"]
    assert parent.data.metrics["test_roc_auc"] == summary["test_metrics"]["roc_auc"]
    assert "report.html" in _artifacts(client, parent.info.run_id)
    assert set(_logged_models(client, parent)) == {"model"}

    children = _children(client, parent.info.run_id)
    board = {f"trial {row['trial']}": row for row in summary["leaderboard"]}
    assert set(children) == set(board) and len(children) == 3
    for name, child in children.items():
        assert child.data.metrics["cv_roc_auc"] == board[name]["score"]
        assert child.data.params["param.C"] == json.dumps(board[name]["params"]["C"])
        assert child.data.tags["status"] == "ok"


PIPELINE = """
name: shop
workdir: {workdir}
stages:
  data:
    type: ingest
    source: {csv}
    label: bought
    partitions: 2
    split: [0.6, 0.2, 0.2]
  model:
    type: train
    dataset: data
    model: logistic
    params: {{C: 2.0}}
  scores:
    type: evaluate
    model: model
    dataset: data
"""


def test_run_logs_one_nested_run_per_stage_from_the_environment_uri(
    capsys, store, tmp_path, monkeypatch
):
    uri, client = store
    csv = tmp_path / "shop.csv"
    _frame(3).to_csv(csv, index=False)
    spec = tmp_path / "shop.yaml"
    spec.write_text(PIPELINE.format(workdir=tmp_path / "run", csv=csv))
    monkeypatch.setenv("SHARDLEARN_MLFLOW_URI", uri)
    out_json = tmp_path / "results.json"
    code, stdout, err = run_cli(capsys, "run", str(spec), "--workers", "1", "--json", str(out_json))
    assert code == 0, err
    results = json.loads(out_json.read_text())
    run_id = stdout.split("Logged MLflow run ")[1].split()[0]
    parent = client.get_run(run_id)
    assert parent.info.run_name == "run shop"

    children = _children(client, run_id)
    assert set(children) == {"data", "model", "scores"}
    assert children["data"].data.metrics["rows_read"] == ROWS
    assert children["model"].data.params["params.C"] == "2.0"
    assert set(_logged_models(client, children["model"])) == {"model"}
    scores = children["scores"]
    assert scores.data.metrics["roc_auc"] == results["scores"]["metrics"]["roc_auc"]
    assert Path(results["scores"]["report"]).name in _artifacts(client, scores.info.run_id)


def test_mlflow_option_without_the_extra_fails_before_training(capsys, dataset, tmp_path):
    out = tmp_path / "model"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "mlflow", None)  # None in sys.modules: ImportError
        code, _, err = run_cli(
            capsys, "train", dataset, "--workers", "1", "--out", str(out),
            "--mlflow", "sqlite:///never.db",
        )  # fmt: skip
    assert code == 1
    assert err.strip().count("\n") == 0 and "pip install 'shardlearn[mlflow]'" in err
    assert not out.exists() and not Path("never.db").exists()


def test_an_unusable_tracking_uri_fails_before_training(capsys, store, dataset, tmp_path):
    out = tmp_path / "model"
    code, _, err = run_cli(
        capsys, "train", dataset, "--workers", "1", "--out", str(out), "--mlflow", "nosuch://x"
    )
    assert code == 1
    assert err.strip().count("\n") == 0 and "MLflow tracking store 'nosuch://x'" in err
    assert not out.exists()
