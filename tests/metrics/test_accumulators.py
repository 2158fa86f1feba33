"""Accumulators merge like one pass, and binned areas stay within their documented bound."""

from __future__ import annotations

import copy
import functools
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlearn.metrics import (
    EvaluationAccumulator,
    ScoreHistogram,
    UndefinedMetricWarning,
    average_precision,
    roc_auc,
    summarize,
)
from shardlearn.metrics.accumulators import BIN_BUDGET, default_bins, score_bin

from ._reference import per_class_areas
from .test_functions import EXACT, SCALARS, predictions


def quiet_summary(acc: EvaluationAccumulator) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return summarize(acc, list(range(acc.n_classes)))


def sharded(y, proba, w, cuts, **kw) -> list[EvaluationAccumulator]:
    """One accumulator per shard, the shards cut at ``cuts``."""
    bounds = [0, *sorted(cuts), len(y)]
    return [
        EvaluationAccumulator(proba.shape[1], **kw).update(
            y[a:b], proba[a:b], None if w is None else w[a:b]
        )
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def tree_merge(parts: list[EvaluationAccumulator]) -> EvaluationAccumulator:
    """Pairwise merge, like the engine's tree reduce."""
    parts = [copy.deepcopy(p) for p in parts]
    while len(parts) > 1:
        parts = [
            parts[i].merge(parts[i + 1]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


def assert_same_summary(a: dict, b: dict) -> None:
    for key in (*SCALARS, "roc_auc", "pr_auc", "roc_auc_weighted", "pr_auc_weighted"):
        assert a[key] == pytest.approx(b[key], rel=EXACT, abs=EXACT, nan_ok=True), key
    np.testing.assert_allclose(a["confusion_matrix"], b["confusion_matrix"], rtol=EXACT)


@pytest.mark.parametrize("exact_limit", [None, 0])
def test_many_shards_including_one_row_shards_equal_one_pass(exact_limit) -> None:
    y, proba, w = predictions(600, 4, seed=11)
    rng = np.random.default_rng(0)
    cuts = [*rng.choice(np.arange(1, 600), 40, replace=False), 1, 2, 3, 599]  # 1-row shards
    one = EvaluationAccumulator(4, exact_limit=exact_limit).update(y, proba, w)
    parts = sharded(y, proba, w, set(cuts), exact_limit=exact_limit)
    assert min(p.losses.rows for p in parts) == 1
    sequential = functools.reduce(lambda a, b: a + b, parts)
    assert_same_summary(quiet_summary(tree_merge(parts)), quiet_summary(one))
    assert_same_summary(quiet_summary(sequential), quiet_summary(one))


def test_exact_mode_collapses_to_the_same_bins_whatever_the_merge_order() -> None:
    y, proba, _ = predictions(300, 2, seed=12)
    parts = sharded(y, proba, None, [100, 200], bins=256)  # 100 distinct scores per shard
    assert all(p.scores.exact for p in parts)
    forward = tree_merge(parts)
    backward = tree_merge(parts[::-1])
    single = EvaluationAccumulator(2, bins=256, exact_limit=0).update(y, proba)
    for merged in (forward, backward):
        assert not merged.scores.exact
        for k in range(2):
            np.testing.assert_allclose(merged.scores.positive[k], single.scores.positive[k])
            np.testing.assert_allclose(merged.scores.negative[k], single.scores.negative[k])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 30), min_size=3, max_size=3),
    seed=st.integers(0, 2**32 - 1),
    exact_limit=st.sampled_from([None, 0, 20]),
)
def test_merge_is_associative(sizes, seed, exact_limit) -> None:
    y, proba, w = predictions(sum(sizes), 3, seed=seed % 1000)
    cuts = np.cumsum(sizes)[:-1]
    a, b, c = sharded(y, proba, w, list(cuts), bins=64, exact_limit=exact_limit)
    left = (a + b) + c
    right = a + (b + c)
    np.testing.assert_allclose(left.confusion.matrix, right.confusion.matrix, rtol=EXACT)
    assert left.scores.exact == right.scores.exact
    for k in range(3):
        np.testing.assert_allclose(left.scores.positive[k], right.scores.positive[k], rtol=EXACT)
        np.testing.assert_allclose(left.scores.negative[k], right.scores.negative[k], rtol=EXACT)
    assert left.losses.log_loss == pytest.approx(right.losses.log_loss, rel=EXACT, abs=EXACT)


