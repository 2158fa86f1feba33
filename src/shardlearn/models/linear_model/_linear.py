"""Distributed L2-regularised linear classifiers: LogisticRegression and LinearSVC.

Both minimise, with driver-side L-BFGS (:mod:`shardlearn.models.linear_model._lbfgs`), the objective
scikit-learn's lbfgs solver minimises (``sklearn/linear_model/_linear_loss.py``)::

    f(W, b) = sum_i s_i * loss(x_i W^T + b, y_i) / S + 0.5 / (C * S) * ||W||^2,   S = sum_i s_i

with ``s_i`` = sample weight x class weight and the intercept ``b`` not penalised (LinearSVC
with several classes: one-vs-rest outputs weighted as liblinear weights them, see
:class:`LinearSVC`; ``S`` is then the sample weight total, and any positive ``S`` has the same
optimum). One function
evaluation = the weights sent to every worker, each worker's loss and gradient sums over its
cached block (:class:`shardlearn.models.linear_model._losses.BlockKernel`; for one output on dense
rows a fused compiled pass, :mod:`shardlearn.models.linear_model._dense_kernels`), a tree-sum
(``WorkerGroup.reduce``). A first pass collects class counts (for ``class_weight="balanced"``),
checks that the features are finite and whether every block is float32. Array input runs on
worker threads that read the caller's arrays in place (``_prefer_threads``; the passes release
the GIL); a Dataset runs on the engine's workers, which load and cache their shards.

Precision: on float32 blocks the optimiser first runs on ``"fast"`` evaluations (float32
products, float64 accumulation; half the memory traffic of float64 and no conversion) until the
gradient is small (:data:`FAST_GTOL`) or float32 rounding stops its progress, then finishes on
``"exact"`` float64 evaluations from there, so the optimum is scikit-learn's float64 optimum to
the requested ``tol``. Each worker limits its BLAS to its share of the cores (one thread for two
workers on two cores): the workers already run in parallel, and oversubscribed BLAS threads
only contend.

Fewer passes over the data, for one output (binary logistic regression, binary LinearSVC) with
at most PRECONDITION_MAX_PARAMETERS parameters: the workers estimate the objective's Hessian on
a strided row sample (a budget of HESSIAN_MULTIPLY_ADDS, so all rows of a mid-sized dataset),
and L-BFGS runs in the coordinates that whiten it, starting each phase with Newton steps
(:mod:`shardlearn.models.linear_model._lbfgs`); the estimate is made again where each phase starts.
One-hot and unevenly scaled features then need several times fewer evaluations (Adult: 12 instead of
64; KDD Cup 99: 55 instead of 133). Data with at least WARM_START_MIN_STRIDE x WARM_START_ROWS
rows first fits a strided sample of WARM_START_ROWS rows (the Hessian sample then is that
sample too) and starts the full passes from its optimum with a Newton step on the Hessian
estimated there (2M x 100: the benchmark's target is reached on the second full pass, the
first iteration). A preconditioned run that needs more than REFRESH_ITERATIONS iterations
restarts with a new estimate. Every choice changes only the path: the optimum and the stopping
test are the full float64 objective's, as above.

``max_iter`` is a hard budget on the iterations over all rows (``n_iter_``, see
:mod:`shardlearn.models.linear_model._lbfgs`): Newton steps and L-BFGS iterations of both precisions
count, restarts and Hessian estimates happen only while budget is left, the warm start on the row
sample runs at most ``max_iter`` iterations on the sample, and ``max_iter=0`` returns the
starting point (zeros, or the previous model with ``warm_start``). Reaching it without meeting
``tol`` raises a ConvergenceWarning.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from shardlearn._validation import Interval, Options, Type
from shardlearn.base import BaseEstimator
from shardlearn.engine import limit_blas
from shardlearn.exceptions import DataError
from shardlearn.models._base import ClassifierMixin
from shardlearn.models._registry import register_model
from shardlearn.models._training.class_weight import resolve_class_weight
from shardlearn.models._training.fitting import (
    ARRAY_SOURCE,
    EXTRA_TRAIN_ROWS,
    TrainingContext,
    iter_training_blocks,
    prepare_training,
    prepared_training_blocks,
)
from shardlearn.models.linear_model._lbfgs import IterationInfo, minimize_lbfgs, whitening
from shardlearn.models.linear_model._losses import LOSSES, BlockKernel, decision_scores

__all__ = [
    "LinearSVC",
    "LogisticRegression",
    "class_statistics",
    "row_weights",
]

_PROBLEM_KEY = "shardlearn.linear.problem"
_PREPARED_KEY = "shardlearn.linear.prepared"
#: Gradient infinity-norm (of the mean loss) at which the float32 phase hands over to float64.
#: Float32 rounding leaves gradient errors around 1e-7..1e-6 on standardised features; 1e-5
#: stays well above them, and the objective is then within far less than 1e-4 of the optimum.
FAST_GTOL = 1e-5
#: Largest parameter count (features + intercept) preconditioned with the Hessian estimate:
#: beyond it the dense (p + 1)^2 matrix and its eigendecomposition cost more than they save.
PRECONDITION_MAX_PARAMETERS = 1024
#: The Hessian estimate uses a stride over each block's cache-sized chunks: as many rows as
#: fit in about this many multiply-adds (rows x (p + 1)^2), and at least HESSIAN_MIN_ROWS.
HESSIAN_MULTIPLY_ADDS = 4e9
HESSIAN_MIN_ROWS = 100_000
#: Data with at least WARM_START_MIN_STRIDE times WARM_START_ROWS rows first fits a strided
#: sample of about WARM_START_ROWS rows and starts the full passes from its optimum. Below
#: that, the sample's optimum is not close enough to pay for itself: on nearly separable data
#: (KDD Cup 99, 494k rows) a 1-in-5 sample's optimum is a worse start than zero.
WARM_START_ROWS = 100_000
WARM_START_MIN_STRIDE = 16
#: A preconditioned run that has not converged after this many iterations starts again with a
#: new Hessian estimate where it is (KDD Cup 99: 200 iterations to tol=1e-8 become 45) ...
REFRESH_ITERATIONS = 20
#: ... when one estimate costs at most as much as that many passes. A Gram product does about
#: this many times more multiply-adds per second than a (memory-bound) loss-and-gradient pass.
GRAM_SPEEDUP = 8


# ------------------------------------------------------------------ worker functions
def _class_statistics_worker(state: Any, n_classes: int) -> np.ndarray:
    """[rows per class, weight per class, non-finite feature values, non-float32 blocks]."""
    out = np.zeros(2 * n_classes + 2)
    # Arrays were checked for NaN/inf by the driver as it handed them over (models._handoff).
    checked = state.context.get("source") == ARRAY_SOURCE and not state.context.get(
        EXTRA_TRAIN_ROWS
    )
    for block in iter_training_blocks(state, "train"):
        y = np.asarray(block.y, dtype=np.int64)
        w = block.sample_weight
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        out[:n_classes] += counts
        out[n_classes : 2 * n_classes] += (
            np.bincount(y, weights=w, minlength=n_classes) if w is not None else counts
        )
        values = np.asarray(block.X.data if hasattr(block.X, "tocsr") else block.X)
        if not checked:
            out[-2] += _non_finite_count(values)
        out[-1] += float(values.dtype != np.float32)
    return out


def _non_finite_count(values: np.ndarray) -> float:
    """Number of NaN/inf values. A NaN or inf makes the float64 sum non-finite, so a finite
    sum (one streaming read, no boolean copy of the block) proves there are none; only a
    non-finite sum (a bad value, or finite values overflowing) needs the exact count."""
    if np.isfinite(np.add.reduce(values.reshape(-1), dtype=np.float64)):
        return 0.0
    return float(values.size - np.count_nonzero(np.isfinite(values)))


def _prepare_block(problem: dict, block: Any) -> tuple[BlockKernel]:
    """The block's loss kernel: loss-encoded targets, combined (sample x class) weights."""
    y = np.asarray(block.y, dtype=np.int64)
    target = LOSSES[problem["loss"]].encode(y, problem["n_outputs"])
    weights = row_weights(
        y, block.sample_weight, problem["class_weight"], problem["n_outputs"], problem["ovr"]
    )
    return (BlockKernel(LOSSES[problem["loss"]], block.X, target, weights),)


