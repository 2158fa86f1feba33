"""From raw values to typed columns: schema inference from a sample, conversion with rejects.

Readers deliver every CSV/JSON column as strings. :func:`infer_schema` picks a type and a kind
per column from a sample; :func:`convert_batch` casts a batch to the schema. Casting is
vectorised with a fast path (one Arrow cast per column, which succeeds on clean data) and a
slow path only for a column whose cast failed: trim, map missing-value markers to null, test
every value against the type's grammar, and mark the rest invalid. An invalid value makes its
row a reject whose reason names the column. An infinite float (``inf``, ``-Infinity``,
``1e999``) is a reject too unless ``allow_non_finite``; a NaN is a missing value (null), as the
default missing-value markers already make of the text ``NaN`` (a column whose sum is finite
holds neither: the per-value test runs only for the others). A date-time outside the range
shardlearn can encode (:mod:`shardlearn.data.timestamps`, about 1684 to 2255) is a reject. A text
column is trimmed only when one of its bytes can be whitespace, and searched for missing-value
markers only when trimming ran or its reader did not null them itself (the CSV reader does:
``convert_batch(markers_nulled=True)``). Inference types a sample column of plain numbers
(digits, signs, points, exponents, all cast by Arrow) without a regex, and counts integers
from the bytes; the grammars' regexes decide every other column, with the same result.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardlearn.data.schema import (
    Column,
    Kind,
    Schema,
    as_kind,
    infer_kind,
    kind_of_type,
    type_name,
)
from shardlearn.data.timestamps import out_of_range, range_reason

__all__ = ["DEFAULT_NA_VALUES", "Converted", "convert_batch", "infer_schema"]

# "?" is how UCI files (Adult, ...) write a missing value; pandas' defaults plus that.
DEFAULT_NA_VALUES: tuple[str, ...] = (
    "", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?", "-",
)  # fmt: skip

# Share of a sample's values that may fail to parse without changing the inferred type.
INFER_TOLERANCE = 0.02
_INT = r"^[+-]?\d+$"
# Infinity and NaN in any case, as Arrow's cast reads them: a column holding "-Infinity" is a
# float column (whose infinite values are rejects), not text.
_FLOAT = r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|(?i:inf|infinity|nan))$"
_DATETIME = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
_TRUE = ("true", "True", "TRUE", "t", "T", "yes", "Yes", "YES")
_FALSE = ("false", "False", "FALSE", "f", "F", "no", "No", "NO")
_BOOL_WORDS = ("true", "True", "TRUE", "false", "False", "FALSE")
_GRAMMARS = {"int": _INT, "float": _FLOAT, "datetime": _DATETIME}


def _family(dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    if pa.types.is_temporal(dtype):
        return "datetime"
    if pa.types.is_boolean(dtype):
        return "bool"
    return "string"


def _clean(values: pa.Array, na_values: pa.Array, trim: bool, nulled: bool = False) -> pa.Array:
    """Trim whitespace (optional) and turn missing-value markers into nulls. ``nulled``: the
    reader already made every value equal to a marker null (the CSV reader does), so only a
    value trimming changed can be one."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return values
    if trim and _may_hold_whitespace(values):
        values = pc.utf8_trim_whitespace(values)
    elif nulled:
        return values
    missing = pc.is_in(values, value_set=na_values)
    if pc.any(missing).as_py():
        values = pc.if_else(missing, pa.scalar(None, values.type), values)
    return values