def test_bins_are_monotone_and_fine_in_the_tails() -> None:
    p = np.sort(np.random.default_rng(0).uniform(size=100_000))
    p = np.concatenate([[0.0, 1e-15, 1e-9, 1e-6], p, [1 - 1e-9, 1.0]])
    index = score_bin(p, 2**16)
    assert np.all(np.diff(index) >= 0)
    assert index[0] == 0 and index[-1] == 2**16 - 1
    # 1e-6 and 2e-6 are one bin apart in a uniform 2**16 histogram, not here.
    assert score_bin(np.array([2e-6]), 2**16)[0] - score_bin(np.array([1e-6]), 2**16)[0] > 100


def test_default_bins_stay_within_the_memory_budget() -> None:
    assert default_bins(2) == 2**16
    assert default_bins(16) == 2**16
    assert default_bins(100) * 100 <= BIN_BUDGET
    assert default_bins(100) == 2**13


# Score distributions chosen to hurt a histogram: ties, everything in one bin, the extreme
# tails, a few distinct values, and plain uniform scores.
def _scores(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "all_equal":
        return np.full(n, 0.37)
    if kind == "one_bin":
        return 0.5 + rng.uniform(0, 1e-9, n)
    if kind == "tails":
        return np.where(
            rng.uniform(size=n) < 0.5, rng.uniform(0, 1e-10, n), 1 - rng.uniform(0, 1e-10, n)
        )
    if kind == "few_values":
        return rng.choice([0.1, 0.2, 0.2000001, 0.9], n)
    return rng.uniform(size=n)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["all_equal", "one_bin", "tails", "few_values", "uniform"]),
    n=st.integers(2, 400),
    bins=st.sampled_from([1, 4, 64, 2**16]),
    weighted=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_binned_areas_are_within_the_documented_bound_of_sklearn(kind, n, bins, weighted, seed):
    rng = np.random.default_rng(seed)
    p1 = _scores(kind, n, rng)
    y = (rng.uniform(size=n) < np.clip(p1, 0.2, 0.8)).astype(np.int64)
    y[:2] = [0, 1]  # both classes present
    w = rng.uniform(0.1, 2.0, n) if weighted else None
    proba = np.column_stack([1 - p1, p1])
    ref_roc, ref_ap = per_class_areas(y, proba, w)
    for exact_limit in (0, None):
        hist = ScoreHistogram(2, bins, exact_limit)
        hist.update(y, proba, np.ones(n) if w is None else w)
        roc = roc_auc(hist, "binary")
        ap = average_precision(hist, "binary")
        if exact_limit is None and hist.exact:
            assert roc.error_bound == 0 and ap.error_bound == 0
        assert abs(roc.value - ref_roc[1]) <= roc.error_bound + EXACT
        assert abs(ap.value - ref_ap[1]) <= ap.error_bound + EXACT


def test_the_bound_is_tight_when_one_bin_hides_a_perfect_ranking() -> None:
    p1 = np.array([0.5, 0.5 + 1e-10])
    y = np.array([0, 1])
    hist = ScoreHistogram(2, 2**16, exact_limit=0).update(
        y, np.column_stack([1 - p1, p1]), np.ones(2)
    )
    roc = roc_auc(hist, "binary")
    assert roc.value == 0.5 and roc.error_bound == 0.5  # the exact AUC is 1.0
    exact = ScoreHistogram(2, 2**16).update(y, np.column_stack([1 - p1, p1]), np.ones(2))
    assert roc_auc(exact, "binary") == (1.0, 0.0)


def test_binned_auc_is_close_on_realistic_scores_with_2_16_bins() -> None:
    y, proba, _ = predictions(50_000, 2, seed=13)
    acc = EvaluationAccumulator(2, exact_limit=0).update(y, proba)
    ours = quiet_summary(acc)
    ref_roc, ref_ap = per_class_areas(y, proba)
    assert ours["roc_auc_error_bound"] < 1e-4
    assert abs(ours["roc_auc"] - ref_roc[1]) <= ours["roc_auc_error_bound"] + EXACT
    assert abs(ours["pr_auc"] - ref_ap[1]) <= ours["pr_auc_error_bound"] + EXACT
