"""Type inference of a schema sample without regexes on numeric columns (issue 24: the sample's
inference was about 0.085 CPU-s before the second parser could start, two regex passes over
every numeric column). The types are those of the regexes, for any text."""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

import shardlearn.data._convert as convert_module
from shardlearn.data._convert import (
    _BOOL_WORDS,
    _DATETIME,
    _FLOAT,
    _INT,
    DEFAULT_NA_VALUES,
    INFER_TOLERANCE,
    _int_count,
    _string_bytes,
    infer_schema,
    infer_type,
)

match_substring_regex = pc.match_substring_regex  # before any test patches it
# Pieces of numbers, near-numbers and text: Arrow's float grammar and the regexes must agree.
PIECES = st.sampled_from(
    ["0", "7", "12", "+", "-", ".", "e", "E", "inf", "Infinity", "nan", "x", "0x1f", "\u0663",
     " ", "_", "1e400", "2024-01-02", "true", ""]
)  # fmt: skip
TEXT = st.lists(PIECES, max_size=5).map("".join)
NUMBER = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.3e}"),
)


def _matches(values: list[str], pattern: str) -> np.ndarray:
    """Arrow's regex (RE2: ``\\d`` is an ASCII digit), as the inference used it."""
    return match_substring_regex(pa.array(values, pa.string()), pattern).to_numpy(
        zero_copy_only=False
    )


def _reference(values: list[str | None]) -> pa.DataType:
    """infer_type as it was: the float and int regexes count the numbers."""
    present = [v for v in values if v is not None]
    if not present:
        return pa.string()
    floats = int(_matches(present, _FLOAT).sum())
    if floats >= len(present) * (1.0 - INFER_TOLERANCE):
        ints = int(_matches(present, _INT).sum())
        return pa.int64() if ints == floats else pa.float64()
    if all(v in _BOOL_WORDS for v in present):
        return pa.bool_()
    if _matches(present, _DATETIME).all():
        try:
            pc.cast(pa.array(present), pa.timestamp("us"))
            return pa.timestamp("us")
        except pa.ArrowInvalid:
            pass
    return pa.string()


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), TEXT, NUMBER, NUMBER), min_size=1, max_size=60),
    offset=st.integers(0, 3),
)
def test_the_inferred_type_is_the_regexes(values: list[str | None], offset: int) -> None:
    array = pa.array(values, pa.string()).slice(min(offset, len(values) - 1))
    assert infer_type(array) == _reference(values[min(offset, len(values) - 1) :])


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.one_of(TEXT, NUMBER), max_size=40),
    offset=st.integers(0, 3),
    large=st.booleans(),
)
def test_the_int_count_is_the_regex_count(values: list[str], offset: int, large: bool) -> None:
    array = pa.array(values, pa.large_string() if large else pa.string())
    array = array.slice(min(offset, len(values)))
    expected = int(_matches(values[min(offset, len(values)) :], _INT).sum())
    assert _int_count(*_string_bytes(array)) == expected


@settings(max_examples=200, deadline=None)
@given(columns=st.lists(st.lists(NUMBER, min_size=1, max_size=30), min_size=1, max_size=4))
def test_a_column_of_numbers_is_typed_without_a_regex(columns: list[list[str]]) -> None:
    """Every value a number (ints, floats as Python and %e write them): no regex runs."""
    calls: list[str] = []

    def counted(values: Any, pattern: str, **kwargs: Any) -> Any:
        calls.append(pattern)
        return match_substring_regex(values, pattern, **kwargs)

    with mock.patch.object(convert_module.pc, "match_substring_regex", counted):
        types = [infer_type(pa.array(column, pa.string())) for column in columns]
    assert calls == []
    assert types == [_reference(column) for column in columns]


def test_a_sample_infers_its_numeric_columns_without_a_regex() -> None:
    """The benchmark's shape: numeric columns and text ones. Only the text columns meet a
    regex (the float grammar, then the date-time one): two calls each, none for a number."""
    rng = np.random.default_rng(0)
    sample = pa.table(
        {
            "x": pa.array([f"{v:.3f}" for v in rng.normal(size=2000) * 100]),
            "n": pa.array([str(v) for v in rng.integers(-50, 50, 2000)]),
            "big": pa.array(["99999999999999999999"] * 2000),
            "colour": pa.array(["red", "blue"] * 1000),
            "label": pa.array(["0", "1"] * 1000),
        }
    )
    calls: list[str] = []

    def counted(values: Any, pattern: str, **kwargs: Any) -> Any:
        calls.append(pattern)
        return match_substring_regex(values, pattern, **kwargs)

    with mock.patch.object(convert_module.pc, "match_substring_regex", counted):
        schema = infer_schema(sample, "label", DEFAULT_NA_VALUES)
    assert [c.dtype for c in schema.columns] == ["float64", "int64", "int64", "string", "int64"]
    assert calls == [_FLOAT, _DATETIME]  # the colour column's
