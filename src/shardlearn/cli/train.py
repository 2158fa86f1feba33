"""``shardlearn train``: preprocess and train a model on a dataset, save it.

The model is ``Pipeline(Preprocessor.auto(schema), MODEL(**params))`` (or the ``--preprocess``
spec) fitted on the train split over the chosen engine -- the preprocessing defaults follow the
model (:mod:`shardlearn.preprocess.profiles`) -- scored on the workers' cached train and valid
blocks (accuracy, ROC-AUC, macro F1), and saved
with :func:`shardlearn.registry.save` (a signed-if-configured artifact directory, no pickle).
``--pca N`` puts ``PCA(n_components=N)`` between the preprocessor and the model.
``--warm-start MODEL`` continues a saved model (its fitted preprocessor and its weights) on a
new dataset.

``--model kmeans`` and ``--model pca`` fit the same pipeline with the labels ignored; their
summary is the clustering (inertia, iterations, cluster sizes) or the explained variance per
component instead of accuracy. They also train on a dataset without a label column (``ingest``
without ``--label``); a classifier on such a dataset is a one-line error.

``--mlflow URI`` (or ``$SHARDLEARN_MLFLOW_URI``) also logs the run to an MLflow tracking store
(:mod:`shardlearn.cli._mlflow`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from shardlearn._yaml import load_yaml
from shardlearn.cli._common import console, fail, print_table
from shardlearn.cli._mlflow import (
    MlflowOption,
    log_train,
    print_logged,
    report_html,
    require_mlflow,
)
from shardlearn.exceptions import SpecError

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
            params[key.strip()] = load_yaml(value, "--param", SpecError) if value.strip() else ""
        except SpecError:  # not a YAML scalar (or an alias): the text itself
            params[key.strip()] = value
    return params


# Wide enough that the KMeans / PCA titles (their key numbers) stay on one line.
_MIN_TABLE_WIDTH = 84


def _parse_pca(value: str | None) -> int | float | None:
    """``--pca 10`` -> 10 components; ``--pca 0.95`` -> the fraction of variance to keep."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if number.is_integer() and number >= 1:
        return int(number)
    if 0 < number < 1:
        return number
    raise fail(
        f"--pca expects a number of components (an integer >= 1) or a fraction of variance in "
        f"(0, 1), e.g. --pca 10 or --pca 0.95. Got {value!r}."
    )


def _build_model(
    ds: Any,
    model_name: str,
    params: dict[str, Any],
    warm_start: str | None,
    preprocess: Path | None = None,
    pca: int | float | None = None,
) -> Any:
    from shardlearn.models import Pipeline, model_class
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
        if pca is not None:
            raise fail("--pca cannot be combined with --warm-start (the saved model's steps stay).")
        if preprocess is not None:
            raise fail(
                "--preprocess cannot be combined with --warm-start: the saved model keeps its "
                "fitted preprocessor (retrain from scratch to change it)."
            )
        _set_params(estimator, {**params, "warm_start": True})
        return model
    try:
        cls = model_class(model_name)
    except ValueError as error:
        raise fail(str(error)) from None
    estimator = cls()
    _set_params(estimator, params)
    steps = []
    if pca is not None:
        from shardlearn.models import PCA

        steps.append(PCA(n_components=pca))
        _set_params(steps[0], {})
    # Without a spec, the Pipeline gives the preprocessor the model's defaults when it fits.
    return Pipeline(Preprocessor.for_schema(ds.schema, preprocess), *steps, estimator)


def _is_classifier(model: Any) -> bool:
    return getattr(model.estimator, "_estimator_type", "classifier") == "classifier"


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


