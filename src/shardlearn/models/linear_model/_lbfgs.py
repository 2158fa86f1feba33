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

Warm start, when the caller offers ``warm_evaluate`` (the objective on a row sample, a
fraction of the cost of a full pass): L-BFGS first minimises it, and the full phases start from
its optimum, which on large data is already close to the full optimum, so the expensive full
passes are spent on the last digits only.

Preconditioning, when the caller passes ``precondition`` (returning a square matrix ``T`` with
``T T^T`` close to the inverse Hessian, see :func:`whitening`): each phase runs scipy's L-BFGS
on ``v`` with ``x = x_start + c T v``, where the objective is close to an isotropic quadratic,
so ill-conditioned problems (one-hot features, features on different scales) need several times
fewer evaluations. ``T`` is estimated at the start of the first phase and again at the start of
every later phase that starts elsewhere (the curvature of a logistic loss changes as the
weights grow: a Hessian from the sample's optimum is a far better model near the full optimum
than one from zero), and, with ``refresh_every``, a run that has not converged after that many
iterations restarts from its point with a new estimate (on nearly separable data such as KDD
Cup 99 the estimate from zero soon describes the objective poorly). Each run first tries the
Newton step ``x - T T^T g``; the scale ``c = |T^T g(x_start)|`` makes scipy's first step, which
has unit length in ``v``, that same Newton step instead of a step of arbitrary length that its
line search must shorten. Only the
optimiser's coordinates change: the objective, the checkpoint, the progress callback and the
stopping test (``max|grad f(x)| <= gtol``) are all in ``x``.

``max_iter`` is a hard budget: ``n_iter`` counts every accepted step on the full objective
(Newton steps and L-BFGS iterations, in both precisions, across restarts and resumes) and never
exceeds it. The optimiser stops scipy from its callback when the budget is spent (scipy's own
``maxiter`` is not a hard limit: ``maxiter=0`` still takes a step), and a phase, a restart or a
Newton step with no budget left is not started, so no Hessian is estimated for it either.
``max_iter=0`` returns the starting point. The warm start's iterations on the row sample are not
counted in ``n_iter`` (it reports full-objective iterations only) but are bounded by the same
``max_iter``, so its extra cost is at most ``max_iter`` passes over the sample. Reaching the
budget without meeting the tolerance raises a ConvergenceWarning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from shardlearn.engine import limit_blas
from shardlearn.exceptions import ConvergenceWarning, WorkerLost

__all__ = ["Checkpoint", "IterationInfo", "LbfgsResult", "minimize_lbfgs", "whitening"]

