"""``shardlearn search``: hyperparameter search with shard-level CV and a live leaderboard.

The search runs through :func:`shardlearn.search.search`; its ``out`` directory keeps the
trial cache, so running the same command again after Ctrl-C resumes without rerunning a
finished trial.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from shardlearn.cli._common import console

EXAMPLE = (
    "Example: shardlearn search data/adult --model xgboost --model logistic --space space.yaml "
    "--strategy asha --trials 50 --cv 5 --metric roc_auc --time-budget 10m --out runs/adult"
)
_SHOWN_ROWS = 10


def _short(params: dict[str, Any]) -> str:
    items = params.items()
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)


def leaderboard_table(rows: list[dict[str, Any]], metric: str, title: str = "") -> Table:
    """The top rows of a leaderboard as a rich table."""
    table = Table(title=title or f"search leaderboard ({metric})", title_justify="left")
    for column in ("#", "trial", "model", "rung", metric, "± std", "seconds", "params"):
        table.add_column(column, justify="left" if column in ("model", "params") else "right")
    for row in rows[:_SHOWN_ROWS]:
        score = "failed" if row["status"] != "ok" else f"{row['score']:.4f}"
        std = "" if row["score_std"] is None else f"{row['score_std']:.4f}"
        params = row["error"] if row["status"] != "ok" else _short(row["params"])
        table.add_row(str(row["rank"]), row["trial"], row["model"], str(row["rung"]), score, std,
                      f"{row['seconds']:.1f}", params)  # fmt: skip
    return table


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
    registry: Path = typer.Option(Path("models"), "--registry", help="Registry root directory."),
    engine_spec: str = typer.Option(None, "--engine", help="local (default), ray or ray:ADDRESS."),
    workers: int = typer.Option(None, "--workers", "-w", help="Number of workers."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the strategy."),
    out: Path = typer.Option(Path("search-out"), "--out", "-o", help="Results + resume state."),
    preprocess: Path = typer.Option(
        None, "--preprocess", help="Preprocessing spec (YAML/JSON), as train --preprocess takes."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Search hyperparameters of one or more models on DATASET.

    Example: shardlearn search data/adult --model xgboost --space space.yaml --strategy asha
    --trials 50 --cv 5 --metric roc_auc --out runs/adult
    """
    from shardlearn.engine import engine, engine_from_cli
    from shardlearn.preprocess import read_spec
    from shardlearn.search import load_space
    from shardlearn.search import search as run_search

    space_dict = load_space(space) if space is not None else {}
    spec = None if preprocess is None else read_spec(preprocess)
    # Started on the first finished wave, so a bad argument prints only its error.
    live = Live(console=console, auto_refresh=False)

    def show(rows: list[dict[str, Any]]) -> None:
        if not live.is_started:
            live.start()
        live.update(leaderboard_table(rows, metric), refresh=True)

    with engine(engine_from_cli(engine_spec, workers)) as eng:
        try:
            result = run_search(dataset, model, space_dict, strategy=strategy, trials=trials,
                                cv=cv, metric=metric, engine=eng, out=out, budget=budget,
                                time_budget=time_budget, seed=seed, preprocess=spec,
                                callback=None if as_json else show)  # fmt: skip
        finally:
            live.stop()
    summary = result.to_dict()
    if register_name and result.best_model is not None:
        from shardlearn.registry import Registry

        version = Registry(registry).register(
            result.best_model, register_name, metrics=result.test_metrics,
            lineage={"dataset": dataset, "search": str(out)},
        )  # fmt: skip
        summary["registered"] = f"{register_name}@{version.version}"
    if as_json:
        console.print_json(json.dumps(summary, default=str))
        return
    _print_summary(summary, metric)


def _print_summary(summary: dict[str, Any], metric: str) -> None:
    console.print()
    if summary["best_params"] is None:
        console.print("[bold red]every trial failed[/]; see the errors in the leaderboard.")
        return
    console.print(
        f"best: [bold]{summary['best_model']}[/] {json.dumps(summary['best_params'])} "
        f"CV {metric} {summary['best_score']:.4f}"
    )
    test = summary["test_metrics"].get(metric)
    if test is not None:
        console.print(f"refitted on train+valid: test {metric} {test:.4f}")
    if summary["model"]:
        console.print(f"saved to [bold]{summary['model']}[/]")
    if summary.get("registered"):
        console.print(f"registered as [bold]{summary['registered']}[/]")


def register(app: typer.Typer) -> None:
    """Add ``search`` to ``app``."""
    app.command("search", help=f"Hyperparameter search with cross-validation.\n\n{EXAMPLE}")(search)
