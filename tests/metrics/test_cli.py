"""``shardlearn evaluate`` and ``shardlearn compare`` on real saved Pipelines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from shardlearn.cli import app
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import GaussianNB, LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import save

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small loans dataset and two saved Pipelines trained on it."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    n = 600
    income = rng.normal(50, 15, n)
    region = rng.choice(["north", "south", "east"], n)
    risk = 0.08 * (income - 50) + (region == "south") * 1.0 + rng.normal(0, 1, n)
    table = pa.table(
        {"income": income, "region": region, "default": np.where(risk > 0, "yes", "no")}
    )
    ds = write_dataset(table, root / "loans", label="default", partitions=4, split=(0.7, 0, 0.3))
    paths = {"dataset": root / "loans"}
    with engine("local", workers=1):
        for name, estimator in (("lr", LogisticRegression()), ("nb", GaussianNB())):
            model = Pipeline(Preprocessor.auto(ds.schema), estimator).fit(ds)
            paths[name] = save(model, root / f"model-{name}", sign=False)
    return paths


def test_evaluate_prints_a_table_and_writes_report_and_json(trained, tmp_path: Path) -> None:
    report, metrics = tmp_path / "report.html", tmp_path / "metrics.json"
    result = runner.invoke(
        app,
        [
            "evaluate", str(trained["lr"]), str(trained["dataset"]), "--workers", "2",
            "--report", str(report), "--json", str(metrics),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ROC-AUC" in result.output and "Per class" in result.output
    data = json.loads(metrics.read_text())
    assert 0.5 < data["metrics"]["roc_auc"] <= 1.0
    assert data["dataset"]["split"] == "test" and data["evaluation"]["workers"] == 2
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert str(data["metrics"]["rows"]) in result.output.replace(",", "")


def test_evaluate_json_to_stdout_is_only_json(trained) -> None:
    result = runner.invoke(
        app,
        ["evaluate", str(trained["nb"]), str(trained["dataset"]), "--workers", "1", "--json", "-"],
    )
    assert result.exit_code == 0, result.output
    start = result.stdout.index("{")
    data = json.loads(result.stdout[start:])
    assert data["model"]["type"] == "Pipeline"


def test_compare_ranks_models_and_writes_the_plot(trained, tmp_path: Path) -> None:
    plot, page, board = tmp_path / "cmp.png", tmp_path / "cmp.html", tmp_path / "board.json"
    result = runner.invoke(
        app,
        [
            "compare", str(trained["lr"]), str(trained["nb"]), str(trained["dataset"]),
            "--workers", "1", "--sort-by", "log_loss", "--plot", str(plot),
            "--report", str(page), "--json", str(board),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Leaderboard by log_loss" in result.output
    assert plot.read_bytes().startswith(b"\x89PNG")
    rows = json.loads(board.read_text())["leaderboard"]
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["log_loss"] <= rows[1]["log_loss"]
    assert "model-lr" in page.read_text()


def test_unknown_split_and_metric_are_one_line_errors(trained) -> None:
    command = [str(Path(sys.executable).parent / "shardlearn"), "evaluate", str(trained["lr"])]
    done = subprocess.run(
        [*command, str(trained["dataset"]), "--split", "valid", "--workers", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert re.search(r"error: .*has no 'valid' split; it has train, test", done.stderr)
    assert "Traceback" not in done.stderr
    result = runner.invoke(
        app, ["compare", str(trained["lr"]), str(trained["dataset"]), "--sort-by", "speed"]
    )
    assert result.exit_code == 2 and "--sort-by" in result.output
