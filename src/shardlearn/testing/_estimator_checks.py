"""The estimator checks of the scikit-learn contract and of distributed invariance: clone and
parameters, fit returns self, not fitted, probabilities, the reference, shard layouts, worker
counts, and the artifact round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shardlearn._estimator_contracts import LAYOUTS, ConformanceBench
from shardlearn.testing._estimator_fits import (
    LAYOUT_WORKERS,
    PROBA_SUM_TOL,
    WORKER_COUNTS,
    _fail,
    _fit_layout,
    _gap,
    _not_applicable,
    _supervised,
    contract_of,
    outputs,
    score,
)
from shardlearn.testing._support import _expect


def check_clone_and_params(estimator: Any, bench: ConformanceBench) -> None:
    """``clone`` copies the parameters; ``set_params(**get_params())`` round-trips; a wrong
    name is an error."""
    from sklearn.base import clone

    params = estimator.get_params(deep=False)
    copy = clone(estimator)
    name = "clone_and_params"
    _expect(copy is not estimator, _fail(estimator, name, "clone returned the same object"))
    _expect(
        repr(copy.get_params(deep=False)) == repr(params),
        _fail(estimator, name, f"clone has {copy.get_params(deep=False)}, expected {params}"),
    )
    _expect(copy.set_params(**params) is copy, _fail(estimator, name, "set_params not self"))
    _expect(
        repr(copy.get_params(deep=False)) == repr(params),
        _fail(estimator, name, "set_params(**get_params()) changed the parameters"),
    )
    try:
        copy.set_params(no_such_parameter=1)
    except ValueError as error:
        _expect("no_such_parameter" in str(error), _fail(estimator, name, f"unclear: {error}"))
    else:
        raise AssertionError(_fail(estimator, name, "set_params accepted an unknown name"))


def check_fit_returns_self(estimator: Any, bench: ConformanceBench) -> None:
    """``fit`` returns the estimator itself, on arrays and on a Dataset."""
    from sklearn.base import clone

    contract = contract_of(estimator)
    data = bench.data(contract)
    for source in ("arrays", "dataset"):
        model = clone(estimator)
        eng = bench.engine(LAYOUT_WORKERS)
        if source == "dataset":
            returned = model.fit(bench.dataset(contract, "random"), engine=eng)
        else:
            y = bench.labels(contract, data.y) if _supervised(contract) else None
            returned = model.fit(data.X, y, engine=eng)
        _expect(
            returned is model,
            _fail(estimator, "fit_returns_self", f"fit on {source} returned {returned!r}"),
        )


def check_not_fitted(estimator: Any, bench: ConformanceBench) -> None:
    """Predicting with an unfitted estimator is a NotFittedError naming the estimator."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    from shardlearn.exceptions import NotFittedError

    X = bench.data(contract_of(estimator)).X_test
    methods = ("predict", "predict_proba", "decision_function", "transform")
    tried = [m for m in methods if hasattr(type(estimator), m)]
    _expect(bool(tried), _fail(estimator, "not_fitted", "no predict/transform method"))
    for method in tried:
        try:
            getattr(clone(estimator), method)(X)
        except (NotFittedError, SklearnNotFitted) as error:
            _expect(
                type(estimator).__name__ in str(error),
                _fail(estimator, "not_fitted", f"{method}: message does not name it: {error}"),
            )
        except Exception as error:
            raise AssertionError(
                _fail(estimator, "not_fitted", f"{method} raised {type(error).__name__}: {error}")
            ) from None
        else:
            raise AssertionError(_fail(estimator, "not_fitted", f"{method} did not raise"))


def check_predict_proba(estimator: Any, bench: ConformanceBench) -> None:
    """Probabilities are in [0, 1], sum to 1 per row and agree with ``predict``."""
    if _not_applicable(estimator, "predict_proba"):
        return
    contract = contract_of(estimator)
    model = _fit_layout(estimator, bench, "random")
    X = bench.data(contract).X_test
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    name = "predict_proba"
    _expect(
        proba.shape == (len(X), len(model.classes_)),
        _fail(estimator, name, f"shape {proba.shape}, expected {(len(X), len(model.classes_))}"),
    )
    worst = float(np.max(np.abs(proba.sum(axis=1) - 1.0)))
    _expect(
        worst <= PROBA_SUM_TOL,
        _fail(estimator, name, f"rows sum to 1 +- {worst:.3g} (tolerance {PROBA_SUM_TOL:g})"),
    )
    _expect(
        proba.min() >= 0 and proba.max() <= 1,
        _fail(estimator, name, f"probabilities outside [0, 1]: {proba.min()}..{proba.max()}"),
    )
    disagree = np.mean(model.classes_[proba.argmax(axis=1)] != np.asarray(model.predict(X)))
    _expect(
        disagree == 0,
        _fail(estimator, name, f"predict differs from argmax(predict_proba) on {disagree:.1%}"),
    )


