"""Typed option models: one declaration per set of options, checked with one message format.

An :class:`OptionsModel` (pydantic v2) declares a set of options once: names, types, ranges,
choices, defaults and a one-line description each. From it come

- the checks of a Python call (:func:`check_call`, e.g. :func:`shardlearn.ingest`'s keyword
  arguments): ``The 'partitions' parameter of ingest must be an integer >= 1. Got 0.``;
- the checks of a YAML mapping (:func:`check_mapping`, a pipeline stage):
  ``stage 'data'.partitions: expected an integer >= 1. Got 0.``;
- the published JSON schema (``model_json_schema``; see :mod:`shardlearn.pipeline.options`);
- the CLI options (:mod:`shardlearn.cli._options`).

Both messages say what is expected from the field's own JSON schema (:func:`expectation`), so
the Python call, the YAML and the schema can never disagree. A pydantic ``ValidationError`` is
never shown: the first problem becomes one line in DESIGN §9's format, raised as the caller's
error class. Values are checked strictly (``"2"`` is not an integer, ``1`` is not ``true``):
YAML already gives typed values, and a Python caller who passes a string for a count made a
mistake. A value echoed in a message is cut to :data:`SHOWN_VALUE_CHARS` characters, since it
may come from an untrusted file.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from shardlearn._validation import unknown_name_message

__all__ = [
    "ACCEPT_NUMPY",
    "Integer",
    "OptionsModel",
    "check_call",
    "check_mapping",
    "expectation",
    "field_schema",
    "option_fields",
    "subset_model",
]

Style = Literal["python", "yaml"]
M = TypeVar("M", bound=BaseModel)
SHOWN_VALUE_CHARS = 80  # an echoed value is cut here: it may be a megabyte of untrusted YAML
_WORDS = {  # JSON schema type -> (python, yaml) wording, singular then plural
    "boolean": (("True or False", "booleans"), ("true or false", "booleans")),
    "integer": (("an integer", "integers"), ("an integer", "integers")),
    "number": (("a number", "numbers"), ("a number", "numbers")),
    "string": (("a string", "strings"), ("a string", "strings")),
    "null": (("None", "None"), ("null", "nulls")),
}


def _plain_number(value: Any) -> Any:
    """A numpy integer or float as Python's own, for Python callers (``seed=np.int64(3)``);
    a bool, a string or anything else is left for the strict check to refuse."""
    if isinstance(value, bool) or isinstance(value, int | float):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


# After a field's type and constraints (``Annotated[int, Field(ge=1), ACCEPT_NUMPY]``; placed
# before them, the constraints would leave the JSON schema): numpy's numbers are taken too, and
# the check stays strict otherwise ("4" and True are refused).
ACCEPT_NUMPY = BeforeValidator(_plain_number)
Integer = Annotated[int, ACCEPT_NUMPY]


class OptionsModel(BaseModel):
    """Base of every option model: strict types, unknown keys refused, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def option_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The fields of ``model`` by the name a user writes (``schema``, not ``schema_``)."""
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def subset_model(
    model: type[BaseModel],
    name: str,
    keep: Sequence[str],
    *,
    base: type[BaseModel] = OptionsModel,
    doc: str = "",
    overrides: Mapping[str, tuple[Any, Any]] | None = None,
) -> type[BaseModel]:
    """A model with some of ``model``'s fields (by user name, in ``model``'s order), on ``base``.

    Each kept field keeps its type, constraints, validators, default and description, so the
    two models cannot drift apart; ``overrides`` replaces a field's declaration (a key a
    pipeline stage requires although the function makes it optional, say).
    """
    fields = option_fields(model)
    unknown = set(keep) - set(fields)
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not fields of {model.__name__}")
    chosen: dict[str, Any] = {}
    for key, info in fields.items():
        if key in keep:
            attribute = next(n for n, f in model.model_fields.items() if f is info)
            chosen[attribute] = (overrides or {}).get(key, (info.annotation, info))
    return create_model(name, __base__=base, __doc__=doc or None, **chosen)


def field_schema(model: type[BaseModel], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of one field of ``model`` and the ``$defs`` its references point to."""
    schema = _model_schema(model)
    return schema["properties"][name], schema.get("$defs", {})


@cache
def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    # Generated once per model: the CLI asks for every field's schema when it starts.
    return model.model_json_schema()


def expectation(model: type[BaseModel], name: str, style: Style = "yaml") -> str:
    """What field ``name`` of ``model`` takes, in words: ``an integer >= 1``."""
    schema, defs = field_schema(model, name)
    return _describe(schema, defs, style, plural=False)


