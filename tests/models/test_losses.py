"""The per-block loss kernels against straightforward float64 formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit, logsumexp

from shardlearn.models._training.chunks import chunk_rows_for
from shardlearn.models.linear_model._losses import LOSSES, BlockKernel

N_OUTPUTS = {"binary_logistic": 1, "multinomial": 4, "squared_hinge": 4}


def _reference(name, X, y, s, coef, intercept):
    """Loss sum and gradient sums by the textbook formulas, in float64 on the whole block."""
    X = X.toarray() if sp.issparse(X) else X
    X = X.astype(np.float64)
    Z = X @ coef.T + intercept
    n, k = Z.shape
    if name == "binary_logistic":
        t = (y == 1).astype(float)[:, None]
        loss, R = np.logaddexp(0.0, Z) - t * Z, expit(Z) - t
    elif name == "multinomial":
        lse = logsumexp(Z, axis=1)
        loss = lse - Z[np.arange(n), y]
        R = np.exp(Z - lse[:, None])
        R[np.arange(n), y] -= 1.0
    else:
        T = -np.ones((n, k))
        T[np.arange(n), y] = 1.0
        margin = np.maximum(0.0, 1.0 - T * Z)
        loss, R = margin**2, -2.0 * T * margin
    loss = loss.reshape(n, -1).sum(axis=1) * s
    R = R * s[:, None]
    return np.concatenate(([loss.sum()], (R.T @ X).ravel(), R.sum(axis=0)))


def _problem(name, n, p, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    k = N_OUTPUTS[name]
    X = rng.standard_normal((n, p)).astype(np.float32)
    y = rng.integers(0, 2 if k == 1 else k, size=n)
    coef = rng.standard_normal((k, p)) * scale
    intercept = rng.standard_normal(k)
    s = rng.uniform(0.5, 2.0, size=n)
    return X, y, s, coef, intercept


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("sparse", [False, True])
def test_exact_kernel_equals_the_float64_formulas_across_chunks(name, sparse):
    p = 3
    n = 2 * chunk_rows_for(p, 4) + 123  # several chunks, the last one partial
    X, y, s, coef, intercept = _problem(name, n, p)
    if sparse:
        X[np.abs(X) < 0.8] = 0.0
        X = sp.csr_matrix(X)
    k = N_OUTPUTS[name]
    kernel = BlockKernel(LOSSES[name], X, LOSSES[name].encode(y, k), s)
    ours = kernel.loss_gradient(coef, intercept, True, "exact")
    ref = _reference(name, X, y, s, coef, intercept)
    np.testing.assert_allclose(ours, ref, rtol=1e-11, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fast_kernel_is_float32_products_close_to_the_exact_result(name):
    X, y, s, coef, intercept = _problem(name, 5000, 20, seed=1)
    k = N_OUTPUTS[name]
    kernel = BlockKernel(LOSSES[name], X, LOSSES[name].encode(y, k), s)
    assert kernel.compute_dtype("fast") == np.float32
    assert kernel.compute_dtype("exact") == np.float64
    fast = kernel.loss_gradient(coef, intercept, True, "fast")
    exact = kernel.loss_gradient(coef, intercept, True, "exact")
    assert fast.dtype == np.float64
    assert not np.array_equal(fast, exact)  # really computed in float32
    np.testing.assert_allclose(fast, exact, rtol=0, atol=1e-5 * np.abs(exact).max())


def test_float64_blocks_are_exact_in_both_precisions():
    X, y, s, coef, intercept = _problem("binary_logistic", 3000, 7, seed=2)
    X = X.astype(np.float64)
    kernel = BlockKernel(LOSSES["binary_logistic"], X, LOSSES["binary_logistic"].encode(y, 1), s)
    assert kernel.compute_dtype("fast") == np.float64
    np.testing.assert_array_equal(
        kernel.loss_gradient(coef, intercept, True, "fast"),
        kernel.loss_gradient(coef, intercept, True, "exact"),
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("precision", ["fast", "exact"])
def test_huge_scores_give_finite_results_without_warnings(name, precision):
    # filterwarnings=error: an overflow in exp would fail the test.
    X, y, s, coef, intercept = _problem(name, 500, 5, seed=3, scale=400.0)
    k = N_OUTPUTS[name]
    kernel = BlockKernel(LOSSES[name], X, LOSSES[name].encode(y, k), None)
    out = kernel.loss_gradient(coef, intercept, True, precision)
    assert np.isfinite(out).all()
    ref = _reference(name, X, y, np.ones(len(y)), coef, intercept)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_kernel_without_intercept_returns_zero_intercept_gradient():
    X, y, s, coef, intercept = _problem("multinomial", 400, 6, seed=4)
    kernel = BlockKernel(LOSSES["multinomial"], X, LOSSES["multinomial"].encode(y, 4), s)
    out = kernel.loss_gradient(coef, intercept, False, "exact")
    assert np.all(out[-4:] == 0.0)


def _reference_hessian(name, X, y, s, coef, intercept):
    """``[sum s, H]`` for one output: X~^T diag(s * curvature) X~ with X~ = [X, 1], float64."""
    X = X.toarray() if sp.issparse(X) else X
    Xt = np.hstack([X.astype(np.float64), np.ones((X.shape[0], 1))])
    z = Xt[:, :-1] @ coef[0] + intercept[0]
    if name == "binary_logistic":
        curvature = expit(z) * (1.0 - expit(z))
    else:
        t = np.where(y == 1, 1.0, -1.0)
        curvature = np.where(t * z < 1.0, 2.0, 0.0)
    return s.sum(), (Xt * (s * curvature)[:, None]).T @ Xt


@pytest.mark.parametrize("name", ["binary_logistic", "squared_hinge"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_hessian_equals_the_float64_formula_on_the_sampled_chunks(name, sparse, stride):
    p = 4
    X, y, s, coef, intercept = _problem(name, 2 * chunk_rows_for(p, 4) + 77, p, seed=3)
    coef, intercept = coef[:1] * 0.3, intercept[:1]
    if sparse:
        X[np.abs(X) < 0.8] = 0.0
        X = sp.csr_matrix(X)
    kernel = BlockKernel(LOSSES[name], X, LOSSES[name].encode(y, 1), s)
    out = kernel.hessian(coef, intercept, stride)
    sampled = np.concatenate([np.arange(a, b) for a, b in kernel.bounds[::stride]])
    assert stride == 1 or sampled.size < X.shape[0]
    weight, H = _reference_hessian(name, X[sampled], y[sampled], s[sampled], coef, intercept)
    assert out[0] == pytest.approx(weight, rel=1e-7)  # float32 weights, float64 sum
    # The block is float32, so the products are float32 (accumulated in float64).
    np.testing.assert_allclose(out[1:].reshape(p + 1, p + 1), H, rtol=1e-4, atol=1e-3)


def test_multinomial_has_no_scalar_curvature():
    with pytest.raises(NotImplementedError):
        LOSSES["multinomial"].curvature(np.zeros((3, 5)), np.zeros(5, dtype=np.intp))


@pytest.mark.parametrize("sparse", [False, True])
def test_a_strided_pass_equals_a_kernel_on_the_sampled_rows(sparse):
    p = 3
    X, y, s, coef, intercept = _problem("binary_logistic", 3 * chunk_rows_for(p, 4) + 5, p)
    coef, intercept = coef[:1], intercept[:1]
    if sparse:
        X[np.abs(X) < 0.8] = 0.0
        X = sp.csr_matrix(X)
    loss = LOSSES["binary_logistic"]
    kernel = BlockKernel(loss, X, loss.encode(y, 1), s)
    sampled = np.concatenate([np.arange(a, b) for a, b in kernel.bounds[::2]])
    alone = BlockKernel(loss, X[sampled], loss.encode(y[sampled], 1), s[sampled])
    np.testing.assert_allclose(
        kernel.loss_gradient(coef, intercept, True, "exact", stride=2),
        alone.loss_gradient(coef, intercept, True, "exact"),
        rtol=1e-12,
    )


class _FlagRaisingRows(np.ndarray):
    """Feature rows whose products also raise the "invalid" floating-point flag and return
    the true product, like a BLAS kernel that computes a lane it then discards."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = [x.view(np.ndarray) if isinstance(x, _FlagRaisingRows) else x for x in inputs]
        out = getattr(ufunc, method)(*plain, **kwargs)
        if ufunc is np.matmul:
            np.multiply(np.float32(np.inf), np.float32(0.0))  # the discarded lane
        return out


