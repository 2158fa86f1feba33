"""Pipeline specs: YAML (or a dict) → a validated, typed :class:`PipelineSpec`.

A spec names a working directory, optional variables and an ordered mapping of stages::

    name: loans
    workdir: runs/loans
    vars: {rows: 100000}
    stages:
      data:      {type: ingest, source: loans.csv, label: default, strategy: stratified}
      logistic:  {type: train, dataset: data, model: logistic, params: {C: 1.0}}
      forest:    {type: train, dataset: data, model: random_forest}
      scores:    {type: compare, models: [logistic, forest], dataset: data, metric: roc_auc}
      release:   {type: register, model: scores, name: loans, stage: production}

``${name}`` anywhere in a string is replaced by ``vars[name]`` (``--set name=value`` on the
command line overrides). A key that names another stage (``dataset``, ``model``, ``models``,
``input``) makes it a dependency; ``depends_on`` adds ordering-only ones. Every error names the
stage and the key, and suggests the nearest valid name. The YAML (the file and every ``--set``
value) is plain data read by :func:`shardlearn._yaml.load_yaml`: anchors and aliases are refused,
so a few bytes of spec cannot expand into billions of values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from shardlearn._validation import closest_names, unknown_name_message
from shardlearn._yaml import load_yaml, read_yaml
from shardlearn.exceptions import SpecError

__all__ = ["STAGE_TYPES", "PipelineSpec", "StageSpec", "load_spec", "spec_json_schema"]

COMMON_KEYS = ("type", "depends_on", "priority", "resources", "retries")
RESOURCE_KEYS = ("cpus", "gpus", "memory")
# For each stage type: its keys (required ones first in REQUIRED) and which keys name stages.
STAGE_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "ingest": {
        # ingest()'s parameters (tests/pipeline/test_ingest_spec_options.py keeps them equal),
        # except overwrite and progress, which the pipeline sets itself.
        "keys": ("source", "label", "out", "partitions", "strategy", "split", "seed", "format",
                 "max_reject_rate", "delimiter", "na_values", "header", "columns", "label_strip",
                 "kinds", "allow_non_finite", "schema", "trim", "block_size", "allow_unlabeled",
                 "parsers"),
        "required": ("source", "label"),
        "refs": (),
    },
    "train": {
        "keys": ("dataset", "model", "params", "preprocessing", "out", "workers"),
        "required": ("dataset", "model"),
        "refs": ("dataset",),
    },
    "search": {
        "keys": ("dataset", "models", "space", "strategy", "trials", "cv", "metric", "seed",
                 "out", "workers"),
        "required": ("dataset", "models"),
        "refs": ("dataset",),
    },
    "evaluate": {
        "keys": ("model", "dataset", "split", "report", "workers", "allow_unsigned"),
        "required": ("model", "dataset"),
        "refs": ("model", "dataset"),
    },
    "compare": {
        "keys": ("models", "dataset", "split", "metric", "report", "workers", "allow_unsigned"),
        "required": ("models", "dataset"),
        "refs": ("models", "dataset"),
    },
    "register": {
        "keys": ("model", "name", "registry", "stage", "description"),
        "required": ("model", "name"),
        "refs": ("model",),
    },
    "predict": {
        "keys": ("model", "input", "split", "out", "proba", "id", "workers", "allow_unsigned"),
        "required": ("model", "input"),
        "refs": ("model", "input"),
    },
    "export": {
        "keys": ("model", "format", "out", "allow_unsigned"),
        "required": ("model",),
        "refs": ("model",),
    },
}  # fmt: skip
# Stage keys that take true or false (the stages that load a model take allow_unsigned, the
# CLI's --allow-unsigned: load an unsigned model although a signing or public key is set).
_FLAGS = ("allow_unsigned", "trim", "allow_unlabeled")
# Stage keys that take an integer >= 1 (ingest's byte block size and number of parsers).
_COUNTS = ("block_size", "parsers")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")  # always fullmatch: "$" allows "\n"


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name, type, type-specific options and scheduling settings."""

    name: str
    type: str
    options: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    priority: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    retries: int = 0

    @property
    def references(self) -> list[str]:
        """Stages this one reads from (through ``dataset``, ``model``, ``models``, ``input``)."""
        found: list[str] = []
        for key in STAGE_TYPES[self.type]["refs"]:
            value = self.options.get(key)
            values = value if isinstance(value, list) else [value]
            found.extend(v for v in values if isinstance(v, str))
        return found


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline: name, working directory, engine settings and stages in order."""

    name: str
    workdir: Path
    stages: dict[str, StageSpec]
    engine: str | None = None
    workers: int | None = None
    variables: dict[str, Any] = field(default_factory=dict)

    def dependencies(self, stage: StageSpec) -> list[str]:
        """Stage names ``stage`` waits for: referenced stages plus ``depends_on``."""
        refs = [r for r in stage.references if r in self.stages]
        return list(dict.fromkeys([*refs, *stage.depends_on]))


def _substitute(value: Any, variables: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        whole = _VAR.fullmatch(value)
        if whole:  # "${rows}" keeps the variable's own type (an int stays an int)
            return _lookup(whole.group(1), variables, where)
        return _VAR.sub(lambda m: str(_lookup(m.group(1), variables, where)), value)
    if isinstance(value, list):
        return [_substitute(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, f"{where}.{k}") for k, v in value.items()}
    return value


def _lookup(name: str, variables: dict[str, Any], where: str) -> Any:
    if name not in variables:
        raise SpecError(
            f"{where}: {unknown_name_message('variable', '${' + name + '}', variables)} "
            f"Define it under 'vars' or pass --set {name}=VALUE."
        )
    return variables[name]


def _parse_value(name: str, text: str) -> Any:
    """``--set`` values are YAML scalars: ``3`` is an int, ``true`` a bool, ``a.csv`` a string."""
    return load_yaml(text, f"--set {name}", SpecError) if text.strip() else ""


def _check_keys(where: str, given: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    for key in given:
        if key not in allowed:
            raise SpecError(f"{where}: {unknown_name_message(what, str(key), allowed)}")


def _resources(where: str, value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}.resources: expected a mapping of {', '.join(RESOURCE_KEYS)}.")
    _check_keys(f"{where}.resources", value, RESOURCE_KEYS, "resource")
    for key, amount in value.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise SpecError(f"{where}.resources.{key}: expected a number >= 0. Got {amount!r}.")
    return {k: float(v) for k, v in value.items()}


def _stage(name: str, raw: Any) -> StageSpec:
    where = f"stage {name!r}"
    if not _STAGE_NAME.fullmatch(str(name)):
        raise SpecError(f"{where}: a stage name starts with a letter; letters, digits, _ and -.")
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping with a 'type'. Got {raw!r}.")
    kind = raw.get("type")
    if kind not in STAGE_TYPES:
        if kind is None:
            raise SpecError(f"{where}: missing key 'type' (one of {', '.join(STAGE_TYPES)}).")
        raise SpecError(
            f"{where}.type: {unknown_name_message('stage type', str(kind), STAGE_TYPES)}"
        )
    info = STAGE_TYPES[kind]
    _check_keys(where, raw, COMMON_KEYS + info["keys"], f"key for a {kind} stage")
    for key in info["required"]:
        if raw.get(key) in (None, "", []):
            raise SpecError(f"{where}: missing key {key!r} (required for a {kind} stage).")
    depends = raw.get("depends_on") or []
    if isinstance(depends, str):
        depends = [depends]
    retries = raw.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise SpecError(f"{where}.retries: expected an integer >= 0. Got {retries!r}.")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int | float):
        raise SpecError(f"{where}.priority: expected a number. Got {priority!r}.")
    options = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
    for key in _FLAGS:
        if key in options and not isinstance(options[key], bool):
            raise SpecError(f"{where}.{key}: expected true or false. Got {options[key]!r}.")
    for key in _COUNTS:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"{where}.{key}: expected an integer >= 1. Got {value!r}.")
    return StageSpec(
        name, kind, options, tuple(str(d) for d in depends), float(priority),
        _resources(where, raw.get("resources")), retries,
    )  # fmt: skip


def _check_references(spec: PipelineSpec) -> None:
    for stage in spec.stages.values():
        for ref in [*stage.depends_on]:
            if ref not in spec.stages:
                raise SpecError(
                    f"stage {stage.name!r}.depends_on: "
                    + unknown_name_message("stage", ref, spec.stages)
                )
        for key in STAGE_TYPES[stage.type]["refs"]:
            value = stage.options.get(key)
            for ref in value if isinstance(value, list) else [value]:
                looks_like_stage = isinstance(ref, str) and "/" not in ref and "." not in ref
                if looks_like_stage and ref not in spec.stages:
                    close = closest_names(ref, spec.stages, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise SpecError(
                        f"stage {stage.name!r}.{key}: {ref!r} is neither a stage of this "
                        f"pipeline nor a path.{hint} Stages: {', '.join(spec.stages)}."
                    )


def _check_cycles(spec: PipelineSpec) -> None:
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name) :] + [name]
            raise SpecError("Cycle detected between stages: " + " -> ".join(cycle))
        state[name] = 1
        for dep in spec.dependencies(spec.stages[name]):
            visit(dep, [*path, name])
        state[name] = 2

    for name in spec.stages:
        visit(name, [])


def parse_spec(
    raw: Any, overrides: dict[str, str] | None = None, base: Path | None = None
) -> PipelineSpec:
    """Validate a spec given as a mapping (the parsed YAML).

    Parameters
    ----------
    raw : mapping
    overrides : dict of str to str, optional
        ``--set`` values, parsed as YAML scalars; they replace ``vars``.
    base : Path, optional
        Directory that a relative ``workdir`` is resolved against.
    """
    if not isinstance(raw, dict):
        raise SpecError("A pipeline spec must be a mapping with 'stages'.")
    top = ("name", "workdir", "vars", "engine", "workers", "stages")
    _check_keys("pipeline", raw, top, "top-level key")
    variables = dict(raw.get("vars") or {})
    for key, value in (overrides or {}).items():
        variables[key] = _parse_value(key, value)
    raw = {k: v for k, v in raw.items() if k != "vars"}
    raw = _substitute(raw, variables, "pipeline")
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise SpecError("pipeline: 'stages' must be a non-empty mapping of name -> stage.")
    workers = raw.get("workers")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise SpecError(f"pipeline.workers: expected an integer >= 1. Got {workers!r}.")
    name = str(raw.get("name") or "pipeline")
    workdir = Path(str(raw.get("workdir") or f"runs/{name}"))
    if base is not None and not workdir.is_absolute():
        workdir = base / workdir
    spec = PipelineSpec(
        name=name,
        workdir=workdir,
        stages={str(k): _stage(str(k), v) for k, v in stages_raw.items()},
        engine=raw.get("engine"),
        workers=workers,
        variables=variables,
    )
    _check_references(spec)
    _check_cycles(spec)
    return spec


def load_spec(path: str | Path, overrides: dict[str, str] | None = None) -> PipelineSpec:
    """Read and validate a YAML pipeline spec; a relative ``workdir`` is relative to the cwd.

    The YAML is plain data: anchors and aliases are refused (see :mod:`shardlearn._yaml`).
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"pipeline spec {path} does not exist.")
    raw = read_yaml(path, f"pipeline spec {path}", SpecError)
    return parse_spec(raw, overrides)


def spec_json_schema() -> dict[str, Any]:
    """The JSON schema of a pipeline spec (shipped as ``pipeline/spec.schema.json``)."""
    text = resources.files("shardlearn.pipeline").joinpath("spec.schema.json").read_text()
    return json.loads(text)
