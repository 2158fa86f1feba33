"""Text columns are trimmed and searched for missing-value markers only where that can change
a value (issue 24): the result is the full clean's, for any text and reader."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

import shardlearn.data._convert as convert_module
import shardlearn.data._ingest_run as ingest_run
from shardlearn.data import ingest
from shardlearn.data._convert import DEFAULT_NA_VALUES, _clean
from shardlearn.data.schema import Column, Schema

NA = pa.array(list(DEFAULT_NA_VALUES), pa.string())
# Text with ASCII and Unicode spaces, control characters and the markers themselves.
PIECES = st.sampled_from(["a", "NA", "?", "-", " ", "\t", "\u00a0", "\u3000", "\x1f", "é", "x1"])
VALUES = st.lists(st.one_of(st.none(), st.lists(PIECES, max_size=4).map("".join)), max_size=30)


def _full_clean(values: pa.Array, trim: bool) -> pa.Array:
    """The clean as it was: trim every value, then null every marker."""
    if trim:
        values = pc.utf8_trim_whitespace(values)
    missing = pc.is_in(values, value_set=NA)
    return pc.if_else(missing, pa.scalar(None, values.type), values)


@settings(max_examples=200, deadline=None)
@given(values=VALUES, trim=st.booleans(), offset=st.integers(0, 3))
def test_clean_is_the_full_clean(values: list[str | None], trim: bool, offset: int) -> None:
    array = pa.array(values, pa.string()).slice(min(offset, len(values)))
    assert _clean(array, NA, trim).equals(_full_clean(array, trim))
    # As the CSV reader delivers text (every marker already null), ``nulled`` changes nothing.
    delivered = pc.if_else(pc.is_in(array, value_set=NA), pa.scalar(None, pa.string()), array)
    assert _clean(delivered, NA, trim, nulled=True).equals(_full_clean(delivered, trim))


def test_clean_csv_text_is_neither_trimmed_nor_searched(tmp_path: Path) -> None:
    """A CSV text column without whitespace: no trim and no marker search when batches are
    converted (both ran on every text column of every batch before); padded markers, and a
    label that stripping makes a marker, are still missing."""
    lines = ["x,colour,label"]
    lines += [f"{i},{'red' if i % 3 else 'blue'},{'ab'[i % 2]}" for i in range(3000)]
    path = tmp_path / "clean.csv"
    path.write_text("\n".join(lines) + "\n")
    converting = threading.local()
    calls: list[str] = []
    convert, trim, is_in = ingest_run.convert_batch, pc.utf8_trim_whitespace, pc.is_in

    def counted(name: str, function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if getattr(converting, "on", False):
                calls.append(name)
            return function(*args, **kwargs)

        return call

    def converted(*args: Any, **kwargs: Any) -> Any:
        converting.on = True
        try:
            return convert(*args, **kwargs)
        finally:
            converting.on = False

    with (
        mock.patch.object(ingest_run, "convert_batch", converted),
        mock.patch.object(convert_module.pc, "utf8_trim_whitespace", counted("trim", trim)),
        mock.patch.object(convert_module.pc, "is_in", counted("is_in", is_in)),
    ):
        ds = ingest(str(path), "label", str(tmp_path / "out"), partitions=2, progress=False)
    assert calls == []
    assert ds.manifest["rows_written"] == 3000

    padded = tmp_path / "padded.csv"
    padded.write_text("x,colour,label\n1, NA ,a\n2,red,NA.\n3,blue,b\n4,NA,a\n")
    ds = ingest(
        str(padded), "label", str(tmp_path / "out2"), partitions=1, split=(1.0, 0.0, 0.0),
        progress=False, label_strip=".", max_reject_rate=1.0,
    )  # fmt: skip
    assert sorted(ds.read("train").column("colour").to_pylist(), key=str) == [None, None, "blue"]
    assert ds.manifest["rows_rejected"] == 1  # the label "NA." is missing once stripped


def _full_non_finite(typed: pa.Array) -> tuple[pa.Array, Any]:
    """The non-finite check as it was: a per-value test of every float column."""
    finite = pc.is_finite(typed)
    if pc.all(finite).as_py() is not False:
        return typed, None
    nan = pc.fill_null(pc.is_nan(typed), False)
    if pc.any(nan).as_py():
        typed = pc.if_else(nan, pa.scalar(None, typed.type), typed)
    infinite = pc.and_(pc.invert(finite), pc.invert(nan))
    return typed, pc.fill_null(infinite, False).to_numpy(zero_copy_only=False)


FLOATS = st.lists(
    st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([1e308, -1e308, 3e38, float("inf"), float("-inf"), float("nan")]),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    values=FLOATS,
    kind=st.sampled_from(["float64", "float32", "float16"]),
    offset=st.integers(0, 3),
)
def test_the_non_finite_check_is_the_per_value_test(
    values: list[float | None], kind: str, offset: int
) -> None:
    """Values that overflow the sum (or the type), NaN, both infinities, nulls, slices."""
    with np.errstate(over="ignore"):
        numbers = np.array([0.0 if v is None else v for v in values], dtype=kind)
    array = pa.array(numbers, mask=np.array([v is None for v in values], dtype=bool))
    array = array.slice(min(offset, len(values)))
    typed, infinite = convert_module._non_finite(array)
    expected_typed, expected_infinite = _full_non_finite(array)
    assert typed.equals(expected_typed)
    assert (infinite is None) == (expected_infinite is None)
    if infinite is not None:
        assert infinite.tolist() == expected_infinite.tolist()


def test_finite_floats_are_checked_without_a_per_value_test() -> None:
    """A clean float batch: one sum per column, no is_finite mask (it ran on every float
    column of every batch before)."""
    schema = Schema((Column("x", "numeric", "float64"), Column("y", "numeric", "float64")), None)
    batch = pa.record_batch({"x": pa.array([0.5, -2.0, None] * 100), "y": pa.array([1e300] * 300)})
    calls: list[str] = []
    is_finite = pc.is_finite

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append("is_finite")
        return is_finite(*args, **kwargs)

    with mock.patch.object(convert_module.pc, "is_finite", counted):
        converted = convert_module.convert_batch(batch, schema, DEFAULT_NA_VALUES)
    assert calls == []
    assert not converted.bad.any() and converted.batch.equals(batch)
    # An infinite value is still found (and its row a reject).
    bad = pa.record_batch({"x": pa.array([1.0, float("inf")]), "y": pa.array([1.0, 2.0])})
    converted = convert_module.convert_batch(bad, schema, DEFAULT_NA_VALUES)
    assert converted.bad.tolist() == [False, True]