@pytest.mark.parametrize("name", ["binary_logistic", "multinomial"])
def test_a_spurious_invalid_flag_from_a_product_is_ignored(name):
    # A search's refit failed in a long run on "invalid value encountered in matmul" in the
    # Hessian's scores of finite float32 rows and finite coefficients (pytest turns the
    # warning into an error; a user would see a warning for nothing).
    X, y, s, coef, intercept = _problem(name, 300, 5, seed=4)
    Y = LOSSES[name].encode(y, coef.shape[0])
    flagged = BlockKernel(LOSSES[name], X.view(_FlagRaisingRows), Y, s)
    plain = BlockKernel(LOSSES[name], X, Y, s)
    for precision in ("fast", "exact"):
        np.testing.assert_array_equal(
            flagged.loss_gradient(coef, intercept, precision=precision),
            plain.loss_gradient(coef, intercept, precision=precision),
        )
    if name == "binary_logistic":
        np.testing.assert_array_equal(
            flagged.hessian(coef, intercept), plain.hessian(coef, intercept)
        )


def test_a_non_finite_product_is_an_error_that_says_so():
    X, y, s, coef, intercept = _problem("binary_logistic", 300, 5, seed=5)
    X[7, 2] = np.inf  # inf * 0 at the zero coefficients a fit starts from
    kernel = BlockKernel(LOSSES["binary_logistic"], X, LOSSES["binary_logistic"].encode(y, 1), s)
    with pytest.raises(FloatingPointError, match="not finite .*inf or NaN in the rows"):
        kernel.hessian(np.zeros_like(coef[:1]), intercept[:1])
