"""Request validation: the column-wise fast path equals converting value by value."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlearn.serve.schemas import InputProblem, PredictRequest, _convert, records_to_columns

SCHEMA = {
    "columns": [
        {"name": "income", "kind": "numeric"},
        {"name": "region", "kind": "categorical"},
        {"name": "note", "kind": "text"},
        {"name": "flag", "kind": "boolean"},
        {"name": "when", "kind": "datetime"},
    ]
}
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from(["2024-05-01T13:45:00", "2024-05-01", "north"]),
)


def value_by_value(records: list[dict[str, Any]], schema: dict = SCHEMA) -> dict[str, list[Any]]:
    """The specification: every value through ``_convert``, column after column; the first
    problem also lists every other wrong value of its row (one 422 for all of them)."""
    names = [(c["name"], c["kind"]) for c in schema["columns"]]
    out = {}
    for at, (name, kind) in enumerate(names):
        try:
            out[name] = [_convert(r[name], kind, name, i) for i, r in enumerate(records)]
        except InputProblem as first:
            problems = [first]
            for other, other_kind in names[at + 1 :]:
                try:
                    _convert(records[first.row][other], other_kind, other, first.row)
                except InputProblem as problem:
                    problems.append(problem)
            if len(problems) == 1:
                raise
            message = "; ".join(p.message for p in problems)
            fields = [p.field for p in problems]
            raise InputProblem(message, first.field, first.row, fields=fields) from None
    return out


def outcome(function: Any, records: list[dict[str, Any]]) -> Any:
    try:
        return function(records)
    except InputProblem as problem:
        return problem.to_dict(), problem.status


def fast(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return records_to_columns(PredictRequest(records=records), SCHEMA, max_rows=1000)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    st.lists(
        st.fixed_dictionaries({c["name"]: VALUES for c in SCHEMA["columns"]}),
        min_size=1,
        max_size=6,
    )
)
def test_columns_equal_value_by_value_conversion_or_the_same_first_problem(
    records: list[dict[str, Any]],
) -> None:
    want, got = outcome(value_by_value, records), outcome(fast, records)
    # NaN never equals itself; compare reprs, which also tells 1 from 1.0 from True.
    assert repr(got) == repr(want)


@pytest.mark.parametrize("value", [10**400, -(10**400), float("inf"), float("nan")])
def test_numbers_beyond_float_are_a_problem_naming_the_field(value: Any) -> None:
    records = [{"income": 1.0, "region": "a", "note": "", "flag": True, "when": None}] * 2
    records = [records[0], {**records[1], "income": value}]
    with pytest.raises(InputProblem) as caught:
        fast(records)
    assert (caught.value.field, caught.value.row, caught.value.status) == ("income", 1, 422)


PLAIN_SCHEMA = {"columns": [c for c in SCHEMA["columns"] if c["kind"] in ("numeric", "text")]}


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.fixed_dictionaries({c["name"]: VALUES for c in PLAIN_SCHEMA["columns"]}))
def test_one_record_of_numbers_and_strings_converts_as_value_by_value(record: dict) -> None:
    # A single record of plain values takes its own path (the single-row prediction's).
    def one(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
        return records_to_columns(PredictRequest(records=records), PLAIN_SCHEMA, max_rows=10)

    def reference(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
        return value_by_value(records, PLAIN_SCHEMA)

    assert repr(outcome(one, [record])) == repr(outcome(reference, [record]))
