"""Per-block loss and gradient kernels for the linear models (pure numpy, no engine).

A :class:`BlockKernel` wraps one worker's feature block (dense or CSR) and evaluates, in one
pass over the data, the weighted loss sum and its gradient at given weights: for each row chunk
(small enough to stay in cache) it computes the scores ``Z = X_c W^T + b``, the loss and its
derivative ``R = dloss/dZ`` from ``Z``, then ``R^T X_c`` while ``X_c`` is still in cache.

Two precisions, chosen per evaluation by the driver:

- ``"fast"``: a float32 block is multiplied in float32 (numpy's BLAS sgemv/sgemm, half the bytes
  of float64 and no conversion), the per-row loss on the small (rows x classes) score matrix
  is computed in float32 too, and every chunk's loss and gradient are accumulated in float64.
  The result is the float64 objective up to float32 rounding (relative ~1e-7 per entry), which
  is plenty while the optimiser is far from the optimum.
- ``"exact"``: chunks are converted to float64 in a cache-sized buffer, so the objective is the
  float64 objective scikit-learn minimises, whatever the storage dtype. The driver switches to
  it for the last iterations (see :mod:`shardlearn.models.linear`).

A float64 block always runs in float64. The kernels return *sums* over rows (weighted by the
sample weights); the driver divides by the total weight and adds the penalty, exactly like
scikit-learn's ``LinearModelLoss``:

    f(W, b) = sum_i s_i * loss_i / sum_i s_i + 0.5 / (C * sum_i s_i) * ||W||^2

Losses are strategy objects in :data:`LOSSES` (one per loss), not an if/elif chain. Chunk views,
per-dtype targets and the float64 conversion buffer are built once per block and reused by
every evaluation, so an evaluation allocates only chunk-sized scratch arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from shardlearn._typing import Matrix

__all__ = [
    "LOSSES",
    "PRECISIONS",
    "BlockKernel",
    "Loss",
    "block_loss_gradient",
    "chunk_rows_for",
    "decision_scores",
]

# A chunk of about 1 MiB of values stays in L2/L3 (1 MiB L2 per core here) next to its scores and
# residuals, so the second product (R^T X_c) reads the chunk from cache, not from memory.
CHUNK_BYTES = 1024 * 1024
MIN_CHUNK_ROWS = 64
PRECISIONS = ("fast", "exact")


@dataclass(frozen=True)
class Loss:
    """A loss on the scores ``Z`` (n x K) of one chunk.

    ``value_and_derivative(Z, Y, s)`` returns the weighted loss sum (a Python float) and
    ``s * dloss/dZ`` in the dtype of ``Z``; ``Y`` (see :meth:`encode`) and ``s`` have that
    dtype too, so nothing is upcast.
    """

    name: str

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """The target encoding this loss expects, from int64 class indices."""
        raise NotImplementedError

    def value_and_derivative(
        self, Z: np.ndarray, Y: np.ndarray, s: np.ndarray | None
    ) -> tuple[float, np.ndarray]:
        raise NotImplementedError


def _weighted_sum(values: np.ndarray, s: np.ndarray | None) -> float:
    if s is None:
        return float(values.sum(dtype=np.float64))
    return float(np.dot(s, values.ravel() if values.ndim > 1 else values))


class _BinaryLogistic(Loss):
    """scikit-learn's HalfBinomialLoss ``log(1 + exp(z)) - y z``, y in {0, 1}.

    Encoded as ``t = 1 - 2y`` in {+1, -1}: the loss is then ``softplus(u)`` with ``u = t z``
    and its derivative ``t * sigmoid(u)``. With ``e = exp(-|u|)``:
    ``softplus(u) = max(u, 0) + log(1 + e)`` and ``sigmoid(u) = 0.5 + sign(u) (1/(1+e) - 0.5)``:
    one exp and one log per row (np.logaddexp and log1p cost several times more). Both
    differ from the exact values by an absolute error of a few ulps of 1, which does not move
    a sum of losses or a gradient.
    """

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        return np.where(y == 1, -1.0, 1.0)[:, None]

    def value_and_derivative(self, Z, Y, s):
        u = Z * Y
        e = np.abs(u)
        np.negative(e, out=e)
        np.exp(e, out=e)
        e += 1.0
        loss = np.maximum(u, 0.0)
        loss += np.log(e)
        R = np.divide(1.0, e, out=e)
        R -= 0.5
        np.copysign(R, u, out=R)
        R += 0.5
        R *= Y
        if s is not None:
            R *= s[:, None]
        return _weighted_sum(loss, s), R


class _Multinomial(Loss):
    """scikit-learn's HalfMultinomialLoss: ``logsumexp(z) - z_y`` (full K-class softmax)."""

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        return y.astype(np.intp)

    def value_and_derivative(self, Z, Y, s):
        rows = np.arange(Z.shape[0])
        top = Z.max(axis=1, keepdims=True)
        R = Z - top
        picked = R[rows, Y]
        np.exp(R, out=R)
        total = R.sum(axis=1, keepdims=True)
        loss = np.log(total[:, 0])
        loss -= picked
        R /= total
        R[rows, Y] -= 1.0
        if s is not None:
            R *= s[:, None]
        return _weighted_sum(loss, s), R


