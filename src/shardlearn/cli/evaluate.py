"""``shardlearn evaluate`` and ``shardlearn compare``: metrics, HTML reports, leaderboards.

A clustering model (KMeans, or a Pipeline ending in one) is evaluated with
:func:`shardlearn.metrics.evaluate_clustering` instead: inertia, a sampled silhouette, cluster
sizes and, when the dataset has labels, the adjusted Rand index and normalized mutual
information.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from shardlearn.cli._common import (
    AllowUnencryptedOption,
    AllowUnsignedOption,
    err_console,
    fail,
    labelled,
    print_table,
)

_MODEL_HELP = "NAME@STAGE, NAME:VERSION, REGISTRY/NAME or an artifact directory."
_MAX_CLASS_ROWS = 30
# The silhouette sample (see shardlearn.metrics.clustering.DEFAULT_SILHOUETTE_SAMPLE).
_SILHOUETTE_SAMPLE = 5000


def _load_model(reference: str, registry: str, **policy: Any) -> Any:
    """The model of ``reference``; ``policy``: ``allow_unsigned``, ``allow_unencrypted``."""
    from shardlearn.registry import Registry, is_artifact, load

    if is_artifact(reference) or "/" in reference:
        return load(reference, **policy)
    return Registry(registry).load(reference, **policy)


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show metric warnings as one yellow line each instead of Python's warning format."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for warning in caught:
        text = str(warning.message)
        if text not in seen:
            seen.add(text)
            err_console.print(labelled("warning:", "yellow", text), highlight=False, soft_wrap=True)


def _say(message: str) -> None:
    """A line on stderr as plain text, a path in it never broken across lines."""
    err_console.print(message, highlight=False, markup=False, soft_wrap=True)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _metrics_table(report: Any) -> Table:
    m = report.metrics
    low, high = m["accuracy_interval_95"]
    table = Table(title=f"{report.title} — {m['rows']:,} rows", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("note", style="dim")
    auc_note = "exact" if m["roc_auc_error_bound"] == 0 else f"± {m['roc_auc_error_bound']:.1e}"
    ap_note = "exact" if m["pr_auc_error_bound"] == 0 else f"± {m['pr_auc_error_bound']:.1e}"
    if len(report.classes) > 2:
        auc_note, ap_note = f"macro one-vs-rest, {auc_note}", f"macro one-vs-rest, {ap_note}"
    score_note = _score_note(report)
    rows = [
        ("accuracy", m["accuracy"], f"95% CI {_fmt(low)} – {_fmt(high)}"),
        ("balanced accuracy", m["balanced_accuracy"], ""),
        ("F1 macro / weighted", m["f1_macro"], f"weighted {_fmt(m['f1_weighted'])}"),
        ("precision macro", m["precision_macro"], ""),
        ("recall macro", m["recall_macro"], ""),
        ("ROC-AUC", m["roc_auc"], auc_note),
        ("PR-AUC", m["pr_auc"], ap_note),
        ("log loss", m["log_loss"], score_note),
        ("Brier score", m["brier"], score_note),
        (
            "calibration error",
            m["expected_calibration_error"],
            "; ".join(filter(None, ("top label", score_note))),
        ),
        ("Cohen's kappa", m["cohen_kappa"], ""),
        ("MCC", m["mcc"], ""),
    ]
    for name, value, note in rows:
        table.add_row(name, _fmt(value), note)
    return table


def _score_note(report: Any) -> str:
    """Why a margin model's log loss, Brier and calibration are not of probabilities."""
    if not str(report.evaluation.get("scores", "")).startswith("decision_function"):
        return ""
    squash = "softmax" if len(report.classes) > 2 else "sigmoid"
    return f"{squash} of margins, not probabilities"


