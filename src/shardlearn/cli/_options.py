"""CLI options made from an option model (:mod:`shardlearn._options`), as typer reads them.

:func:`model_options` adds one ``--kebab-name`` option per field of a model to a command:
its help is the field's description, its default the field's default, its choices and range
the field's own (from the field's JSON schema, as the spec's messages and the published
schema are). A boolean defaulting to true gets a ``--no-`` form (``--header/--no-header``). A
list is written comma-separated (``--columns a,b``), a mapping as ``KEY=VALUE`` pairs
(``--kinds zip=categorical,age=numeric``); :func:`model_options` turns them back into the
model's values before the command runs, so the command passes them straight on (``ingest(...,
**options)``) and the model checks them as it checks a Python call.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Collection
from typing import Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from shardlearn._options import field_schema, option_fields

__all__ = ["cli_name", "model_options"]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def cli_name(key: str) -> str:
    """The option a field becomes: ``max_reject_rate`` -> ``--max-reject-rate``."""
    return "--" + key.replace("_", "-")


def _kind(schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """How a field is written on the command line, from its JSON schema (null dropped)."""
    alternatives = [a for a in schema.get("anyOf", [schema]) if a.get("type") != "null"]
    if len(alternatives) > 1:
        return "text", {}  # e.g. split: "0.8,0.1,0.1" or a list; the model reads the text
    only = alternatives[0]
    if "enum" in only:
        return "choice", only
    kinds = {"boolean": "flag", "integer": "int", "number": "float", "array": "list",
             "object": "mapping"}  # fmt: skip
    return kinds.get(str(only.get("type")), "text"), only


def _parameter(model: type[BaseModel], key: str, info: FieldInfo) -> inspect.Parameter:
    schema, _ = field_schema(model, key)
    kind, detail = _kind(schema)
    required = info.is_required() and not _allows_none(info)
    default: Any = ... if required else (None if info.is_required() else info.default)
    annotation: Any = str if required else str | None
    names = [cli_name(key)]
    extra: dict[str, Any] = {}
    if kind == "flag":
        annotation = bool
        if default is True:
            names = [f"{cli_name(key)}/--no-{key.replace('_', '-')}"]
    elif kind in ("int", "float"):
        number = int if kind == "int" else float
        annotation = number | None if default is None else number
        extra = {k: detail[j] for k, j in (("min", "minimum"), ("max", "maximum")) if j in detail}
    elif kind == "choice":
        annotation = Literal[tuple(detail["enum"])] | None
    elif kind in ("list", "mapping", "text") and isinstance(default, list | tuple | dict):
        default = _as_text(default)
    help_text = info.description or ""
    if kind == "list":
        help_text += " Comma-separated."
    elif kind == "mapping":
        help_text += " KEY=VALUE pairs, comma-separated."
    option = typer.Option(default, *names, help=help_text, show_default=default is not None,
                          **extra)  # fmt: skip
    return inspect.Parameter(key, _KEYWORD, default=option, annotation=annotation)


def _allows_none(info: FieldInfo) -> bool:
    return type(None) in typing.get_args(info.annotation)


def _as_text(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return ",".join(str(v) for v in value)


def _from_text(model: type[BaseModel], key: str, value: Any) -> Any:
    """A command-line value as the model takes it (lists and mappings from their text)."""
    if not isinstance(value, str):
        return value
    kind, _ = _kind(field_schema(model, key)[0])
    if kind == "list":
        return [part.strip() for part in value.split(",")]
    if kind == "mapping":
        pairs = [part.partition("=") for part in value.split(",") if part.strip()]
        if any(not sep or not k.strip() for k, sep, _ in pairs):
            raise typer.BadParameter(f"expected KEY=VALUE pairs, comma-separated. Got {value!r}.",
                                     param_hint=cli_name(key))  # fmt: skip
        return {k.strip(): v.strip() for k, _, v in pairs}
    return value


def model_options(
    model: type[BaseModel], exclude: Collection[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a typer command one option per field of ``model`` (but ``exclude``).

    The command declares its own parameters (arguments, ``--json``, ...) and ``**options``,
    which receives the model's fields by their names, converted from their command-line text.
    A field the command declares itself is not added again.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(kind=_KEYWORD, annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(command).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        taken = {p.name for p in own} | set(exclude)
        fields = {k: f for k, f in option_fields(model).items() if k not in taken}
        added = [_parameter(model, key, info) for key, info in fields.items()]
        arguments = [p for p in own if isinstance(p.default, typer.models.ArgumentInfo)]
        rest = [p for p in own if p not in arguments]

        def run(**given: Any) -> Any:
            options = {k: _from_text(model, k, given.pop(k)) for k in fields}
            return command(**given, **options)

        run.__name__, run.__doc__ = command.__name__, command.__doc__
        # typer reads __signature__ (inspect's protocol), which mypy does not know on functions.
        run.__signature__ = inspect.Signature([*arguments, *rest, *added])  # type: ignore[attr-defined]
        return run

    return decorate
