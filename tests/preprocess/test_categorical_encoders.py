"""CategoricalEncoder vs OneHotEncoder(max_categories); HashingEncoder vs FeatureHasher."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from _preprocess_helpers import assert_state_close, fit_merged, split_rows
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction import FeatureHasher
from sklearn.preprocessing import OneHotEncoder

from shardlearn.preprocess import CategoricalEncoder, HashingEncoder


@st.composite
def category_tables(draw):
    rows = draw(st.integers(0, 80))
    values = draw(st.lists(st.sampled_from(list("abcdefgh")), min_size=rows, max_size=rows))
    cuts = draw(st.lists(st.integers(0, rows), max_size=4))
    return pa.table({"c": pa.array(values, pa.string())}), cuts


@settings(max_examples=40, deadline=None)
@given(category_tables(), st.integers(1, 6))
def test_merged_fits_equal_one_hot_encoder_with_max_categories(data, top_k):
    table, cuts = data
    make = lambda: CategoricalEncoder(columns=["c"], top_k=top_k)  # noqa: E731
    merged = fit_merged(make, split_rows(table, cuts))
    assert_state_close(merged, make().fit(table))
    x = np.array(table.column("c").to_pylist(), dtype=object).reshape(-1, 1)
    if len(set(x.ravel())) <= top_k:
        return  # scikit-learn creates no infrequent column then; ours always has "other"
    reference = OneHotEncoder(
        max_categories=top_k + 1, handle_unknown="infrequent_if_exist", sparse_output=False
    ).fit(x)
    np.testing.assert_array_equal(merged.transform(table), reference.transform(x))
    kept = [n.split("=", 1)[1] for n in merged.feature_names_out_[:-1]]
    assert kept == [n[len("x0_") :] for n in reference.get_feature_names_out()[:-1]]


@settings(max_examples=30, deadline=None)
@given(category_tables(), category_tables(), category_tables())
def test_merge_is_associative(a, b, c):
    make = lambda t: CategoricalEncoder(columns=["c"], top_k=3).partial_fit(t[0])  # noqa: E731
    left = make(a).merge(make(b)).merge(make(c)).finalize()
    right = make(a).merge(make(b).merge(make(c))).finalize()
    assert_state_close(left, right)


def test_unseen_and_missing_categories_go_to_other_without_error():
    enc = CategoricalEncoder(columns=["c"], top_k=5).fit({"c": ["a", "b", "a"]})
    assert enc.feature_names_out_ == ["c=a", "c=b", "c=__other__"]
    out = enc.transform({"c": pa.array(["never-seen", None, "b", ""])})
    np.testing.assert_array_equal(out, [[0, 0, 1], [0, 0, 1], [0, 1, 0], [0, 0, 1]])


def test_numbers_and_text_name_the_same_category():
    enc = CategoricalEncoder(columns=["code"]).fit({"code": pa.array([1, 2, 2])})
    out = enc.transform({"code": pa.array([2.0, 1.0])})
    np.testing.assert_array_equal(out, [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(enc.transform({"code": ["2"]}), [[0, 1, 0]])


def test_all_missing_column_is_only_other():
    enc = CategoricalEncoder(columns=["c"]).fit({"c": pa.array([None, None], pa.string())})
    assert enc.feature_names_out_ == ["c=__other__"]
    np.testing.assert_array_equal(enc.transform({"c": ["x"]}), [[1.0]])


def test_tracked_categories_are_bounded():
    values = [f"v{i}" for i in range(50)] + ["hot"] * 10
    enc = CategoricalEncoder(columns=["c"], top_k=1, max_tracked=5).fit({"c": values})
    assert enc.categories_ == [["hot"]]


@settings(max_examples=30, deadline=None)
@given(category_tables(), st.booleans())
def test_hashing_matches_feature_hasher(data, alternate_sign):
    table, _ = data
    enc = HashingEncoder(columns=["c"], n_features=16, alternate_sign=alternate_sign).fit(table)
    rows = [[f"c={v}"] for v in table.column("c").to_pylist()]
    hasher = FeatureHasher(16, input_type="string", alternate_sign=alternate_sign)
    expected = hasher.transform(rows).toarray() if rows else np.zeros((0, 16))
    got = enc.transform(table)
    assert got.dtype == np.float32 and got.format == "csr"
    np.testing.assert_array_equal(got.toarray(), expected)


def test_hashing_skips_missing_values():
    enc = HashingEncoder(columns=["c"], n_features=8).fit({"c": ["a"]})
    assert enc.transform({"c": pa.array([None], pa.string())}).nnz == 0
    assert len(enc.feature_names_out_) == 8