def check_matches_reference(estimator: Any, bench: ConformanceBench) -> None:
    """Trained on shuffled shards by 2 workers: test score (and outputs) of the reference."""
    contract = contract_of(estimator)
    model = _fit_layout(estimator, bench, "random")
    reference = bench.reference(contract)
    ours, theirs = score(model, bench, contract), score(reference, bench, contract)
    name = "matches_reference"
    _expect(
        abs(ours - theirs) <= contract.reference_tol,
        _fail(
            estimator,
            name,
            f"{contract.score} {ours:.4f}, {contract.reference} {theirs:.4f}: "
            f"gap {abs(ours - theirs):.3g} > tolerance {contract.reference_tol:g}",
        ),
    )
    if contract.output_tol is not None:
        X = bench.data(contract).X_test
        gap = _gap(outputs(model, X), outputs(reference, X))
        _expect(
            gap <= contract.output_tol,
            _fail(
                estimator,
                name,
                f"outputs differ from {contract.reference} by {gap:.3g} "
                f"(tolerance {contract.output_tol:g})",
            ),
        )


def check_layout_invariance(estimator: Any, bench: ConformanceBench) -> None:
    """The same rows in every layout (random, stratified, hash, range, label-sorted arrays)
    give test scores within the layout tolerance of each other and of the reference."""
    contract = contract_of(estimator)
    scores = {
        layout: score(_fit_layout(estimator, bench, layout), bench, contract) for layout in LAYOUTS
    }
    reference = score(bench.reference(contract), bench, contract)
    figures = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
    spread = max(scores.values()) - min(scores.values())
    name = "layout_invariance"
    _expect(
        spread <= contract.layout_tol,
        _fail(
            estimator,
            name,
            f"{contract.score} spread {spread:.3g} over layouts > tolerance "
            f"{contract.layout_tol:g} ({figures}; reference {reference:.4f})",
        ),
    )
    worst = max(scores, key=lambda k: abs(scores[k] - reference))
    gap = abs(scores[worst] - reference)
    _expect(
        gap <= contract.reference_tol,
        _fail(
            estimator,
            name,
            f"{worst}: {contract.score} {scores[worst]:.4f} vs reference {reference:.4f}, gap "
            f"{gap:.3g} > tolerance {contract.reference_tol:g} ({figures})",
        ),
    )


def check_worker_count_invariance(estimator: Any, bench: ConformanceBench) -> None:
    """1, 2 and 4 workers give the same model (within the contract's worker tolerance)."""
    contract = contract_of(estimator)
    X = bench.data(contract).X_test
    models = {n: _fit_layout(estimator, bench, "random", workers=n) for n in WORKER_COUNTS}
    first = WORKER_COUNTS[0]
    for n in WORKER_COUNTS[1:]:
        if contract.worker_measure == "score":
            gap = abs(score(models[n], bench, contract) - score(models[first], bench, contract))
            what = f"{contract.score} differs by"
        else:
            gap = _gap(outputs(models[n], X), outputs(models[first], X))
            what = "outputs differ by"
        _expect(
            gap <= contract.worker_tol,
            _fail(
                estimator,
                "worker_count_invariance",
                f"{n} vs {first} workers: {what} {gap:.3g} (tolerance {contract.worker_tol:g})",
            ),
        )


def check_artifact_round_trip(estimator: Any, bench: ConformanceBench) -> None:
    """``save`` then ``load`` gives a model with identical outputs and predictions."""
    import tempfile

    from shardlearn.registry import load, save

    contract = contract_of(estimator)
    model = _fit_layout(estimator, bench, "random")
    X = bench.data(contract).X_test
    with tempfile.TemporaryDirectory(dir=bench.workdir) as folder:
        restored = load(save(model, Path(folder) / "model"))
    name = "artifact_round_trip"
    gap = _gap(outputs(restored, X), outputs(model, X))
    _expect(gap == 0, _fail(estimator, name, f"outputs differ by {gap:.3g} after save/load"))
    method = "predict" if hasattr(model, "predict") else "transform"
    same = np.array_equal(getattr(restored, method)(X), getattr(model, method)(X))
    _expect(same, _fail(estimator, name, f"{method} differs after save/load"))