def _may_hold_whitespace(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether a string in ``values`` may start or end with whitespace: its bytes hold a space,
    an ASCII control character or a non-ASCII byte (every other Unicode space is non-ASCII).
    One byte scan, where trimming looks up every character (about a fifth of a CSV batch's
    conversion on the benchmark file, whose text values hold no whitespace)."""
    if isinstance(values, pa.ChunkedArray):
        return True  # trimmed as it comes
    _, text = _string_bytes(values)  # no bytes: every value empty or missing
    return bool(np.any((text <= 32) | (text >= 128)))


def infer_type(values: pa.Array) -> pa.DataType:
    """The narrowest type every non-null (already cleaned) string in ``values`` parses as."""
    present = pc.drop_null(values)
    if len(present) == 0:
        return pa.string()
    bounds, text = _string_bytes(present)
    if _all_numbers(present, text):
        # Every value a number without inf/nan: an integer unless one has a point or exponent.
        return pa.float64() if _FRACTION.search(text.tobytes()) else pa.int64()
    floats = pc.sum(pc.match_substring_regex(present, _FLOAT)).as_py() or 0
    # A few bad values do not make a numeric column text: they become rejects.
    if floats >= len(present) * (1.0 - INFER_TOLERANCE):
        return pa.int64() if _int_count(bounds, text) == floats else pa.float64()
    if pc.all(pc.is_in(present, value_set=pa.array(_BOOL_WORDS))).as_py():
        return pa.bool_()
    if pc.all(pc.match_substring_regex(present, _DATETIME)).as_py():
        try:
            pc.cast(present, pa.timestamp("us"))
            return pa.timestamp("us")
        except pa.ArrowInvalid:
            pass
    return pa.string()


def _string_bytes(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The value bounds (``len(values) + 1`` offsets, from 0) and the bytes of a string array."""
    _, offsets, data = values.buffers()
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    bounds = np.frombuffer(offsets, width)[values.offset : values.offset + len(values) + 1]
    if data is None:
        return np.zeros(len(values) + 1, np.int64), np.zeros(0, np.uint8)
    return bounds - bounds[0], np.frombuffer(data, np.uint8)[bounds[0] : bounds[-1]]


_NUMBER_BYTES = b"0123456789+-.eE"  # a number's bytes but for inf/infinity/nan
_FRACTION = re.compile(rb"[.eE]")
_DIGITS = np.zeros(256, dtype=bool)
_DIGITS[list(b"0123456789")] = True


def _all_numbers(present: pa.Array, text: np.ndarray) -> bool:
    """Whether every value of ``present`` (no nulls) matches :data:`_FLOAT` and none is
    inf/infinity/nan, for a column of numbers (the usual case) by a byte scan and one cast
    instead of the regex: when its bytes are digits, signs, points and exponents only and Arrow
    casts every value to float64 (Arrow's float grammar over those bytes lies within
    :data:`_FLOAT`: checked exhaustively up to six characters and by a Hypothesis test).
    False says nothing: the regex decides then."""
    if not text.size or text.tobytes().translate(None, _NUMBER_BYTES):
        return False
    try:
        pc.cast(present, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _int_count(bounds: np.ndarray, text: np.ndarray) -> int:
    """The values matching :data:`_INT` (``[+-]?\\d+``, ASCII digits), from their bytes:
    no byte but digits, or a sign and then at least one digit and nothing else."""
    lengths = np.diff(bounds)
    others = np.concatenate([[0], np.cumsum(~_DIGITS[text], dtype=np.int64)])
    not_digits = others[bounds[1:]] - others[bounds[:-1]]
    plain = (not_digits == 0) & (lengths >= 1)
    signed = (not_digits == 1) & (lengths >= 2)
    if signed.any():
        first = text[np.minimum(bounds[:-1], max(len(text) - 1, 0))]
        signed &= (first == ord("+")) | (first == ord("-"))
    return int(np.count_nonzero(plain) + np.count_nonzero(signed))


def infer_schema(
    sample: pa.Table,
    label: str | None,
    na_values: Sequence[str],
    trim: bool = True,
    kinds: dict[str, str] | None = None,
    mapper: Callable[..., Iterable[Column]] = map,
) -> Schema:
    """Infer a type and a kind per column of a sample of string (or typed) columns.

    The label keeps its values' type (int64 labels stay integers) and is ``categorical``.
    ``mapper`` runs the per-column inference (a thread pool's: Arrow's regex matching releases the
    GIL, and the columns are independent); the columns keep the sample's order.
    """
    kinds = dict(kinds or {})
    na = pa.array(list(na_values), pa.string())
    infer = functools.partial(_infer_column, sample, label, na, trim, kinds)
    return Schema(tuple(mapper(infer, sample.column_names)), label)


def _infer_column(
    sample: pa.Table, label: str | None, na: pa.Array, trim: bool, kinds: dict[str, str], name: str
) -> Column:
    raw = sample.column(name).combine_chunks()
    if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
        values = _clean(raw.cast(pa.string()), na, trim)
        dtype = infer_type(values)
    else:
        values, dtype = raw, raw.type
    kind: Kind
    if name == label:
        kind = "categorical"
    elif name in kinds:
        kind = as_kind(name, kinds[name])
    else:
        kind = infer_kind(values) if _family(dtype) == "string" else kind_of_type(dtype)
    return Column(name, kind, type_name(dtype))


@dataclass
class Converted:
    """A batch cast to the schema plus, per row, the reason it was rejected (or None)."""

    batch: pa.RecordBatch
    bad: np.ndarray  # bool per row
    reasons: np.ndarray  # object per row: str where bad


def _slow_cast(values: pa.Array, dtype: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast what parses, null the rest; return (typed values, invalid mask)."""
    family = _family(dtype)
    present = pc.is_valid(values)
    if family == "bool":
        lowered = values
        truthy = pc.is_in(lowered, value_set=pa.array(_TRUE))
        falsy = pc.is_in(lowered, value_set=pa.array(_FALSE))
        valid = pc.or_(truthy, falsy)
        typed = pc.if_else(valid, truthy, pa.scalar(None, pa.bool_()))
    else:
        valid = (
            pc.match_substring_regex(values, _GRAMMARS[family]) if family in _GRAMMARS else present
        )
        kept = pc.if_else(valid, values, pa.scalar(None, values.type))
        try:
            typed = pc.cast(kept, dtype)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            typed, valid = _cast_one_by_one(kept, dtype, valid)
    invalid = pc.and_(present, pc.invert(pc.fill_null(valid, False)))
    return typed, invalid.to_numpy(zero_copy_only=False)


def _cast_one_by_one(
    values: pa.Array, dtype: pa.DataType, valid: pa.Array
) -> tuple[pa.Array, pa.Array]:
    """Last resort for values that match the grammar but still fail (int overflow, 2024-13-01)."""
    out: list[Any] = []
    ok: list[bool] = []
    for value, is_valid in zip(values.to_pylist(), valid.to_pylist(), strict=True):
        if value is None or not is_valid:
            out.append(None)
            ok.append(bool(is_valid))
            continue
        try:
            out.append(pc.cast(pa.array([value]), dtype)[0].as_py())
            ok.append(True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out.append(None)
            ok.append(False)
    return pa.array(out, dtype), pa.array(ok, pa.bool_())


def _convert_column(
    raw: pa.Array, column: Column, na_values: pa.Array, trim: bool, nulled: bool = False
) -> tuple[pa.Array, np.ndarray | None]:
    dtype = column.arrow_type
    if _family(dtype) == "string" and pa.types.is_string(raw.type):
        return _clean(raw, na_values, trim, nulled), None
    if raw.type == dtype:
        return raw, None
    is_text = pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)
    if not is_text:
        try:
            return pc.cast(raw, dtype), None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raw = pc.cast(raw, pa.string())
    if _family(dtype) == "string":
        return _clean(raw, na_values, trim).cast(dtype), None
    try:
        # Fast path: clean data casts in one call (CSV readers already nulled the markers).
        return pc.cast(raw, dtype), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    return _slow_cast(_clean(raw, na_values, trim), dtype)


def _non_finite(typed: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    """NaN made null, and the mask of infinite values (None when there is none).

    A finite sum proves every value finite (a NaN or an infinity makes the sum one) in one
    pass without a mask: about half the cost of the per-value test, which runs only when the
    sum is not finite (an overflow of finite values too)."""
    try:
        total = pc.sum(typed).as_py()
    except pa.ArrowNotImplementedError:  # float16 has no sum kernel: the per-value test
        total = math.nan
    if total is None or math.isfinite(total):
        return typed, None
    finite = pc.is_finite(typed)
    if pc.all(finite).as_py() is not False:
        return typed, None
    nan = pc.fill_null(pc.is_nan(typed), False)
    if pc.any(nan).as_py():
        typed = pc.if_else(nan, pa.scalar(None, typed.type), typed)
    infinite = pc.and_(pc.invert(finite), pc.invert(nan))
    return typed, pc.fill_null(infinite, False).to_numpy(zero_copy_only=False)


def convert_batch(
    batch: pa.RecordBatch | pa.Table,
    schema: Schema,
    na_values: Sequence[str],
    trim: bool = True,
    label_strip: str | None = None,
    allow_unlabeled: bool = False,
    allow_non_finite: bool = False,
    markers_nulled: bool = False,
) -> Converted:
    """Cast ``batch`` to ``schema``; rows with an unparseable value or no label are marked bad.

    With ``allow_unlabeled`` a row whose only problem is a missing label is kept (its label is
    null); a row with an unparseable value is still bad, label or not. Infinite floats are bad
    and NaNs are made missing, unless ``allow_non_finite`` keeps both as they are.
    ``markers_nulled``: the reader made every text value equal to one of ``na_values`` null
    (the CSV reader): a text column nothing is trimmed from is not searched for them again.
    """
    na = pa.array(list(na_values), pa.string())
    rows = batch.num_rows
    bad = np.zeros(rows, dtype=bool)
    reasons = np.full(rows, None, dtype=object)
    arrays = []
    for column in schema.columns:
        raw = batch.column(column.name)
        if isinstance(raw, pa.ChunkedArray):
            raw = raw.combine_chunks()
        if column.name == schema.label and label_strip and pa.types.is_string(raw.type):
            raw = pc.utf8_rtrim(_clean(raw, na, trim), characters=label_strip)
        # A label stripped of characters may have become a marker: search it.
        nulled = markers_nulled and not (column.name == schema.label and label_strip)
        typed, invalid = _convert_column(raw, column, na, trim, nulled)
        if invalid is not None and invalid.any():
            newly = invalid & ~bad
            reasons[newly] = f"column {column.name!r}: not a valid {column.dtype} value"
            bad |= invalid
        if not allow_non_finite and pa.types.is_floating(typed.type):
            typed, infinite = _non_finite(typed)
            if infinite is not None:
                newly = infinite & ~bad
                reasons[newly] = (
                    f"column {column.name!r}: an infinite value (--allow-non-finite keeps it)"
                )
                bad |= infinite
        if pa.types.is_timestamp(typed.type):
            outside = out_of_range(typed) & ~bad
            if outside.any():
                reasons[outside] = range_reason(column.name)
                bad |= outside
        arrays.append(typed)
    if schema.label is not None and not allow_unlabeled:
        position = schema.names.index(schema.label)
        no_label = arrays[position].is_null().to_numpy(zero_copy_only=False) & ~bad
        if no_label.any():
            reasons[no_label] = "missing label"
            bad |= no_label
    return Converted(pa.RecordBatch.from_arrays(arrays, schema=schema.to_arrow()), bad, reasons)