class _SquaredHinge(Loss):
    """One-vs-rest squared hinge ``max(0, 1 - t z)^2`` with t in {-1, +1} per output."""

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        if n_outputs == 1:
            return np.where(y == 1, 1.0, -1.0)[:, None]
        T = np.full((y.shape[0], n_outputs), -1.0)
        T[np.arange(y.shape[0]), y] = 1.0
        return T

    def value_and_derivative(self, Z, Y, s):
        margin = Y * Z
        np.subtract(1.0, margin, out=margin)
        np.maximum(margin, 0.0, out=margin)
        loss = (margin * margin).sum(axis=1, dtype=np.float64)
        R = margin
        R *= Y
        R *= -2.0
        if s is not None:
            R *= s[:, None]
        return _weighted_sum(loss, s), R


LOSSES: dict[str, Loss] = {
    "binary_logistic": _BinaryLogistic("binary_logistic"),
    "multinomial": _Multinomial("multinomial"),
    "squared_hinge": _SquaredHinge("squared_hinge"),
}


def chunk_rows_for(n_features: int, itemsize: int = 8) -> int:
    """Rows per chunk so that a chunk of ``n_features`` columns fits in cache."""
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // (itemsize * max(1, n_features)))


def _sparse_chunk_rows(X: sp.csr_matrix) -> int:
    """Rows per CSR chunk: about CHUNK_BYTES of stored values, whatever the width."""
    per_row = (X.data.itemsize + X.indices.itemsize) * X.nnz / max(1, X.shape[0])
    return max(MIN_CHUNK_ROWS, int(CHUNK_BYTES / max(per_row, 1.0)))


