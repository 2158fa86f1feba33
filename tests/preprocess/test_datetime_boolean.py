"""DatetimeEncoder and BooleanEncoder: parts, scaling, missing values, merges, bad input."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _preprocess_helpers import assert_state_close, fit_merged, split_rows
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from shardlearn.exceptions import SchemaError
from shardlearn.preprocess import BooleanEncoder, DatetimeEncoder

STAMPS = [
    dt.datetime(2021, 1, 4, 13, 30),  # a Monday
    dt.datetime(2023, 7, 15, 0, 5),
    None,
    dt.datetime(1999, 12, 31, 23, 59, 59),
    dt.datetime(2024, 2, 29, 8, 0),
]


def test_datetime_parts_match_pandas_and_standard_scaling():
    table = pa.table({"when": pa.array(STAMPS, pa.timestamp("us"))})
    enc = DatetimeEncoder(columns=["when"]).fit(table)
    assert enc.feature_names_out_ == [
        "when_year",
        "when_month",
        "when_day_of_week",
        "when_hour",
        "when_epoch_seconds",
    ]
    series = pd.Series(pd.to_datetime(STAMPS))
    raw = np.column_stack(
        [
            series.dt.year,
            series.dt.month,
            series.dt.dayofweek,
            series.dt.hour,
            series.astype("int64").where(series.notna()) / 1e9,
        ]
    ).astype(float)
    expected = StandardScaler().fit_transform(SimpleImputer().fit_transform(raw))
    np.testing.assert_allclose(enc.transform(table), expected, rtol=1e-5, atol=1e-5)


def test_datetime_raw_parts_from_strings_and_dates():
    enc = DatetimeEncoder(columns=["d"], parts=["year", "month", "day_of_week", "hour"], scale=None)
    out = enc.fit({"d": ["2021-01-04 13:30:00", "2020-06-01"]}).transform(
        {"d": pa.array([dt.date(2022, 3, 1)])}
    )
    np.testing.assert_array_equal(out, [[2022, 3, 1, 0]])


def test_datetime_merge_equals_one_fit():
    table = pa.table({"when": pa.array(STAMPS, pa.timestamp("us"))})
    make = lambda: DatetimeEncoder(columns=["when"])  # noqa: E731
    assert_state_close(fit_merged(make, split_rows(table, [1, 3, 3])), make().fit(table))


def test_datetime_errors_name_the_column():
    with pytest.raises(SchemaError, match="'d' is configured as datetime"):
        DatetimeEncoder(columns=["d"]).fit({"d": ["not a date"]})
    with pytest.raises(SchemaError, match="'d' is configured as datetime but holds double"):
        DatetimeEncoder(columns=["d"]).fit({"d": [1.5]})
    with pytest.raises(ValueError, match="Unknown datetime part 'minute'"):
        DatetimeEncoder(columns=["d"], parts=["minute"]).fit({"d": ["2020-01-01"]})


def test_all_missing_datetime_column_is_zero():
    table = pa.table({"d": pa.array([None, None], pa.timestamp("s"))})
    out = DatetimeEncoder(columns=["d"]).fit(table).transform(table)
    np.testing.assert_array_equal(out, 0.0)


def test_boolean_values_and_most_frequent_imputation():
    enc = BooleanEncoder(columns=["b"]).fit({"b": [True, True, False, None]})
    out = enc.transform({"b": pa.array([False, True, None])})
    np.testing.assert_array_equal(out.ravel(), [0.0, 1.0, 1.0])
    text = BooleanEncoder(columns=["b"]).fit({"b": ["Yes", "no", "n", None]})
    np.testing.assert_array_equal(text.transform({"b": ["TRUE", None]}).ravel(), [1.0, 0.0])
    numbers = BooleanEncoder(columns=["b"]).fit({"b": [0, 2, 0]})
    np.testing.assert_array_equal(numbers.transform({"b": [5, 0]}).ravel(), [1.0, 0.0])


def test_boolean_merge_and_bad_text():
    table = pa.table({"b": pa.array([True, None, False, False])})
    make = lambda: BooleanEncoder(columns=["b"])  # noqa: E731
    assert_state_close(fit_merged(make, split_rows(table, [2])), make().fit(table))
    with pytest.raises(SchemaError, match="'b' is configured as boolean but holds 'maybe'"):
        BooleanEncoder(columns=["b"]).fit({"b": ["yes", "maybe"]})
