"""The option models of a pipeline spec: the top-level keys and one model per stage type.

Each stage type is an :class:`~shardlearn._options.OptionsModel` whose fields are its keys
(type, range, choices, default, one-line description). They are the one declaration that

- :mod:`shardlearn.pipeline.spec` validates a parsed YAML stage with
  (:func:`~shardlearn._options.check_mapping`: ``stage 'lr'.retries: expected an integer >= 0.
  Got -1.``);
- :mod:`shardlearn.pipeline.stages` reads its defaults from (:func:`stage_settings`);
- :mod:`shardlearn.pipeline.schema` turns into the published ``spec.schema.json``, from which
  the docs' spec reference is built.

The ``ingest`` stage is :class:`~shardlearn.data.options.IngestOptions` without what a pipeline
sets itself, and the ``predict`` stage reads raw files with
:class:`~shardlearn.data.options.FileReadOptions`: a new ingest or reader option reaches the
spec, its schema and the CLI without another edit. Names read from a spec are checked against
allow-lists (model names against the model catalogue, search strategies against
:data:`shardlearn.search.STRATEGIES`) and never imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator

from shardlearn._options import OptionsModel, check_mapping, option_fields, subset_model
from shardlearn._validation import unknown_name_message, validate_params
from shardlearn.data.options import CALL_ONLY, PIPELINE_SETS, FileReadOptions, IngestOptions
from shardlearn.exceptions import SpecError

__all__ = [
    "COMMON_KEYS",
    "STAGE_MODELS",
    "PipelineDocument",
    "PipelineSettings",
    "StageOptions",
    "stage_settings",
]

Split = Literal["train", "valid", "test"]
RegistryStage = Literal["staging", "production", "archived"]
StageRef = Annotated[str, Field(min_length=1)]


def _one_of(what: str, values: Callable[[], Sequence[str]]) -> Any:
    """A string from an allow-list read when first needed (the model catalogue imports every
    model; a spec that trains nothing should not pay for it), listed in the JSON schema."""

    def check(value: str) -> str:
        allowed = values()
        if value not in allowed:
            raise ValueError(unknown_name_message(what, value, allowed))
        return value

    def listed(schema: dict[str, Any]) -> None:
        schema["enum"] = sorted(values())

    return Annotated[str, AfterValidator(check), Field(json_schema_extra=listed)]


def _model_names() -> Sequence[str]:
    from shardlearn.models import MODELS

    return tuple(MODELS)


def _search_strategies() -> Sequence[str]:
    from shardlearn.search import STRATEGIES

    return STRATEGIES


def _check_model_params(name: str, params: dict[str, Any]) -> None:
    from shardlearn.models import model_class

    model = model_class(name)
    valid = list(inspect.signature(model).parameters)
    for key in params:
        if key not in valid:
            raise ValueError(unknown_name_message(f"parameter of {model.__name__}", key, valid))
    estimator = model(**params)  # __init__ only stores them (DESIGN §6)
    constraints = getattr(model, "_parameter_constraints", {})
    validate_params(model.__name__, estimator.get_params(deep=False), constraints)


class Resources(OptionsModel):
    """What a stage needs free on the engine before it starts."""

    model_config = ConfigDict(title="resource")  # "Unknown resource 'gpu'"

    cpus: float | None = Field(None, ge=0, description="CPUs (default: 1 for training stages).")
    gpus: float | None = Field(None, ge=0, description="GPUs.")
    memory: float | None = Field(None, ge=0, description="Bytes of memory.")


class StageOptions(OptionsModel):
    """The keys every stage takes: its type and how it is scheduled."""

    refs: ClassVar[tuple[str, ...]] = ()  # keys that may name another stage (a dependency)

    type: str = Field(description="The stage type.")
    depends_on: str | list[str] | None = Field(
        None, description="Stages to finish first, besides those this one reads from."
    )
    priority: float = Field(0.0, description="Among stages ready to run, higher starts first.")
    resources: Resources | None = Field(None, description="cpus, gpus and memory it needs.")
    retries: int = Field(0, ge=0, description="Runs again after a failure, up to this often.")


COMMON_KEYS = tuple(option_fields(StageOptions))
_DATASET = "A stage name (ingest) or a dataset path or URI."
_MODEL = "A stage name (train, compare, register) or an artifact path."
_ALLOW_UNSIGNED = (
    "Load an unsigned model although a signing or public key is configured (--allow-unsigned)."
)


class _IngestBase(StageOptions):
    model_config = ConfigDict(title="ingest stage")
    type: Literal["ingest"]


IngestStage = subset_model(
    IngestOptions,
    "IngestStage",
    [k for k in option_fields(IngestOptions) if k not in PIPELINE_SETS | CALL_ONLY],
    base=_IngestBase,
    doc="Files into a sharded dataset (ingest); an earlier run's dataset is replaced.",
    overrides={
        "label": (StageRef, Field(description="Label column.")),
        "out": (
            str | None,
            Field(None, description="Dataset directory (default: WORKDIR/data/STAGE)."),
        ),
    },
)


# The ignores below: _one_of builds a Literal of the catalogue's names at run time (so the
# schema lists them), and IngestStage/PredictStage are made by pydantic.create_model; mypy
# sees variables where it expects types. test_spec_schema checks what they produce.
class TrainStage(StageOptions):
    """A Pipeline of preprocessing and one model, trained and saved as an artifact."""

    model_config = ConfigDict(title="train stage")
    refs: ClassVar[tuple[str, ...]] = ("dataset",)

    type: Literal["train"]
    dataset: StageRef = Field(description=_DATASET)
    model: _one_of("model", _model_names) = Field(  # type: ignore[valid-type]
        description="The model's catalogue name (shardlearn train --help lists them)."
    )
    params: dict[str, Any] | None = Field(None, description="The model's parameters.")
    preprocessing: dict[str, Any] | None = Field(
        None, description="Preprocessor spec (default: automatic from the schema)."
    )
    out: str | None = Field(None, description="Artifact directory (default: WORKDIR/models/STAGE).")

    @field_validator("params")
    @classmethod
    def _model_takes_params(cls, params: dict[str, Any] | None, info: Any) -> Any:
        """The model's own checks, when the spec is read rather than after the stages before
        this one have run: its parameter names and its parameter constraints."""
        if params and isinstance(info.data.get("model"), str):
            _check_model_params(info.data["model"], params)
        return params


class SearchStage(StageOptions):
    """Hyperparameter search with shard-level CV; the best model refitted and saved."""

    model_config = ConfigDict(title="search stage")
    refs: ClassVar[tuple[str, ...]] = ("dataset",)

    type: Literal["search"]
    dataset: StageRef = Field(description=_DATASET)
    models: list[_one_of("model", _model_names)] = Field(  # type: ignore[valid-type]
        min_length=1, description="Catalogue names of the models to search over."
    )
    space: dict[str, Any] | str | None = Field(
        None, description="The search space, or a YAML file of it (default: each model's own)."
    )
    strategy: _one_of("search strategy", _search_strategies) = Field(  # type: ignore[valid-type]
        "random", description="How trials are chosen."
    )
    trials: int = Field(20, ge=1, description="Trials to run.")
    cv: int | None = Field(None, ge=2, description="Folds of shard-level cross-validation.")
    metric: str = Field("roc_auc", description="The metric trials are ranked by.")
    seed: int = Field(0, description="Seed of the strategy.")
    out: str | None = Field(None, description="Search folder (default: WORKDIR/search/STAGE).")


class EvaluateStage(StageOptions):
    """One model's metrics on one split, with an HTML report."""

    model_config = ConfigDict(title="evaluate stage")
    refs: ClassVar[tuple[str, ...]] = ("model", "dataset")

    type: Literal["evaluate"]
    model: StageRef = Field(description=_MODEL)
    dataset: StageRef = Field(description=_DATASET)
    split: Split = Field("test", description="The split scored.")
    report: str | None = Field(
        None, description="HTML report path (default: WORKDIR/reports/STAGE.html)."
    )
    allow_unsigned: bool = Field(False, description=_ALLOW_UNSIGNED)


