"""What the estimator checks share: the constants, the contract of an estimator, fitting a
clone (once per bench for a layout), and the figures two fits are compared on.

``bench`` (a :class:`ConformanceBench`) holds the shared data, datasets and engines; the
contract (tolerances) comes from ``ESTIMATOR_CONTRACTS``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shardlearn._estimator_contracts import ESTIMATOR_CONTRACTS, ConformanceBench, EstimatorContract
from shardlearn.testing._support import _expect

#: Largest deviation of a probability row sum from 1 (torch models predict in float32).
PROBA_SUM_TOL = 1e-6
#: Workers of the fits that are compared across layouts (more than one: shards are split).
LAYOUT_WORKERS = 2
#: Worker counts compared by the worker-count invariance check.
WORKER_COUNTS = (1, 2, 4)
#: Class weights (by class index) of the class_weight check: the last class counts 1/100.
CLASS_WEIGHTS = (1.0, 1.0, 0.01)
#: A weighted fit must move at least this share of the way its ground truth moves (class mass).
MOVED_SHARE = 0.5
#: Share of the last class's rows the sample_weight check weights 0 (drops).
WEIGHTED_OUT_SHARE = 0.9


def contract_of(estimator: Any) -> EstimatorContract:
    """The contract of ``estimator``'s catalogue class (the nearest one it derives from)."""
    from shardlearn.models import MODELS

    names = {cls: name for name, cls in MODELS.items() if name in ESTIMATOR_CONTRACTS}
    for cls in type(estimator).__mro__:
        if cls in names:
            return ESTIMATOR_CONTRACTS[names[cls]]
    raise KeyError(
        f"{type(estimator).__name__} has no entry in shardlearn.testing.ESTIMATOR_CONTRACTS; "
        "add its reference and tolerances there."
    )


def _fail(estimator: Any, check: str, message: str) -> str:
    return f"{type(estimator).__name__} fails {check}: {message}"


def _expect_within(estimator: Any, check: str, gap: float, tolerance: float, what: str) -> None:
    """``gap`` is at most ``tolerance``; else "<what> differ by <gap> (tolerance <tolerance>)"."""
    message = f"{what} differ by {gap:.3g} (tolerance {tolerance:g})"
    _expect(gap <= tolerance, _fail(estimator, check, message))


def _fit(estimator: Any, X: Any, y: Any = None, *, engine: Any, **fit_params: Any) -> Any:
    """Fit a clone; ConvergenceWarnings are ignored here (check_budgets looks at them)."""
    import warnings

    from sklearn.base import clone

    model = clone(estimator)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(converge|iteration).*")
        if _is_dataset(X):
            return model.fit(X, engine=engine, **fit_params)
        return model.fit(X, y, engine=engine, **fit_params)


def _is_dataset(X: Any) -> bool:
    return hasattr(X, "manifest") and hasattr(X, "schema")


def _supervised(contract: EstimatorContract) -> bool:
    return contract.score == "accuracy"


def _fit_arrays(estimator: Any, bench: ConformanceBench, contract: EstimatorContract, **kw: Any):
    data = bench.data(contract)
    y = bench.labels(contract, data.y) if _supervised(contract) else None
    return _fit(estimator, data.X, y, engine=bench.engine(LAYOUT_WORKERS), **kw)


def _fit_layout(
    estimator: Any, bench: ConformanceBench, layout: str, workers: int = LAYOUT_WORKERS
) -> Any:
    """``estimator`` fitted on the training rows in ``layout`` (see LAYOUTS) on ``workers``.

    Fitted once per bench: several checks look at the same fit (read-only).
    """
    key = (type(estimator).__name__, repr(estimator.get_params(deep=False)), layout, workers)
    if key not in bench.fitted:
        bench.fitted[key] = _fit_layout_now(estimator, bench, layout, workers)
    return bench.fitted[key]


def _fit_layout_now(estimator: Any, bench: ConformanceBench, layout: str, workers: int) -> Any:
    contract = contract_of(estimator)
    if layout != "sorted arrays":
        return _fit(estimator, bench.dataset(contract, layout), engine=bench.engine(workers))
    data = bench.data(contract)
    order = np.argsort(data.y, kind="stable")
    y = bench.labels(contract, data.y)[order] if _supervised(contract) else None
    return _fit(estimator, data.X[order], y, engine=bench.engine(workers))


def outputs(model: Any, X: np.ndarray) -> np.ndarray:
    """What two fits of one estimator are compared on, for ours and the references alike.

    Class probabilities, else decision values; for KMeans the centres (sorted, as cluster
    numbers are arbitrary); for PCA the explained variances and the absolute components
    (a component's sign is arbitrary).
    """
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X), dtype=np.float64)
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X), dtype=np.float64)
    if hasattr(model, "cluster_centers_"):
        centres = np.asarray(model.cluster_centers_, dtype=np.float64)
        return centres[np.lexsort(centres.T[::-1])]
    variances = np.asarray(model.explained_variance_, dtype=np.float64)
    return np.concatenate([variances, np.abs(np.asarray(model.components_)).ravel()])


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")


def _class_mass(model: Any, X: np.ndarray) -> np.ndarray:
    """Mean predicted probability of each class: stable under a model's own randomness."""
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X), dtype=np.float64).mean(axis=0)
    predicted = np.asarray(model.predict(X))
    return np.array([np.mean(predicted == c) for c in model.classes_])


def _weight_gap(a: Any, b: Any, X: np.ndarray, measure: str) -> float:
    if measure == "class mass":
        return _gap(_class_mass(a, X), _class_mass(b, X))
    return _gap(outputs(a, X), outputs(b, X))


def _inertia(model: Any, X: np.ndarray) -> float:
    centres = np.asarray(model.cluster_centers_, dtype=np.float64)
    distances = ((X[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return float(distances.min(axis=1).sum())


def score(model: Any, bench: ConformanceBench, contract: EstimatorContract) -> float:
    """The contract's test score of ``model`` (higher is better; see EstimatorContract.score)."""
    data = bench.data(contract)
    if contract.score == "accuracy":
        return float(np.mean(np.asarray(model.predict(data.X_test)) == data.y_test))
    if contract.score == "inertia ratio":
        reference = bench.reference(contract)
        return _inertia(reference, data.X_test) / _inertia(model, data.X_test)
    centred = data.X_test - np.asarray(model.mean_)
    components = np.asarray(model.components_, dtype=np.float64)
    residual = centred - centred @ components.T @ components
    return 1.0 - float((residual**2).sum() / (centred**2).sum())


def _not_applicable(estimator: Any, check: str) -> bool:
    """True when the contract says ``check`` does not apply (it must say why)."""
    reason = contract_of(estimator).not_applicable.get(check)
    if reason is not None:
        _expect(bool(reason.strip()), _fail(estimator, check, "not applicable without a reason"))
    return reason is not None
