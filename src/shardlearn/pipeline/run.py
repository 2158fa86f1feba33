"""Compile a :class:`~shardlearn.pipeline.spec.PipelineSpec` into one TaskGraph and run it.

Each stage becomes one task whose arguments are its options and the results of the stages it
reads (TaskRefs), so the graph's dependencies are the spec's. Stage functions run on the
driver, in threads, through :class:`DriverEngine`: they are orchestration (an L-BFGS loop, an
XGBoost tracker, an evaluation merge) whose heavy work already runs on the real engine's worker
groups. The real engine's capacity still gates them: a stage asking for ``cpus: 2`` starts only
when two CPUs are free, so independent stages (three models side by side) run concurrently as
far as the engine has room, and never oversubscribe it. The real engine is the current engine
(``with engine(...)``) while the stages run, so what they start -- an ingest's byte ranges, a
fit's worker groups -- runs on it, even when it was only passed as ``engine=``.

Cores of in-process fits. On the local engine a stage's in-process fit (XGBoost below the
cost model's threshold trains in the driver) uses the machine's cores less the CPUs the stages
running beside it hold, asked again before every boosting round
(:func:`shardlearn.models.sharing_cores`): beside the forest's workers it trains on one thread,
and takes every core once they end. XGBoost's threads meet at a barrier many times a round; a
second thread on a core another stage keeps busy spins there (measured at 200k demo rows
beside the forest: 29 s of driver CPU with 2 threads, 6 s with 1). Hist grows the same trees
with any thread count, so the model does not depend on it.

Every finished stage's result is stored in ``WORKDIR/.cache`` (the task graph's result cache,
keyed by the stage's options and its upstream results), so ``--resume`` after a crash or
Ctrl-C skips what already finished. A run without ``--resume`` starts from a clean cache.

Warm data. A run is a warm scope (:mod:`shardlearn._warm`), named by the run and dropped when
it ends (inside ``with engine(...)``, the block's scope, dropped when the block ends): every
stage runs in it, on whatever driver thread, so the worker groups its stages open keep their
shard tables and feature blocks for the next stage, and two train stages with the same
preprocessing on the same dataset fit it once (the second waits for the first, then reuses it;
:mod:`shardlearn.models.pipeline`). A search stage works in the run's scope. What each stage
built and reused is in :attr:`PipelineResult.warm`, and a train stage's result says it
(``reused``).

Where the time went: :class:`DriverEngine` times every stage it runs (when it started after
the run's start, and its wall seconds) into :attr:`PipelineResult.timings`, which the summary
shows. Stages side by side overlap, so their seconds add up to more than the run's; a stage
reused from the cache has no timing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import traceback
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from shardlearn import _warm
from shardlearn.engine import Engine, Resources, TaskGraph, get_engine
from shardlearn.engine import engine as make_current
from shardlearn.engine.graph import TaskRef
from shardlearn.exceptions import SpecError, TaskFailed
from shardlearn.pipeline.spec import STAGE_TYPES, PipelineSpec, StageSpec
from shardlearn.pipeline.stages import STAGE_FUNCTIONS

__all__ = ["DriverEngine", "PipelineResult", "StageTiming", "compile_graph", "run_pipeline"]

CACHE_DIR = ".cache"
# Stage functions mostly wait on worker groups; more threads than stages is never needed.
MAX_DRIVER_THREADS = 32


class DriverEngine(Engine):
    """Runs tasks as threads of the driver, within the capacity of another engine."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        # The run's warm scope, for the stage threads (a context variable stays on its thread).
        handle = _warm.current()
        self._scope = None if handle is None else handle.name
        #: Per stage name: what it built and reused in the run's warm scope.
        self.warm: dict[str, _warm.Counters] = {}
        self.name = inner.name
        self.n_workers = inner.n_workers
        self._threads = ThreadPoolExecutor(MAX_DRIVER_THREADS, thread_name_prefix="stage")
        self.started = time.perf_counter()
        #: Per stage name (a stage function's first argument): its :class:`StageTiming`.
        self.timings: dict[str, StageTiming] = {}
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}  # stage name -> the CPUs it holds

    @property
    def capacity(self) -> Resources:
        return self.inner.capacity

    def submit(
        self, fn: Any, /, *args: Any, resources: Resources | None = None, **kw: Any
    ) -> Future:
        resources = resources or Resources()
        self.check_fits(resources, f"Stage {getattr(fn, '__name__', fn)!r}")
        return self._threads.submit(self._timed, fn, args, kw, resources.cpus)

    def _timed(self, fn: Any, args: tuple, kwargs: dict, cpus: float) -> Any:
        # Every stage function takes its stage name first (compile_graph passes it).
        name = str(args[0])
        with self._lock:
            self._running[name] = cpus
        started = time.perf_counter()
        try:
            with _warm.scope(self._scope) as counters, self._sharing(name):
                if counters is not None:
                    self.warm[name] = counters
                return _guarded(fn, args, kwargs)
        finally:
            ended = time.perf_counter()
            with self._lock:
                self._running.pop(name, None)
            # Unrounded: rounded starts could pass the run's own (unrounded) end.
            self.timings[name] = StageTiming(started - self.started, ended - started)

    def _sharing(self, name: str) -> Any:
        """The stage's in-process fits use the cores the other running stages leave free."""
        if self.inner.name != "local":  # other stages run on the cluster, not on these cores
            return contextlib.nullcontext()
        from shardlearn.models import sharing_cores

        return sharing_cores(lambda: self.free_cores(name))

    def free_cores(self, name: str) -> int:
        """This machine's cores less the CPUs the stages running beside ``name`` hold (at least
        one): the threads an in-process fit of ``name`` may use for its next round."""
        with self._lock:
            held = sum(cpus for stage, cpus in self._running.items() if stage != name)
        return max(1, int(_machine_cores() - held))

    def workers(
        self, n: int | None = None, resources: Resources | None = None, prefer: str | None = None
    ) -> Any:
        return self.inner.workers(n, resources, prefer)

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)


