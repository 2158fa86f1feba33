"""What each stage type does. Every stage is a module-level function returning a small JSON-able
dict, so the task graph can cache it and ``--resume`` can skip it.

Heavy work happens inside, on the current engine's worker groups; the stage functions
themselves run on the driver (see :mod:`shardlearn.pipeline.run`). A stage reads its upstream
stages' results: a dataset stage gives ``{"dataset": uri}``, a model stage (train, compare,
register) gives ``{"model": path}``; a plain string is taken as a path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shardlearn import _warm
from shardlearn.data.options import FileReadOptions
from shardlearn.exceptions import SpecError
from shardlearn.pipeline.options import stage_settings
from shardlearn.pipeline.spec import STAGE_TYPES

__all__ = ["STAGE_FUNCTIONS"]


def _dataset_uri(value: Any) -> str:
    if isinstance(value, dict):
        if "dataset" not in value:
            raise SpecError(f"expected a dataset (an ingest stage or a path); got {value!r}")
        return str(value["dataset"])
    return str(value)


def _model_path(value: Any) -> str:
    if isinstance(value, dict):
        if "model" not in value:
            raise SpecError(f"expected a model (a train, compare or register stage); got {value!r}")
        return str(value["model"])
    return str(value)


def _out(options: dict[str, Any], workdir: str, *parts: str) -> Path:
    path = Path(options["out"]) if options.get("out") else Path(workdir, *parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run_ingest(name: str, options: dict[str, Any], workdir: str) -> dict[str, Any]:
    """``ingest``: source files → a sharded dataset (replacing an earlier run's), parsed on the
    pipeline's engine (on ``ray``, byte ranges as tasks on every node)."""
    from shardlearn.data import ingest
    from shardlearn.engine import get_engine

    # Every ingest key of the spec but the three passed by position.
    keys = [k for k in STAGE_TYPES["ingest"]["keys"] if k not in ("source", "label", "out")]
    dataset = ingest(
        options["source"],
        options["label"],
        _out(options, workdir, "data", name),
        overwrite=True,
        engine=get_engine(),  # the pipeline's: run_pipeline makes it current
        **{k: options[k] for k in keys if k in options},
    )
    manifest = dataset.manifest
    return {
        "dataset": str(dataset.uri),
        "rows_read": manifest.get("rows_read"),
        "rows_written": manifest.get("rows_written"),
        "rows_rejected": manifest.get("rows_rejected"),
    }


def _preprocessor(options: dict[str, Any], schema: Any) -> Any:
    from shardlearn.preprocess import Preprocessor

    spec = options.get("preprocessing")
    if spec is None:
        return Preprocessor.auto(schema)
    return Preprocessor.from_spec({"auto": True, **spec}, schema=schema)


def run_train(name: str, options: dict[str, Any], workdir: str, dataset: Any) -> dict[str, Any]:
    """``train``: a Pipeline of preprocessing + the named model, saved as an artifact.

    An earlier run's artifact at ``out`` is replaced; any other existing folder there is
    refused before training (:func:`~shardlearn.registry.artifact.check_replaceable`).
    """
    from shardlearn.data import Dataset
    from shardlearn.models import Pipeline, model_class, recording
    from shardlearn.registry import save
    from shardlearn.registry.artifact import check_replaceable

    out = _out(options, workdir, "models", name)
    check_replaceable(out)  # before training: out may name a folder that is not a model
    data = Dataset.open(_dataset_uri(dataset))
    params = dict(options.get("params") or {})
    try:
        estimator = model_class(str(options["model"]))(**params)
    except TypeError as error:
        raise SpecError(f"stage {name!r}.params: {error}") from None
    started = time.perf_counter()
    # The fit's phases, whatever the model, and what it reused in the run's warm scope.
    with _warm.scope(_warm_name()) as counters, recording() as timings:
        model = Pipeline(_preprocessor(options, data.schema), estimator).fit(data)
    seconds = time.perf_counter() - started
    lineage = {"dataset_manifest_sha256": data.manifest_sha256, "pipeline_stage": name}
    save(model, out, overwrite=True, lineage=lineage)
    return {
        "model": str(out),
        "model_name": options["model"],
        "seconds": round(seconds, 3),
        # Where the fit's time went (start, read, preprocess, train, evaluate), phases that
        # took none left out.
        "fit_seconds": {k: round(v, 2) for k, v in timings.as_dict().items() if v >= 0.005},
        # What the fit took from earlier stages (preprocessors_reused, shards_reused, ...) and
        # built itself; {} outside a warm scope.
        "reused": {} if counters is None else counters.summary(),
    }


def _warm_name() -> str | None:
    """The warm scope the stage runs in (the run's), or None."""
    handle = _warm.current()
    return None if handle is None else handle.name


def _load(model: Any, options: dict[str, Any]) -> Any:
    """The stage's model, loaded with its ``allow_unsigned`` (the CLI's ``--allow-unsigned``)."""
    from shardlearn.registry import load

    return load(_model_path(model), allow_unsigned=bool(options.get("allow_unsigned", False)))


def _evaluate(model: Any, options: dict[str, Any], dataset_uri: str, split: str) -> Any:
    from shardlearn.metrics import evaluate

    return evaluate(_load(model, options), dataset_uri, split=split)


def run_search(name: str, options: dict[str, Any], workdir: str, dataset: Any) -> dict[str, Any]:
    """``search``: hyperparameter search with shard-level CV; the best model refitted and saved.

    Runs :func:`shardlearn.search.search`, so its selection does not leak: early stopping in a
    trial watches an inner split of the training shards, and the refit trains the rounds the
    trials selected, shown in the result's ``refit_params`` (and per trial in the leaderboard's
    ``early_stopping``).
    """
    from shardlearn.search import search

    settings = stage_settings("search", options)  # the defaults of pipeline/options.py
    result = search(
        _dataset_uri(dataset),
        models=list(settings.models),
        space=settings.space or {},
        strategy=settings.strategy,
        trials=settings.trials,
        cv=settings.cv,
        metric=settings.metric,
        seed=settings.seed,
        out=str(_out(options, workdir, "search", name)),
    )
    return result.to_dict()


def run_evaluate(
    name: str, options: dict[str, Any], workdir: str, model: Any, dataset: Any
) -> dict[str, Any]:
    """``evaluate``: metrics of one model on one split, with an HTML report."""
    split = stage_settings("evaluate", options).split
    report = _evaluate(model, options, _dataset_uri(dataset), split)
    html = _out({"out": options.get("report")}, workdir, "reports", f"{name}.html")
    report.to_html(html)
    html.with_suffix(".json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return {"model": _model_path(model), "report": str(html), "metrics": _numbers(report.metrics)}


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def run_compare(
    name: str, options: dict[str, Any], workdir: str, models: list[Any], dataset: Any
) -> dict[str, Any]:
    """``compare``: evaluate several models on the same split; a leaderboard and the best one.

    A model's HTML report is drawn on another thread while the workers score the next model:
    drawing (matplotlib, on the driver) and scoring (on the workers) take different cores.
    """
    from shardlearn.metrics import compare

    settings = stage_settings("compare", options)
    split = settings.split
    names = list(options["models"])
    reports = {}
    reports_dir = Path(workdir, "reports")
    reports_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(1, thread_name_prefix="report") as drawing:
        drawn = []
        for stage_name, model in zip(names, models, strict=True):
            report = _evaluate(model, options, _dataset_uri(dataset), split)
            drawn.append(drawing.submit(report.to_html, reports_dir / f"{stage_name}.html"))
            reports[stage_name] = report
        for page in drawn:
            page.result()  # a report that failed to draw fails the stage
    comparison = compare(reports, sort_by=settings.metric)
    html = _out({"out": options.get("report")}, workdir, "reports", f"{name}.html")
    comparison.to_html(html)
    best = comparison.rows[0]["model"]
    paths = dict(zip(names, (_model_path(m) for m in models), strict=True))
    return {
        "model": paths[best],
        "best": best,
        "metric": comparison.sort_by,
        "leaderboard": comparison.to_dict()["leaderboard"],
        "report": str(html),
    }


def run_register(name: str, options: dict[str, Any], workdir: str, model: Any) -> dict[str, Any]:
    """``register``: add the model artifact to a registry, optionally promoting it."""
    from shardlearn.registry import Registry

    registry = Registry(options.get("registry") or Path(workdir, "registry"))
    version = registry.add_artifact(
        _model_path(model),
        str(options["name"]),
        stage=options.get("stage"),
        description=options.get("description"),
    )
    return {
        "model": str(version.path),
        "reference": version.ref,
        "registry": str(registry.root),
        "stage": version.stage,
    }


def run_predict(
    name: str, options: dict[str, Any], workdir: str, model: Any, source: Any
) -> dict[str, Any]:
    """``predict``: batch predictions of a dataset (or raw files) into one Parquet file.

    Raw files are read with the stage's reader keys (format, delimiter, ...), as ingest reads
    them; on a dataset those keys are refused by :func:`~shardlearn.registry.predict_batch`.
    """
    from shardlearn.registry.predict import predict_batch

    settings = stage_settings("predict", options)
    out = _out(options, workdir, "predictions", f"{name}.parquet")
    is_dataset = isinstance(source, dict)
    reading = {k: options[k] for k in FileReadOptions.model_fields if k in options}
    summary = predict_batch(
        _load(model, options),
        _dataset_uri(source) if is_dataset else str(source),
        out,
        proba=settings.proba,
        id_column=settings.id,
        splits=[settings.split] if settings.split and is_dataset else None,
        **reading,
    )
    return {"output": str(out), **_numbers(summary.to_dict())}


def run_export(name: str, options: dict[str, Any], workdir: str, model: Any) -> dict[str, Any]:
    """``export``: the model as ONNX (linear models and naive Bayes)."""
    from shardlearn.registry.onnx import export_onnx

    out = _out(options, workdir, "export", f"{name}.onnx")
    export_onnx(_load(model, options), out, estimator_only=True)
    return {"output": str(out)}


#: Stage type -> its function: (name, options, workdir, *the referenced stages' results) -> result.
STAGE_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": run_ingest,
    "train": run_train,
    "search": run_search,
    "evaluate": run_evaluate,
    "compare": run_compare,
    "register": run_register,
    "predict": run_predict,
    "export": run_export,
}