class _LloydProgress:
    """A rich progress bar over KMeans' Lloyd iterations showing inertia and centre shift."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("k-means", total=total, loss="", grad="")

    def __call__(self, info: Any) -> None:
        self.progress.update(
            self.task,
            description=f"k-means run {info.run + 1}" if info.run else "k-means",
            completed=info.iteration,
            loss=f"inertia {info.inertia:.6g}",
            grad=f"shift {info.center_shift:.2e}",
        )


def _fit_unsupervised(model: Any, ds: Any, eng: Any, show_progress: bool) -> dict[str, Any]:
    """Fit a KMeans / PCA pipeline with a progress bar (Lloyd iterations, or one pass)."""
    import numpy as np

    estimator = model.estimator
    start = time.perf_counter()
    if not show_progress:
        model._fit_dataset(ds, eng, None)
    elif hasattr(estimator, "n_clusters"):
        with _progress() as progress:
            model._fit_dataset(ds, eng, _LloydProgress(progress, int(estimator.max_iter)))
    else:
        with _progress() as progress:
            task = progress.add_task("PCA: mean and covariance", total=1, loss="", grad="")
            model._fit_dataset(ds, eng, None)
            progress.update(task, completed=1)
    summary: dict[str, Any] = {"seconds": time.perf_counter() - start, "splits": {}}
    if hasattr(estimator, "cluster_centers_"):
        sizes = np.asarray(estimator.cluster_sizes_)
        summary |= {
            "inertia": float(estimator.inertia_),
            "cluster_sizes": sizes.tolist(),
            "rows": float(sizes.sum()) if sizes.dtype.kind == "f" else int(sizes.sum()),
        }
    else:
        ratio = np.asarray(estimator.explained_variance_ratio_)
        summary |= {
            "n_components": int(estimator.n_components_),
            "rows": int(estimator.n_samples_),
            "explained_variance": np.asarray(estimator.explained_variance_).tolist(),
            "explained_variance_ratio": ratio.tolist(),
            "cumulative_explained_variance_ratio": np.cumsum(ratio).tolist(),
        }
    return summary


def _fit_and_score(model: Any, ds: Any, eng: Any, show_progress: bool) -> dict[str, Any]:
    from shardlearn.models import score_split

    if not _is_classifier(model):
        return _fit_unsupervised(model, ds, eng, show_progress)
    total = model.estimator.get_params(deep=False).get("max_iter")

    def score(ctx: Any) -> dict[str, Any]:
        return {split: score_split(ctx, model.estimator, split) for split in ctx.splits}

    start = time.perf_counter()
    if show_progress and total is not None:  # iterative models only
        with _progress() as progress:
            callback = _IterationProgress(progress, total)
            scores = model._fit_dataset(ds, eng, callback, after=_evaluated(score))
    else:
        scores = model._fit_dataset(ds, eng, None, after=_evaluated(score))
    return {"seconds": time.perf_counter() - start, "splits": scores}


def _evaluated(score: Any) -> Any:
    """``score`` timed as the fit's ``evaluate`` phase."""
    from shardlearn.models import timed

    def timed_score(ctx: Any) -> Any:
        with timed("evaluate"):
            return score(ctx)

    return timed_score


def _timings_line(summary: dict[str, Any]) -> str:
    """Where the fit ran and where its time went, for the terminal summary."""
    mode = summary.get("execution")
    where = f"Ran {mode.replace('_', '-')}; " if mode else ""
    phases = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in summary["timings"].items())
    return f"{where}time by phase: {phases}"


def _kmeans_table(model: Any, summary: dict[str, Any]) -> Table:
    estimator = model.estimator
    table = Table(
        title=f"KMeans — {estimator.n_clusters} clusters, fitted in {summary['seconds']:.2f} s; "
        f"inertia {summary['inertia']:.6g} after {estimator.n_iter_} iterations",
        title_justify="left",
        min_width=_MIN_TABLE_WIDTH,
    )
    for column in ("cluster", "rows", "share"):
        table.add_column(column, justify="right")
    total = max(summary["rows"], 1)
    for index, size in enumerate(summary["cluster_sizes"]):
        table.add_row(str(index), f"{size:,}", f"{size / total:.1%}")
    return table


def _pca_table(model: Any, summary: dict[str, Any]) -> Table:
    table = Table(
        title=f"PCA — {summary['n_components']} components from {summary['rows']:,} rows, "
        f"fitted in {summary['seconds']:.2f} s",
        title_justify="left",
        min_width=_MIN_TABLE_WIDTH,
    )
    for column in ("component", "explained variance", "ratio", "cumulative"):
        table.add_column(column, justify="right")
    rows = zip(
        summary["explained_variance"],
        summary["explained_variance_ratio"],
        summary["cumulative_explained_variance_ratio"],
        strict=True,
    )
    for index, (variance, ratio, cumulative) in enumerate(rows):
        table.add_row(f"pca{index}", f"{variance:.6g}", f"{ratio:.4f}", f"{cumulative:.4f}")
    return table


