"""NumericTransformer against scikit-learn's imputers and scalers; merge laws; edge cases."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from _preprocess_helpers import assert_state_close, fit_merged, split_rows
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from shardlearn.exceptions import NotFittedError, SchemaError
from shardlearn.preprocess import NumericTransformer, QuantileSketch, rank_error

SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
IMPUTES = ["mean", "median", "most_frequent", "constant"]


@st.composite
def numeric_tables(draw):
    rows = draw(st.integers(0, 60))
    columns = draw(st.integers(1, 3))
    # Few distinct values (ties, exact quantiles) mixed with wide-ranging floats.
    value = st.one_of(
        st.sampled_from([-2.0, 0.0, 1.5, 3.0]),
        st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False).filter(
            lambda v: v == 0 or abs(v) > 1e-6
        ),
        st.just(np.nan),
    )
    data = {f"c{j}": draw(st.lists(value, min_size=rows, max_size=rows)) for j in range(columns)}
    table = pa.table({k: pa.array(v, pa.float64()) for k, v in data.items()})
    cuts = draw(st.lists(st.integers(0, rows), max_size=4))
    return table, cuts


def _sklearn(impute: str, scale: str, x: np.ndarray) -> np.ndarray:
    imputer = SimpleImputer(strategy=impute, fill_value=0.0, keep_empty_features=True)
    return make_pipeline(imputer, SCALERS[scale]()).fit(x).transform(x)


def _matrix(table: pa.Table) -> np.ndarray:
    return np.column_stack(
        [table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names]
    )


@settings(max_examples=25, deadline=None)
@given(numeric_tables(), st.sampled_from(IMPUTES), st.sampled_from(list(SCALERS)))
def test_merged_shard_fits_equal_scikit_learn_on_the_whole_data(data, impute, scale):
    table, cuts = data
    make = lambda: NumericTransformer(columns=table.column_names, impute=impute, scale=scale)  # noqa: E731
    merged = fit_merged(make, split_rows(table, cuts))
    one_pass = make().fit(table)
    assert_state_close(merged, one_pass)
    if table.num_rows:
        x = _matrix(table)
        expected = _sklearn(impute, scale, x)
        got = merged.transform(table)
        assert got.dtype == np.float32
        assert np.all(np.abs(got - expected) <= 1e-6 * (1 + np.abs(expected)))
        # The fitted statistics themselves, to 1e-9 relative.
        reference = make_pipeline(
            SimpleImputer(strategy=impute, fill_value=0.0, keep_empty_features=True),
            SCALERS[scale](),
        ).fit(x)
        np.testing.assert_allclose(
            merged.impute_values_, reference[0].statistics_.astype(float), rtol=1e-9, atol=1e-12
        )
        scaler = reference[1]
        ref_scale = scaler.scale_ if scale != "minmax" else 1 / scaler.scale_
        np.testing.assert_allclose(merged.scale_, ref_scale, rtol=1e-9)


@settings(max_examples=25, deadline=None)
@given(numeric_tables(), st.sampled_from(IMPUTES), st.sampled_from(list(SCALERS)))
def test_merge_is_associative(data, impute, scale):
    table, cuts = data
    pieces = split_rows(table, [*cuts, 0, 0][:2])
    make = lambda: NumericTransformer(columns=table.column_names, impute=impute, scale=scale)  # noqa: E731
    a, b = ([make().partial_fit(p) for p in pieces] for _ in range(2))
    left = a[0].merge(a[1]).merge(a[2]).finalize()
    right = b[0].merge(b[1].merge(b[2])).finalize()
    assert_state_close(left, right)


def test_missing_indicator_matches_scikit_learn_missing_only():
    x = np.array([[1.0, 2.0], [np.nan, 3.0], [4.0, 5.0]])
    table = pa.table({"a": x[:, 0], "b": x[:, 1]})
    t = NumericTransformer(columns=["a", "b"], add_indicator=True, scale=None).fit(table)
    assert t.feature_names_out_ == ["a", "b", "a_missing"]
    out = t.transform(table)
    np.testing.assert_array_equal(out[:, 2:], MissingIndicator().fit_transform(x).astype(float))
    np.testing.assert_allclose(out[:, :2], SimpleImputer().fit_transform(x))


def test_clip_bounds_scaled_values():
    table = pa.table({"x": [0.0, 0.0, 0.0, 100.0]})
    out = NumericTransformer(columns=["x"], clip=1.0).fit(table).transform(table)
    assert out.max() == 1.0 and out.min() >= -1.0


def test_huge_scaled_values_saturate_at_the_float32_limit():
    table = pa.table({"x": [0.0, 0.0, 1e-30, 1e-30, 1e20]})
    out = NumericTransformer(columns=["x"], scale="robust").fit(table).transform(table)
    assert np.isfinite(out).all() and out.max() == np.finfo(np.float32).max


def test_constant_and_all_missing_columns_give_finite_output():
    table = pa.table({"const": [7.0] * 5, "empty": pa.array([None] * 5, pa.float64())})
    for scale in SCALERS:
        t = NumericTransformer(columns=["const", "empty"], scale=scale).fit(table)
        out = t.transform(table)
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(t.scale_, [1.0, 1.0])
        np.testing.assert_array_equal(out[:, 1], 0.0)


def test_empty_fit_then_transform_is_all_zero():
    t = NumericTransformer(columns=["x"]).partial_fit(pa.table({"x": pa.array([], pa.float64())}))
    out = t.finalize().transform({"x": [1.0, None]})
    assert out.shape == (2, 1)
    np.testing.assert_array_equal(out[:, 0], [1.0, 0.0])


def test_integer_and_boolean_inputs_are_numbers():
    t = NumericTransformer(columns=["i"], scale=None).fit({"i": pa.array([1, None, 3])})
    np.testing.assert_array_equal(t.transform({"i": pa.array([None, 5])}).ravel(), [2.0, 5.0])


def test_text_in_a_numeric_column_is_a_schema_error_naming_it():
    with pytest.raises(SchemaError, match="'x' is configured as numeric"):
        NumericTransformer(columns=["x"]).fit({"x": ["a", "b"]})


def test_missing_column_is_a_schema_error_listing_present_columns():
    t = NumericTransformer(columns=["x"]).fit({"x": [1.0]})
    with pytest.raises(SchemaError, match="missing column 'x'.*Columns present: y"):
        t.transform({"y": [1.0]})


def test_bad_parameters_name_the_parameter():
    with pytest.raises(ValueError, match="The 'scale' parameter of NumericTransformer"):
        NumericTransformer(columns=["x"], scale="zscore").fit({"x": [1.0]})
    with pytest.raises(NotFittedError):
        NumericTransformer(columns=["x"]).transform({"x": [1.0]})


def test_merging_different_parameters_is_refused():
    a = NumericTransformer(columns=["x"]).partial_fit({"x": [1.0]})
    b = NumericTransformer(columns=["x"], scale="robust").partial_fit({"x": [1.0]})
    with pytest.raises(ValueError, match="same parameters"):
        a.merge(b)


# -- quantile sketch --------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, 2.5, 4.0, 9.0]), max_size=50), st.integers(0, 50))
def test_exact_quantiles_equal_numpy_percentiles(values, cut):
    x = np.array(values)
    a = QuantileSketch().update(x[:cut]).merge(QuantileSketch().update(x[cut:]))
    qs = [0.0, 0.25, 0.5, 0.75, 1.0]
    if x.size:
        np.testing.assert_allclose(a.quantiles(qs), np.percentile(x, [q * 100 for q in qs]))
    else:
        assert np.isnan(a.quantiles(qs)).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sketch_quantiles_are_within_the_documented_rank_error(seed):
    rng = np.random.default_rng(seed)
    x = rng.lognormal(size=40_000)
    parts = [QuantileSketch(max_exact=100).update(chunk) for chunk in np.array_split(x, 7)]
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    assert not merged.exact
    eps = rank_error(200)
    assert 0.01 < eps < 0.02
    for q, estimate in zip(
        [0.1, 0.25, 0.5, 0.75, 0.9], merged.quantiles([0.1, 0.25, 0.5, 0.75, 0.9]), strict=True
    ):
        rank = np.mean(x <= estimate)
        assert q - eps <= rank <= q + eps


def test_robust_scaling_on_a_high_cardinality_column_is_within_the_sketch_bound():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30_000)
    table = pa.table({"x": x})
    t = fit_merged(
        lambda: NumericTransformer(columns=["x"], scale="robust"), split_rows(table, [9000, 20000])
    )
    eps = rank_error(200)
    assert abs(np.mean(x <= t.center_[0]) - 0.5) <= eps
    q25, q75 = np.quantile(x, [0.25 - eps, 0.75 + eps])
    assert t.scale_[0] <= q75 - q25
