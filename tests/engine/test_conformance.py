"""The engine conformance suite (``shardlearn.testing``) on every engine."""

from __future__ import annotations

import pytest

from shardlearn.engine import engine
from shardlearn.testing import ENGINE_CHECKS, check_engine


@pytest.fixture(params=["in-process", "local", pytest.param("ray", marks=pytest.mark.ray)])
def conformance_engine(request: pytest.FixtureRequest):
    """The in-process local engine (workers=1), 2 local worker processes, and Ray."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    name, workers = ("local", 1) if request.param == "in-process" else (request.param, 2)
    with engine(name, workers=workers) as eng:
        yield eng


@pytest.mark.parametrize("check", sorted(ENGINE_CHECKS))
def test_engine_conformance(conformance_engine, check, tmp_path):
    ENGINE_CHECKS[check](conformance_engine, tmp_path)


def test_check_engine_runs_every_registered_check():
    # check_engine(engine) runs ENGINE_CHECKS in order; each one is exercised above.
    assert check_engine.__module__.startswith("shardlearn.testing")
    assert {"priority_order", "dependencies", "worker_lost_is_retried"} <= set(ENGINE_CHECKS)