# scikit-learn's lbfgs options (sklearn/linear_model/_logistic.py): more line-search steps
# than scipy's default and a function tolerance at float64 resolution, so only gtol stops.
MAX_LINE_SEARCH = 50
FTOL = 64 * np.finfo(float).eps
# How many times a fit may resume from its checkpoint after losing workers.
MAX_RESUMES = 3
# What a phase that stops outside scipy returns (scipy's status codes: 0 converged, 1 budget).
_CONVERGED = optimize.OptimizeResult(status=0, success=True)
_BUDGET_SPENT = optimize.OptimizeResult(status=1, success=False)


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
        if self.last_x is not None and self.last_g is not None and np.array_equal(x, self.last_x):
            return self.last_f, self.last_g.copy()
        f, g = self.evaluate(x)
        self.count += 1
        self.last_x, self.last_f, self.last_g = x.copy(), float(f), g
        return f, g

    def info_at(self, x: np.ndarray) -> tuple[float, float]:
        last_g = self.last_g
        if self.last_x is not None and last_g is not None and np.array_equal(x, self.last_x):
            return self.last_f, float(np.max(np.abs(last_g))) if last_g.size else 0.0
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
    precondition: Callable[[np.ndarray], np.ndarray | None] | None = None,
    warm_evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None,
    refresh_every: int | None = None,
) -> LbfgsResult:
    """Minimise a smooth convex objective evaluated by the workers.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(x) -> (f, g)`` with float ``f`` and gradient ``g`` like ``x``.
    x0 : ndarray
        Starting point (float64, 1-D).
    max_iter : int
        Iteration budget (see the module docstring), across phases, restarts and resumes;
        0 returns ``x0``.
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
    precondition : callable, optional
        ``precondition(x) -> T`` (see the module docstring), called at ``x0`` and at the start
        of every later phase that starts at another point. None (or a None result) runs on
        ``x`` directly.
    warm_evaluate : callable, optional
        The objective on a row sample (see the module docstring): minimised first, to
        ``fast_gtol`` and for at most ``max_iter`` iterations, to find a starting point; its
        iterations are not reported or counted in ``n_iter``.
    refresh_every : int, optional
        With ``precondition``: restart a run that has not converged after this many
        iterations with a new estimate at its point. None: only where a phase starts.
    """
    checkpoint = Checkpoint(x=np.asarray(x0, dtype=np.float64).copy())
    evaluator = _Evaluator(evaluate)
    resumes = [0]
    transform = _Preconditioner(precondition, refresh_every)
    if warm_evaluate is not None and max_iter > 0:
        warm = Checkpoint(x=checkpoint.x.copy())
        gtol = max(tol, fast_gtol)
        _run_phase(_Evaluator(warm_evaluate), warm, max_iter, gtol, None, resumes, transform)
        checkpoint.x = warm.x
    if fast_evaluate is not None:
        fast = _Evaluator(fast_evaluate)
        _run_phase(fast, checkpoint, max_iter, max(tol, fast_gtol), callback, resumes, transform)
    result = _run_phase(evaluator, checkpoint, max_iter, tol, callback, resumes, transform)
    x = checkpoint.x
    loss, grad_norm = evaluator.info_at(x)
    # scipy's status 0 includes its relative-decrease test (FTOL: no float64 progress left).
    converged = result.status == 0 or grad_norm <= tol
    if checkpoint.n_iter >= max_iter and not converged:
        warnings.warn(
            f"{owner} did not converge in max_iter={max_iter} iterations (gradient norm "
            f"{grad_norm:.3g} > tol={tol:g}). Increase max_iter or scale the features.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return LbfgsResult(x, checkpoint.n_iter, loss, grad_norm, converged, resumes[0])


def whitening(hessian: np.ndarray, floor: float = 1e-10) -> np.ndarray:
    """A preconditioner ``T = V diag(lambda)^(-1/2)`` from ``hessian = V diag(lambda) V^T``.

    Eigenvalues below ``floor * max(lambda)`` (directions the estimate barely sees, e.g. a
    feature absent from the rows it was computed on) are raised to that floor, so ``T`` is
    always finite and ``T T^T`` is the inverse of the floored Hessian.
    """
    symmetric = 0.5 * (hessian + hessian.T)
    with limit_blas(1):  # the driver's LAPACK on one thread too (see _product)
        values, vectors = np.linalg.eigh(symmetric)
    top = float(values.max()) if values.size else 1.0
    values = np.maximum(values, floor * max(top, np.finfo(float).tiny))
    return vectors / np.sqrt(values)


def _product(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector`` without BLAS. The driver's matrices are (p+1)-sized; OpenBLAS would
    run a product of 101 x 101 on two threads, and its second thread then spins, waiting for
    more work, on a core the workers need (a 2M-row pass measured 50 ms instead of 32)."""
    return np.einsum("ij,j->i", matrix, vector)


class _Preconditioner:
    """The caller's ``precondition``, estimated again only where the point has changed."""

    def __init__(
        self,
        precondition: Callable[[np.ndarray], np.ndarray | None] | None,
        refresh_every: int | None = None,
    ) -> None:
        self.precondition = precondition
        self.refresh_every = refresh_every
        self._at: np.ndarray | None = None
        self._transform: np.ndarray | None = None

    def at(self, x: np.ndarray) -> np.ndarray | None:
        """``T`` for a phase starting at ``x`` (None without preconditioning)."""
        if self.precondition is None:
            return None
        if self._at is None or not np.array_equal(self._at, x):
            self._at, self._transform = x.copy(), self.precondition(x)
        return self._transform


class _Coordinates:
    """``x = anchor + T v`` for one scipy run (identity when ``T`` is None).

    With a transform, ``T`` is scaled by ``|T^T g(anchor)|`` (when ``gradient`` is given) so that
    scipy's first step, of unit length in ``v`` along ``-T^T g``, is the Newton step.
    """

    def __init__(
        self, anchor: np.ndarray, transform: np.ndarray | None, gradient: np.ndarray | None = None
    ) -> None:
        self.anchor = anchor.copy()
        self.transform = transform
        if transform is not None and gradient is not None:
            scale = float(np.linalg.norm(_product(transform.T, gradient)))
            if np.isfinite(scale) and scale > 0:
                self.transform = transform * scale

    def start(self) -> np.ndarray:
        return self.anchor.copy() if self.transform is None else np.zeros(self.anchor.size)

    def to_x(self, v: np.ndarray) -> np.ndarray:
        return v if self.transform is None else self.anchor + _product(self.transform, v)

    def objective(self, evaluator: _Evaluator) -> Callable[[np.ndarray], tuple]:
        transform = self.transform
        if transform is None:
            return evaluator

        def in_v(v: np.ndarray) -> tuple[float, np.ndarray]:
            f, g = evaluator(self.to_x(v))
            return f, _product(transform.T, g)

        return in_v


def _accept(
    evaluator: _Evaluator,
    checkpoint: Checkpoint,
    x: np.ndarray,
    callback: Callable[[IterationInfo], None] | None,
) -> None:
    """Record an accepted iterate in the checkpoint and report it."""
    loss, grad_norm = evaluator.info_at(x)
    checkpoint.x, checkpoint.n_iter = x.copy(), checkpoint.n_iter + 1
    checkpoint.loss, checkpoint.grad_norm = loss, grad_norm
    if callback is not None:
        callback(IterationInfo(checkpoint.n_iter, loss, grad_norm))


def _newton_step(
    evaluator: _Evaluator,
    checkpoint: Checkpoint,
    transform: np.ndarray,
    gtol: float,
    callback: Callable[[IterationInfo], None] | None,
) -> bool:
    """Try ``x - T T^T g`` (a Newton step with the estimated Hessian) before L-BFGS starts.

    scipy's first step has length one in ``v`` whatever the gradient, which costs line-search
    evaluations; the Newton step is usually accepted as it is. Kept only if it decreases the
    objective enough (Armijo); returns whether the gradient test already holds.
    """
    f, g = evaluator(checkpoint.x)
    if np.max(np.abs(g), initial=0.0) <= gtol:
        return True
    step = _product(transform, _product(transform.T, g))
    try:
        candidate = checkpoint.x - step
        f_new, g_new = evaluator(candidate)
    except WorkerLost:
        return False  # L-BFGS starts from the checkpoint as without the step
    if not f_new <= f - 1e-4 * float(g @ step):
        return False
    _accept(evaluator, checkpoint, candidate, callback)
    return checkpoint.grad_norm <= gtol


def _scaled_coordinates(
    evaluator: _Evaluator, anchor: np.ndarray, transform: np.ndarray | None
) -> _Coordinates:
    """Coordinates at ``anchor`` whose first scipy step is the Newton step (see _Coordinates);
    the gradient at ``anchor`` is usually the last evaluation, so this costs no pass."""
    if transform is None:
        return _Coordinates(anchor, None)
    try:
        _, gradient = evaluator(anchor)
    except WorkerLost:
        return _Coordinates(anchor, transform)  # scipy's first evaluation resumes the fit
    return _Coordinates(anchor, transform, gradient)


def _run_phase(
    evaluator: _Evaluator,
    checkpoint: Checkpoint,
    max_iter: int,
    gtol: float,
    callback: Callable[[IterationInfo], None] | None,
    resumes: list[int],
    preconditioner: _Preconditioner,
) -> optimize.OptimizeResult:
    """scipy L-BFGS-B from the checkpoint until ``gtol`` or the iteration budget; on
    WorkerLost, resume from the checkpoint (at most MAX_RESUMES times per fit). Preconditioned,
    a run restarts with a new estimate every ``preconditioner.refresh_every`` iterations."""
    while True:
        if checkpoint.n_iter >= max_iter:
            return _BUDGET_SPENT  # no estimate, no evaluation: the budget is hard
        transform = preconditioner.at(checkpoint.x)
        if transform is not None:
            if _newton_step(evaluator, checkpoint, transform, gtol, callback):
                return _CONVERGED  # scipy makes the same test at its first point
            if checkpoint.n_iter >= max_iter:
                return _BUDGET_SPENT
        refresh_every = preconditioner.refresh_every if transform is not None else None
        result, refresh = _run_scipy(
            evaluator, checkpoint, max_iter, gtol, callback, resumes, transform, refresh_every
        )
        if not refresh:
            return result


def _run_scipy(
    evaluator: _Evaluator,
    checkpoint: Checkpoint,
    max_iter: int,
    gtol: float,
    callback: Callable[[IterationInfo], None] | None,
    resumes: list[int],
    transform: np.ndarray | None,
    refresh_every: int | None,
) -> tuple[optimize.OptimizeResult, bool]:
    """One scipy run from the checkpoint; True when it stopped for a new preconditioner."""
    coordinates = _scaled_coordinates(evaluator, checkpoint.x, transform)
    first, refresh = checkpoint.n_iter, [False]

    def on_iteration(intermediate_result: optimize.OptimizeResult) -> None:
        x = coordinates.to_x(intermediate_result.x)
        _accept(evaluator, checkpoint, x, callback)
        if checkpoint.n_iter >= max_iter:
            raise StopIteration  # scipy's maxiter is no hard limit (0 still takes a step)
        if transform is None:
            return
        if checkpoint.grad_norm <= gtol:
            raise StopIteration  # the test is on grad f(x), not on the gradient in v
        done = checkpoint.n_iter - first
        if refresh_every and done >= refresh_every:
            refresh[0] = True
            raise StopIteration

    while True:
        remaining = max_iter - checkpoint.n_iter
        if remaining <= 0:  # spent before a resume
            return _BUDGET_SPENT, False
        try:
            result = optimize.minimize(
                coordinates.objective(evaluator),
                coordinates.start(),
                method="L-BFGS-B",
                jac=True,
                callback=on_iteration,
                options={
                    "maxiter": remaining,
                    "maxls": MAX_LINE_SEARCH,
                    # With a transform the gradient test is done in on_iteration, in x.
                    "gtol": gtol if transform is None else 0.0,
                    "ftol": FTOL,
                },
            )
        except WorkerLost:
            resumes[0] += 1
            if resumes[0] > MAX_RESUMES:
                raise
            coordinates = _Coordinates(checkpoint.x, transform)  # no evaluation while failing
            continue
        # The next run or phase (if any) starts where this one ended.
        checkpoint.x = np.asarray(coordinates.to_x(result.x), dtype=np.float64).copy()
        return result, refresh[0]
