"""What the CLI prints: plain-text errors (never rich markup), whole values in every table
(pipes, logs and narrow terminals), ``--version`` (issue #22 findings 1 and 7)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import pytest
import typer
from rich.console import Console
from rich.table import Table

from shardlearn.cli._common import run_app
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import EngineError
from shardlearn.models import LogisticRegression, Pipeline, SGDClassifier
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import save
from shardlearn.testing import run_cli

# The text of the gloo error that crashed the error printer, with an opening tag too.
GLOO_ERROR = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed "
    "by peer [bold]127.0.0.1[/bold]:1234"
)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """A small dataset and two saved models, one in a directory whose name looks like markup."""
    root = tmp_path_factory.mktemp("output")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    y = np.where(x @ [1.0, -0.5, 0.3] + rng.normal(0, 0.8, 600) > 0, "yes", "no")
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
    ds = write_dataset(table, root / "ds", "y", partitions=2, split=(0.6, 0.0, 0.4))
    paths = []
    with engine("local", workers=1):
        for name, estimator in (("lr", LogisticRegression()), ("sgd[bold]", SGDClassifier())):
            model = Pipeline(Preprocessor.auto(ds.schema), estimator).fit(ds)
            paths.append(str(save(model, root / name)))
    return ds, paths


def test_error_text_with_markup_is_printed_verbatim(capsys):
    """run_app's one-line error printer crashed with rich.errors.MarkupError on this text."""
    app = typer.Typer()

    @app.command()
    def train() -> None:
        raise EngineError(GLOO_ERROR)

    with pytest.raises(SystemExit) as done:
        run_app(app, [])
    assert done.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: {GLOO_ERROR}"


def test_cli_error_naming_a_markup_like_path_is_printed_verbatim(capsys, two_models, tmp_path):
    ds, _ = two_models
    missing = str(tmp_path / "[/x] [bold]model")
    code, _, err = run_cli(capsys, "evaluate", missing, str(ds.uri), "--workers", "1")
    assert code == 1
    assert err.startswith("error: ") and "[/x] [bold]model" in err


def test_compare_into_a_pipe_prints_every_value_whole(capsys, two_models):
    """A pipe is not a terminal: an 80-column COLUMNS must not cut "0.9312" to "0.93…"."""
    ds, paths = two_models
    arguments = ["compare", *paths, str(ds.uri), "--workers", "1"]
    code, out, err = run_cli(capsys, *arguments, "--json", "-")
    assert code == 0, err
    board = json.loads(out)
    cli = "from shardlearn.cli import main; main()"
    shown = subprocess.run(
        [sys.executable, "-c", cli, *arguments], capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "80"}, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert "…" not in shown
    for row in board["leaderboard"]:
        assert row["model"] in shown  # including the "[bold]" in a directory name
        for metric in ("accuracy", "roc_auc", "pr_auc", "log_loss", "brier", "mcc"):
            assert f"{row[metric]:.4f}" in shown, metric


def _wide_table() -> Table:
    table = Table(title="[bold]leaderboard[/]")
    for column in ("model", "balanced_accuracy", "roc_auc", "params"):
        table.add_column(column)
    table.add_row("[/x]model", "0.912345", "0.987654", "learning_rate=0.012345, max_depth=6")
    table.add_row("xgboost", "0.812345", "0.887654", "learning_rate=0.3, max_depth=12")
    return table


VALUES = ("[/x]model", "0.912345", "0.987654", "learning_rate=0.012345,", "max_depth=12")


@pytest.mark.parametrize("width", [200, 64, 30])
def test_tables_in_a_terminal_never_cut_a_value(width):
    """Wide: as is; 64: values wrap at spaces, headers fold; 30: one block of lines per row."""
    from shardlearn.cli._common import print_table

    out = io.StringIO()
    terminal = Console(file=out, width=width, force_terminal=True, color_system=None)
    print_table(_wide_table(), terminal)
    text = out.getvalue()
    assert "…" not in text and "[bold]leaderboard[/]" in text
    for value in VALUES:
        assert value in text
    vertical = "roc_auc            0.987654" in text
    assert vertical == (width == 30)
    if not vertical:  # a vertical block's long values are left to the terminal to wrap
        assert max(len(line) for line in text.splitlines()) <= width


def test_version_prints_the_installed_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"shardlearn {version('shardlearn')}"


def test_describe_prints_a_markup_like_column_name_verbatim(capsys, tmp_path):
    """A CSV header is data: describe crashed with MarkupError on a column named '[/x] ...'."""
    table = pa.table({"a": [1.0, 2.0, 3.0, 4.0], "[/x] [bold]b": ["p", "q", "p", "q"],
                      "y": ["yes", "no", "no", "yes"]})  # fmt: skip
    ds = write_dataset(table, tmp_path / "ds", "y", partitions=1)
    code, out, err = run_cli(capsys, "describe", str(ds.uri))
    assert code == 0, err
    assert "[/x] [bold]b" in out and str(ds.uri) in out


def test_search_summary_prints_a_markup_like_out_path_verbatim(capsys, tmp_path):
    """The search summary ('saved to OUT') printed OUT as markup: '[bold]' vanished."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 2))
    y = np.where(x[:, 0] + rng.normal(0, 0.5, 300) > 0, "yes", "no")
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "y": y})
    ds = write_dataset(table, tmp_path / "ds", "y", partitions=2, split=(0.6, 0.2, 0.2))
    out = tmp_path / "runs[bold]1"
    code, stdout, err = run_cli(
        capsys, "search", str(ds.uri), "--model", "logistic", "--trials", "2", "--workers", "1",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert f"saved to {out / 'best_model'}\n" in stdout
    board = json.loads((out / "result.json").read_text())["leaderboard"]
    for row in board:
        assert f"{row['score']:.4f}" in stdout
