"""Driver-side L-BFGS with a per-iteration checkpoint.

The optimiser runs in the driver (scipy's L-BFGS-B with the options scikit-learn uses); every
function evaluation is delegated to ``evaluate(x) -> (f, g)``, which broadcasts ``x`` to the
workers and tree-sums their loss and gradient. After each accepted iteration the driver keeps a
:class:`Checkpoint` (weights, iteration, loss, gradient norm). If an evaluation raises
:class:`~shardlearn.exceptions.WorkerLost` (the engine gave up retrying), the optimiser restarts
from the checkpoint with the iterations that remain, instead of from zero. scipy does not expose
the L-BFGS curvature pairs, so a resumed run rebuilds its history; it converges to the same
optimum because the objective is convex.

Two phases, when the caller offers a cheaper approximate evaluation (``fast_evaluate``, e.g.
float32 products): L-BFGS runs on it until the gradient is below ``fast_gtol`` (or its line
search stalls on the approximation's rounding noise), then restarts from that point on the exact
``evaluate`` to the requested ``tol``. The second phase rebuilds its curvature history, which
costs a few iterations; the result is the exact objective's optimum, and the convergence test
and the reported loss and gradient norm always come from exact evaluations.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from shardlearn.exceptions import ConvergenceWarning, WorkerLost

__all__ = ["Checkpoint", "IterationInfo", "LbfgsResult", "minimize_lbfgs"]

# scikit-learn's lbfgs options (sklearn/linear_model/_logistic.py): more line-search steps
# than scipy's default and a function tolerance at float64 resolution, so only gtol stops.
MAX_LINE_SEARCH = 50
FTOL = 64 * np.finfo(float).eps
# How many times a fit may resume from its checkpoint after losing workers.
MAX_RESUMES = 3


@dataclass(frozen=True)
class IterationInfo:
    """What a progress callback receives after every optimiser iteration."""

    iteration: int
    loss: float
    grad_norm: float


@dataclass
class Checkpoint:
    """Driver state saved after every accepted iteration."""

    x: np.ndarray
    n_iter: int = 0
    loss: float = float("nan")
    grad_norm: float = float("nan")


@dataclass(frozen=True)
class LbfgsResult:
    """Final weights, iterations used, final loss and gradient infinity-norm."""

    x: np.ndarray
    n_iter: int
    loss: float
    grad_norm: float
    converged: bool
    resumes: int


class _Evaluator:
    """Remembers the last evaluation so the callback can report loss and gradient norm."""

    def __init__(self, evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]]) -> None:
        self.evaluate = evaluate
        self.last_x: np.ndarray | None = None
        self.last_f = float("nan")
        self.last_g: np.ndarray | None = None
        self.count = 0

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = self.evaluate(x)
        self.count += 1
        self.last_x, self.last_f, self.last_g = x.copy(), float(f), g
        return f, g

    def info_at(self, x: np.ndarray) -> tuple[float, float]:
        if self.last_x is not None and np.array_equal(x, self.last_x):
            return self.last_f, float(np.max(np.abs(self.last_g))) if self.last_g.size else 0.0
        f, g = self(x)
        return float(f), float(np.max(np.abs(g))) if g.size else 0.0


def minimize_lbfgs(
    evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    callback: Callable[[IterationInfo], None] | None = None,
    owner: str = "LogisticRegression",
    fast_evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None,
    fast_gtol: float = 0.0,
) -> LbfgsResult:
    """Minimise a smooth convex objective evaluated by the workers.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(x) -> (f, g)`` with float ``f`` and gradient ``g`` like ``x``.
    x0 : ndarray
        Starting point (float64, 1-D).
    max_iter : int
        Iteration budget across resumes.
    tol : float
        Projected-gradient tolerance (scipy's ``gtol``, as in scikit-learn).
    callback : callable, optional
        Called with an :class:`IterationInfo` after every iteration.
    owner : str
        Estimator name used in the convergence warning.
    fast_evaluate : callable, optional
        A cheaper approximation of ``evaluate`` for the first phase (see the module docstring).
    fast_gtol : float
        Gradient tolerance of the first phase (never below ``tol``).
    """
    checkpoint = Checkpoint(x=np.asarray(x0, dtype=np.float64).copy())
    evaluator = _Evaluator(evaluate)
    resumes = [0]
    if fast_evaluate is not None:
        fast = _Evaluator(fast_evaluate)
        _run_phase(fast, checkpoint, max_iter, max(tol, fast_gtol), callback, resumes)
    result = _run_phase(evaluator, checkpoint, max_iter, tol, callback, resumes)
    loss, grad_norm = evaluator.info_at(result.x)
    n_iter = min(checkpoint.n_iter, max_iter)
    converged = result.status == 0 or (result.status != 1 and grad_norm <= tol)
    if result.status == 1 or n_iter >= max_iter and not result.status == 0:
        warnings.warn(
            f"{owner} did not converge in max_iter={max_iter} iterations (gradient norm "
            f"{grad_norm:.3g} > tol={tol:g}). Increase max_iter or scale the features.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return LbfgsResult(result.x, n_iter, loss, grad_norm, converged, resumes[0])


def _run_phase(
    evaluator: _Evaluator,
    checkpoint: Checkpoint,
    max_iter: int,
    gtol: float,
    callback: Callable[[IterationInfo], None] | None,
    resumes: list[int],
) -> optimize.OptimizeResult:
    """scipy L-BFGS-B from the checkpoint until ``gtol`` or the iteration budget; on
    WorkerLost, resume from the checkpoint (at most MAX_RESUMES times per fit)."""

    def on_iteration(intermediate_result: optimize.OptimizeResult) -> None:
        x = intermediate_result.x
        loss, grad_norm = evaluator.info_at(x)
        checkpoint.x, checkpoint.n_iter = x.copy(), checkpoint.n_iter + 1
        checkpoint.loss, checkpoint.grad_norm = loss, grad_norm
        if callback is not None:
            callback(IterationInfo(checkpoint.n_iter, loss, grad_norm))

    while True:
        remaining = max_iter - checkpoint.n_iter
        try:
            result = optimize.minimize(
                evaluator,
                checkpoint.x,
                method="L-BFGS-B",
                jac=True,
                callback=on_iteration,
                options={
                    "maxiter": max(remaining, 0),
                    "maxls": MAX_LINE_SEARCH,
                    "gtol": gtol,
                    "ftol": FTOL,
                },
            )
        except WorkerLost:
            resumes[0] += 1
            if resumes[0] > MAX_RESUMES:
                raise
            continue
        # The next phase (if any) starts where this one ended.
        checkpoint.x = np.asarray(result.x, dtype=np.float64).copy()
        return result
