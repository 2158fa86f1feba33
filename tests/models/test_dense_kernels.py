"""The fused (numba) one-output passes against straightforward float64 formulas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.special import expit

from shardlearn.models._training.chunks import chunk_rows_for
from shardlearn.models.linear_model._dense_kernels import (
    FUSED_LOSSES,
    block_rows_for,
    fused_loss_gradient,
)
from shardlearn.models.linear_model._losses import LOSSES, BlockKernel

NAMES = ["binary_logistic", "squared_hinge"]


def _reference(name, X, y, s, coef, intercept):
    """``[loss sum, gradient sums..., intercept sum]`` in float64 on the whole block."""
    z = X.astype(np.float64) @ coef + intercept
    if name == "binary_logistic":
        # log(1 + exp(z)) - y z = softplus(u) with u = (1 - 2y) z, written without cancellation
        sign = np.where(y == 1, -1.0, 1.0)
        u = sign * z
        loss = np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))
        r = sign * expit(u)
    else:
        t = np.where(y == 1, 1.0, -1.0)
        margin = np.maximum(0.0, 1.0 - t * z)
        loss, r = margin**2, -2.0 * t * margin
    if s is not None:
        loss, r = loss * s, r * s
    return np.concatenate(([loss.sum()], r @ X.astype(np.float64), [r.sum()]))


def _problem(n, p, seed=0, dtype=np.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(dtype)
    y = rng.integers(0, 2, size=n)
    coef = rng.standard_normal(p) * scale / np.sqrt(p)
    return X, y, rng.uniform(0.5, 2.0, size=n), coef, float(rng.standard_normal())


def _fused(name, X, y, s, coef, intercept, dtype, chunk_rows, stride=1):
    targets = LOSSES[name].encode(y, 1)[0].astype(dtype)
    weights = None if s is None else s.astype(dtype)
    return fused_loss_gradient(
        name, X, targets, weights, coef.astype(dtype), intercept, chunk_rows, stride
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("storage", [np.float32, np.float64])
def test_float64_pass_equals_the_formulas_across_blocks_and_chunks(name, weighted, storage):
    p = 7  # rows of 7 values: blocks of thousands of rows, a partial 4-row group at the end
    chunk = chunk_rows_for(p, np.dtype(storage).itemsize)
    n = 3 * chunk + 4 * 17 + 3
    X, y, s, coef, intercept = _problem(n, p, dtype=storage)
    s = s if weighted else None
    ours = _fused(name, X, y, s, coef, intercept, np.float64, chunk)
    ref = _reference(name, X, y, s, coef, intercept)
    assert block_rows_for(p, X.itemsize) < chunk < n
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("weighted", [False, True])
def test_float32_pass_is_close_to_the_formulas(name, weighted):
    X, y, s, coef, intercept = _problem(20_000, 30, seed=1)
    s = s if weighted else None
    fast = _fused(name, X, y, s, coef, intercept, np.float32, chunk_rows_for(30, 4))
    ref = _reference(name, X, y, s, coef, intercept)
    assert not np.array_equal(fast, ref)  # really computed in float32
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("stride", [2, 3])
def test_a_stride_sums_every_strideth_chunk_only(stride):
    X, y, s, coef, intercept = _problem(10_000, 5, seed=2)
    chunk = 700
    ours = _fused("binary_logistic", X, y, s, coef, intercept, np.float64, chunk, stride)
    rows = np.concatenate(
        [np.arange(a, min(a + chunk, len(y))) for a in range(0, len(y), chunk * stride)]
    )
    ref = _reference("binary_logistic", X[rows], y[rows], s[rows], coef, intercept)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_tiny_losses_of_well_separated_rows_keep_float64_precision(weighted):
    # Scores of 30..60 in the right direction: each loss is log1p(exp(-u)), 1e-13..1e-26,
    # far below the rounding of 1 + e.
    X, y, s, _, _ = _problem(3000, 4, seed=3)
    coef = np.zeros(4)
    t = np.where(y == 1, 1.0, -1.0)
    intercept = 0.0
    X[:, 0] = (t * np.linspace(30.0, 60.0, len(y))).astype(np.float32)
    coef[0] = 1.0
    s = s if weighted else None
    ours = _fused("binary_logistic", X, y, s, coef, intercept, np.float64, 1000)
    ref = _reference("binary_logistic", X, y, s, coef, intercept)
    assert 0 < ref[0] < 1e-10
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


def test_extreme_scores_give_finite_results_and_nan_features_give_nan():
    X, y, _, coef, intercept = _problem(500, 3, seed=4)
    with np.errstate(all="raise"):  # no overflow warnings either
        for scale in (1e3, 1e30):
            out = _fused("binary_logistic", X, y, None, coef * scale, intercept, np.float64, 100)
            assert np.isfinite(out).all()
    X[17, 1] = np.nan
    out = _fused("binary_logistic", X, y, None, coef, intercept, np.float64, 100)
    assert np.isnan(out[0]) and np.isnan(out[1:]).any()


@pytest.mark.parametrize("name", NAMES)
def test_block_kernel_takes_the_fused_pass_only_where_it_applies(name):
    X, y, s, coef, intercept = _problem(3000, 6, seed=5)
    target = LOSSES[name].encode(y, 1)
    fused = BlockKernel(LOSSES[name], X, target, s)
    fortran = BlockKernel(LOSSES[name], np.asfortranarray(X), target, s)  # numpy products
    assert fused._fused_rows is not None and fortran._fused_rows is None
    for precision in ("fast", "exact"):
        a = fused.loss_gradient(coef[None, :], np.array([intercept]), True, precision)
        b = fortran.loss_gradient(coef[None, :], np.array([intercept]), True, precision)
        np.testing.assert_allclose(
            a, b, rtol=0, atol=(1e-5 if precision == "fast" else 1e-11) * np.abs(b).max()
        )
    no_intercept = fused.loss_gradient(coef[None, :], np.array([intercept]), False, "exact")
    assert no_intercept[-1] == 0.0


def test_the_losses_marked_fused_are_the_compiled_ones():
    assert {name for name, loss in LOSSES.items() if loss.fused} == set(FUSED_LOSSES)


def test_importing_a_linear_model_to_predict_does_not_load_numba():
    code = "import sys, shardlearn.models.linear_model._linear; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