class CompareStage(StageOptions):
    """Several models on the same split: a leaderboard, and the best model for the next stage."""

    model_config = ConfigDict(title="compare stage")
    refs: ClassVar[tuple[str, ...]] = ("models", "dataset")

    type: Literal["compare"]
    models: list[StageRef] = Field(min_length=1, description="Stages or artifact paths.")
    dataset: StageRef = Field(description=_DATASET)
    split: Split = Field("test", description="The split scored.")
    metric: str = Field("roc_auc", description="The metric the leaderboard is sorted by.")
    report: str | None = Field(
        None, description="HTML report path (default: WORKDIR/reports/STAGE.html)."
    )
    allow_unsigned: bool = Field(False, description=_ALLOW_UNSIGNED)


class RegisterStage(StageOptions):
    """Add the model artifact to a registry, optionally promoting it."""

    model_config = ConfigDict(title="register stage")
    refs: ClassVar[tuple[str, ...]] = ("model",)

    type: Literal["register"]
    model: StageRef = Field(description=_MODEL)
    name: StageRef = Field(description="The model's name in the registry.")
    registry: str | None = Field(
        None, description="Registry folder or s3:// URI (default: WORKDIR/registry)."
    )
    stage: RegistryStage | None = Field(None, description="Promote the new version to it.")
    description: str | None = Field(None, description="Recorded with the version.")