def _describe(schema: dict[str, Any], defs: dict[str, Any], style: Style, plural: bool) -> str:
    if "$ref" in schema:
        target = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
        keys = ", ".join(target.get("properties", {}))
        return f"mappings of {keys}" if plural else f"a mapping of {keys}"
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(_literal(v, style) for v in schema["enum"])
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        shown = [a for a in alternatives if a.get("type") != "null"] or alternatives
        return " or ".join(_describe(a, defs, style, plural) for a in shown)
    kind = schema.get("type")
    if kind == "array":
        items = _describe(schema.get("items", {}), defs, style, plural=True)
        return f"lists of {items}" if plural else f"a list of {items}"
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values:
            inner = _describe(values, defs, style, plural=False)
            return f"a mapping of names to {inner}"
        return "mappings" if plural else "a mapping"
    words = _WORDS.get(str(kind))
    if words is None:
        return "values" if plural else "a value"
    singular, many = words[style == "yaml"]
    text = many if plural else singular
    if kind == "string" and schema.get("minLength") == 1:
        one = schema.get("maxLength") == 1
        text = (
            ("single characters" if plural else "a single character")
            if one
            else ("non-empty strings" if plural else "a non-empty string")
        )
    return text + _bounds(schema)


def _bounds(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f" between {low:g} and {high:g}"
    parts = []
    if low is not None:
        parts.append(f">= {low:g}")
    if "exclusiveMinimum" in schema:
        parts.append(f"> {schema['exclusiveMinimum']:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    if "exclusiveMaximum" in schema:
        parts.append(f"< {schema['exclusiveMaximum']:g}")
    return (" " + " and ".join(parts)) if parts else ""


def _literal(value: Any, style: Style) -> str:
    if style == "yaml" and isinstance(value, bool | type(None)):
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


def shown(value: Any) -> str:
    """``repr(value)``, cut to :data:`SHOWN_VALUE_CHARS` characters."""
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def _problem(
    model: type[BaseModel], error: ValidationError, values: Mapping[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """The first error's field path (nested option models only) and the pydantic error."""
    first = error.errors(include_url=False)[0]
    path: list[str] = []
    current: Any = model
    for item in first["loc"]:
        fields = option_fields(current) if _is_model(current) else None
        if not isinstance(item, str) or fields is None or item not in fields:
            break
        path.append(item)
        current = _nested_model(fields[item].annotation)
    return path, dict(first)


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The option model a field holds (``resources``), if any."""
    for candidate in [annotation, *getattr(annotation, "__args__", ())]:
        if _is_model(candidate):
            return candidate
    return None


def _value_at(values: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = values
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _owner_of(model: type[BaseModel], path: list[str]) -> type[BaseModel]:
    current = model
    for part in path[:-1]:
        current = _nested_model(option_fields(current)[part].annotation) or current
    return current


def check_call(
    model: type[M], values: Mapping[str, Any], owner: str, error: type[Exception] = ValueError
) -> M:
    """Validate a Python call's arguments; raise ``error`` in DESIGN §9's format.

    ``The 'partitions' parameter of ingest must be an integer >= 1. Got 0.`` A check of the
    option's own (a validator's message) is raised as written.
    """
    try:
        return model.model_validate(dict(values))
    except ValidationError as caught:
        path, first = _problem(model, caught, values)
        name = ".".join(path) or "?"
        own = _own_message(first)
        if own is not None:
            raise error(own) from None
        if first["type"] == "extra_forbidden":
            known = option_fields(_owner_of(model, [*path, "?"]))
            unknown = str(first["loc"][-1])
            raise error(unknown_name_message(f"parameter of {owner}", unknown, known)) from None
        wanted = expectation(_owner_of(model, path), path[-1], "python") if path else "valid"
        raise error(
            f"The {name!r} parameter of {owner} must be {wanted}. "
            f"Got {shown(_value_at(values, path))}."
        ) from None


def check_mapping(
    model: type[M],
    values: Mapping[str, Any],
    where: str,
    error: type[Exception],
    what: str = "key",
) -> M:
    """Validate a mapping read from YAML; raise ``error`` naming ``where`` and the key path.

    ``stage 'data'.partitions: expected an integer >= 1. Got 0.``; an unknown key is named
    with the nearest valid one (``what`` says what a key is: "key for a train stage").
    """
    try:
        return model.model_validate(dict(values))
    except ValidationError as caught:
        path, first = _problem(model, caught, values)
        if first["type"] == "extra_forbidden":
            owner = _owner_of(model, [*path, "?"])
            if path:  # a key of a nested model: what its title says it holds
                what = str(owner.model_config.get("title") or "key")
            name = str(first["loc"][-1])
            place = ".".join([where, *path])
            raise error(
                f"{place}: {unknown_name_message(what, name, option_fields(owner))}"
            ) from None
        place = ".".join([where, *path])
        if first["type"] == "missing":
            raise error(f"{where}: missing {what} {path[-1]!r}.") from None
        own = _own_message(first)
        if own is not None:
            raise error(f"{place}: {own}") from None
        wanted = expectation(_owner_of(model, path), path[-1], "yaml") if path else "a mapping"
        raise error(f"{place}: expected {wanted}. Got {shown(_value_at(values, path))}.") from None


def _own_message(first: dict[str, Any]) -> str | None:
    """The message of a check written for the option (a validator's ``ValueError``)."""
    if first["type"] in ("value_error", "assertion_error"):
        cause = first.get("ctx", {}).get("error")
        return str(cause) if cause is not None else str(first["msg"])
    return None
