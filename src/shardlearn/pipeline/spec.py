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
stage and the key, and suggests the nearest valid name. What each stage type takes (keys,
types, ranges, choices, defaults) is its option model in :mod:`shardlearn.pipeline.options`,
which also generates the published JSON schema (:mod:`shardlearn.pipeline.schema`). The YAML
(the file and every ``--set`` value) is plain data read by :func:`shardlearn._yaml.load_yaml`:
anchors and aliases are refused, so a few bytes of spec cannot expand into billions of values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from shardlearn._options import check_mapping, option_fields
from shardlearn._validation import closest_names, unknown_name_message
from shardlearn._yaml import load_yaml, read_yaml
from shardlearn.exceptions import SpecError
from shardlearn.pipeline.options import (
    COMMON_KEYS,
    STAGE_MODELS,
    PipelineDocument,
    PipelineSettings,
    Resources,
)

__all__ = ["STAGE_TYPES", "PipelineSpec", "StageSpec", "load_spec", "spec_json_schema"]

# For each stage type: its keys, the required ones and which keys name stages, read from its
# option model (pipeline/options.py), which also makes the published JSON schema.
STAGE_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    kind: {
        "keys": tuple(k for k in option_fields(model) if k not in COMMON_KEYS),
        "required": tuple(
            k for k, f in option_fields(model).items() if f.is_required() and k != "type"
        ),
        "refs": model.refs,
    }
    for kind, model in STAGE_MODELS.items()
}
RESOURCE_KEYS = tuple(option_fields(Resources))
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


def _stage(name: str, raw: Any) -> StageSpec:
    where = f"stage {name!r}"
    if not _STAGE_NAME.fullmatch(str(name)):
        raise SpecError(f"{where}: a stage name starts with a letter; letters, digits, _ and -.")
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping with a 'type'. Got {raw!r}.")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in STAGE_TYPES:  # [] or {} are not hashable
        if kind is None:
            raise SpecError(f"{where}: missing key 'type' (one of {', '.join(STAGE_TYPES)}).")
        raise SpecError(
            f"{where}.type: {unknown_name_message('stage type', str(kind), STAGE_TYPES)}"
        )
    info = STAGE_TYPES[kind]
    what = f"key for a{'n' * (kind[0] in 'aeiou')} {kind} stage"
    _check_keys(where, raw, COMMON_KEYS + info["keys"], what)
    for key in info["required"]:
        if raw.get(key) in (None, "", []):
            raise SpecError(f"{where}: missing key {key!r} (required for a {kind} stage).")
    settings = check_mapping(STAGE_MODELS[kind], raw, where, SpecError, what)
    depends = settings.depends_on or []
    resources = settings.resources.model_dump(exclude_none=True) if settings.resources else {}
    return StageSpec(
        name,
        kind,
        {k: v for k, v in raw.items() if k not in COMMON_KEYS},
        tuple([depends] if isinstance(depends, str) else depends),
        float(settings.priority),
        {k: float(v) for k, v in resources.items()},
        settings.retries,
    )


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
            for target in value if isinstance(value, list) else [value]:
                if not isinstance(target, str) or "/" in target or "." in target:
                    continue  # a path, not a stage name
                if target not in spec.stages:
                    close = closest_names(target, spec.stages, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise SpecError(
                        f"stage {stage.name!r}.{key}: {target!r} is neither a stage of this "
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
    _check_keys("pipeline", raw, tuple(option_fields(PipelineDocument)), "top-level key")
    check_mapping(PipelineSettings, {"vars": raw.get("vars")}, "pipeline", SpecError)
    variables = dict(raw.get("vars") or {})
    for key, value in (overrides or {}).items():
        variables[key] = _parse_value(key, value)
    raw = {k: v for k, v in raw.items() if k != "vars"}
    raw = _substitute(raw, variables, "pipeline")
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise SpecError("pipeline: 'stages' must be a non-empty mapping of name -> stage.")
    top = {k: v for k, v in raw.items() if k not in ("stages", "vars")}
    settings = check_mapping(PipelineSettings, top, "pipeline", SpecError, "top-level key")
    name = settings.name or "pipeline"
    workdir = Path(settings.workdir or f"runs/{name}")
    if base is not None and not workdir.is_absolute():
        workdir = base / workdir
    spec = PipelineSpec(
        name=name,
        workdir=workdir,
        stages={str(k): _stage(str(k), v) for k, v in stages_raw.items()},
        engine=settings.engine,
        workers=settings.workers,
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
