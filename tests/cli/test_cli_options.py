"""The options of ``shardlearn ingest`` and ``predict``'s reader options are made from the option
models: every field is an option and every such option a field, with the field's name, default,
help, range and choices."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from shardlearn._options import field_schema, option_fields
from shardlearn.cli import app
from shardlearn.cli._options import cli_name
from shardlearn.data import Dataset
from shardlearn.data.options import CALL_ONLY, CLI_SETS, FileReadOptions, IngestOptions

runner = CliRunner()
# Options of the commands that are not ingest options: how to print and where to compute.
OWN = {"ingest": {"as_json", "engine"}}


def _command(name: str) -> Any:
    # Duck-typed click objects: typer builds them on its own copy of click.
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def _check_option(param: Any, model: Any, key: str) -> None:
    info = option_fields(model)[key]
    schema, _ = field_schema(model, key)
    assert param.param_type_name == "option", key
    assert cli_name(key) in param.opts, (key, param.opts)
    assert (param.help or "").startswith(info.description or "?"), key
    if info.is_required():
        assert param.required or param.default is None, key
    elif isinstance(info.default, list | tuple):
        assert param.default == ",".join(str(v) for v in info.default), key
    else:
        assert param.default == info.default, key
    choices = [a.get("enum") for a in schema.get("anyOf", [schema]) if "enum" in a]
    if choices:
        assert list(typing.get_args(param.type_descriptor.annotation)) == choices[0], key
    bounds = {k: v for a in schema.get("anyOf", [schema]) for k, v in a.items()
              if k in ("minimum", "maximum")}  # fmt: skip
    if bounds:
        assert (param.min, param.max) == (bounds.get("minimum"), bounds.get("maximum")), key


def test_every_ingest_option_is_a_field_of_ingest_options_and_back() -> None:
    params = {p.name: p for p in _command("ingest").params}
    fields = set(option_fields(IngestOptions)) - CLI_SETS - CALL_ONLY
    assert set(params) - OWN["ingest"] == fields
    for key in fields - {"source"}:
        _check_option(params[key], IngestOptions, key)
    assert params["source"].param_type_name == "argument"


def test_predict_reads_files_with_exactly_the_reader_options_of_ingest() -> None:
    params = {p.name: p for p in _command("predict").params}
    # source, out and split mean predict's own things (its input, its output, dataset splits)
    shared = set(params) & set(option_fields(IngestOptions)) - {"source", "out", "split"}
    assert shared == set(option_fields(FileReadOptions))
    for key in option_fields(FileReadOptions):
        _check_option(params[key], FileReadOptions, key)


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    rows = [f"{i},  c{i % 3}  ,{'yes' if i % 2 else 'no'}" for i in range(40)]
    path = tmp_path / "in.csv"
    path.write_text("id,city,label\n" + "\n".join(rows) + "\n")
    return path


def _ingest(csv: Path, out: Path, *options: str) -> Any:
    args = ["ingest", str(csv), "--label", "label", "--out", str(out), "--partitions", "1"]
    return runner.invoke(app, [*args, *options, "--json"])


def test_options_new_to_the_cli_reach_ingest(tmp_path: Path, csv: Path) -> None:
    result = _ingest(csv, tmp_path / "a", "--kinds", "id=categorical", "--no-trim",
                     "--block-size", "4096")  # fmt: skip
    assert result.exit_code == 0, result.output
    dataset = Dataset.open(str(tmp_path / "a"))
    assert dataset.schema["id"].kind == "categorical"
    cities = dataset.shards("train")[0].read(columns=["city"]).column("city").to_pylist()
    assert "  c1  " in cities
    assert json.loads(result.output)["rows_written"] == 40


@pytest.mark.parametrize(
    ("options", "code", "message"),
    [
        (["--partitions", "0"], 2, "--partitions"),
        (["--format", "xlsx"], 2, "--format"),
        (["--kinds", "id"], 2, "expected KEY=VALUE pairs"),
        (["--kinds", "id=categorial"], 1, "The 'kinds' parameter of ingest must be a mapping"),
        (["--delimiter", "::"], 1, "The 'delimiter' parameter of ingest must be a single"),
    ],
)
def test_a_bad_option_is_refused_by_typer_or_by_the_model(
    tmp_path: Path, csv: Path, options: list[str], code: int, message: str
) -> None:
    result = _ingest(csv, tmp_path / "b", *options)
    assert result.exit_code == code, result.output
    # A ShardlearnError reaches run_app, which prints it in one line (exit 1).
    shown = result.output + str(result.exception if result.exit_code == 1 else "")
    assert message in " ".join(shown.split())
    assert not (tmp_path / "b").exists()