def _summary_table(model: Any, summary: dict[str, Any]) -> Table:
    estimator = model.estimator
    if "inertia" in summary:
        return _kmeans_table(model, summary)
    if "explained_variance_ratio" in summary:
        return _pca_table(model, summary)
    steps = "".join(f"{type(step).__name__} → " for step in model.transformers)
    table = Table(
        title=f"{steps}{type(estimator).__name__} — trained in {summary['seconds']:.2f} s",
        title_justify="left",
    )
    auc = "ROC-AUC" if len(model.estimator.classes_) == 2 else "ROC-AUC (macro OvR)"
    for column in ("split", "rows", "accuracy", auc, "F1 (macro)"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, m in summary["splits"].items():
        table.add_row(split, f"{m['rows']:,}", f"{m['accuracy']:.4f}", f"{m['roc_auc']:.4f}",
                      f"{m['f1_macro']:.4f}")  # fmt: skip
    return table


def train(
    dataset: str = typer.Argument(..., help="Dataset directory or URI (from shardlearn ingest)."),
    model_name: str = typer.Option(
        "logistic",
        "--model",
        "-m",
        help="logistic, linear_svc, gaussian_nb, multinomial_nb, sgd…, or kmeans / pca "
        "(labels ignored).",
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
        help="Preprocessing spec (YAML/JSON, see Preprocessor.from_spec), e.g. to set a text "
        "column's n_features; default: auto, with the model's defaults (256 hashed text terms "
        "for trees and nets, 2^18 for linear models).",
    ),
    pca: str = typer.Option(
        None,
        "--pca",
        help="Put PCA before the model: N components, or a fraction of variance such as 0.95.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    register_as: str = typer.Option(
        None, "--register", help="Also add the model to the registry under this name."
    ),
    registry: str = typer.Option(
        "models", "--registry", envvar="SHARDLEARN_MODELS", help="Registry for --register."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    mlflow_uri: MlflowOption = None,
) -> None:
    """Train a model on DATASET and save it to --out.

    Example: shardlearn train data/adult --model logistic --param C=0.5 --workers 2
    --out models/adult-lr
    """
    from shardlearn.data import Dataset
    from shardlearn.engine import engine, engine_from_cli
    from shardlearn.models import recording, timed
    from shardlearn.registry import save
    from shardlearn.registry.artifact import check_replaceable

    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite to replace it.")
    require_mlflow(mlflow_uri)
    check_replaceable(out)  # --overwrite replaces a model, never another folder
    ds = Dataset.open(dataset)
    model = _build_model(
        ds, model_name, parse_params(param), warm_start, preprocess, _parse_pca(pca)
    )
    if not ds.has_label and _is_classifier(model):
        raise fail(
            f"{dataset} has no label column; ingest with --label COLUMN to train "
            f"{type(model.estimator).__name__} (without a label: --model kmeans or pca)."
        )
    with engine(engine_from_cli(engine_spec, workers)) as eng:
        # Phases nested in the fit (start, read, preprocess, evaluate) come out of "train".
        with recording() as timings, timed("train"):
            summary = _fit_and_score(model, ds, eng, show_progress=not as_json)
        summary |= {
            "execution": getattr(model.estimator, "execution_", None),
            "timings": timings.as_dict(),
        }
        lineage = {
            "dataset": str(ds.uri),
            "dataset_manifest_sha256": ds.manifest_sha256,
            "engine": eng.name,
            "workers": eng.n_workers,
            "parent": warm_start,
        }
        # The report for MLflow: the last split the summary scored (valid when there is one).
        html = None
        if mlflow_uri and summary["splits"]:
            html = report_html(model, ds, list(summary["splits"])[-1], eng)
    save(model, out, metrics=_saved_metrics(summary), lineage=lineage, overwrite=overwrite)
    estimator = model.estimator
    summary |= {
        "model": type(estimator).__name__,
        "params": estimator.get_params(deep=False),
        "steps": [type(step).__name__ for step in model.transformers],
        "iterations": getattr(estimator, "n_iter_", None),
        "out": str(out),
    }
    if register_as is not None:
        from shardlearn.registry import Registry

        summary["registered"] = Registry(registry).add_artifact(out, register_as).ref
    if mlflow_uri:
        settings = {"model": summary["model"], "steps": summary["steps"], **lineage}
        metrics = _saved_metrics(summary)
        summary["mlflow_run_id"] = log_train(
            mlflow_uri, {**summary, "metrics": metrics}, settings, html
        )
    if as_json:
        console.print_json(json.dumps(summary, default=str))
        return
    print_table(_summary_table(model, summary))
    console.print(_timings_line(summary), markup=False, highlight=False)
    console.print(Text.assemble("Saved to ", (str(out), "bold")), soft_wrap=True)
    if register_as is not None:
        registered = ("Registered ", (summary["registered"], "bold"), f" in {registry}")
        console.print(Text.assemble(*registered), soft_wrap=True)
    if mlflow_uri:
        print_logged(mlflow_uri, summary["mlflow_run_id"])


def _saved_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The metrics recorded in the artifact (shown by ``shardlearn models show``)."""
    if "inertia" in summary:
        return {"train_inertia": summary["inertia"], "train_rows": summary["rows"]}
    if "explained_variance_ratio" in summary:
        ratio = summary["cumulative_explained_variance_ratio"]
        return {"explained_variance_ratio_total": ratio[-1] if ratio else 0.0}
    return {f"{split}_{k}": v for split, m in summary["splits"].items() for k, v in m.items()}


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""
    app.command(
        "train",
        help=f"Train a classifier (or kmeans / pca) on a dataset and save it.\n\n{EXAMPLE}",
    )(train)
