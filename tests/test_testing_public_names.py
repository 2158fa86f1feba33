"""The public names of ``shardlearn.testing`` survive its split into a package (issue #25):
the lists below are its ``__all__`` and every other public name the single module
``testing.py`` defined, as they were before the split."""

from __future__ import annotations

import pytest

import shardlearn.testing

ALL_BEFORE_THE_SPLIT = [
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

#: Public names outside __all__ that test suites import (the constants, the figures the
#: estimator checks compare, and each check on its own).
OTHER_NAMES_BEFORE_THE_SPLIT = [
    "CLASS_WEIGHTS",
    "LAYOUT_WORKERS",
    "MOVED_SHARE",
    "PROBA_SUM_TOL",
    "SYNC_TIMEOUT",
    "WEIGHTED_OUT_SHARE",
    "WORKER_COUNTS",
    "outputs",
    "score",
    "check_artifact_round_trip",
    "check_assignment_deterministic",
    "check_budgets",
    "check_cache_resumes",
    "check_checkpoint_invariance",
    "check_class_weight",
    "check_clone_and_params",
    "check_cycle",
    "check_dependencies",
    "check_exclusive_runs_alone",
    "check_failure_cancels_dependents",
    "check_fit_returns_self",
    "check_killed_worker",
    "check_large_payloads",
    "check_layout_invariance",
    "check_matches_reference",
    "check_not_fitted",
    "check_predict_proba",
    "check_priority_order",
    "check_reduce_equals_fold",
    "check_resource_error",
    "check_resources_never_oversubscribed",
    "check_run_results_and_state",
    "check_sample_weight",
    "check_submit_results",
    "check_task_failed",
    "check_task_worker_lost_is_retried",
    "check_worker_count_invariance",
    "check_worker_lost_is_retried",
]

#: Checks added after the split (an engine must report a lost worker while its group runs).
ADDED_SINCE = ["check_worker_lost_is_reported_at_once"]


def test_all_is_unchanged():
    assert sorted(shardlearn.testing.__all__) == sorted(ALL_BEFORE_THE_SPLIT)


@pytest.mark.parametrize("name", ALL_BEFORE_THE_SPLIT + OTHER_NAMES_BEFORE_THE_SPLIT + ADDED_SINCE)
def test_each_name_imports_from_shardlearn_testing(name):
    namespace: dict[str, object] = {}
    exec(f"from shardlearn.testing import {name}", namespace)
    assert namespace[name] is getattr(shardlearn.testing, name)


def test_the_check_tables_hold_the_public_checks():
    # ENGINE_CHECKS and ESTIMATOR_CHECKS name the same functions as shardlearn.testing.check_*.
    tables = {**shardlearn.testing.ENGINE_CHECKS, **shardlearn.testing.ESTIMATOR_CHECKS}
    assert len(tables) == 16 + 13 + len(ADDED_SINCE)
    for name, check in tables.items():
        assert getattr(shardlearn.testing, f"check_{name}") is check
