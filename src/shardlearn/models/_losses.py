"""Per-block loss and gradient kernels for the linear models (pure numpy, no engine).

Every kernel works on one worker's feature block, dense or CSR, in row chunks small enough to
stay in cache: for a chunk we compute the scores ``Z = X_c W^T + b``, the loss and its
derivative ``R = dloss/dZ`` from ``Z``, then ``R^T X_c`` while ``X_c`` is still in cache. So a
function evaluation is one pass over the data. Chunks are converted to float64 (a cache-sized
buffer) so the objective is the same float64 objective scikit-learn minimises, whatever the
storage dtype of the block.

The kernels return *sums* over rows (weighted by the sample weights); the driver divides by the
total weight and adds the penalty, exactly like scikit-learn's ``LinearModelLoss``:

    f(W, b) = sum_i s_i * loss_i / sum_i s_i + 0.5 / (C * sum_i s_i) * ||W||^2

Losses are strategy objects in :data:`LOSSES` (one per loss), not an if/elif chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, logsumexp

from shardlearn._typing import Matrix

__all__ = ["LOSSES", "Loss", "block_loss_gradient", "chunk_rows_for", "decision_scores"]

# A chunk of about 512 KiB of float64 values fits in L2 next to its scores and residuals, so
# the second product (R^T X_c) reads the chunk from cache, not from memory.
CHUNK_BYTES = 512 * 1024
MIN_CHUNK_ROWS = 64


@dataclass(frozen=True)
class Loss:
    """A loss on the scores ``Z`` (n x K) of one chunk.

    ``value_and_derivative(Z, Y, s)`` returns the weighted loss sum and ``s * dloss/dZ``.
    ``Y`` is the encoded target for the loss (see :meth:`encode`).
    """

    name: str

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """The target encoding this loss expects, from int64 class indices."""
        raise NotImplementedError

    def value_and_derivative(
        self, Z: np.ndarray, Y: np.ndarray, s: np.ndarray | None
    ) -> tuple[float, np.ndarray]:
        raise NotImplementedError


class _BinaryLogistic(Loss):
    """scikit-learn's HalfBinomialLoss: ``log(1 + exp(z)) - y z`` with y in {0, 1}."""

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        return (y == 1).astype(np.float64)[:, None]

    def value_and_derivative(self, Z, Y, s):
        loss = np.logaddexp(0.0, Z) - Y * Z
        R = expit(Z) - Y
        if s is not None:
            loss *= s[:, None]
            R *= s[:, None]
        return float(loss.sum()), R


class _Multinomial(Loss):
    """scikit-learn's HalfMultinomialLoss: ``logsumexp(z) - z_y`` (full K-class softmax)."""

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        return y.astype(np.intp)

    def value_and_derivative(self, Z, Y, s):
        rows = np.arange(Z.shape[0])
        lse = logsumexp(Z, axis=1)
        loss = lse - Z[rows, Y]
        R = np.exp(Z - lse[:, None])
        R[rows, Y] -= 1.0
        if s is not None:
            loss = loss * s
            R *= s[:, None]
        return float(loss.sum()), R


class _SquaredHinge(Loss):
    """One-vs-rest squared hinge ``max(0, 1 - t z)^2`` with t in {-1, +1} per output."""

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        if n_outputs == 1:
            return np.where(y == 1, 1.0, -1.0)[:, None]
        T = np.full((y.shape[0], n_outputs), -1.0)
        T[np.arange(y.shape[0]), y] = 1.0
        return T

    def value_and_derivative(self, Z, Y, s):
        margin = np.maximum(0.0, 1.0 - Y * Z)
        loss = margin * margin
        R = -2.0 * Y * margin
        if s is not None:
            loss *= s[:, None]
            R *= s[:, None]
        return float(loss.sum()), R


LOSSES: dict[str, Loss] = {
    "binary_logistic": _BinaryLogistic("binary_logistic"),
    "multinomial": _Multinomial("multinomial"),
    "squared_hinge": _SquaredHinge("squared_hinge"),
}


def chunk_rows_for(n_features: int) -> int:
    """Rows per chunk so that a float64 chunk of ``n_features`` columns fits in cache."""
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // (8 * max(1, n_features)))


def _sparse_chunk_rows(X: sp.csr_matrix) -> int:
    """Rows per CSR chunk: about CHUNK_BYTES of stored values, whatever the width."""
    per_row = 12.0 * X.nnz / max(1, X.shape[0])  # float64 value + int32 index
    return max(MIN_CHUNK_ROWS, int(CHUNK_BYTES / max(per_row, 1.0)))


def block_loss_gradient(
    loss: Loss,
    X: Matrix,
    Y: np.ndarray,
    sample_weight: np.ndarray | None,
    coef: np.ndarray,
    intercept: np.ndarray,
    fit_intercept: bool = True,
) -> np.ndarray:
    """Weighted loss sum and gradient sums of one block, in one pass over ``X``.

    Parameters
    ----------
    loss : Loss
        One of :data:`LOSSES`.
    X : ndarray or csr_matrix of shape (n, p)
        The block (any float dtype).
    Y : ndarray
        ``loss.encode(y, K)`` for the block's class indices.
    sample_weight : ndarray of shape (n,) or None
        Per-row weights (class weights already folded in).
    coef : ndarray of shape (K, p), float64
    intercept : ndarray of shape (K,), float64
    fit_intercept : bool
        Whether the intercept gradient is wanted (it is returned as zeros otherwise).

    Returns
    -------
    ndarray of shape (1 + K * (p + 1),)
        ``[loss_sum, grad_coef.ravel(), grad_intercept]``; flat so partial results from
        several workers combine with ``+``.
    """
    n, p = X.shape
    K = coef.shape[0]
    grad_coef = np.zeros((K, p))
    grad_intercept = np.zeros(K)
    total = 0.0
    dense = not sp.issparse(X)
    step = chunk_rows_for(p) if dense else _sparse_chunk_rows(X)
    buffer = np.empty((min(step, n), p)) if dense and X.dtype != np.float64 else None
    coef_t = np.ascontiguousarray(coef.T)
    for start in range(0, n, step):
        stop = min(start + step, n)
        if dense:
            chunk = X[start:stop]
            if buffer is not None:
                chunk = buffer[: stop - start]
                np.copyto(chunk, X[start:stop], casting="same_kind")
        else:
            chunk = X[start:stop]
            if chunk.dtype != np.float64:
                chunk = chunk.astype(np.float64)
        Z = chunk @ coef_t
        Z += intercept
        s = None if sample_weight is None else sample_weight[start:stop]
        value, R = loss.value_and_derivative(Z, Y[start:stop], s)
        total += value
        # (R^T X_c): for CSR, X_c.T @ R runs as a CSC product without materialising X_c.T.
        grad_coef += np.asarray(chunk.T @ R).T
        if fit_intercept:
            grad_intercept += R.sum(axis=0)
    return np.concatenate(([total], grad_coef.ravel(), grad_intercept))


def decision_scores(X: Matrix, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Scores ``X W^T + b`` of shape (n, K) in float64, chunked like the kernels."""
    n, p = X.shape
    out = np.empty((n, coef.shape[0]))
    step = _sparse_chunk_rows(X) if sp.issparse(X) else chunk_rows_for(p)
    coef_t = np.ascontiguousarray(coef.T, dtype=np.float64)
    for start in range(0, n, step):
        chunk = X[start : start + step]
        if chunk.dtype != np.float64:
            chunk = chunk.astype(np.float64)
        out[start : start + step] = np.asarray(chunk @ coef_t)
    out += intercept
    return out
