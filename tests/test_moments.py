"""The one Chan merge (shardlearn._moments) against numpy's one-pass statistics."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlearn._moments import merge_moments


def _vector_summary(x: np.ndarray) -> tuple:
    mean = x.mean(0) if len(x) else np.zeros(x.shape[1])
    return len(x), mean, ((x - mean) ** 2).sum(0)


def _scatter_summary(x: np.ndarray) -> tuple:
    mean = x.mean(0) if len(x) else np.zeros(x.shape[1])
    centred = x - mean
    return len(x), mean, centred.T @ centred


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 60),
    features=st.integers(1, 4),
    cuts=st.lists(st.floats(0, 1), max_size=5),
    offset=st.sampled_from([0.0, 1e6]),
)
def test_merged_random_splits_equal_numpy_on_all_rows(seed, rows, features, cuts, offset):
    """Any split into parts (empty ones too), merged left to right, gives numpy's mean,
    variance and covariance of all rows, also with a mean large against the spread."""
    x = np.random.default_rng(seed).normal(size=(rows, features)) + offset
    bounds = [0, *sorted(int(c * rows) for c in cuts), rows]
    parts = [x[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    vector = _vector_summary(parts[0])
    scatter = _scatter_summary(parts[0])
    for part in parts[1:]:
        vector = merge_moments(vector, _vector_summary(part))
        scatter = merge_moments(scatter, _scatter_summary(part))
    for count, mean, _ in (vector, scatter):
        assert count == rows
        np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(vector[2] / rows, x.var(0), rtol=1e-7, atol=1e-9)
    expected = np.atleast_2d(np.cov(x, rowvar=False, bias=True))
    np.testing.assert_allclose(scatter[2] / rows, expected, rtol=1e-7, atol=1e-9)


def test_per_feature_counts_and_an_empty_side():
    """Counts may differ per feature (missing values); a feature with no rows has mean 0."""
    a = (np.array([2.0, 0.0]), np.array([1.0, 0.0]), np.array([2.0, 0.0]))
    b = (np.array([1.0, 0.0]), np.array([4.0, 0.0]), np.array([0.0, 0.0]))
    count, mean, m2 = merge_moments(a, b)
    np.testing.assert_array_equal(count, [3.0, 0.0])
    np.testing.assert_allclose(mean, [2.0, 0.0])
    np.testing.assert_allclose(m2, [2.0 + 9.0 * 2.0 / 3.0, 0.0])