def _class_table(report: Any) -> Table:
    table = Table(title="Per class", title_justify="left")
    for name in ("class", "support", "precision", "recall", "F1", "ROC-AUC", "PR-AUC"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for row in report.metrics["per_class"][:_MAX_CLASS_ROWS]:
        support = row["support"]
        table.add_row(
            str(row["class"]),
            f"{support:,.0f}" if float(support).is_integer() else f"{support:,.2f}",
            *(_fmt(row[k]) for k in ("precision", "recall", "f1", "roc_auc", "pr_auc")),
        )
    hidden = len(report.metrics["per_class"]) - _MAX_CLASS_ROWS
    if hidden > 0:
        table.caption = f"{hidden} more classes in --json / --report"
    return table


def _write_json(data: dict[str, Any], target: str) -> None:
    text = json.dumps(data, indent=2, allow_nan=False)
    if target == "-":
        typer.echo(text)
    else:
        Path(target).write_text(text + "\n")
        _say(f"metrics written to {target}")


def _final_step(model: Any) -> Any:
    final = getattr(model, "estimator", None)
    return model if final is None or isinstance(final, str) else final


def _is_clustering(model: Any) -> bool:
    return hasattr(_final_step(model), "cluster_centers_")


def _refuse_non_classifiers(reference: str, model: Any) -> None:
    """Clear errors for what the classifier evaluation cannot score (evaluate_command handles
    a single clustering model itself)."""
    final = _final_step(model)
    if _is_clustering(model):
        raise fail(
            f"{reference} is a clustering model ({type(final).__name__}); compare ranks "
            "classifiers. Evaluate it alone: shardlearn evaluate MODEL DATASET."
        )
    if getattr(final, "_estimator_type", "classifier") == "transformer" and not _is_clustering(
        model
    ):
        raise fail(
            f"{reference} is a {type(final).__name__} (a transformer): it has no predictions to "
            "evaluate. Its explained variance is in 'shardlearn models show'."
        )


def _evaluate_each(
    models: list[str], fitted: list[Any], dataset: str, split: str, engine: str | None,
    workers: int | None, batch_size: int, on_report: Callable[[str, Any], None],
) -> None:  # fmt: skip
    from shardlearn.data import Dataset
    from shardlearn.engine import engine as use_engine
    from shardlearn.engine import engine_from_cli
    from shardlearn.metrics import evaluate

    for reference, model in zip(models, fitted, strict=True):
        _refuse_non_classifiers(reference, model)
    data = Dataset.open(dataset)
    if not data.has_label:
        raise fail(
            f"{dataset} has no label column, so a classifier cannot be scored on it; ingest "
            "with --label COLUMN, or write its predictions with 'shardlearn predict'."
        )
    with use_engine(engine_from_cli(engine, workers)) as eng:
        for reference, model in zip(models, fitted, strict=True):
            with _warnings_as_lines():
                report = evaluate(
                    model, data, split=split, engine=eng, batch_size=batch_size,
                    title=f"Evaluation of {reference}",
                )  # fmt: skip
            report.model.setdefault("name", reference)
            on_report(reference, report)


def evaluate_command(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    dataset: str = typer.Argument(..., help="Dataset directory or URI."),
    split: str = typer.Option("test", "--split", help="Split to evaluate."),
    report_path: Path | None = typer.Option(None, "--report", help="Write the HTML report here."),
    json_path: str | None = typer.Option(
        None, "--json", help="Write every metric as JSON to this file ('-': stdout)."
    ),
    registry: str = typer.Option(
        "models", "--registry", envvar="SHARDLEARN_MODELS", help="Model registry directory."
    ),
    engine: str | None = typer.Option(None, "--engine", help="local, ray or ray:ADDRESS."),
    workers: int | None = typer.Option(None, "--workers", help="Number of workers."),
    batch_size: int = typer.Option(65536, "--batch-size", min=1, help="Rows per batch."),
    sample_size: int = typer.Option(
        _SILHOUETTE_SAMPLE, "--sample-size", min=2,
        help="Clustering models: rows in the (seeded) silhouette sample.",
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Clustering models: sample seed."),
    allow_unsigned: AllowUnsignedOption = False,
    allow_unencrypted: AllowUnencryptedOption = False,
) -> None:  # fmt: skip
    """Evaluate a model on a dataset split: metrics table, HTML report, JSON.

    A clustering model (shardlearn train --model kmeans) gets inertia, a sampled silhouette,
    cluster sizes and, when the dataset has labels, adjusted Rand index and NMI.

    Example: shardlearn evaluate loans@production data/loans --report report.html
    """
    fitted = _load_model(
        model, registry, allow_unsigned=allow_unsigned, allow_unencrypted=allow_unencrypted
    )
    if _is_clustering(fitted):
        if report_path is not None:
            raise fail("--report writes classifier reports; use --json for a clustering model.")
        _evaluate_clustering(
            model, fitted, dataset, split, engine, workers, batch_size, sample_size, seed,
            json_path,
        )  # fmt: skip
        return
    reports: list[Any] = []
    _evaluate_each(
        [model], [fitted], dataset, split, engine, workers, batch_size,
        lambda _name, report: reports.append(report),
    )  # fmt: skip
    report = reports[0]
    if json_path != "-":
        print_table(_metrics_table(report))
        print_table(_class_table(report))
    if report_path is not None:
        report.to_html(report_path)
        _say(f"report written to {report_path}")
    if json_path is not None:
        _write_json(report.to_dict(), json_path)


def _clustering_table(reference: str, report: Any) -> Table:
    m = report.metrics
    table = Table(
        title=f"Clustering of {reference} — {report.dataset['split']} split, {m['rows']:,} rows",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("note", style="dim")
    sample = f"sample of {m['silhouette_sample_size']:,} rows, seed {m['silhouette_seed']}"
    label = report.dataset.get("label")
    against = f"against {label!r}, {m['labelled_rows']:,} labelled rows" if label else ""
    rows = [
        ("inertia", m["inertia"], "sum of squared distances to the closest centre"),
        ("mean squared distance", m["mean_squared_distance"], "inertia / rows"),
        ("silhouette", m["silhouette"], sample),
    ]
    if label:  # a dataset without a label column has nothing to compare the clusters with
        rows += [
            ("adjusted Rand index", m["adjusted_rand_index"], against),
            ("normalized mutual info", m["normalized_mutual_info"], against),
        ]
    else:
        table.caption = "The dataset has no label column: no ARI/NMI."
    for name, value, note in rows:
        table.add_row(name, _fmt(value), note)
    return table


def _sizes_table(report: Any) -> Table:
    table = Table(title="Cluster sizes", title_justify="left")
    for column in ("cluster", "rows", "share"):
        table.add_column(column, justify="right")
    total = max(report.metrics["rows"], 1)
    for index, size in enumerate(report.metrics["cluster_sizes"]):
        table.add_row(str(index), f"{size:,}", f"{size / total:.1%}")
    return table


def _evaluate_clustering(
    reference: str, model: Any, dataset: str, split: str, engine: str | None,
    workers: int | None, batch_size: int, sample_size: int, seed: int, json_path: str | None,
) -> None:  # fmt: skip
    from shardlearn.engine import engine as use_engine
    from shardlearn.engine import engine_from_cli
    from shardlearn.metrics import evaluate_clustering

    with use_engine(engine_from_cli(engine, workers)) as eng:
        report = evaluate_clustering(
            model, dataset, split=split, engine=eng, sample_size=sample_size, seed=seed,
            batch_size=batch_size,
        )  # fmt: skip
    report.model.setdefault("name", reference)
    if json_path != "-":
        print_table(_clustering_table(reference, report))
        print_table(_sizes_table(report))
    if json_path is not None:
        _write_json(report.to_dict(), json_path)


def compare_command(
    models: list[str] = typer.Argument(..., help=f"One or more models: {_MODEL_HELP}"),
    dataset: str = typer.Argument(..., help="Dataset directory or URI (the last argument)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate."),
    sort_by: str = typer.Option("roc_auc", "--sort-by", help="Leaderboard metric."),
    report_path: Path | None = typer.Option(
        None, "--report", help="Write the leaderboard and comparison plot as HTML here."
    ),
    plot_path: Path | None = typer.Option(None, "--plot", help="Write the comparison plot (PNG)."),
    json_path: str | None = typer.Option(
        None, "--json", help="Write the leaderboard as JSON to this file ('-': stdout)."
    ),
    registry: str = typer.Option(
        "models", "--registry", envvar="SHARDLEARN_MODELS", help="Model registry directory."
    ),
    engine: str | None = typer.Option(None, "--engine", help="local, ray or ray:ADDRESS."),
    workers: int | None = typer.Option(None, "--workers", help="Number of workers."),
    batch_size: int = typer.Option(65536, "--batch-size", min=1, help="Rows per batch."),
    allow_unsigned: AllowUnsignedOption = False,
    allow_unencrypted: AllowUnencryptedOption = False,
) -> None:
    """Evaluate several models on the same split and rank them.

    Example: shardlearn compare loans:1 loans:2 loans@production data/loans --report cmp.html
    """
    from shardlearn.metrics import compare
    from shardlearn.metrics.report import LEADERBOARD

    if sort_by not in LEADERBOARD:
        raise typer.BadParameter(f"must be one of {', '.join(LEADERBOARD)}", param_hint="--sort-by")
    reports: dict[str, Any] = {}
    policy = {"allow_unsigned": allow_unsigned, "allow_unencrypted": allow_unencrypted}
    fitted = [_load_model(reference, registry, **policy) for reference in models]
    _evaluate_each(
        models, fitted, dataset, split, engine, workers, batch_size,
        lambda name, report: reports.__setitem__(name, report),
    )  # fmt: skip
    board = compare(reports, sort_by=sort_by)
    if json_path != "-":
        table = Table(title=f"Leaderboard by {sort_by} ({split} split)", title_justify="left")
        for column in ("rank", "model", *LEADERBOARD):
            table.add_column(column, justify="left" if column == "model" else "right")
        for row in board.rows:
            table.add_row(str(row["rank"]), row["model"], *(_fmt(row[m]) for m in LEADERBOARD))
        print_table(table)
    if plot_path is not None:
        plot_path.write_bytes(board.plot_png())
        _say(f"plot written to {plot_path}")
    if report_path is not None:
        board.to_html(report_path)
        _say(f"report written to {report_path}")
    if json_path is not None:
        _write_json(board.to_dict(), json_path)


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``compare`` to ``app``."""
    app.command("evaluate")(evaluate_command)
    app.command("compare")(compare_command)
