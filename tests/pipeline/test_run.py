"""Running pipelines: end to end on real (small) data, concurrency, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow.parquet as pq
import pytest

import shardlearn.data._ranges as ranges_module
from shardlearn.data import Dataset
from shardlearn.data._ranges import default_parsers
from shardlearn.data.demo import write_loans_csv
from shardlearn.engine import create_engine, engine
from shardlearn.exceptions import TaskFailed
from shardlearn.pipeline import load_spec, parse_spec, run_pipeline
from shardlearn.registry import Registry, load

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SMALL = {"partitions": "2", "trees": "4", "rounds": "8"}
KILL_TIMEOUT = 300
# Tiny models on 3,000 rows may predict one class only: precision is then undefined, as the
# report says; that warning is expected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore::shardlearn.metrics.functions.UndefinedMetricWarning"
)


@pytest.fixture(scope="module")
def loans_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_loans_csv(tmp_path_factory.mktemp("loans") / "loans.csv", 3000, seed=0)


def loans_spec(csv: Path, workdir: Path):
    return load_spec(EXAMPLES / "loans.yaml", {**SMALL, "data": str(csv), "workdir": str(workdir)})


def test_loans_example_runs_end_to_end(loans_csv: Path, tmp_path: Path) -> None:
    spec = loans_spec(loans_csv, tmp_path / "run")
    with engine("local", workers=1):
        result = run_pipeline(spec, progress=False)
    assert set(result.results) == set(spec.stages)
    ingest = result.results["data"]
    assert ingest["rows_read"] == ingest["rows_written"] + ingest["rows_rejected"] == 3000
    board = result.results["leaderboard"]
    assert [row["model"] for row in board["leaderboard"]] != []
    assert board["best"] == board["leaderboard"][0]["model"]
    assert Path(board["report"]).read_text().startswith("<!DOCTYPE html>")
    registry = Registry(result.results["release"]["registry"])
    assert registry.get("loans", stage="production").version == 1
    predictions = pq.read_table(result.results["scores"]["output"])
    assert predictions.num_rows == result.results["scores"]["rows_predicted"] > 0
    assert "prediction" in predictions.column_names


def test_the_ingest_stage_parses_on_the_pipelines_engine(loans_csv: Path, tmp_path: Path) -> None:
    """An engine only passed as engine= (no with block): the ingest stage parses on it, with as
    many parsers as it has workers (on ray: tasks on every node, tests/cluster)."""
    raw = {
        "workdir": str(tmp_path),
        "stages": {"data": {"type": "ingest", "source": str(loans_csv), "label": "default"}},
    }
    workers = default_parsers() + 1  # never the parsers of an ingest without an engine
    range_bytes = loans_csv.stat().st_size // 8 + 1
    with (
        mock.patch.object(ranges_module, "RANGE_BYTES", range_bytes),
        create_engine("local", workers=workers) as eng,
    ):
        result = run_pipeline(parse_spec(raw), engine=eng, progress=False)
    manifest = Dataset.open(result.results["data"]["dataset"]).manifest
    assert manifest["ranges"] >= workers and manifest["parsers"] == workers


def test_independent_stages_run_concurrently_within_capacity(tmp_path: Path) -> None:
    started: list[str] = []
    both_running = threading.Event()
    raw = {
        "workdir": str(tmp_path),
        "stages": {
            name: {"type": "export", "model": str(tmp_path / "missing"), "resources": {"cpus": 1}}
            for name in ("a", "b")
        },
    }
    spec = parse_spec(raw)

    def fake_export(name, options, workdir, model):  # noqa: ANN001, ARG001 - stage signature
        started.append(name)
        if len(started) == 2:
            both_running.set()
        assert both_running.wait(60), "the second stage never started while the first ran"
        return {"output": name}

    from shardlearn.pipeline import stages

    original = stages.STAGE_FUNCTIONS["export"]
    stages.STAGE_FUNCTIONS["export"] = fake_export
    try:
        with engine("local", workers=2):
            result = run_pipeline(spec, progress=False)
    finally:
        stages.STAGE_FUNCTIONS["export"] = original
    assert sorted(started) == ["a", "b"]
    assert result.results == {"a": {"output": "a"}, "b": {"output": "b"}}


def test_in_process_fits_of_a_stage_use_the_cores_the_running_stages_leave_free(
    tmp_path: Path,
) -> None:
    """Boosting asks round_cores() before every round: beside another stage holding a CPU it
    gets the machine's cores less that one (a second XGBoost thread on a busy core spins at
    every barrier), alone all of them."""
    from shardlearn.models._training.execution import round_cores
    from shardlearn.pipeline import stages

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    seen: dict[str, int | None] = {}
    both_running = threading.Barrier(2, timeout=60)
    both_asked = threading.Barrier(2, timeout=60)

    def fake_export(name, options, workdir, model=None):  # noqa: ANN001, ARG001 - stage signature
        if name != "alone":
            both_running.wait()
        seen[name] = round_cores()
        if name != "alone":
            both_asked.wait()  # neither ends before both have asked
        return {"model": name}

    side = {"type": "export", "model": str(tmp_path / "missing"), "resources": {"cpus": 1}}
    raw = {
        "workdir": str(tmp_path),
        "stages": {"a": side, "b": side, "alone": {**side, "depends_on": ["a", "b"]}},
    }
    original = stages.STAGE_FUNCTIONS["export"]
    stages.STAGE_FUNCTIONS["export"] = fake_export
    try:
        with engine("local", workers=2):
            run_pipeline(parse_spec(raw), progress=False)
    finally:
        stages.STAGE_FUNCTIONS["export"] = original
    assert seen == {"a": max(1, cores - 1), "b": max(1, cores - 1), "alone": cores}


def test_a_failing_stage_names_itself_and_cancels_its_dependents(tmp_path: Path) -> None:
    raw = {
        "workdir": str(tmp_path),
        "stages": {
            "data": {"type": "ingest", "source": str(tmp_path / "missing.csv"), "label": "y"},
            "lr": {"type": "train", "dataset": "data", "model": "logistic"},
        },
    }
    with engine("local", workers=1), pytest.raises(TaskFailed, match=r"Task 'data'.*missing\.csv"):
        run_pipeline(parse_spec(raw), progress=False)


def _cached_stages(workdir: Path) -> set[str]:
    found = set()
    for meta in (workdir / ".cache").glob("*/*/meta.json"):
        found.add(json.loads(meta.read_text())["key"])
    return found


def _predictions(registry_root: Path, table) -> np.ndarray:
    return load(f"{registry_root}/loans@production").predict_proba(table)


def test_killed_run_resumes_only_unfinished_stages_and_gives_the_same_model(
    loans_csv: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "run"
    args = [f"--set={k}={v}" for k, v in {**SMALL, "data": loans_csv, "workdir": workdir}.items()]
    command = [sys.executable, "-c", "from shardlearn.cli import main; main()", "run",
               str(EXAMPLES / "loans.yaml"), "--workers", "1", *args]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watcher = threading.Thread(target=process.stdout.read, daemon=True)
    watcher.start()
    try:
        # The event: the logistic stage's result is in the run's cache (written atomically).
        while "logistic" not in _cached_stages(workdir):
            assert process.poll() is None, "the run ended before it could be killed"
            threading.Event().wait(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(KILL_TIMEOUT)
    assert not (workdir / "registry").exists(), "killed too late: the whole run had finished"

    spec = loans_spec(loans_csv, workdir)
    with engine("local", workers=1):
        resumed = run_pipeline(spec, resume=True, progress=False)
    assert {"data", "logistic"} <= set(resumed.cached)
    assert "release" not in resumed.cached

    fresh = loans_spec(loans_csv, tmp_path / "fresh")
    with engine("local", workers=1):
        reference = run_pipeline(fresh, progress=False)
    table = pq.read_table(Path(resumed.results["data"]["dataset"]) / "test").drop_columns(
        ["default"]
    )
    np.testing.assert_allclose(
        _predictions(Path(resumed.results["release"]["registry"]), table),
        _predictions(Path(reference.results["release"]["registry"]), table),
        rtol=1e-6,
    )


def test_search_stage_feeds_its_best_model_to_register(loans_csv: Path, tmp_path: Path) -> None:
    raw = {
        "workdir": str(tmp_path),
        "stages": {
            "data": {"type": "ingest", "source": str(loans_csv), "label": "default",
                     "partitions": 2, "strategy": "stratified"},
            "tune": {"type": "search", "dataset": "data", "models": ["logistic"],
                     "space": {"C": [0.01, 1.0]}, "strategy": "grid", "metric": "roc_auc"},
            "release": {"type": "register", "model": "tune", "name": "loans"},
        },
    }  # fmt: skip
    with engine("local", workers=1):
        result = run_pipeline(parse_spec(raw), progress=False)
    tuned = result.results["tune"]
    # Both grid points ran, and the best is the one with the higher CV roc_auc.
    board = tuned["leaderboard"]
    assert sorted(row["params"]["C"] for row in board) == [0.01, 1.0]
    assert board[0]["score"] > board[1]["score"]
    assert tuned["best_params"] == board[0]["params"]
    registered = load(f"{result.results['release']['registry']}/loans:1")
    assert list(registered.classes_) == ["no", "yes"]


def test_search_stage_refits_with_the_rounds_its_early_stopping_selected(
    loans_csv: Path, tmp_path: Path
) -> None:
    # Issue #20 finding 2: the stage's refit has no valid split; it must train the rounds the
    # folds' early stopping (on inner training shards, not the scored ones) selected.
    raw = {
        "workdir": str(tmp_path),
        "stages": {
            "data": {"type": "ingest", "source": str(loans_csv), "label": "default",
                     "partitions": 4, "strategy": "stratified"},
            "tune": {"type": "search", "dataset": "data", "models": ["xgboost"], "cv": 2,
                     "space": {"n_estimators": 60, "learning_rate": 0.5, "max_depth": [4],
                               "early_stopping_rounds": 3},
                     "strategy": "grid", "metric": "log_loss"},
        },
    }  # fmt: skip
    with engine("local", workers=1):
        result = run_pipeline(parse_spec(raw), progress=False)
    tuned = result.results["tune"]
    # Before the fix the refit failed: early_stopping_rounds without a valid split.
    assert load(tuned["model"]).estimator.n_estimators_ == tuned["refit_params"]["n_estimators"]
    record = tuned["leaderboard"][0]["early_stopping"]
    assert record["watched"] and record["selected"] < 60
    assert tuned["refit_params"]["n_estimators"] == record["selected"]
    assert tuned["refit_params"]["early_stopping_rounds"] is None


def test_train_stage_refuses_to_replace_a_folder_that_is_not_a_model(
    loans_csv: Path, tmp_path: Path
) -> None:
    # Issue #21 finding 6: `out:` (here set with --set) named a project folder, and the train
    # stage's save(..., overwrite=True) deleted it.
    precious = tmp_path / "project"
    (precious / "src").mkdir(parents=True)
    (precious / "notes.txt").write_text("keep me")
    (precious / "src" / "main.py").write_text("print('keep me too')")
    raw = {
        "workdir": str(tmp_path / "run"),
        "stages": {
            "data": {"type": "ingest", "source": str(loans_csv), "label": "default"},
            "lr": {"type": "train", "dataset": "data", "model": "logistic", "out": "${out}"},
        },
    }
    spec = parse_spec(raw, {"out": str(precious)})
    refused = r"Task 'lr'.*project exists and is not a shardlearn model"
    with engine("local", workers=1), pytest.raises(TaskFailed, match=refused):
        run_pipeline(spec, progress=False)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert (precious / "src" / "main.py").read_text() == "print('keep me too')"
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt", "src"]


def test_ingest_stage_refuses_a_folder_that_is_not_a_dataset(
    loans_csv: Path, tmp_path: Path
) -> None:
    # The ingest stage writes with overwrite=True; its commit replaces train/ val/ test/ in out.
    precious = tmp_path / "project"
    (precious / "test").mkdir(parents=True)
    (precious / "test" / "test_app.py").write_text("keep me")
    (precious / "README.md").write_text("keep me too")
    raw = {
        "workdir": str(tmp_path / "run"),
        "stages": {
            "data": {
                "type": "ingest",
                "source": str(loans_csv),
                "label": "default",
                "out": "${out}",
            }
        },
    }
    spec = parse_spec(raw, {"out": str(precious)})
    with engine("local", workers=1), pytest.raises(TaskFailed, match=r"is not a dataset"):
        run_pipeline(spec, progress=False)
    files = sorted(p.relative_to(precious).as_posix() for p in precious.rglob("*"))
    assert files == ["README.md", "test", "test/test_app.py"]
    assert (precious / "test" / "test_app.py").read_text() == "keep me"


def test_ingest_stage_can_keep_infinities_like_the_cli(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("x,y\n" + "".join(f"{i}.5,{'ab'[i % 2]}\n" for i in range(40)) + "inf,a\n")
    kept = {}
    for allow in (False, True):
        stage = {"type": "ingest", "source": str(source), "label": "y", "partitions": 1}
        spec = parse_spec(
            {
                "workdir": str(tmp_path / f"run-{allow}"),
                "stages": {"data": {**stage, "allow_non_finite": allow}},
            }
        )
        with engine("local", workers=1):
            result = run_pipeline(spec, progress=False)
        manifest = Dataset.open(result.results["data"]["dataset"]).manifest
        kept[allow] = (manifest["rows_written"], manifest["rows_rejected"])
    assert kept == {False: (40, 1), True: (41, 0)}


def test_every_stage_that_ran_has_its_timing_and_cached_stages_have_none(tmp_path: Path) -> None:
    from shardlearn.cli.run import print_summary
    from shardlearn.pipeline import stages

    raw = {
        "workdir": str(tmp_path),
        "stages": {
            "a": {"type": "export", "model": str(tmp_path / "missing")},
            "b": {"type": "export", "model": "a"},
        },
    }
    original = stages.STAGE_FUNCTIONS["export"]
    stages.STAGE_FUNCTIONS["export"] = lambda name, options, workdir, model: {"model": name}
    try:
        with engine("local", workers=1):
            first = run_pipeline(parse_spec(raw), progress=False)
            again = run_pipeline(parse_spec(raw), resume=True, progress=False)
    finally:
        stages.STAGE_FUNCTIONS["export"] = original
    assert set(first.timings) == {"a", "b"}
    a, b = first.timings["a"], first.timings["b"]
    # b reads a's result: it starts after a has ended, and both lie within the run.
    assert 0 <= a.started and a.started + a.seconds <= b.started
    assert b.started + b.seconds <= first.seconds
    assert again.cached == ["a", "b"] and again.timings == {}
    from shardlearn.cli._common import console

    with console.capture() as captured:
        print_summary(first)
    assert f"{b.seconds:.1f} s" in captured.get() and f"at +{b.started:.1f} s" in captured.get()
