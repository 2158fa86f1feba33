"""``--mlflow URI`` of ``train``, ``search`` and ``run``: what each command logs to MLflow.

Every command checks, before any work starts, that mlflow is installed (a one-line error naming
the ``shardlearn[mlflow]`` extra) and that the URI is a usable tracking store (also one line,
e.g. for a ``file:`` store, which MLflow 3 refuses unless ``MLFLOW_ALLOW_FILE_STORE=true``),
does its work, then logs one run
(:func:`shardlearn.registry.mlflow.tracking_run`):

* ``train`` -- the model, its parameters and steps, the dataset and engine as parameters; the
  train/valid metrics it printed; the HTML evaluation report of the last split it scored; the
  model (an MLflow pyfunc model holding the saved artifact).
* ``search`` -- the search settings; the best CV score and the refitted model's test metrics;
  the test report of the refitted model; that model; and one nested run per trial (its model
  and parameters, its score at every rung as the metric's steps, its status).
* ``run`` -- the pipeline's variables; one nested run per stage with the stage's options as
  parameters, its numeric results as metrics, its HTML report, and the model it trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shardlearn.cli._common import console

__all__ = [
    "MlflowOption",
    "log_pipeline",
    "log_search",
    "log_train",
    "print_logged",
    "report_html",
    "require_mlflow",
]

MlflowOption = Annotated[
    str | None,
    typer.Option(
        "--mlflow",
        envvar="SHARDLEARN_MLFLOW_URI",
        help="Log the run to this MLflow tracking URI (sqlite:///mlflow.db, http://host:5000); "
        "needs shardlearn[mlflow].",
        show_default=False,
    ),
]
# Stages whose "model" result is a model they produced (the others name their input model).
_MODEL_STAGES = ("train", "search")


def require_mlflow(uri: str | None) -> None:
    """Fail before any work when ``--mlflow`` is given without the extra or with a bad store."""
    if uri:
        from shardlearn.registry.mlflow import check_store

        check_store(uri)


def report_html(model: Any, dataset: Any, split: str, engine: Any) -> str:
    """The HTML evaluation report of ``model`` on ``split``."""
    from shardlearn.metrics import evaluate

    return evaluate(model, dataset, split=split, engine=engine).to_html()


def print_logged(uri: str, run_id: str) -> None:
    """The line that tells where the run went."""
    console.print(f"Logged MLflow run {run_id} to {uri}", markup=False, highlight=False)


def log_train(uri: str, summary: dict[str, Any], settings: dict[str, Any], html: str | None) -> str:
    """One run for ``train``: settings and params, metrics, the report and the saved model.

    Returns the run's id.
    """
    from shardlearn.registry.mlflow import tracking_run

    name = f"train {summary['model']}"
    with tracking_run(uri, name, tags={"shardlearn.command": "train"}) as run:
        run.log_params(settings)
        run.log_params(summary["params"], prefix="param.")
        run.log_metrics(summary["metrics"])
        run.log_metrics({"seconds": summary["seconds"]})
        if html is not None:
            run.log_text(html, "report.html")
        run.log_model(summary["out"])
    return str(run.run_id)


def log_search(uri: str, result: Any, settings: dict[str, Any], html: str | None) -> str:
    """A parent run for the search with one nested run per trial; returns its run id."""
    from shardlearn.registry.mlflow import tracking_run

    metric = result.metric
    with tracking_run(uri, "search", tags={"shardlearn.command": "search"}) as run:
        run.log_params(settings)
        if result.best_params is not None:
            run.log_params({"best_model": result.best_model_name})
            run.log_params(result.best_params, prefix="best.")
        run.log_metrics({f"cv_{metric}": result.best_score, "seconds": result.seconds})
        run.log_metrics(result.test_metrics, prefix="test_")
        for trial, rungs in _trials(result.trials).items():
            with run.child(f"trial {trial}") as child:
                _log_trial(child, rungs, metric)
        if html is not None:
            run.log_text(html, "report.html")
        if result.model_path is not None:
            run.log_model(result.model_path)
    return str(run.run_id)


def _trials(results: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    """Trial results grouped by configuration, rungs in order."""
    grouped: dict[Any, list[dict[str, Any]]] = {}
    for result in results:
        grouped.setdefault(result["trial"], []).append(result)
    return {trial: sorted(rungs, key=lambda r: r["rung"]) for trial, rungs in grouped.items()}


def _log_trial(run: Any, rungs: list[dict[str, Any]], metric: str) -> None:
    last = rungs[-1]
    run.log_params({"model": last["model"]})
    run.log_params(last.get("params") or {}, prefix="param.")
    for rung in rungs:
        scores = {f"cv_{metric}": rung.get("score"), f"cv_{metric}_std": rung.get("score_std")}
        run.log_metrics({**scores, "budget": rung.get("budget")}, step=int(rung["rung"]))
    run.log_metrics({"seconds": last.get("seconds")})
    tags = {"status": last["status"], "rung": last["rung"]}
    if last.get("error"):
        tags["error"] = last["error"]
    run.set_tags(tags)


def log_pipeline(uri: str, result: Any) -> str:
    """A parent run for the pipeline with one nested run per stage that produced a result."""
    from shardlearn.registry.mlflow import tracking_run

    spec = result.spec
    tags = {"shardlearn.command": "run", "shardlearn.pipeline": spec.name}
    with tracking_run(uri, f"run {spec.name}", tags=tags) as run:
        run.log_params(spec.variables, prefix="var.")
        run.log_metrics({"seconds": result.seconds})
        for name, stage in spec.stages.items():
            outcome = result.results.get(name)
            if outcome is None:
                continue
            with run.child(name) as child:
                _log_stage(child, stage, outcome, name in result.cached)
    return str(run.run_id)


def _log_stage(run: Any, stage: Any, outcome: dict[str, Any], cached: bool) -> None:
    run.set_tags({"stage_type": stage.type, "cached": cached})
    run.log_params(stage.options)
    run.log_metrics({k: v for k, v in outcome.items() if not isinstance(v, dict | list)})
    run.log_metrics(outcome.get("metrics") or {})
    run.log_metrics(outcome.get("test_metrics") or {}, prefix="test_")
    report = outcome.get("report")
    if isinstance(report, str) and report.endswith(".html") and Path(report).is_file():
        run.log_file(report)
    model = outcome.get("model")
    if stage.type in _MODEL_STAGES and isinstance(model, str) and model:
        run.log_model(model)
