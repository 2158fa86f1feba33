"""The estimator checks that a parameter is honoured or refused, never ignored:
``sample_weight`` (equal to repeated rows), ``class_weight`` (equal to the reference's) and
the budgets (``max_iter``, ``n_estimators``, epochs, rounds)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from shardlearn._estimator_contracts import ConformanceBench
from shardlearn.testing._estimator_fits import (
    CLASS_WEIGHTS,
    LAYOUT_WORKERS,
    MOVED_SHARE,
    WEIGHTED_OUT_SHARE,
    _expect_within,
    _fail,
    _fit,
    _fit_arrays,
    _gap,
    _not_applicable,
    _supervised,
    _weight_gap,
    contract_of,
    outputs,
)
from shardlearn.testing._support import _expect


def _integer_weights(y: np.ndarray) -> np.ndarray:
    """1 or 2 per row, but 0 on 90% of the last class's rows: honouring them (or repeating the
    rows) makes that class rare, so a fit that ignores them is far off."""
    rng = np.random.default_rng(1)
    weights = rng.integers(1, 3, len(y))
    last = y == np.unique(y)[-1]
    weights[last & (rng.random(len(y)) < WEIGHTED_OUT_SHARE)] = 0
    return weights


def _expect_refused(estimator: Any, check: str, parameter: str, fit: Callable[[], Any]) -> None:
    try:
        fit()
    except (TypeError, ValueError) as error:
        _expect(
            parameter in str(error),
            _fail(estimator, check, f"refused {parameter} without naming it: {error}"),
        )
    else:
        raise AssertionError(
            _fail(estimator, check, f"accepted {parameter} although its contract refuses it")
        )


def check_sample_weight(estimator: Any, bench: ConformanceBench) -> None:
    """Integer sample weights equal repeated rows (and change the model), or are refused."""
    contract = contract_of(estimator)
    data = bench.data(contract)
    weights = _integer_weights(data.y)
    name = "sample_weight"
    if not contract.sample_weight:
        _expect_refused(
            estimator,
            name,
            "sample_weight",
            lambda: _fit_arrays(estimator, bench, contract, sample_weight=weights),
        )
        return
    eng = bench.engine(LAYOUT_WORKERS)
    y = data.y if _supervised(contract) else None
    weighted = _fit(estimator, data.X, y, engine=eng, sample_weight=weights)
    repeated = _fit(
        estimator,
        np.repeat(data.X, weights, axis=0),
        None if y is None else np.repeat(y, weights),
        engine=eng,
    )
    plain = _fit(estimator, data.X, y, engine=eng)
    to_repeated = _weight_gap(weighted, repeated, data.X_test, contract.weight_measure)
    what = f"weighted fit vs repeated rows: {contract.weight_measure}"
    _expect_within(estimator, name, to_repeated, contract.weight_tol, what)
    _expect_moved(estimator, name, (weighted, repeated, plain), data.X_test, "repeated rows")


def _expect_moved(estimator: Any, check: str, fits: tuple, X: np.ndarray, truth: str) -> None:
    """The weighted fit moved from the unweighted one at least MOVED_SHARE as far (in class
    mass; centres for clustering) as the ground truth did: weights were not ignored."""
    weighted, true, plain = fits
    measure = "class mass" if hasattr(weighted, "classes_") else "outputs"
    moved = _weight_gap(weighted, plain, X, measure)
    true_moved = _weight_gap(true, plain, X, measure)
    _expect(
        moved >= MOVED_SHARE * true_moved,
        _fail(
            estimator,
            check,
            f"weights ignored? the weighted fit moved the {measure} by {moved:.3g}, "
            f"{truth} by {true_moved:.3g} (at least {MOVED_SHARE:g} of it expected)",
        ),
    )


def check_class_weight(estimator: Any, bench: ConformanceBench) -> None:
    """``class_weight`` gives the reference's class-weighted model (and changes the model), or
    is refused; an estimator without the parameter refuses it in ``set_params``."""
    contract = contract_of(estimator)
    name = "class_weight"
    if "class_weight" not in estimator.get_params(deep=False):
        _expect(not contract.class_weight, _fail(estimator, name, "no class_weight parameter"))
        _expect_refused(
            estimator, name, "class_weight", lambda: estimator.set_params(class_weight="balanced")
        )
        return
    from sklearn.base import clone

    data = bench.data(contract)
    weights = dict(zip(data.classes.tolist(), CLASS_WEIGHTS, strict=True))
    if not contract.class_weight:
        _expect_refused(
            estimator,
            name,
            "class_weight",
            lambda: _fit_arrays(clone(estimator).set_params(class_weight=weights), bench, contract),
        )
        return
    weighted = _fit_arrays(clone(estimator).set_params(class_weight=weights), bench, contract)
    plain = _fit_arrays(estimator, bench, contract)
    reference = contract.make_reference().set_params(class_weight=weights).fit(data.X, data.y)
    X = data.X_test
    if contract.output_tol is not None:
        gap, what = _gap(outputs(weighted, X), outputs(reference, X)), "outputs"
        tolerance = contract.output_tol
    else:
        gap, what = _weight_gap(weighted, reference, X, "class mass"), "class mass"
        tolerance = contract.weight_tol
    what = f"class-weighted fit vs {contract.reference}(class_weight): {what}"
    _expect_within(estimator, name, gap, tolerance, what)
    reference_plain = contract.make_reference().fit(data.X, data.y)
    reference_moved = _weight_gap(reference, reference_plain, X, "class mass")
    moved = _weight_gap(weighted, plain, X, "class mass")
    _expect(
        moved >= MOVED_SHARE * reference_moved,
        _fail(
            estimator,
            name,
            f"class_weight ignored? it moved the class mass by {moved:.3g}, "
            f"{contract.reference}'s by {reference_moved:.3g} (at least {MOVED_SHARE:g} of it "
            "expected)",
        ),
    )


def _fit_recording(estimator: Any, bench: ConformanceBench, **params: Any) -> tuple[Any, list]:
    """Fit a clone with ``params`` on arrays; the model and the warnings the fit raised."""
    import warnings

    from sklearn.base import clone

    contract = contract_of(estimator)
    data = bench.data(contract)
    y = bench.labels(contract, data.y) if _supervised(contract) else None
    model = clone(estimator).set_params(**params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(data.X, y, engine=bench.engine(LAYOUT_WORKERS))
    return model, [w.category.__name__ for w in caught]


def check_budgets(estimator: Any, bench: ConformanceBench) -> None:
    """Budgets (``max_iter``, ``n_estimators``, epochs, rounds) bound the work done: the fitted
    count respects the budget, a used-up ``max_iter`` warns, and budgets 1 and 2 differ."""
    if _not_applicable(estimator, "budgets"):
        return
    contract = contract_of(estimator)
    X = bench.data(contract).X_test
    for budget in contract.budgets:
        fits = {b: _fit_recording(estimator, bench, **{budget.parameter: b}) for b in (1, 2)}
        counts = {b: int(getattr(model, budget.attribute)) for b, (model, _) in fits.items()}
        where = f"{budget.parameter}: {budget.attribute} = {counts}"
        for b, (_model, warned) in fits.items():
            ok = counts[b] == b if budget.kind == "exact" else 0 <= counts[b] <= b
            _expect(ok, _fail(estimator, "budgets", f"{where}, budget {b} ({budget.kind})"))
            if budget.kind == "max" and counts[b] == b:
                _expect(
                    "ConvergenceWarning" in warned,
                    _fail(estimator, "budgets", f"{where}: budget {b} used up without warning"),
                )
        if counts == {1: 1, 2: 2}:
            gap = _gap(outputs(fits[1][0], X), outputs(fits[2][0], X))
            _expect(
                gap > 0,
                _fail(estimator, "budgets", f"{where}: budgets 1 and 2 gave the same model"),
            )
