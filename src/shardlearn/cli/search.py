"""``shardlearn search``: hyperparameter search with shard-level CV and a live leaderboard.

The search runs through :func:`shardlearn.search.search`; its ``out`` directory keeps the
trial cache, so running the same command again after Ctrl-C resumes without rerunning a
finished trial. ``--mlflow URI`` logs the search and one nested run per trial to MLflow
(:mod:`shardlearn.cli._mlflow`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from shardlearn.cli._common import console, print_table
from shardlearn.cli._mlflow import (
    MlflowOption,
    log_search,
    print_logged,
    report_html,
    require_mlflow,
)

EXAMPLE = (
    "Example: shardlearn search data/adult --model xgboost --model logistic --space space.yaml "
    "--strategy asha --trials 50 --cv 5 --metric roc_auc --time-budget 10m --out runs/adult"
)


def search(
    dataset: str = typer.Argument(..., help="Dataset directory or URI (from shardlearn ingest)."),
    model: list[str] = typer.Option(
        ..., "--model", "-m", help="Model to search (repeatable): xgboost, logistic, sgd…"
    ),
    space: Path = typer.Option(None, "--space", help="YAML search space (per model or flat)."),
    strategy: str = typer.Option("random", "--strategy", help="grid, random, halving, asha, tpe."),
    trials: int = typer.Option(20, "--trials", "-n", help="Configurations to try (not grid)."),
    cv: int = typer.Option(None, "--cv", help="Folds of shard-level CV (default: valid split)."),
    metric: str = typer.Option("roc_auc", "--metric", help="roc_auc, accuracy, log_loss, mcc…"),
    time_budget: str = typer.Option(None, "--time-budget", help="Stop starting trials: 90s, 10m."),
    budget: str = typer.Option("auto", "--budget", help="Halving budget: auto, rows or a param."),
    register_name: str = typer.Option(None, "--register", help="Register the best model as NAME."),
    registry: str = typer.Option(
        "models", "--registry", help="Registry root: a directory or an s3:// root."
    ),
    engine_spec: str = typer.Option(None, "--engine", help="local (default), ray or ray:ADDRESS."),
    workers: int = typer.Option(None, "--workers", "-w", help="Number of workers."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the strategy."),
    out: Path = typer.Option(Path("search-out"), "--out", "-o", help="Results + resume state."),
    preprocess: Path = typer.Option(
        None, "--preprocess", help="Preprocessing spec (YAML/JSON), as train --preprocess takes."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    mlflow_uri: MlflowOption = None,
) -> None:
    """Search hyperparameters of one or more models on DATASET.

    Example: shardlearn search data/adult --model xgboost --space space.yaml --strategy asha
    --trials 50 --cv 5 --metric roc_auc --out runs/adult
    """
    from shardlearn.engine import engine, engine_from_cli, show_progress
    from shardlearn.preprocess import read_spec
    from shardlearn.search import leaderboard_table, load_space
    from shardlearn.search import search as run_search

    require_mlflow(mlflow_uri)
    space_dict = load_space(space) if space is not None else {}
    spec = None if preprocess is None else read_spec(preprocess)
    with engine(engine_from_cli(engine_spec, workers)) as eng:
        # The search draws its live leaderboard on a terminal and prints the final one once.
        result = run_search(dataset, model, space_dict, strategy=strategy, trials=trials,
                            cv=cv, metric=metric, engine=eng, out=out, budget=budget,
                            time_budget=time_budget, seed=seed, preprocess=spec,
                            verbose=0 if as_json else 1)  # fmt: skip
        html = _test_report(result, dataset, eng) if mlflow_uri else None
    summary = result.to_dict()
    if register_name and result.best_model is not None:
        from shardlearn.registry import Registry

        version = Registry(registry).register(
            result.best_model, register_name, metrics=result.test_metrics,
            lineage={"dataset": dataset, "search": str(out)},
        )  # fmt: skip
        # The NAME:VERSION form every command that takes a model reference accepts.
        summary["registered"] = version.ref
    if mlflow_uri:
        settings = {"dataset": dataset, "models": model, "strategy": strategy, "trials": trials,
                    "cv": cv, "metric": metric, "budget": budget, "time_budget": time_budget,
                    "seed": seed, "out": str(out), "preprocess": preprocess}  # fmt: skip
        summary["mlflow_run_id"] = log_search(mlflow_uri, result, settings, html)
    if as_json:
        console.print_json(json.dumps(summary, default=str))
        return
    if not show_progress(1):
        # No live view was drawn (a pipe, a log): the leaderboard is printed here, once.
        print_table(leaderboard_table(summary["leaderboard"], metric))
    _print_summary(summary, metric)
    if mlflow_uri:
        print_logged(mlflow_uri, summary["mlflow_run_id"])


def _test_report(result: Any, dataset: str, engine: Any) -> str | None:
    """The refitted best model's HTML report on the test split (None without either)."""
    from shardlearn.data import Dataset

    if result.best_model is None or "test" not in Dataset.open(dataset).splits:
        return None
    return report_html(result.best_model, dataset, "test", engine)


def _print_summary(summary: dict[str, Any], metric: str) -> None:
    console.print()
    for note in summary.get("notes", []):
        console.print(f"note: {note}", markup=False)
    if summary["best_params"] is None:
        failed = ("every trial failed", "bold red")
        console.print(Text.assemble(failed, "; see the errors in the leaderboard."))
        return
    console.print(
        Text.assemble(
            "best: ", (str(summary["best_model"]), "bold"),
            f" {json.dumps(summary['best_params'])} CV {metric} {summary['best_score']:.4f}",
        ),
        soft_wrap=True,
    )  # fmt: skip
    test = summary["test_metrics"].get(metric)
    if test is not None:
        console.print(f"refitted on train+valid: test {metric} {test:.4f}")
    if summary["model"]:
        console.print(Text.assemble("saved to ", (str(summary["model"]), "bold")), soft_wrap=True)
    if summary.get("registered"):
        registered = ("registered as ", (str(summary["registered"]), "bold"))
        console.print(Text.assemble(*registered), soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``search`` to ``app``."""
    app.command("search", help=f"Hyperparameter search with cross-validation.\n\n{EXAMPLE}")(search)
