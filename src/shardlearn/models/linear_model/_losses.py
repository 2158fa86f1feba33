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
  it for the last iterations (see :mod:`shardlearn.models.linear_model._linear`).

A float64 block always runs in float64. The kernels return *sums* over rows (weighted by the
sample weights); the driver divides by the total weight and adds the penalty, exactly like
scikit-learn's ``LinearModelLoss``:

    f(W, b) = sum_i s_i * loss_i / sum_i s_i + 0.5 / (C * sum_i s_i) * ||W||^2

Losses are strategy objects in :data:`LOSSES` (one per loss), not an if/elif chain. Chunk views,
per-dtype targets and the float64 conversion buffer are built once per block and reused by
every evaluation, so an evaluation allocates only chunk-sized scratch arrays.

One output (binary logistic, binary squared hinge) on C-contiguous dense rows takes the fused
compiled pass of :mod:`shardlearn.models.linear_model._dense_kernels` instead of the numpy chunk
loop: the same sums (the same rows for a ``stride``, the same precisions), in one read of the block
and without holding the GIL. The numpy loop serves the multinomial loss, one-vs-rest outputs, CSR
blocks and the Hessian estimate.

The numpy loop's dense products go through :func:`_matmul`, which ignores an "invalid value"
flag that a product with a finite result raised (a BLAS kernel's discarded vector lanes) and
raises a clear error when the result is not finite.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from shardlearn._typing import Matrix
from shardlearn.models._training.chunks import CHUNK_BYTES, MIN_CHUNK_ROWS, chunk_rows_for

__all__ = [
    "LOSSES",
    "PRECISIONS",
    "BlockKernel",
    "Loss",
    "block_loss_gradient",
    "decision_scores",
]

PRECISIONS = ("fast", "exact")


@dataclass(frozen=True)
class Loss:
    """A loss on the scores of one chunk, stored output-major: ``Zt`` has shape (K, n).

    Output-major because numpy reduces over the outer axis of a C-contiguous array with
    vectorised row operations, while reductions along a short inner axis (K = 3 classes) are
    several times slower than the products themselves.

    ``value_and_derivative(Zt, Y, s)`` returns the weighted loss sum (a Python float) and
    ``s * dloss/dZt`` (K, n) in the dtype of ``Zt``; ``Y`` (see :meth:`encode`, sliced to the
    chunk's columns) and ``s`` have that dtype too, so nothing is upcast. ``s`` is one weight
    per row (n,) or, for losses that sum K separate outputs (one-vs-rest), one weight per
    output and row (K, n).
    """

    name: str
    #: Whether :mod:`shardlearn.models.linear_model._dense_kernels` has a fused pass for one output.
    fused = False

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """The target encoding this loss expects, from int64 class indices."""
        raise NotImplementedError

    def value_and_derivative(
        self, Zt: np.ndarray, Y: np.ndarray, s: np.ndarray | None
    ) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def curvature(self, Zt: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Second derivative of the loss in the score, per row (shape (n,)), for one output.

        With it the Hessian of the summed loss is ``X^T diag(s * curvature) X``; losses
        without a per-row scalar curvature (multinomial) do not implement it.
        """
        raise NotImplementedError


def _weighted_sum(values: np.ndarray, s: np.ndarray | None) -> float:
    """Sum of ``values`` weighted by ``s`` (per row (n,), or per output and row like values)."""
    # In the dtype of the scores: a float32 pairwise sum over one chunk is as accurate as the
    # float32 scores themselves, and converting to float64 first costs as much as the exp.
    if s is None:
        return float(values.sum())
    if s.ndim == 2:
        return float(np.einsum("kn,kn->", values, s))
    return float((values @ s).sum())


class _BinaryLogistic(Loss):
    """scikit-learn's HalfBinomialLoss ``log(1 + exp(z)) - y z``, y in {0, 1}.

    Encoded as ``t = 1 - 2y`` in {+1, -1} (shape (1, n)): the loss is then ``softplus(u)``
    with ``u = t z`` and its derivative ``t * sigmoid(u)``. With ``e = exp(-|u|)``:
    ``softplus(u) = max(u, 0) + log(1 + e)`` and ``sigmoid(u) = 0.5 + sign(u) (1/(1+e) - 0.5)``:
    one exp and one log per row (np.logaddexp and log1p cost several times more). Both
    differ from the exact values by an absolute error of a few ulps of 1, which does not move
    a sum of losses or a gradient.
    """

    fused = True

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        return np.where(y == 1, -1.0, 1.0)[None, :]

    def value_and_derivative(self, Zt, Y, s):
        u = Zt * Y
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
            R *= s
        return _weighted_sum(loss, s), R

    def curvature(self, Zt, Y):
        # sigmoid(z) (1 - sigmoid(z)) = e / (1 + e)^2 with e = exp(-|z|), whatever the label.
        e = np.exp(-np.abs(Zt[0]))
        return e / np.square(1.0 + e)


class _Multinomial(Loss):
    """scikit-learn's HalfMultinomialLoss: ``logsumexp(z) - z_y`` (full K-class softmax)."""

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        return y.astype(np.intp)

    def value_and_derivative(self, Zt, Y, s):
        columns = np.arange(Zt.shape[1])
        R = Zt - Zt.max(axis=0)
        picked = R[Y, columns]
        np.exp(R, out=R)
        total = R.sum(axis=0)
        loss = np.log(total)
        loss -= picked
        R /= total
        R[Y, columns] -= 1.0
        if s is not None:
            R *= s
        return _weighted_sum(loss, s), R


class _SquaredHinge(Loss):
    """One-vs-rest squared hinge ``max(0, 1 - t z)^2`` with t in {-1, +1} per output; its
    weights may differ per output (liblinear weights only the positive class, see
    :mod:`shardlearn.models.linear_model._linear`)."""

    fused = True

    def encode(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        if n_outputs == 1:
            return np.where(y == 1, 1.0, -1.0)[None, :]
        T = np.full((n_outputs, y.shape[0]), -1.0)
        T[y, np.arange(y.shape[0])] = 1.0
        return T

    def value_and_derivative(self, Zt, Y, s):
        margin = Y * Zt
        np.subtract(1.0, margin, out=margin)
        np.maximum(margin, 0.0, out=margin)
        loss = margin * margin
        R = margin
        R *= Y
        R *= -2.0
        if s is not None:
            R *= s
        return _weighted_sum(loss, s), R

    def curvature(self, Zt, Y):
        # The generalised Hessian of max(0, 1 - t z)^2: 2 where the margin is active.
        return np.where(Y[0] * Zt[0] < 1.0, 2.0, 0.0).astype(Zt.dtype)


LOSSES: dict[str, Loss] = {
    "binary_logistic": _BinaryLogistic("binary_logistic"),
    "multinomial": _Multinomial("multinomial"),
    "squared_hinge": _SquaredHinge("squared_hinge"),
}


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
    sample_weight : ndarray of shape (n,) or (K, n), or None
        Per-row weights (class weights already folded in), or per output and row for a loss
        that sums separate outputs (the one-vs-rest squared hinge).
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
        self.chunk_rows = step
        # One output on C-contiguous dense rows: one compiled pass (models._dense_kernels).
        fused = not self.sparse and X.flags.c_contiguous and loss.fused
        fused = fused and (sample_weight is None or sample_weight.ndim == 1)
        self._fused_rows = np.asarray(X) if fused else None
        self.targets = {np.dtype(np.float64): _targets_as(Y, np.dtype(np.float64))}
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
        if not isinstance(chunk, np.ndarray):  # CSR
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
        stride: int = 1,
    ) -> np.ndarray:
        """``[loss_sum, grad_coef.ravel(), grad_intercept]`` at ``coef`` (K, p), ``intercept``.

        Flat, so partial results from several blocks and workers combine with ``+``; the
        intercept part is zeros when ``fit_intercept`` is false. ``stride > 1`` sums over every
        ``stride``-th chunk only (the row sample :meth:`hessian` uses).
        """
        K = coef.shape[0]
        if self._fused_rows is not None and K == 1:
            out = self._fused_loss_gradient(
                self._fused_rows, coef[0], float(intercept[0]), precision, stride
            )
            if not fit_intercept:
                out[-1] = 0.0
            return out
        grad_coef = np.zeros((K, self.n_features))
        grad_intercept = np.zeros(K)
        total = 0.0
        for chunk, Zt, Y, s in self._scored_chunks(coef, intercept, precision, stride):
            value, Rt = self.loss.value_and_derivative(Zt, Y, s)
            total += value
            # R^T X_c while X_c is still in cache.
            grad_coef += self._backward(chunk, Rt)
            if fit_intercept:
                grad_intercept += Rt.sum(axis=1)
        return np.concatenate(([total], grad_coef.ravel(), grad_intercept))

    def _fused_loss_gradient(
        self, rows: np.ndarray, coef: np.ndarray, intercept: float, precision: str, stride: int
    ) -> np.ndarray:
        # Imported on first use: numba loads in about half a second, which a model that is
        # only imported to predict should not pay.
        from shardlearn.models.linear_model._dense_kernels import fused_loss_gradient

        dtype = self.compute_dtype(precision)
        return fused_loss_gradient(
            self.loss.name,
            rows,
            self.targets[dtype][0],
            self.weights[dtype],
            coef.astype(dtype),
            intercept,
            self.chunk_rows,
            stride,
        )

    def hessian(self, coef: np.ndarray, intercept: np.ndarray, stride: int = 1) -> np.ndarray:
        """Weighted loss Hessian over every ``stride``-th chunk, for one output (K = 1).

        Returns ``[sampled_weight, H.ravel()]`` with ``H`` of shape (p + 1, p + 1): the sum
        over the sampled rows of ``s_i * curvature_i * [x_i, 1] [x_i, 1]^T`` (the last row and
        column belong to the intercept), in the block's precision and accumulated in float64.
        ``sampled_weight`` is the sum of ``s_i`` over those rows, so ``H / sampled_weight``
        estimates the Hessian of the weighted mean loss.
        """
        p = self.n_features
        H = np.zeros((p + 1, p + 1))
        sampled = 0.0
        for chunk, Zt, Y, s in self._scored_chunks(coef, intercept, "fast", stride):
            d = self.loss.curvature(Zt, Y)
            if s is not None:
                d = d * s
            sampled += float(Zt.shape[1]) if s is None else float(s.sum(dtype=np.float64))
            H[:p, :p] += self._weighted_gram(chunk, d)
            column = np.asarray(_matmul(chunk.T, d), dtype=np.float64).ravel()
            H[:p, p] += column
            H[p, :p] += column
            H[p, p] += float(d.sum(dtype=np.float64))
        return np.concatenate(([sampled], H.ravel()))

    def _scored_chunks(
        self, coef: np.ndarray, intercept: np.ndarray, precision: str, stride: int
    ) -> Iterator[tuple[Matrix, np.ndarray, np.ndarray, np.ndarray | None]]:
        """``(X_c, Z_c^T, targets, weights)`` of every ``stride``-th chunk in ``precision``."""
        dtype = self.compute_dtype(precision)
        weights_kp = np.ascontiguousarray(coef, dtype=dtype)
        bias = intercept.astype(dtype)[:, None]
        Y, weights = self.targets[dtype], self.weights[dtype]
        for index in range(0, len(self.bounds), max(1, stride)):
            start, stop = self.bounds[index]
            chunk = self._chunk(index, dtype)
            Zt = self._scores(chunk, weights_kp)
            Zt += bias
            s = None if weights is None else weights[..., start:stop]
            yield chunk, Zt, Y[..., start:stop], s

    def sampled_weight(self, stride: int) -> float:
        """Total weight of the rows in every ``stride``-th chunk (their count if unweighted)."""
        weights = self.weights[np.dtype(np.float64)]
        rows = self.bounds[:: max(1, stride)]
        if weights is None:
            return float(sum(stop - start for start, stop in rows))
        return float(sum(weights[..., start:stop].sum() for start, stop in rows))

    def _weighted_gram(self, chunk: Matrix, d: np.ndarray) -> np.ndarray:
        """``X_c^T diag(d) X_c`` (p, p) as float64."""
        if not isinstance(chunk, np.ndarray):  # CSR
            scaled = chunk.multiply(d[:, None]).tocsr()
            return np.asarray((chunk.T @ scaled).toarray(), dtype=np.float64)
        return np.asarray(_matmul((chunk * d[:, None]).T, chunk), dtype=np.float64)

    def _scores(self, chunk: Matrix, coef: np.ndarray) -> np.ndarray:
        """``coef X_c^T`` of shape (K, rows): gemv for one output, gemm otherwise."""
        if coef.shape[0] == 1:
            return np.asarray(_matmul(chunk, coef[0]))[None, :]
        if self.sparse:
            return np.ascontiguousarray((chunk @ coef.T).T)
        return _matmul(coef, chunk.T)

    def _backward(self, chunk: Matrix, Rt: np.ndarray) -> np.ndarray:
        """``R^T X_c`` of shape (K, p); for CSR a CSC product, no transposed copy."""
        if Rt.shape[0] == 1:
            return np.asarray(_matmul(chunk.T, Rt[0]))[None, :]
        if self.sparse:
            return np.asarray(chunk.T @ Rt.T).T
        return _matmul(Rt, chunk)


def _matmul(a: Any, b: Any) -> Any:
    """``a @ b`` (a BLAS product of a chunk) without a spurious "invalid value" warning.

    An invalid operation in a product (``inf * 0``, ``inf - inf``) leaves a NaN in the result,
    so when numpy reads the invalid flag after a product whose result is finite, these values
    did not raise it: a BLAS kernel can raise it from vector lanes it computes and discards.
    Such a flag is ignored; a non-finite result after the flag is an error that says so.
    """
    flagged: list[str] = []
    with np.errstate(invalid="call", call=lambda kind, _flag: flagged.append(kind)):
        out = a @ b
    if flagged and not np.all(np.isfinite(out.data if sp.issparse(out) else out)):
        raise FloatingPointError(
            "A product of feature rows and linear model coefficients is not finite (invalid "
            "value: inf or NaN in the rows or coefficients). Fit on finite features: ingest "
            "rejects non-finite values unless allow_non_finite is set, and fit(X, y) checks X."
        )
    return out


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
