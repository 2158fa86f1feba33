"""Conformance suites: ``check_engine(engine)`` and ``check_estimator(estimator)``.

Each engine check is a function ``check_*(engine, workdir)`` that raises ``AssertionError``
with a message on failure; :data:`ENGINE_CHECKS` maps their names to them so a test suite can
parametrise over them, and :func:`check_engine` runs them all.

The estimator checks (:data:`ESTIMATOR_CHECKS`, run by :func:`check_estimator`) are functions
``check_*(estimator, bench)``: ``bench`` (:class:`ConformanceBench`) holds the data, one dataset
per shard layout and one engine per worker count, shared by all checks; the tolerances come from
the estimator's row of :data:`ESTIMATOR_CONTRACTS` (rendered for
docs/explanation/guarantees.md by :func:`contracts_markdown`). A failure names the estimator,
the check, the figure and the tolerance.

The package is split by purpose into private modules; import every name from here (each
check on its own, the constants, ``outputs`` and ``score`` too, outside ``__all__``):

- ``_support``: helpers for any test suite (files to synchronise on, killing a worker,
  interrupting a child, running the CLI in-process);
- ``_engine_workers`` (the functions workers run, importable by reference) and
  ``_engine_checks`` (the engine checks, ``ENGINE_CHECKS``, ``check_engine``);
- ``_estimator_fits`` (constants, contracts, fitting, the figures compared),
  ``_estimator_checks`` (the scikit-learn contract and distributed invariance),
  ``_parameter_checks`` (weights and budgets honoured or refused), ``_fault_checks`` (a killed
  worker, the checkpoint interval) and ``_estimator_suite`` (``ESTIMATOR_CHECKS``,
  ``check_estimator``).
"""

from __future__ import annotations

from shardlearn._estimator_contracts import (
    ESTIMATOR_CONTRACTS,
    LAYOUTS,
    ConformanceBench,
    EstimatorContract,
    contracts_markdown,
)
from shardlearn.testing._engine_checks import (  # noqa: F401 (re-exports outside __all__)
    ENGINE_CHECKS,
    check_assignment_deterministic,
    check_cache_resumes,
    check_cycle,
    check_dependencies,
    check_engine,
    check_exclusive_runs_alone,
    check_failure_cancels_dependents,
    check_large_payloads,
    check_priority_order,
    check_reduce_equals_fold,
    check_resource_error,
    check_resources_never_oversubscribed,
    check_run_results_and_state,
    check_submit_results,
    check_task_failed,
    check_task_worker_lost_is_retried,
    check_worker_lost_is_reported_at_once,
    check_worker_lost_is_retried,
)
from shardlearn.testing._estimator_checks import (  # noqa: F401 (re-exports outside __all__)
    check_artifact_round_trip,
    check_clone_and_params,
    check_fit_returns_self,
    check_layout_invariance,
    check_matches_reference,
    check_not_fitted,
    check_predict_proba,
    check_worker_count_invariance,
)
from shardlearn.testing._estimator_fits import (  # noqa: F401 (re-exports outside __all__)
    CLASS_WEIGHTS,
    LAYOUT_WORKERS,
    MOVED_SHARE,
    PROBA_SUM_TOL,
    WEIGHTED_OUT_SHARE,
    WORKER_COUNTS,
    contract_of,
    outputs,
    score,
)
from shardlearn.testing._estimator_suite import (
    ESTIMATOR_CHECKS,
    check_estimator,
)
from shardlearn.testing._fault_checks import (  # noqa: F401 (re-exports outside __all__)
    check_checkpoint_invariance,
    check_killed_worker,
)
from shardlearn.testing._parameter_checks import (  # noqa: F401 (re-exports outside __all__)
    check_budgets,
    check_class_weight,
    check_sample_weight,
)
from shardlearn.testing._support import (  # noqa: F401 (re-exports outside __all__)
    SYNC_TIMEOUT,
    announce_and_wait,
    fake_shards,
    interruptible,
    kill_worker,
    run_cli,
    wait_for_file,
    write_atomic,
)

__all__ = [
    "ENGINE_CHECKS",
    "ESTIMATOR_CHECKS",
    "ESTIMATOR_CONTRACTS",
    "LAYOUTS",
    "ConformanceBench",
    "EstimatorContract",
    "announce_and_wait",
    "check_engine",
    "check_estimator",
    "contract_of",
    "contracts_markdown",
    "fake_shards",
    "interruptible",
    "kill_worker",
    "run_cli",
    "wait_for_file",
    "write_atomic",
]
