"""Row-level validation of prediction input against a model's input schema.

Each input column is converted to what the model expects for its kind (numeric -> float64,
boolean -> bool, datetime -> the stored timestamp type, categorical/text -> the stored type,
usually string). The whole column is cast at once; only when that fails are values converted
one by one, so a clean batch costs one Arrow cast per column and a dirty one pinpoints its bad
rows. A row is rejected, with a reason naming the column and the value, when a value cannot be
converted, a number is infinite, a date-time is outside the range the datetime encoder supports,
or a value is missing and the model has no preprocessing to impute it (a bare estimator).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardlearn.exceptions import SchemaError
from shardlearn.preprocess.datetime import EARLIEST, LATEST, out_of_range

__all__ = ["check_columns", "validate_table"]

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _arrow_type(name: str | None, default: pa.DataType) -> pa.DataType:
    if not name:
        return default
    from shardlearn.data.schema import arrow_type

    # read_artifact already refused a dtype outside the fixed table; one that is only unfit
    # here (a schema built in memory) falls back to the kind's default.
    try:
        return arrow_type(name)
    except SchemaError:
        return default


def target_type(column: dict[str, Any]) -> pa.DataType:
    """The Arrow type values of ``column`` are converted to before prediction."""
    kind = column.get("kind")
    if kind == "numeric":
        return pa.float64()
    if kind == "boolean":
        return pa.bool_()
    if kind == "datetime":
        return _arrow_type(column.get("dtype"), pa.timestamp("us"))
    return _arrow_type(column.get("dtype"), pa.string())


def check_columns(names: list[str], columns: list[dict[str, Any]], source: str) -> None:
    """Raise SchemaError naming the first model input column missing from ``names``."""
    missing = [c["name"] for c in columns if c["name"] not in names]
    if missing:
        raise SchemaError(
            f"{source} has no column {missing[0]!r}, which the model needs "
            f"(model inputs: {', '.join(c['name'] for c in columns)}; "
            f"{source} has: {', '.join(names)})"
        )


def _parse_one(value: Any, kind: str, target: pa.DataType) -> Any:
    """One value converted for ``kind``; raises ValueError/TypeError/ArrowInvalid if invalid."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if kind == "numeric":
        return float(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(value)
    if kind == "datetime" and isinstance(value, str):
        return pa.scalar(datetime.fromisoformat(value.strip())).cast(target).as_py()
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        return value if isinstance(value, str) else str(value)
    return pa.array([value]).cast(target)[0].as_py()


def _convert_each(
    values: list[Any], column: dict[str, Any], target: pa.DataType
) -> tuple[pa.Array, dict[int, str]]:
    kind = str(column.get("kind"))
    out: list[Any] = []
    reasons: dict[int, str] = {}
    for i, value in enumerate(values):
        try:
            out.append(_parse_one(value, kind, target))
        except (ValueError, TypeError, OverflowError, pa.ArrowException):
            out.append(None)
            reasons[i] = f"column {column['name']!r}: {value!r} is not a valid {kind} value"
    return pa.array(out, type=target), reasons


def convert_column(
    values: pa.Array | pa.ChunkedArray, column: dict[str, Any], allow_missing: bool
) -> tuple[pa.Array, dict[int, str]]:
    """``values`` converted for ``column``, and the reason of each rejected position."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    target = target_type(column)
    kind = column.get("kind")
    converted = None
    reasons: dict[int, str] = {}
    strings = pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
    if not (kind == "boolean" and strings):  # Arrow's string->bool cast knows only true/false
        try:
            converted = array.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            converted = None
    if converted is None:
        converted, reasons = _convert_each(array.to_pylist(), column, target)
    if kind == "datetime" and pa.types.is_timestamp(converted.type):
        for i in np.flatnonzero(out_of_range(converted)):
            reasons.setdefault(
                int(i),
                f"column {column['name']!r}: {converted[i]} is outside the supported range "
                f"{EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}",
            )
    if kind == "numeric":
        numbers = converted.to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(np.isinf(numbers)):
            reasons.setdefault(int(i), f"column {column['name']!r}: {numbers[i]} is not finite")
        if not allow_missing:
            for i in np.flatnonzero(np.isnan(numbers)):
                reasons.setdefault(
                    int(i),
                    f"column {column['name']!r} is missing (the model has no preprocessing "
                    "to impute it)",
                )
    elif not allow_missing and converted.null_count:
        for i in np.flatnonzero(converted.is_null().to_numpy(zero_copy_only=False)):
            reasons.setdefault(int(i), f"column {column['name']!r} is missing")
    return converted, reasons


def validate_table(
    table: pa.Table, columns: list[dict[str, Any]], allow_missing: bool
) -> tuple[pa.Table, list[str | None]]:
    """The model's input columns converted, and per row ``None`` (valid) or the reject reason."""
    reasons: list[str | None] = [None] * table.num_rows
    converted = {}
    for column in columns:
        array, bad = convert_column(table.column(column["name"]), column, allow_missing)
        converted[column["name"]] = array
        for row, reason in bad.items():
            reasons[row] = reason if reasons[row] is None else f"{reasons[row]}; {reason}"
    return pa.table(converted), reasons


def is_nan(value: Any) -> bool:
    """Whether ``value`` is a float NaN (for JSON-safe reject records)."""
    return isinstance(value, float) and math.isnan(value)


def valid_mask(reasons: list[str | None]) -> pa.Array:
    """A boolean Arrow mask of the rows without a reject reason."""
    return pc.is_null(pa.array(reasons, type=pa.string()))