def row_weights(
    y: np.ndarray,
    sample_weight: Any,
    class_weight: Any,
    n_outputs: int,
    one_vs_rest: bool = False,
) -> np.ndarray | None:
    """Sample x class weight of each row (n,), or None when every weight is 1.

    ``one_vs_rest`` with several outputs weights as liblinear's (and scikit-learn's SGD)
    one-vs-rest does: output k's binary problem multiplies its positive rows (class k) by
    ``class_weight[k]`` and leaves the rest at their sample weight, so the result has one
    weight per output and row, shape (n_outputs, n).
    """
    class_weight = np.asarray(class_weight, dtype=np.float64)
    weights = None
    if not np.all(class_weight == 1.0):
        if one_vs_rest and n_outputs > 1:
            weights = np.ones((n_outputs, y.size))
            weights[y, np.arange(y.size)] = class_weight[y]
        else:
            weights = class_weight[y]
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        weights = sample_weight if weights is None else weights * sample_weight
    return weights


def _prepared_blocks(state: Any) -> Any:
    """Each block with its kernel; prepared once for a cached block."""
    return prepared_training_blocks(state, _PROBLEM_KEY, _PREPARED_KEY, _prepare_block)


def _blas_threads(state: Any) -> Any:
    """Limit BLAS to this worker's share of the cores while it computes (a worker process only:
    an in-process worker's group sizes the BLAS pools it shares)."""
    if state.size <= 1 or state.in_process:
        return contextlib.nullcontext()
    return limit_blas(max(1, (os.cpu_count() or 1) // state.size))


def _loss_gradient_worker(
    state: Any, x: np.ndarray, precision: str = "exact", stride: int = 1
) -> np.ndarray:
    """Loss and gradient sums of this worker's rows (every ``stride``-th chunk) at ``x``."""
    problem = state.context[_PROBLEM_KEY]
    coef, intercept = _unpack(x, problem["n_outputs"], problem["n_features"])
    total = np.zeros(1 + x.size if problem["fit_intercept"] else 1 + x.size + coef.shape[0])
    with _blas_threads(state):
        for _block, kernel in _prepared_blocks(state):
            total += kernel.loss_gradient(
                coef, intercept, problem["fit_intercept"], precision, stride
            )
    return total


def _hessian_worker(state: Any, x: np.ndarray, stride: int) -> np.ndarray:
    """``[sampled weight, H.ravel()]`` of this worker's rows (every ``stride``-th chunk)."""
    problem = state.context[_PROBLEM_KEY]
    coef, intercept = _unpack(x, problem["n_outputs"], problem["n_features"])
    p = problem["n_features"]
    total = np.zeros(1 + (p + 1) ** 2)
    with _blas_threads(state):
        for _block, kernel in _prepared_blocks(state):
            total += kernel.hessian(coef, intercept, stride)
    return total


# ------------------------------------------------------------------ driver helpers
@dataclass(frozen=True)
class _RowSample:
    """Every ``stride``-th chunk of every block, and the total weight of those rows."""

    stride: int
    weight: float


def _strided_weight_worker(state: Any, stride: int) -> float:
    """Weight of this worker's rows in every ``stride``-th chunk."""
    return sum(kernel.sampled_weight(stride) for _block, kernel in _prepared_blocks(state))


def _warm_start_sample(ctx: TrainingContext, n_rows: int) -> _RowSample | None:
    """The row sample a large fit starts from (see WARM_START_ROWS), or None."""
    stride = -(-n_rows // WARM_START_ROWS)
    if stride < WARM_START_MIN_STRIDE:
        return None
    return _RowSample(stride, float(ctx.group.reduce(_strided_weight_worker, stride)))


class _HessianSampler:
    """The objective's Hessian estimated on a strided row sample, as an L-BFGS preconditioner
    (see :mod:`shardlearn.models.linear_model._lbfgs`); only for one output (binary logistic, binary
    squared hinge) and at most PRECONDITION_MAX_PARAMETERS parameters.

    The sample is the warm start's row sample when the fit has one (its Hessian is then the
    sample objective's own), else every chunk within HESSIAN_MULTIPLY_ADDS.
    """

    def __init__(
        self,
        ctx: TrainingContext,
        n_rows: int,
        l2: float,
        fit_intercept: bool,
        sample: _RowSample | None = None,
    ):
        self.ctx, self.l2, self.fit_intercept = ctx, l2, fit_intercept
        rows = max(HESSIAN_MIN_ROWS, int(HESSIAN_MULTIPLY_ADDS // (ctx.n_features + 1) ** 2))
        self.stride = sample.stride if sample is not None else max(1, -(-n_rows // rows))
        self.enabled = preconditioned(ctx)

    def estimate(self, x: np.ndarray) -> np.ndarray | None:
        """The Hessian estimate at ``x`` (None when the sample has no weight)."""
        p = self.ctx.n_features
        sums = self.ctx.group.reduce(_hessian_worker, x, self.stride)
        if not sums[0] > 0:
            return None
        hessian = sums[1:].reshape(p + 1, p + 1) / sums[0]
        hessian[np.arange(p), np.arange(p)] += self.l2
        if not self.fit_intercept:
            hessian = hessian[:p, :p]
        return hessian

    def refresh_every(self, n_rows: int) -> int | None:
        """REFRESH_ITERATIONS when a new estimate costs at most that many passes, else None."""
        parameters = self.ctx.n_features + 1
        estimate = -(-n_rows // self.stride) * parameters**2 / GRAM_SPEEDUP
        passes = REFRESH_ITERATIONS * n_rows * parameters * 2  # a product and a back-product
        return REFRESH_ITERATIONS if estimate <= passes else None

    def transform(self, x: np.ndarray) -> np.ndarray | None:
        """The preconditioner at ``x`` (see
        :func:`~shardlearn.models.linear_model._lbfgs.whitening`); the optimiser calls it only
        where the point has changed."""
        hessian = self.estimate(x)
        return None if hessian is None else whitening(hessian)


def preconditioned(ctx: TrainingContext) -> bool:
    """Whether a fit on ``ctx`` runs preconditioned L-BFGS (see :class:`_HessianSampler`)."""
    return ctx.n_classes == 2 and ctx.n_features + 1 <= PRECONDITION_MAX_PARAMETERS


def _unpack(x: np.ndarray, n_outputs: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    size = n_outputs * n_features
    coef = x[:size].reshape(n_outputs, n_features)
    intercept = x[size:] if x.size > size else np.zeros(n_outputs)
    return coef, intercept


def class_statistics(ctx: TrainingContext, owner: str) -> dict[str, np.ndarray]:
    """Rows and weight per class over all workers; DataError on NaN/inf or a single class."""
    k = ctx.n_classes
    stats = ctx.group.reduce(_class_statistics_worker, k)
    counts, weights = stats[:k], stats[k : 2 * k]
    if stats[2 * k] > 0:
        raise DataError(
            f"{owner}: {int(stats[2 * k])} feature values are NaN or infinite. Impute or drop "
            "them first, e.g. with Pipeline(Preprocessor.auto(dataset.schema), model)."
        )
    present = np.flatnonzero(counts)
    if present.size < 2:
        found = repr(ctx.classes[present[0]].item()) if present.size else "none"
        raise DataError(
            f"{owner} needs at least two classes in the training rows; found only {found}."
        )
    return {"counts": counts, "weights": weights, "all_float32": bool(stats[2 * k + 1] == 0)}


class _LinearClassifier(ClassifierMixin, BaseEstimator):
    """Shared L-BFGS fitting for the linear models; subclasses choose the loss."""

    # What an artifact may restore (models._base.restore_fitted); saving refuses any other.
    _fitted_attributes: ClassVar[frozenset[str]] = frozenset(
        {
            "classes_",
            "coef_",
            "converged_",
            "feature_names_in_",
            "grad_norm_",
            "intercept_",
            "loss_",
            "n_features_in_",
            "n_iter_",
        }
    )

    _multiclass_loss: ClassVar[str] = ""
    _binary_loss: ClassVar[str] = ""
    _predict_from_proba: ClassVar[bool] = True
    #: Several classes as separate one-vs-rest outputs with liblinear's class weighting.
    _one_vs_rest: ClassVar[bool] = False
    # The worker functions spend their time in numpy/BLAS/numba code that releases the GIL, so
    # array input trains on threads that read the caller's arrays in place (models._fitting).
    _prefer_threads: ClassVar[bool] = True
    # Preprocessing defaults (preprocess.profiles): cost follows non-zeros, not columns.
    _preprocess_profile: ClassVar[str] = "wide_sparse"

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        engine: Any = None,
        sample_weight: Any = None,
        callback: Callable[[IterationInfo], None] | None = None,
    ) -> Any:
        """Fit on a Dataset (distributed over the engine's workers) or on arrays.

        Parameters
        ----------
        X : Dataset, ndarray or csr_matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
            Labels, for array input only.
        engine : Engine or str, optional
            Engine to train on; default: the current engine.
        sample_weight : array-like of shape (n_samples,), optional
            Row weights (array input).
        callback : callable, optional
            Called on the driver after every L-BFGS iteration with an ``IterationInfo``
            (iteration, loss, gradient norm); the CLI draws its progress bar with it.

        Returns
        -------
        self
        """
        self._validate_params()
        with prepare_training(self, X, y, engine=engine, sample_weight=sample_weight) as ctx:
            return self._fit_context(ctx, callback=callback)

    def _fit_context(
        self, ctx: TrainingContext, callback: Callable[[IterationInfo], None] | None = None
    ) -> Any:
        """Fit on a prepared :class:`TrainingContext` (used by ``fit`` and by Pipeline)."""
        self._validate_params()
        owner = type(self).__name__
        stats = class_statistics(ctx, owner)
        class_weight = resolve_class_weight(self.class_weight, ctx.classes, stats["weights"])
        binary = ctx.n_classes == 2
        loss = self._binary_loss if binary else self._multiclass_loss
        n_outputs = 1 if binary else ctx.n_classes
        one_vs_rest = self._one_vs_rest and not binary
        # Any positive constant S gives the same optimum (see the module docstring); one-vs-rest
        # takes the sample weight total, since its class weights apply to some outputs only.
        weight_sum = float(
            stats["weights"].sum() if one_vs_rest else np.dot(class_weight, stats["weights"])
        )
        p = ctx.n_features
        ctx.group.put(
            _PROBLEM_KEY,
            {
                "token": uuid.uuid4().hex,
                "loss": loss,
                "n_outputs": n_outputs,
                "n_features": p,
                "fit_intercept": bool(self.fit_intercept),
                "class_weight": class_weight.tolist(),
                "ovr": one_vs_rest,
            },
        )
        l2 = 1.0 / (self.C * weight_sum)
        size = n_outputs * p

        def evaluate(
            x: np.ndarray, precision: str = "exact", sample: _RowSample | None = None
        ) -> tuple[float, np.ndarray]:
            stride, total = (1, weight_sum) if sample is None else (sample.stride, sample.weight)
            sums = ctx.group.reduce(_loss_gradient_worker, x, precision, stride)
            grad = sums[1 : 1 + x.size] / total
            coef = x[:size]
            grad[:size] += l2 * coef
            value = sums[0] / total + 0.5 * l2 * float(coef @ coef)
            return value, grad

        x0 = self._initial_point(ctx, n_outputs, p)
        n_rows = int(stats["counts"].sum())
        # No budget, no warm start: max_iter=0 costs no pass beyond the final evaluation.
        use_sample = preconditioned(ctx) and self.max_iter > 0
        sample = _warm_start_sample(ctx, n_rows) if use_sample else None
        if sample is not None and not sample.weight > 0:
            sample = None
        sampler = _HessianSampler(ctx, n_rows, l2, self.fit_intercept, sample)
        precondition = sampler.transform if sampler.enabled else None
        precision = "fast" if stats["all_float32"] else "exact"
        warm = None
        if sample is not None and precondition is not None:
            warm = lambda x: evaluate(x, precision, sample)  # noqa: E731
        fast = (lambda x: evaluate(x, "fast")) if stats["all_float32"] else None
        result = minimize_lbfgs(
            evaluate,
            x0,
            max_iter=self.max_iter,
            tol=self.tol,
            callback=callback,
            owner=owner,
            fast_evaluate=fast,
            fast_gtol=FAST_GTOL,
            precondition=precondition,
            warm_evaluate=warm,
            refresh_every=sampler.refresh_every(n_rows),
        )
        coef, intercept = _unpack(result.x, n_outputs, p)
        self.classes_ = np.asarray(ctx.classes)
        self.coef_ = coef.copy()
        self.intercept_ = intercept.copy() if self.fit_intercept else np.zeros(n_outputs)
        self.n_features_in_ = p
        self.feature_names_in_ = list(ctx.feature_names)
        self.n_iter_ = int(result.n_iter)
        self.loss_ = float(result.loss)
        self.grad_norm_ = float(result.grad_norm)
        self.converged_ = bool(result.converged)
        return self

    def _initial_point(self, ctx: TrainingContext, n_outputs: int, p: int) -> np.ndarray:
        size = n_outputs * p + (n_outputs if self.fit_intercept else 0)
        x0 = np.zeros(size)
        if self.warm_start and hasattr(self, "coef_") and self.coef_.shape == (n_outputs, p):
            x0[: n_outputs * p] = self.coef_.ravel()
            if self.fit_intercept:
                x0[n_outputs * p :] = self.intercept_
        return x0

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores ``X coef_^T + intercept_``: shape (n,) for two classes, else (n, K)."""
        X = self._check_predict_input(X)
        scores = decision_scores(X, self.coef_, self.intercept_)
        return scores[:, 0] if scores.shape[1] == 1 else scores


_COMMON_CONSTRAINTS: dict[str, list[Any]] = {
    "C": [Interval("real", 0, None, closed="neither")],
    "fit_intercept": [Type(bool)],
    "max_iter": [Interval("int", 0, None, closed="left")],
    "tol": [Interval("real", 0, None, closed="left")],
    "class_weight": [Options(("balanced",)), Type(dict), Type(type(None))],
    "warm_start": [Type(bool)],
}


@register_model("logistic")
class LogisticRegression(_LinearClassifier):
    """L2-regularised logistic regression trained with distributed L-BFGS.

    Two classes give a binary model (``coef_`` of shape (1, p)); more give a multinomial
    (softmax) model (``coef_`` of shape (K, p)). The optimum is scikit-learn's lbfgs optimum
    for the same data, weights and parameters.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength (> 0).
    fit_intercept : bool, default=True
        Fit an (unpenalised) intercept.
    max_iter : int, default=100
        Hard budget of optimiser iterations over all rows (``n_iter_ <= max_iter``); reaching
        it before ``tol`` raises a ConvergenceWarning. 0 returns the starting point (zeros, or
        the previous model with ``warm_start``); scikit-learn's lbfgs takes one step there.
    tol : float, default=1e-4
        Stop when the largest absolute (projected) gradient entry is below ``tol``.
    class_weight : dict, "balanced" or None, default=None
        Multiplies each row's weight by its class weight; "balanced" uses
        ``S / (n_classes * S_k)`` with ``S_k`` the total weight of class k.
    warm_start : bool, default=False
        Start from the previous ``coef_``/``intercept_`` when refitting.

    Attributes
    ----------
    classes_, coef_, intercept_, n_features_in_, feature_names_in_, n_iter_,
    loss_ (final objective), grad_norm_ (final gradient infinity-norm), converged_

    Examples
    --------
    >>> import numpy as np
    >>> from shardlearn.models import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> LogisticRegression().fit(X, y, engine="local").predict(X).tolist()
    [0, 0, 1, 1]
    """

    _parameter_constraints: ClassVar[dict[str, list]] = dict(_COMMON_CONSTRAINTS)
    _binary_loss = "binary_logistic"
    _multiclass_loss = "multinomial"

    def __init__(
        self,
        C: float = 1.0,
        fit_intercept: bool = True,
        max_iter: int = 100,
        tol: float = 1e-4,
        class_weight: dict | str | None = None,
        warm_start: bool = False,
    ) -> None:
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.warm_start = warm_start

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = _sigmoid(scores)
            return np.column_stack((1.0 - positive, positive))
        scores = scores - scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


@register_model("linear_svc")
class LinearSVC(_LinearClassifier):
    """Linear support vector classifier (squared hinge, L2) trained with distributed L-BFGS.

    Two classes: minimises ``0.5 ||w||^2 + C * sum_i s_i max(0, 1 - t_i z_i)^2`` with
    ``t_i = +-1`` and ``s_i`` = sample weight x class weight of row i. More classes:
    one-vs-rest, the sum over classes k of ``0.5 ||w_k||^2 + C * sum_i s_ik max(0, 1 - t_ik
    z_ik)^2`` with ``s_ik`` = sample weight x ``class_weight[k]`` for the rows of class k and
    the sample weight alone for the others: liblinear's weighting (its ``train`` gives class
    k's problem ``Cp = C * class_weight[k]`` and ``Cn = C``). The objective is divided by a
    constant ``C * S``, which has the same optimum.

    The intercept is not penalised. With ``fit_intercept=False`` this is exactly
    scikit-learn's ``LinearSVC(loss="squared_hinge")`` objective; with an intercept,
    scikit-learn's liblinear penalises it as the weight of a constant feature
    ``intercept_scaling`` (``0.5 b^2 / intercept_scaling^2``), so the models agree in the
    limit of a large ``intercept_scaling`` (to about 1e-6 relative at 100).

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength (> 0).
    fit_intercept : bool, default=True
        Fit an (unpenalised) intercept.
    max_iter : int, default=1000
        Hard budget of optimiser iterations, as in :class:`LogisticRegression`.
    tol : float, default=1e-4
        Stop when the largest absolute gradient entry (of the objective divided by ``C S``)
        is below ``tol``.
    class_weight : dict, "balanced" or None, default=None
        Class multipliers as above; "balanced" uses ``S / (n_classes * S_k)`` with ``S_k``
        the total sample weight of class k, as scikit-learn.
    warm_start : bool, default=False
        Start from the previous ``coef_``/``intercept_`` when refitting.

    Attributes
    ----------
    classes_, coef_, intercept_, n_features_in_, feature_names_in_, n_iter_, loss_,
    grad_norm_, converged_
    """

    _parameter_constraints: ClassVar[dict[str, list]] = dict(_COMMON_CONSTRAINTS)
    _binary_loss = "squared_hinge"
    _multiclass_loss = "squared_hinge"
    _predict_from_proba = False
    _one_vs_rest = True
    # scikit-learn checks this class fails, and why (BaseEstimator._expected_failed_checks).
    _sklearn_expected_failures: ClassVar[dict[str, str]] = dict.fromkeys(
        (
            "check_sample_weight_equivalence_on_dense_data",
            "check_sample_weight_equivalence_on_sparse_data",
        ),
        "weights equal repeated rows to about 1e-6 relative, not the check's 1e-7: the squared "
        "hinge's second derivative jumps at the margin and L-BFGS stops that close to the "
        "optimum (a smaller tol does not get closer)",
    )

    def __init__(
        self,
        C: float = 1.0,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-4,
        class_weight: dict | str | None = None,
        warm_start: bool = False,
    ) -> None:
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.warm_start = warm_start


def _sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(z)
