"""``shardlearn run`` (a pipeline spec, end to end) and ``shardlearn graph`` (draw it).

``run --mlflow URI`` logs the pipeline and one nested run per stage to MLflow
(:mod:`shardlearn.cli._mlflow`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from shardlearn.cli._common import (
    EngineOption,
    WorkersOption,
    console,
    engine_context,
    print_table,
)
from shardlearn.cli._mlflow import MlflowOption, log_pipeline, print_logged, require_mlflow
from shardlearn.exceptions import SpecError

LEADERBOARD_COLUMNS = ("roc_auc", "accuracy", "f1_macro", "log_loss")
_RUN_HELP = """Run a pipeline spec: ingest, train, evaluate, compare, register, predict.

Independent stages run concurrently; finished stages are cached, so --resume after a crash or
Ctrl-C skips them.

Example:

  shardlearn run examples/loans.yaml --set rows=200000 --workers 2
"""


def _overrides(values: list[str]) -> dict[str, str]:
    parsed = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set expects KEY=VALUE. Got {item!r}.")
        parsed[key.strip()] = value
    return parsed


def run(
    spec_path: Path | None = typer.Argument(None, metavar="SPEC", help="Pipeline YAML file."),
    resume: bool = typer.Option(False, "--resume", help="Skip stages finished by a last run."),
    set_: list[str] = typer.Option([], "--set", help="Override a variable: KEY=VALUE."),
    schema: bool = typer.Option(False, "--schema", help="Print the spec's JSON schema and exit."),
    json_out: Path | None = typer.Option(None, "--json", help="Write every stage result here."),
    engine: EngineOption = None,
    workers: WorkersOption = None,
    mlflow_uri: MlflowOption = None,
) -> None:
    """Run a pipeline spec end to end."""
    from shardlearn.pipeline import load_spec, run_pipeline, spec_json_schema

    if schema:
        typer.echo(json.dumps(spec_json_schema(), indent=2))
        return
    if spec_path is None:
        raise SpecError("Missing SPEC: shardlearn run PIPELINE.yaml (or --schema).")
    spec = load_spec(spec_path, _overrides(set_))
    require_mlflow(mlflow_uri)
    with engine_context(engine or spec.engine, workers or spec.workers) as eng:
        console.print(
            Text.assemble(
                "Running ", (spec.name, "bold"), f" ({len(spec.stages)} stages) on the "
                f"{eng.name} engine with {eng.n_workers} workers; output in {spec.workdir}",
            )
        )  # fmt: skip
        result = run_pipeline(spec, resume=resume, engine=eng, progress=True)
    print_summary(result)
    if mlflow_uri:
        print_logged(mlflow_uri, log_pipeline(mlflow_uri, result))
    if json_out is not None:
        json_out.write_text(json.dumps(result.results, indent=2, default=str))


def print_summary(result: Any) -> None:
    """Stage results, the leaderboard and how to serve the registered model."""
    table = Table(title=f"{result.spec.name}: {result.seconds:.1f} s")
    table.add_column("stage")
    table.add_column("type")
    table.add_column("time", justify="right")
    table.add_column("result")
    timings = result.timings
    for name, stage in result.spec.stages.items():
        outcome = result.results.get(name, {})
        shown = {k: v for k, v in outcome.items() if k not in ("leaderboard",)}
        reused = " (cached)" if name in result.cached else ""
        table.add_row(name, stage.type + reused, _stage_time(timings.get(name)), _short(shown))
    print_table(table)
    for outcome in result.results.values():
        if "leaderboard" in outcome:
            _leaderboard(outcome)
    for outcome in result.results.values():
        if "reference" in outcome:
            console.print(
                Text.assemble(
                    "Registered ", (outcome["reference"], "bold"),
                    f" in {outcome['registry']}. Serve it:\n"
                    f"  shardlearn serve token create --registry {outcome['registry']}\n"
                    f"  shardlearn serve --registry {outcome['registry']} "
                    f"--model {outcome['reference'].split(':')[0]}",
                )
            )  # fmt: skip


def _stage_time(timing: Any) -> str:
    """``12.3 s`` and when it started (``at +7.4 s``): side-by-side stages overlap."""
    if timing is None:
        return "-"
    return f"{timing.seconds:.1f} s\nat +{timing.started:.1f} s"


def _short(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v:.4g}" for k, v in list(value.items())[:4])
        parts.append(f"{key}: {value}")
    return "\n".join(parts)


def _leaderboard(outcome: dict[str, Any]) -> None:
    rows = outcome["leaderboard"]
    table = Table(title=f"Leaderboard (by {outcome['metric']}); report: {outcome['report']}")
    columns = [c for c in LEADERBOARD_COLUMNS if c in rows[0]]
    table.add_column("rank", justify="right")
    table.add_column("model")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        table.add_row(str(row["rank"]), str(row["model"]), *cells)
    print_table(table)


def graph(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="Pipeline YAML file."),
    fmt: str = typer.Option("mermaid", "--format", help="mermaid, dot or png."),
    out: Path | None = typer.Option(None, "--out", help="Output file (png: default NAME.png)."),
    set_: list[str] = typer.Option([], "--set", help="Override a variable: KEY=VALUE."),
) -> None:
    """Draw a pipeline's graph.

    Example: shardlearn graph examples/loans.yaml --format mermaid
    """
    from shardlearn.pipeline import draw, load_spec

    drawn = draw(load_spec(spec_path, _overrides(set_)), fmt, out)
    if isinstance(drawn, Path):
        console.print(f"Wrote {drawn}", markup=False, soft_wrap=True)
    elif out is not None:
        out.write_text(drawn)
    else:
        typer.echo(drawn, nl=False)


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``graph`` to ``app``."""
    app.command("run", help=_RUN_HELP)(run)
    app.command("graph")(graph)
