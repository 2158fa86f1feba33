"""The estimator suite: :data:`ESTIMATOR_CHECKS` (every check by name, in the order they run)
and :func:`check_estimator`, which runs them on one catalogue estimator."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from shardlearn._estimator_contracts import ConformanceBench
from shardlearn.testing._estimator_checks import (
    check_artifact_round_trip,
    check_clone_and_params,
    check_fit_returns_self,
    check_layout_invariance,
    check_matches_reference,
    check_not_fitted,
    check_predict_proba,
    check_worker_count_invariance,
)
from shardlearn.testing._fault_checks import check_checkpoint_invariance, check_killed_worker
from shardlearn.testing._parameter_checks import (
    check_budgets,
    check_class_weight,
    check_sample_weight,
)
from shardlearn.testing._support import _expect

#: The estimator checks by name (``check_`` prefix dropped), in the order check_estimator runs.
ESTIMATOR_CHECKS: dict[str, Callable[[Any, ConformanceBench], None]] = {
    "clone_and_params": check_clone_and_params,
    "fit_returns_self": check_fit_returns_self,
    "not_fitted": check_not_fitted,
    "predict_proba": check_predict_proba,
    "matches_reference": check_matches_reference,
    "layout_invariance": check_layout_invariance,
    "worker_count_invariance": check_worker_count_invariance,
    "sample_weight": check_sample_weight,
    "class_weight": check_class_weight,
    "budgets": check_budgets,
    "artifact_round_trip": check_artifact_round_trip,
    "killed_worker": check_killed_worker,
    "checkpoint_invariance": check_checkpoint_invariance,
}


def check_estimator(
    estimator: Any,
    *,
    engine: str = "local",
    workdir: str | os.PathLike[str] | None = None,
    checks: list[str] | None = None,
) -> None:
    """Run the distributed conformance checks on a catalogue estimator.

    Every check runs, even after a failure; then one AssertionError lists every failure,
    each naming the estimator, the check, the figure and the tolerance.

    Parameters
    ----------
    estimator : estimator
        An instance of a class in ``shardlearn.models.MODELS``; its contract (reference and
        tolerances) is ``ESTIMATOR_CONTRACTS[name]``. Keep its parameters small: the checks fit
        it some 30 times. A clone is checked; ``random_state=None`` becomes 0 there.
    engine : {"local", "ray"}, default "local"
        Engine kind; 1, 2 and 4-worker engines of it are created (a running Ray cluster is
        joined).
    workdir : path, optional
        Scratch directory for the datasets (a fresh temporary one by default).
    checks : list of str, optional
        Names from :data:`ESTIMATOR_CHECKS` (all by default).

    Examples
    --------
    >>> from shardlearn.models import GaussianNB
    >>> check_estimator(GaussianNB(), checks=["clone_and_params", "predict_proba"])
    """
    import tempfile

    from shardlearn.base import clone

    estimator = clone(estimator)
    # Every check compares fits with each other, so an unseeded estimator is seeded, as
    # scikit-learn's own check_estimator does; the caller's instance is left as it is.
    if "random_state" in estimator.get_params(deep=False) and estimator.random_state is None:
        estimator.set_params(random_state=0)
    failures = []
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        bench = ConformanceBench(scratch, engine)
        try:
            for name in checks or list(ESTIMATOR_CHECKS):
                try:
                    ESTIMATOR_CHECKS[name](estimator, bench)
                except AssertionError as failure:
                    failures.append(str(failure))
        finally:
            bench.close()
    _expect(not failures, "\n".join(failures))
