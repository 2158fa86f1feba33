"""Request and response bodies, and validation of records against a model's input schema.

A request is either ``{"records": [{column: value, ...}, ...]}`` or
``{"columns": [...], "data": [[...], ...]}``. Validation is strict about what would otherwise
make a wrong prediction (a missing column, a value of the wrong type) and lenient about what
training already handles (a missing value becomes null and is imputed; an unseen category goes
to the "other" bucket). Every value the model's transform could fail on is refused here, row by
row: a number that is not finite, a date-time outside the range the datetime encoder supports
(:data:`~shardlearn.preprocess.datetime.EARLIEST` to ``LATEST``). Every problem names the field
and the row, and one answer lists them all (``fields``): every column missing from the request,
every wrong value in the row of the first one -- a client fixes them in one round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from shardlearn.preprocess.datetime import EARLIEST, LATEST, in_supported_range

__all__ = [
    "InputProblem",
    "ModelInfo",
    "PredictRequest",
    "PredictResponse",
    "columns_to_table",
    "records_to_columns",
    "records_to_table",
    "tensors_to_columns",
]


class PredictRequest(BaseModel):
    """Rows to predict: ``records`` (a list of objects) or ``columns`` plus ``data``."""

    model_config = ConfigDict(extra="forbid")

    records: list[dict[str, Any]] | None = Field(
        default=None, description="One object per row, keyed by column name."
    )
    columns: list[str] | None = Field(default=None, description="Column names for `data`.")
    data: list[list[Any]] | None = Field(default=None, description="Rows, in `columns` order.")


class PredictResponse(BaseModel):
    """Predicted labels and class probabilities, in the order of ``classes``."""

    model: str
    version: int
    classes: list[Any]
    predictions: list[Any]
    probabilities: list[list[float]] | None = None


class ModelInfo(BaseModel):
    """A served model: its reference, version, classes, input schema and metrics."""

    name: str
    version: int
    reference: str
    model_type: str
    stage: str | None = None
    classes: list[Any]
    input_schema: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None


@dataclass
class InputProblem(Exception):
    """A request that cannot be predicted; becomes a 4xx naming the field and the row."""

    message: str
    field: str | None = None
    row: int | None = None
    status: int = 422
    #: Every field at fault when there are several (``field`` is the first of them).
    fields: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        fields = self.fields if self.fields is not None else [self.field] if self.field else []
        return {"error": self.message, "field": self.field, "row": self.row, "fields": fields}


_ARROW_TYPES = {
    "numeric": pa.float64(),
    "categorical": pa.string(),
    "text": pa.string(),
    "boolean": pa.bool_(),
    "datetime": pa.timestamp("us"),
}


#: Integers of smaller magnitude convert to a finite float (the largest float is ~2**1024).
_INT_IN_FLOAT_RANGE = 2**1023


def _is_number(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float's range (JSON allows 1 followed by 400 zeros)
        return False


def _convert(value: Any, kind: str, column: str, row: int) -> Any:
    if value is None:
        return None
    if kind == "numeric":
        if _is_number(value):
            return float(value)
        raise InputProblem(f"column {column!r} expects a finite number, got {value!r}", column, row)
    if kind in ("categorical", "text"):
        if isinstance(value, str):
            return value
        raise InputProblem(f"column {column!r} expects a string, got {value!r}", column, row)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise InputProblem(f"column {column!r} expects true or false, got {value!r}", column, row)
    if kind == "datetime":
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                if in_supported_range(parsed):
                    return parsed
                raise InputProblem(
                    f"column {column!r} expects a date-time from {EARLIEST:%Y-%m-%d} to "
                    f"{LATEST:%Y-%m-%d}, got {value!r}",
                    column,
                    row,
                )
        raise InputProblem(
            f"column {column!r} expects an ISO-8601 date-time string, got {value!r}", column, row
        )
    raise InputProblem(f"column {column!r} has an unsupported kind {kind!r}", column, row, 500)


def _convert_column(values: list[Any], kind: str, column: str) -> list[Any]:
    """:func:`_convert` over one column's values, the common cases inlined.

    Row by row as before, so the first bad value reported is the same; plain floats and
    strings skip the call, which was most of the time of a 100-row request.
    """
    if kind == "numeric":
        out = []
        for row, value in enumerate(values):
            kind_of = type(value)
            if kind_of is float and math.isfinite(value):
                out.append(value)
            elif kind_of is int and -_INT_IN_FLOAT_RANGE < value < _INT_IN_FLOAT_RANGE:
                out.append(float(value))
            else:
                out.append(_convert(value, kind, column, row))
        return out
    if kind in ("categorical", "text") and all(type(v) is str or v is None for v in values):
        return values
    return [_convert(value, kind, column, row) for row, value in enumerate(values)]


def _rows(request: PredictRequest) -> tuple[list[str] | None, list[Any]]:
    if request.records is not None and (request.columns is not None or request.data is not None):
        raise InputProblem("send either 'records' or 'columns' with 'data', not both")
    if request.records is not None:
        return None, request.records
    if request.columns is None or request.data is None:
        raise InputProblem("send 'records', or both 'columns' and 'data'")
    if len(set(request.columns)) != len(request.columns):
        raise InputProblem("'columns' lists a column twice", "columns")
    for row, values in enumerate(request.data):
        if len(values) != len(request.columns):
            raise InputProblem(
                f"row has {len(values)} values but 'columns' names {len(request.columns)}",
                "data",
                row,
            )
    return request.columns, request.data


def records_to_table(
    request: PredictRequest,
    schema: dict[str, Any],
    *,
    max_rows: int,
    reject_extra: bool = False,
) -> pa.Table:
    """Validate a request against ``schema`` and build the model's input table.

    Raises
    ------
    InputProblem
        As :func:`records_to_columns`.
    """
    columns = records_to_columns(request, schema, max_rows=max_rows, reject_extra=reject_extra)
    return columns_to_table(columns, schema)


def columns_to_table(columns: dict[str, list[Any]], schema: dict[str, Any] | None) -> pa.Table:
    """The Arrow table of validated ``columns`` (from :func:`records_to_columns`).

    The server builds one table per micro-batch, not one per request: Arrow's fixed cost per
    array is larger than the whole validation of a single row.
    """
    if schema is None:
        return pa.table(columns)
    return pa.table(
        {
            c["name"]: pa.array(columns[c["name"]], type=_ARROW_TYPES[c["kind"]])
            for c in schema["columns"]
        }
    )


def records_to_columns(
    request: PredictRequest,
    schema: dict[str, Any],
    *,
    max_rows: int,
    reject_extra: bool = False,
) -> dict[str, list[Any]]:
    """Validate a request against ``schema``; the converted values, column by column.

    Raises
    ------
    InputProblem
        A missing column, a value of the wrong type, an unknown column (with
        ``reject_extra``), no rows, or more than ``max_rows`` rows (status 413).
    """
    columns, rows = _rows(request)
    if not rows:
        raise InputProblem("the request has no rows", "records" if columns is None else "data")
    if len(rows) > max_rows:
        raise InputProblem(
            f"{len(rows)} rows exceed the limit of {max_rows} per request; split the request",
            status=413,
        )
    expected = [(c["name"], c["kind"]) for c in schema["columns"]]
    names = {name for name, _ in expected}
    if columns is not None:
        _check_columns([columns], names, reject_extra, rows_named=False)
        return _convert_all(expected, rows, {name: i for i, name in enumerate(columns)})
    _check_columns(rows, names, reject_extra, rows_named=True)
    if len(rows) == 1 and (plain := _plain_row(expected, rows[0])) is not None:
        return plain
    return _convert_all(expected, rows, {name: name for name in names})


def _plain_row(expected: list[tuple[str, str]], row: dict[str, Any]) -> dict[str, list] | None:
    """One record's columns when every value is a plain finite number, string or null.

    What :func:`_convert_all` returns for it, without building a list per column first (a
    single-row prediction's validation); None for anything else, which then takes that path.
    """
    out: dict[str, list[Any]] = {}
    for name, kind in expected:
        value = row[name]
        kind_of = type(value)
        if value is None:
            out[name] = [None]
        elif kind == "numeric" and kind_of is float and math.isfinite(value):
            out[name] = [value]
        elif kind == "numeric" and kind_of is int and abs(value) < _INT_IN_FLOAT_RANGE:
            out[name] = [float(value)]
        elif kind in ("categorical", "text") and kind_of is str:
            out[name] = [value]
        else:
            return None
    return out


def tensors_to_columns(
    values: dict[str, list[Any]], schema: dict[str, Any]
) -> dict[str, list[Any]]:
    """Validate and convert columns of equal length, one per schema column (the V2 tensors).

    The values go through the same checks as :func:`records_to_columns`; one problem lists
    every wrong value of the first bad row.

    Raises
    ------
    InputProblem
        A value of the wrong type or out of range (status 422).
    """
    expected = [(c["name"], c["kind"]) for c in schema["columns"]]
    rows = list(zip(*(values[name] for name, _ in expected), strict=True))
    return _convert_all(expected, rows, {name: i for i, (name, _) in enumerate(expected)})


def _convert_all(
    expected: list[tuple[str, str]], rows: list[Any], keys: dict[str, Any]
) -> dict[str, list[Any]]:
    """Every column converted (``row[keys[name]]`` is a row's value); one problem lists every
    wrong value of its row.

    The problem reported is the first column's (in schema order) first bad row, as before;
    the other columns are looked at in that row only, and only once a problem is found.
    """
    out = {}
    for i, (name, kind) in enumerate(expected):
        key = keys[name]
        try:
            out[name] = _convert_column([r[key] for r in rows], kind, name)
        except InputProblem as first:
            if first.row is None or first.status != 422:
                raise
            row = rows[first.row]
            problems = [first]
            for other, other_kind in expected[i + 1 :]:
                try:
                    _convert(row[keys[other]], other_kind, other, first.row)
                except InputProblem as problem:
                    problems.append(problem)
            if len(problems) == 1:
                raise
            raise InputProblem(
                "; ".join(p.message for p in problems),
                first.field,
                first.row,
                fields=[p.field for p in problems if p.field is not None],
            ) from None
    return out


def _check_columns(
    given: list[Any], names: set[str], reject_extra: bool, *, rows_named: bool
) -> None:
    """Refuse rows (records, or the one 'columns' list) lacking columns, in one problem.

    The problem lists every missing column of every row (or, with ``reject_extra`` and none
    missing, every unknown one), so a client fixes them all at once; ``field`` and ``row``
    are the first.
    """
    count = len(names)
    if all([names.issubset(g) and (not reject_extra or len(g) == count) for g in given]):
        return  # the common case, checked in C; the rest only names the problem
    bad = [(i, sorted(names.difference(g))) for i, g in enumerate(given)]
    what = "missing column"
    if not any(found for _, found in bad):
        bad = [(i, sorted(set(g).difference(names))) for i, g in enumerate(given)]
        what = "unknown column"
    bad = [(i, found) for i, found in bad if found]
    first_row, first_names = bad[0]
    listed = sorted(set().union(*(found for _, found in bad)))
    message = f"{what}{'s' if len(listed) > 1 else ''} {', '.join(map(repr, listed))}"
    if rows_named and len(bad) == 1:
        message += f" in row {first_row}"
    elif rows_named:
        message += f" in {len(bad)} rows (the first is row {first_row})"
    if what == "unknown column":
        message += f"; this model takes {', '.join(sorted(names))}"
    row = first_row if rows_named else None
    raise InputProblem(message, first_names[0], row, fields=listed)
