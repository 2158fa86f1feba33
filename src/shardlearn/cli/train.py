"""``shardlearn train``: preprocess and train a classifier on a dataset, save the model.

The model is ``Pipeline(Preprocessor.auto(schema), MODEL(**params))`` fitted on the train
split over the chosen engine, scored on the workers' cached train and valid blocks, and saved
with :func:`shardlearn.registry.save` (a signed-if-configured artifact directory, no pickle).
``--warm-start MODEL`` continues a saved model (its fitted preprocessor and its weights) on a
new dataset.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shardlearn.cli._common import console, fail

EXAMPLE = (
    "Example: shardlearn train data/adult --model logistic --param C=0.5 --workers 2 "
    "--out models/adult-lr"
)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["C=0.5", "class_weight=balanced"]`` -> ``{"C": 0.5, "class_weight": "balanced"}``.

    Values are read as YAML scalars, so numbers, ``true``/``false`` and ``null`` get their type.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--param expects KEY=VALUE, e.g. --param C=0.5. Got {pair!r}.")
        try:
            params[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            params[key.strip()] = value
    return params


def _build_model(
    ds: Any,
    model_name: str,
    params: dict[str, Any],
    warm_start: str | None,
    preprocess: Path | None = None,
) -> Any:
    from shardlearn.models import Pipeline
    from shardlearn.models._registry import model_class
    from shardlearn.preprocess import Preprocessor

    if warm_start is not None:
        from shardlearn.registry import load

        model = load(warm_start)
        estimator = getattr(model, "estimator", model)
        if "warm_start" not in estimator.get_params(deep=False):
            raise fail(
                f"{type(estimator).__name__} cannot continue training (no warm_start); "
                "retrain it from scratch or use --model sgd."
            )
        if not hasattr(model, "preprocessor"):
            raise fail(
                f"{warm_start} holds a bare {type(model).__name__} without its preprocessor; "
                "--warm-start needs a model saved by 'shardlearn train'."
            )
        _set_params(estimator, {**params, "warm_start": True})
        return model
    try:
        cls = model_class(model_name)
    except ValueError as error:
        raise fail(str(error)) from None
    if getattr(cls, "_estimator_type", "classifier") != "classifier":  # KMeans, PCA
        raise fail(
            f"{model_name} is not a classifier and 'shardlearn train' trains classifiers; fit "
            f"it from Python for now: {cls.__name__}(...).fit(shardlearn.Dataset.open(DATASET))."
        )
    estimator = cls()
    _set_params(estimator, params)
    if preprocess is not None:
        return Pipeline(Preprocessor.from_spec(preprocess, schema=ds.schema), estimator)
    return Pipeline(Preprocessor.auto(ds.schema), estimator)


def _set_params(estimator: Any, params: dict[str, Any]) -> None:
    try:
        estimator.set_params(**params)
        estimator._validate_params()
    except ValueError as error:
        raise fail(str(error)) from None


class _IterationProgress:
    """A rich progress bar over optimiser iterations showing loss and gradient norm."""

    def __init__(self, progress: Progress, total: int | None) -> None:
        self.progress = progress
        self.task = progress.add_task("training", total=total, loss="", grad="")

    def __call__(self, info: Any) -> None:
        grad = "" if math.isnan(info.grad_norm) else f"grad {info.grad_norm:.2e}"
        self.progress.update(
            self.task, completed=info.iteration, loss=f"loss {info.loss:.6f}", grad=grad
        )


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} it"),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[grad]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _fit_and_score(model: Any, ds: Any, eng: Any, show_progress: bool) -> dict[str, Any]:
    from shardlearn.models._scoring import accuracy_and_f1, block_confusion

    total = model.estimator.get_params(deep=False).get("max_iter")

    def score(ctx: Any) -> dict[str, Any]:
        return {
            split: accuracy_and_f1(block_confusion(ctx, model.estimator, split))
            for split in ctx.splits
        }

    start = time.perf_counter()
    if show_progress and total is not None:  # iterative models only
        with _progress() as progress:
            callback = _IterationProgress(progress, total)
            scores = model._fit_dataset(ds, eng, callback, after=score)
    else:
        scores = model._fit_dataset(ds, eng, None, after=score)
    return {"seconds": time.perf_counter() - start, "splits": scores}


def _summary_table(model: Any, summary: dict[str, Any]) -> Table:
    estimator = model.estimator
    table = Table(
        title=f"{type(estimator).__name__} — trained in {summary['seconds']:.2f} s",
        title_justify="left",
    )
    for column in ("split", "rows", "accuracy", "F1 (macro)"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, m in summary["splits"].items():
        table.add_row(split, f"{m['rows']:,}", f"{m['accuracy']:.4f}", f"{m['f1_macro']:.4f}")
    return table


def train(
    dataset: str = typer.Argument(..., help="Dataset directory or URI (from shardlearn ingest)."),
    model_name: str = typer.Option(
        "logistic", "--model", "-m", help="logistic, linear_svc, gaussian_nb, multinomial_nb, sgd…"
    ),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Model parameter KEY=VALUE (repeatable), e.g. C=0.5."
    ),
    engine_spec: str = typer.Option(None, "--engine", help="local (default), ray or ray:ADDRESS."),
    workers: int = typer.Option(None, "--workers", "-w", help="Number of workers."),
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write."),
    warm_start: str = typer.Option(
        None, "--warm-start", help="Continue training this saved model on DATASET."
    ),
    preprocess: Path = typer.Option(
        None,
        "--preprocess",
        help="Preprocessing spec (YAML/JSON, see Preprocessor.from_spec); default: auto.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    register_as: str = typer.Option(
        None, "--register", help="Also add the model to the registry under this name."
    ),
    registry: Path = typer.Option(
        Path("models"), "--registry", envvar="SHARDLEARN_MODELS", help="Registry for --register."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train a classifier on DATASET and save it to --out.

    Example: shardlearn train data/adult --model logistic --param C=0.5 --workers 2
    --out models/adult-lr
    """
    from shardlearn.data import Dataset
    from shardlearn.engine import engine, engine_from_cli
    from shardlearn.registry import save

    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite to replace it.")
    ds = Dataset.open(dataset)
    model = _build_model(ds, model_name, parse_params(param), warm_start, preprocess)
    with engine(engine_from_cli(engine_spec, workers)) as eng:
        summary = _fit_and_score(model, ds, eng, show_progress=not as_json)
        lineage = {
            "dataset": str(ds.uri),
            "dataset_manifest_sha256": ds.manifest_sha256,
            "engine": eng.name,
            "workers": eng.n_workers,
            "parent": warm_start,
        }
    metrics = {f"{split}_{k}": v for split, m in summary["splits"].items() for k, v in m.items()}
    save(model, out, metrics=metrics, lineage=lineage, overwrite=overwrite)
    estimator = model.estimator
    summary |= {
        "model": type(estimator).__name__,
        "params": estimator.get_params(deep=False),
        "iterations": getattr(estimator, "n_iter_", None),
        "out": str(out),
    }
    if register_as is not None:
        from shardlearn.registry import Registry

        summary["registered"] = Registry(registry).add_artifact(out, register_as).ref
    if as_json:
        console.print_json(json.dumps(summary, default=str))
        return
    console.print(_summary_table(model, summary))
    console.print(f"Saved to [bold]{out}[/]")
    if register_as is not None:
        console.print(f"Registered [bold]{summary['registered']}[/] in {registry}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""
    app.command("train", help=f"Train a classifier on a dataset and save it.\n\n{EXAMPLE}")(train)