def _machine_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may run on (containers)
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _guarded(fn: Any, args: tuple, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as error:
        raise TaskFailed(f"{type(error).__name__}: {error}", traceback.format_exc()) from error


@dataclass(frozen=True)
class StageTiming:
    """When a stage ran: ``started`` seconds after the run's start, for ``seconds`` (wall)."""

    started: float
    seconds: float


@dataclass
class PipelineResult:
    """Results of a run: per stage, what it returned; which stages were reused from the cache;
    per stage that ran, its :class:`StageTiming` and what it built and reused in the run's warm
    scope (``warm``: :class:`shardlearn._warm.Counters`; :attr:`reuse` sums them up)."""

    spec: PipelineSpec
    results: dict[str, dict[str, Any]]
    cached: list[str]
    seconds: float
    timings: dict[str, StageTiming] = field(default_factory=dict)
    warm: dict[str, _warm.Counters] = field(default_factory=dict)

    @property
    def reuse(self) -> dict[str, int]:
        """What the stages that ran built and reused, summed: ``preprocessors_reused``,
        ``shards_reused``, ``blocks_reused``, ... (:meth:`shardlearn._warm.Counters.summary`)."""
        total = _warm.Counters()
        for counters in self.warm.values():
            total.merge(counters)
        return total.summary()


def _warm_budgets(inner: Engine) -> tuple[int, int | None]:
    """Bytes of warm data the driver and each worker may keep during a run: on the local
    engine, equal shares for the driver and the worker processes of as many groups as stages
    may run at once (one per CPU), so side-by-side stages stay within the share of memory
    one fit's group gets; on Ray, each worker its own share of its machine."""
    if inner.name != "local":
        return _warm.default_budget(inner.n_workers + 1), None
    processes = inner.n_workers * max(1, int(inner.capacity.cpus)) + 1
    share = _warm.default_budget(processes)
    return share, share


def _resources(stage: StageSpec, default_cpus: float) -> Resources:
    requested: dict[str, Any] = dict(stage.resources)
    requested.setdefault("cpus", default_cpus)
    return Resources(**requested)


def _default_cpus(stage: StageSpec, capacity: Resources) -> float:
    # Trainers and evaluators use worker groups; lighter stages take a fraction of a CPU so
    # they never wait behind them.
    if stage.type in ("train", "search", "compare", "evaluate", "predict"):
        return min(1.0, capacity.cpus)
    return min(0.5, capacity.cpus)


def _arguments(spec: PipelineSpec, stage: StageSpec, refs: dict[str, TaskRef]) -> dict[str, Any]:
    """The upstream results a stage function takes, as TaskRefs (or literal paths)."""

    def resolve(value: Any) -> Any:
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return refs.get(value, value) if isinstance(value, str) else value

    names = {"dataset": "dataset", "model": "model", "models": "models", "input": "source"}
    return {
        names[key]: resolve(stage.options[key])
        for key in ("dataset", "model", "models", "input")
        if key in stage.options and key in _reference_keys(stage)
    }


def _reference_keys(stage: StageSpec) -> tuple[str, ...]:
    return STAGE_TYPES[stage.type]["refs"]


def compile_graph(spec: PipelineSpec, capacity: Resources) -> TaskGraph:
    """One task per stage, with the spec's dependencies, priorities, resources and retries."""
    graph = TaskGraph()
    refs: dict[str, TaskRef] = {name: graph.ref(name) for name in spec.stages}
    for name, stage in spec.stages.items():
        if stage.type not in STAGE_FUNCTIONS:
            raise SpecError(f"stage {name!r}: stage type {stage.type!r} is not available yet.")
        referenced = set(stage.references)
        graph.add(
            name,
            STAGE_FUNCTIONS[stage.type],
            name,
            stage.options,
            str(spec.workdir),
            depends_on=[d for d in stage.depends_on if d not in referenced],
            priority=stage.priority,
            resources=_resources(stage, _default_cpus(stage, capacity)),
            retries=stage.retries,
            **_arguments(spec, stage, refs),
        )
    return graph


def run_pipeline(
    spec: PipelineSpec,
    *,
    resume: bool = False,
    engine: Engine | str | None = None,
    progress: bool | None = None,
) -> PipelineResult:
    """Run every stage of ``spec``; with ``resume``, reuse stages finished by an earlier run.

    Parameters
    ----------
    spec : PipelineSpec
    resume : bool, default False
        Keep ``WORKDIR/.cache`` and skip stages whose results are in it.
    engine : Engine or str, optional
        The engine worker groups run on; default the current one.
    progress : bool, optional
        Show the task graph's progress bar (default: when stderr is a terminal).
    """
    cache = spec.workdir / CACHE_DIR
    if not resume and cache.exists():
        shutil.rmtree(cache)
    spec.workdir.mkdir(parents=True, exist_ok=True)
    inner = get_engine(engine)
    graph = compile_graph(spec, inner.capacity)
    # The run's warm scope (the caller's, inside `with engine(...)`): its stages share shard
    # tables, feature blocks and fitted preprocessors, dropped when the run ends.
    name = f"pipeline {spec.name} {os.getpid()} {uuid.uuid4().hex[:12]}"
    with _warm.session(name, *_warm_budgets(inner)):
        driver = DriverEngine(inner)
        try:
            with make_current(inner):  # left open: the caller's (or get_engine's shared) engine
                results = graph.run(
                    driver, outputs=list(spec.stages), cache_dir=cache, progress=progress
                )
        finally:
            driver.close()
    return PipelineResult(
        spec=spec,
        results=results,
        cached=sorted({*graph.last_run.cached, *graph.last_run.skipped}),
        seconds=time.perf_counter() - driver.started,
        timings=dict(driver.timings),
        warm=dict(driver.warm),
    )