class _PredictBase(StageOptions):
    model_config = ConfigDict(title="predict stage")
    refs: ClassVar[tuple[str, ...]] = ("model", "input")

    type: Literal["predict"]
    model: StageRef = Field(description=_MODEL)
    input: StageRef = Field(
        description="An ingest stage, a dataset, or files, globs or a Parquet folder as "
        "ingest reads them."
    )
    split: Split | None = Field(None, description="Dataset input: the split (default: all).")
    out: str | None = Field(
        None, description="Output Parquet file (default: WORKDIR/predictions/STAGE.parquet)."
    )
    proba: bool = Field(True, description="Add one proba_<class> column per class.")
    id: str | None = Field(
        None, description="Input column that keys the output rows (default: source,line)."
    )
    allow_unsigned: bool = Field(False, description=_ALLOW_UNSIGNED)


PredictStage = subset_model(
    FileReadOptions,
    "PredictStage",
    list(option_fields(FileReadOptions)),
    base=_PredictBase,
    doc="Batch predictions of a dataset or of raw files (read as ingest reads them) into "
    "one Parquet file.",
)


class ExportStage(StageOptions):
    """The model as ONNX (linear models and naive Bayes)."""

    model_config = ConfigDict(title="export stage")
    refs: ClassVar[tuple[str, ...]] = ("model",)

    type: Literal["export"]
    model: StageRef = Field(description=_MODEL)
    format: Literal["onnx"] = Field("onnx", description="The export format.")
    out: str | None = Field(None, description="Output file (default: WORKDIR/export/STAGE.onnx).")
    allow_unsigned: bool = Field(False, description=_ALLOW_UNSIGNED)


STAGE_MODELS: dict[str, type[StageOptions]] = {
    "ingest": IngestStage,  # type: ignore[dict-item]
    "train": TrainStage,
    "search": SearchStage,
    "evaluate": EvaluateStage,
    "compare": CompareStage,
    "register": RegisterStage,
    "predict": PredictStage,  # type: ignore[dict-item]
    "export": ExportStage,
}


def stage_settings(kind: str, options: dict[str, Any]) -> Any:
    """A stage's options (its keys minus the common ones) as its model: defaults filled in."""
    values = {"type": kind, **options}
    return check_mapping(STAGE_MODELS[kind], values, f"{kind} stage", SpecError)


class PipelineSettings(OptionsModel):
    """The top-level keys of a spec besides ``stages``."""

    name: str | None = Field(None, description="The pipeline's name (default: pipeline).")
    workdir: str | None = Field(
        None, description="Working directory, relative to the current one (default: runs/NAME)."
    )
    vars: dict[str, Any] | None = Field(
        None, description="Variables: ${name} in any string is replaced by the value."
    )
    engine: str | None = Field(None, description="local, ray or ray:ADDRESS.")
    workers: int | None = Field(None, ge=1, description="Workers of the engine.")


_Stage = Annotated[
    IngestStage  # type: ignore[valid-type]
    | TrainStage
    | SearchStage
    | EvaluateStage
    | CompareStage
    | RegisterStage
    | PredictStage  # type: ignore[valid-type]
    | ExportStage,
    Field(discriminator="type"),
]


class PipelineDocument(PipelineSettings):
    """A whole spec (for its JSON schema; :mod:`shardlearn.pipeline.spec` validates it stage
    by stage, for one-line errors)."""

    model_config = ConfigDict(title="shardlearn pipeline spec")

    stages: dict[str, _Stage] = Field(
        min_length=1, description="Stages by name, in order; each has a type."
    )
