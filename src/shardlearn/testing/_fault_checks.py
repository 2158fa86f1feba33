"""The estimator checks of fault tolerance: a fit whose worker is killed halfway, and the
checkpoint interval, leave the model unchanged.

The killed-worker check kills a worker between two group calls (a counting wrapper around the
real engine decides when), so the moment of the kill is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shardlearn._estimator_contracts import ConformanceBench
from shardlearn.engine import Engine, Resources, WorkerGroup
from shardlearn.testing._estimator_fits import (
    LAYOUT_WORKERS,
    _expect_within,
    _fail,
    _fit,
    _fit_arrays,
    _gap,
    contract_of,
    outputs,
)
from shardlearn.testing._support import _expect, kill_worker


class _CallCountingGroup(WorkerGroup):
    """A real worker group whose ``run`` calls are counted; before call number ``kill_at`` (of
    all groups of its engine) its last worker is killed for real (:func:`kill_worker`)."""

    def __init__(self, group: WorkerGroup, plan: dict) -> None:
        self._group = group
        self._plan = plan
        self.size = group.size
        self.shares_memory = group.shares_memory

    def __getattr__(self, name: str) -> Any:  # pids, actors, ... of the real group
        return getattr(self._group, name)

    def assign(self, shards: Any) -> None:
        self._group.assign(shards)

    def put(self, name: str, value: Any) -> None:
        self._group.put(name, value)

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Any]:
        if self._plan["calls"] == self._plan["kill_at"]:
            kill_worker(self._group, self.size - 1)
            self._plan["killed"] = True
        self._plan["calls"] += 1
        return self._group.run(fn, *args, **kwargs)

    def close(self) -> None:
        self._group.close()

    @property
    def shards(self) -> list[list[Any]]:
        return self._group.shards


class _CallCountingEngine(Engine):
    """Another engine's workers behind :class:`_CallCountingGroup`; closing it closes nothing."""

    def __init__(self, engine: Engine, kill_at: int | None) -> None:
        self._engine = engine
        self.name = engine.name
        self.n_workers = engine.n_workers
        self.max_retries = engine.max_retries
        self.enforces_resources = engine.enforces_resources
        self.plan: dict[str, Any] = {"calls": 0, "kill_at": kill_at, "killed": False}

    @property
    def capacity(self) -> Resources:
        return self._engine.capacity

    def submit(self, fn: Callable[..., Any], /, *args: Any, resources: Any = None, **kw: Any):
        return self._engine.submit(fn, *args, resources=resources, **kw)

    def workers(self, n: int | None = None, resources: Any = None, prefer: str | None = None):
        return _CallCountingGroup(self._engine.workers(n, resources, prefer), self.plan)

    def close(self) -> None:
        """The wrapped engine belongs to the caller."""


def check_killed_worker(estimator: Any, bench: ConformanceBench) -> None:
    """A fit whose worker is killed halfway (between two group calls) equals one that was not
    interrupted: the replacement worker rebuilds its state and the fit resumes."""
    contract = contract_of(estimator)
    dataset = bench.dataset(contract, "random")
    counting = _CallCountingEngine(bench.engine(LAYOUT_WORKERS), kill_at=None)
    undisturbed = _fit(estimator, dataset, engine=counting)
    calls = counting.plan["calls"]
    killing = _CallCountingEngine(bench.engine(LAYOUT_WORKERS), kill_at=calls // 2)
    interrupted = _fit(estimator, dataset, engine=killing)
    name = "killed_worker"
    _expect(killing.plan["killed"], _fail(estimator, name, f"no worker killed ({calls} calls)"))
    X = bench.data(contract).X_test
    gap = _gap(outputs(interrupted, X), outputs(undisturbed, X))
    what = f"killed before group call {calls // 2} of {calls}: outputs"
    _expect_within(estimator, name, gap, contract.kill_tol, what)


def check_checkpoint_invariance(estimator: Any, bench: ConformanceBench) -> None:
    """The checkpoint interval does not change the model (checkpointing every round or never)."""
    contract = contract_of(estimator)
    if contract.checkpoint is None:
        return  # the fit keeps no interval-dependent checkpoints
    from sklearn.base import clone

    often = _fit_arrays(clone(estimator).set_params(**{contract.checkpoint: 1}), bench, contract)
    never = _fit_arrays(
        clone(estimator).set_params(**{contract.checkpoint: 10**6}), bench, contract
    )
    X = bench.data(contract).X_test
    gap = _gap(outputs(often, X), outputs(never, X))
    what = f"{contract.checkpoint}=1 vs {10**6}: outputs"
    _expect_within(estimator, "checkpoint_invariance", gap, contract.kill_tol, what)