def _csr_rows(X: sp.csr_matrix, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of a CSR matrix sharing its data and indices (no copy)."""
    lo, hi = X.indptr[start], X.indptr[stop]
    indptr = X.indptr[start : stop + 1] - lo
    return sp.csr_matrix(
        (X.data[lo:hi], X.indices[lo:hi], indptr), shape=(stop - start, X.shape[1]), copy=False
    )


def _targets_as(Y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # Class indices (multinomial) stay integers; encoded targets take the score dtype.
    return Y if Y.dtype.kind in "iu" else Y.astype(dtype)


class BlockKernel:
    """Loss and gradient sums of one block, in one pass over it, reusable across evaluations.

    Parameters
    ----------
    loss : Loss
        One of :data:`LOSSES`.
    X : ndarray or csr_matrix of shape (n, p)
        The block (float32 or float64).
    Y : ndarray
        ``loss.encode(y, K)`` for the block's class indices.
    sample_weight : ndarray of shape (n,) or None
        Per-row weights (class weights already folded in).
    """

    def __init__(
        self, loss: Loss, X: Matrix, Y: np.ndarray, sample_weight: np.ndarray | None
    ) -> None:
        self.loss = loss
        self.sparse = sp.issparse(X)
        self.n_rows, self.n_features = X.shape
        self.storage = np.dtype(X.dtype)
        if self.sparse:
            step = _sparse_chunk_rows(X)
        else:
            step = chunk_rows_for(self.n_features, self.storage.itemsize)
        bounds = [(a, min(a + step, self.n_rows)) for a in range(0, self.n_rows, step)]
        self.chunks = [_csr_rows(X, a, b) if self.sparse else X[a:b] for a, b in bounds]
        self.bounds = bounds
        self.targets = {np.dtype(np.float64): _targets_as(Y, np.float64)}
        self.weights = {np.dtype(np.float64): sample_weight}
        if self.storage != np.float64:
            self.targets[self.storage] = _targets_as(Y, self.storage)
            self.weights[self.storage] = (
                None if sample_weight is None else sample_weight.astype(self.storage)
            )
        self._buffer: np.ndarray | None = None

    def compute_dtype(self, precision: str) -> np.dtype:
        """float32 for a float32 block in ``"fast"`` precision, float64 otherwise."""
        if precision == "fast" and self.storage == np.float32:
            return self.storage
        return np.dtype(np.float64)

    def _chunk(self, index: int, dtype: np.dtype) -> Matrix:
        chunk = self.chunks[index]
        if chunk.dtype == dtype:
            return chunk
        if self.sparse:
            return sp.csr_matrix(
                (chunk.data.astype(dtype), chunk.indices, chunk.indptr), shape=chunk.shape
            )
        if self._buffer is None:
            rows = max(b - a for a, b in self.bounds)
            self._buffer = np.empty((rows, self.n_features), dtype=np.float64)
        buffer = self._buffer[: chunk.shape[0]]
        np.copyto(buffer, chunk, casting="same_kind")
        return buffer

    def loss_gradient(
        self,
        coef: np.ndarray,
        intercept: np.ndarray,
        fit_intercept: bool = True,
        precision: str = "exact",
    ) -> np.ndarray:
        """``[loss_sum, grad_coef.ravel(), grad_intercept]`` at ``coef`` (K, p), ``intercept``.

        Flat, so partial results from several blocks and workers combine with ``+``; the
        intercept part is zeros when ``fit_intercept`` is false.
        """
        dtype = self.compute_dtype(precision)
        K = coef.shape[0]
        coef_t = np.ascontiguousarray(coef.T, dtype=dtype)
        bias = intercept.astype(dtype)
        Y, weights = self.targets[dtype], self.weights[dtype]
        grad_coef = np.zeros((self.n_features, K))
        grad_intercept = np.zeros(K)
        total = 0.0
        # One output: matrix-vector products (BLAS gemv) on a 1-D weight vector.
        vector = coef_t[:, 0] if K == 1 else None
        for index, (start, stop) in enumerate(self.bounds):
            chunk = self._chunk(index, dtype)
            Z = (chunk @ vector)[:, None] if vector is not None else np.asarray(chunk @ coef_t)
            Z += bias
            s = None if weights is None else weights[start:stop]
            value, R = self.loss.value_and_derivative(Z, Y[start:stop], s)
            total += value
            # X_c^T R while X_c is in cache; for CSR this runs as a CSC product without
            # materialising X_c^T.
            if vector is not None:
                grad_coef[:, 0] += chunk.T @ R[:, 0]
            else:
                grad_coef += chunk.T @ R
            if fit_intercept:
                grad_intercept += R.sum(axis=0, dtype=np.float64)
        return np.concatenate(([total], grad_coef.T.ravel(), grad_intercept))


def block_loss_gradient(
    loss: Loss,
    X: Matrix,
    Y: np.ndarray,
    sample_weight: np.ndarray | None,
    coef: np.ndarray,
    intercept: np.ndarray,
    fit_intercept: bool = True,
    precision: str = "exact",
) -> np.ndarray:
    """Weighted loss sum and gradient sums of one block, in one pass over ``X``.

    A one-off :class:`BlockKernel`; see :meth:`BlockKernel.loss_gradient` for the result.
    """
    kernel = BlockKernel(loss, X, Y, sample_weight)
    return kernel.loss_gradient(coef, intercept, fit_intercept, precision)


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
