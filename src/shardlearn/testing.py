"""Conformance suites: ``check_engine(engine)`` and ``check_estimator(estimator)``.

Each check is a function ``check_*(engine, workdir)`` that raises ``AssertionError`` with a
message on failure; :data:`ENGINE_CHECKS` maps their names to them so a test suite can
parametrise over them, and :func:`check_engine` runs them all. The worker-side functions live
here at module level, so every engine (processes, Ray actors) can import them by reference.

Synchronisation between the test driver and workers goes through files in ``workdir``, never
through sleeps: a worker writes a file when it reaches a point, the driver waits for it.

The estimator checks (:data:`ESTIMATOR_CHECKS`, run by :func:`check_estimator`) are functions
``check_*(estimator, bench)``: ``bench`` (:class:`ConformanceBench`) holds the data, one dataset
per shard layout and one engine per worker count, shared by all checks; the tolerances come from
the estimator's row of :data:`ESTIMATOR_CONTRACTS` (rendered for
docs/explanation/guarantees.md by :func:`contracts_markdown`). A failure names the estimator,
the check, the figure and the tolerance. The killed-worker check kills a worker between two
group calls (a counting wrapper around the real engine decides when), so the moment of the kill
is deterministic.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from shardlearn._estimator_contracts import (
    ESTIMATOR_CONTRACTS,
    LAYOUTS,
    ConformanceBench,
    EstimatorContract,
    contracts_markdown,
)
from shardlearn.engine import Engine, Resources, TaskGraph, WorkerGroup, WorkerState
from shardlearn.exceptions import GraphCycleError, ResourceError, TaskFailed

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

#: Seconds a check waits for a worker to reach a synchronisation point before giving up.
SYNC_TIMEOUT = 120.0


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a reader never sees a half-written file (write, then rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def fake_shards(sizes: list[int]) -> list[Any]:
    """Stand-ins for ``shardlearn.data.Shard``: the engine only looks at ``.bytes``."""
    return [SimpleNamespace(index=i, bytes=size) for i, size in enumerate(sizes)]


_RESTORE_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def interruptible(script: str | os.PathLike[str], *args: str) -> list[str]:
    """A command running the Python ``script`` with Ctrl-C (SIGINT) raising KeyboardInterrupt.

    A process started in the background by a non-interactive shell (as some CI runners
    do) ignores SIGINT, and its children inherit that; a test that interrupts a child
    restores the default first.
    """
    return [sys.executable, "-c", _RESTORE_CTRL_C, str(script), *map(str, args)]


def run_cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    """Run ``shardlearn ARGS`` in-process under pytest; returns (exit code, stdout, stderr).

    ``capsys`` is pytest's fixture of that name.
    """
    from shardlearn.cli import app, run_app

    try:
        run_app(app, list(args))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def wait_for_file(path: Path, timeout: float = SYNC_TIMEOUT) -> None:
    """Block until ``path`` exists (a worker reached a point); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.01)


def kill_worker(group: WorkerGroup, rank: int) -> None:
    """Kill worker ``rank`` for real: SIGKILL its process (local) or ``ray.kill`` its actor."""
    pids = getattr(group, "pids", None)
    if pids is not None:
        os.kill(pids[rank], signal.SIGKILL)
        return
    actors = getattr(group, "actors", None)
    if actors is not None:
        import ray

        ray.kill(actors[rank])
        return
    raise AssertionError(f"do not know how to kill a worker of {group!r}")


def _is_in_process(engine: Engine) -> bool:
    return bool(getattr(engine, "in_process", False))


# -- worker-side functions ---------------------------------------------------------------------
def _square(x: float) -> float:
    return x * x


def _describe(state: WorkerState, tag: str) -> dict:
    calls = state.cache["calls"] = state.cache.get("calls", 0) + 1
    return {
        "rank": state.rank,
        "size": state.size,
        "tag": tag,
        "calls": calls,
        "shards": [s.index for s in state.shards],
        "context": {k: v for k, v in state.context.items() if isinstance(v, int | str)},
    }


def _rank_list(state: WorkerState) -> list[int]:
    return [state.rank] * (state.rank + 1)


def _checksum(state: WorkerState, name: str, extra: np.ndarray | None = None) -> list[float]:
    value = state.context[name]
    out = [float(value.sum()), float(value.size)]
    if extra is not None:
        out += [float(extra.sum()), float(extra.size)]
    return out


def _big_result(state: WorkerState, n: int) -> np.ndarray:
    return np.full(n, state.rank, dtype=np.uint8)


def _raise_value_error(x: Any) -> None:
    raise ValueError(f"bad input {x}")


def _raise_in_worker(state: WorkerState) -> None:
    if state.rank == state.size - 1:
        raise ValueError(f"bad shard on worker {state.rank}")


def _timed(key: str, seconds: float, *inputs: Any) -> tuple[str, int, int]:
    start = time.monotonic_ns()
    time.sleep(seconds)
    return key, start, time.monotonic_ns()


def _touch(path: str, *inputs: Any) -> str:
    Path(path).write_text("ran")
    return path


def _die_once(state: WorkerState, workdir: str) -> dict:
    """On worker 0's first attempt: announce itself, then wait to be killed. Else: report."""
    marker = Path(workdir) / "attempted"
    if state.rank == 0 and not marker.exists():
        marker.write_text(str(os.getpid()))
        write_atomic(Path(workdir) / "started", str(os.getpid()))
        deadline = time.monotonic() + SYNC_TIMEOUT
        while time.monotonic() < deadline:  # killed from outside long before this ends
            time.sleep(0.01)
        raise RuntimeError("worker 0 was not killed")
    summary = _describe(state, "fault")
    summary["cache_was_empty"] = summary["calls"] == 1
    return summary


def _task_dies_once(workdir: str, value: int) -> int:
    marker = Path(workdir) / "task-attempted"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        write_atomic(Path(workdir) / "task-started", str(os.getpid()))
        deadline = time.monotonic() + SYNC_TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("the task process was not killed")
    return value * 2


# -- the checks --------------------------------------------------------------------------------
def check_submit_results(engine: Engine, workdir: Path) -> None:
    """``submit`` returns each task's result through a Future."""
    futures = [engine.submit(_square, i) for i in range(8)]
    _expect([f.result() for f in futures] == [i * i for i in range(8)], "wrong submit results")


def check_run_results_and_state(engine: Engine, workdir: Path) -> None:
    """``run`` returns results in worker order; shards, context and cache persist per worker."""
    with engine.workers(2) as group:
        _expect(group.size == 2, f"group.size is {group.size}, expected 2")
        group.assign(fake_shards([50, 10, 30, 20, 40]))
        group.put("seed", 7)
        first = group.run(_describe, "a")
        second = group.run(_describe, tag="b")
    _expect([r["rank"] for r in first] == [0, 1], f"results not in worker order: {first}")
    _expect([r["calls"] for r in second] == [2, 2], f"state.cache did not persist: {second}")
    _expect(all(r["context"] == {"seed": 7} for r in second), "put() did not reach every worker")
    owned = sorted(i for r in first for i in r["shards"])
    _expect(owned == [0, 1, 2, 3, 4], f"every shard must go to exactly one worker: {first}")
    bytes_per_worker = [sum([50, 10, 30, 20, 40][i] for i in r["shards"]) for r in first]
    _expect(sorted(bytes_per_worker) == [70, 80], f"assignment not balanced: {bytes_per_worker}")


def check_assignment_deterministic(engine: Engine, workdir: Path) -> None:
    """The same shards always land on the same workers."""
    shards = fake_shards([5, 9, 1, 7, 7, 3, 2, 8])
    with engine.workers(2) as a, engine.workers(2) as b:
        a.assign(shards)
        b.assign(shards)
        _expect(a.shards == b.shards, "assignment is not deterministic")
        owned = [[s.index for s in part] for part in a.shards]
        # Largest first onto the least-loaded worker: 9+7+3+2 = 21 bytes and 5+1+7+8 = 21.
        _expect(owned == [[1, 4, 5, 6], [0, 2, 3, 7]], f"not a greedy balance: {owned}")


def check_reduce_equals_fold(engine: Engine, workdir: Path) -> None:
    """``reduce`` with an associative, non-commutative combine equals a sequential fold."""
    for size in (1, 2, 3):
        with engine.workers(size) as group:
            results = group.run(_rank_list)
            reduced = group.reduce(_rank_list, combine=lambda a, b: a + b)
        folded = functools.reduce(lambda a, b: a + b, results)
        _expect(reduced == folded, f"reduce over {size} workers: {reduced} != {folded}")


def check_large_payloads(engine: Engine, workdir: Path, megabytes: int = 100) -> None:
    """Values of ``megabytes`` MB go through put, run arguments, results and submit."""
    n = megabytes * 2**20
    payload = np.ones(n, dtype=np.uint8)
    with engine.workers(2) as group:
        group.put("payload", payload)
        sums = group.run(_checksum, "payload", payload)
        _expect(sums == [[float(n), float(n)] * 2] * 2, f"payload corrupted: {sums}")
        big = group.run(_big_result, n)
        _expect([int(b[-1]) for b in big] == [0, 1] and big[1].size == n, "bad large results")
    del big
    future = engine.submit(np.sum, payload)
    _expect(int(future.result()) == n, "a large submit argument was corrupted")


def check_task_failed(engine: Engine, workdir: Path) -> None:
    """An exception in a task or a worker call is TaskFailed with the message and traceback."""
    for call in (
        lambda: engine.submit(_raise_value_error, 3).result(),
        lambda: _run_raising(engine),
    ):
        try:
            call()
        except TaskFailed as error:
            _expect("ValueError" in str(error) and "bad" in str(error), f"message lost: {error}")
            _expect("raise ValueError" in error.remote_traceback, "traceback text missing")
        else:
            raise AssertionError("an exception inside a task did not raise TaskFailed")


def _run_raising(engine: Engine) -> None:
    with engine.workers(2) as group:
        group.run(_raise_in_worker)


def check_resource_error(engine: Engine, workdir: Path) -> None:
    """A task asking for 64 GPUs fails at once, before anything runs, naming task and resource."""
    marker = workdir / "should-not-run"
    graph = TaskGraph()
    graph.add("first", _touch, str(marker))
    graph.add("train", _square, 2.0, resources=Resources(cpus=1, gpus=64))
    try:
        graph.run(engine, progress=False)
    except ResourceError as error:
        _expect("'train'" in str(error) and "gpus" in str(error), f"unclear message: {error}")
    else:
        raise AssertionError("a 64-GPU task did not raise ResourceError")
    _expect(not marker.exists(), "tasks ran although the graph could never finish")
    try:
        engine.submit(_square, 2.0, resources=Resources(gpus=64))
    except ResourceError:
        pass
    else:
        raise AssertionError("submit() accepted a task that can never fit")


def check_cycle(engine: Engine, workdir: Path) -> None:
    """A dependency cycle is reported with its path."""
    graph = TaskGraph()
    graph.add("a", _square, graph.ref("b"))
    graph.add("b", _square, graph.ref("a"))
    try:
        graph.run(engine, progress=False)
    except GraphCycleError as error:
        _expect("a -> b -> a" in str(error) or "b -> a -> b" in str(error), str(error))
    else:
        raise AssertionError("a cycle was not detected")


def check_priority_order(engine: Engine, workdir: Path) -> None:
    """Ready tasks start by priority (higher first), ties in insertion order."""
    everything = Resources(cpus=engine.capacity.cpus)  # one task at a time
    priorities = [0, 5, 1, 5, -2, 3]
    graph = TaskGraph()
    for i, priority in enumerate(priorities):
        graph.add(f"t{i}", _timed, f"t{i}", 0.0, priority=priority, resources=everything)
    results = graph.run(engine, progress=False)
    expected = [f"t{i}" for i in sorted(range(6), key=lambda i: (-priorities[i], i))]
    by_start = [key for key, _, _ in sorted(results.values(), key=lambda r: r[1])]
    _expect(graph.last_run.started == expected, f"started {graph.last_run.started}")
    _expect(by_start == expected, f"ran in the order {by_start}, expected {expected}")


def check_dependencies(engine: Engine, workdir: Path, edges: dict[int, list[int]] | None = None):
    """Every task starts after all of its dependencies have finished (any DAG)."""
    edges = edges if edges is not None else {0: [], 1: [0], 2: [0], 3: [1, 2], 4: [], 5: [3, 4]}
    graph = TaskGraph()
    for node in sorted(edges):
        refs = [graph.ref(f"n{dep}") for dep in edges[node]]
        graph.add(f"n{node}", _timed, f"n{node}", 0.002, *refs)
    results = graph.run(engine, outputs=[f"n{n}" for n in edges], progress=False)
    for node, deps in edges.items():
        _, start, _ = results[f"n{node}"]
        for dep in deps:
            _expect(results[f"n{dep}"][2] <= start, f"n{node} started before n{dep} finished")


def check_resources_never_oversubscribed(engine: Engine, workdir: Path) -> None:
    """The CPUs of the tasks running at any moment never exceed the engine's capacity."""
    capacity = engine.capacity.cpus
    requests = [capacity, capacity / 2, capacity / 2, capacity, capacity / 4, capacity / 2]
    graph = TaskGraph()
    for i, cpus in enumerate(requests * 2):
        graph.add(f"t{i}", _timed, f"t{i}", 0.05, resources=Resources(cpus=cpus))
    results = graph.run(engine, progress=False)
    events = []
    for key, start, end in results.values():
        cpus = graph.tasks[key].resources.cpus
        events += [(start, 1, cpus), (end, 0, -cpus)]  # ends sort before starts at ties
    in_use = 0.0
    for _, _, delta in sorted(events):
        in_use += delta
        _expect(in_use <= capacity + 1e-9, f"{in_use} cpus in use > capacity {capacity}")
    if not engine.enforces_resources:  # otherwise tasks may wait, submitted, on the engine
        _expect(graph.last_run.peak.cpus <= capacity, "the scheduler's own peak > capacity")


def check_failure_cancels_dependents(engine: Engine, workdir: Path) -> None:
    """A failing task cancels its dependents; independent tasks still run; TaskFailed raised."""
    graph = TaskGraph()
    bad = graph.add("bad", _raise_value_error, 1)
    graph.add("after", _touch, str(workdir / "after"), bad)
    graph.add("independent", _touch, str(workdir / "independent"))
    try:
        graph.run(engine, progress=False)
    except TaskFailed as error:
        _expect("'bad'" in str(error) and "after" in str(error), f"unclear: {error}")
    else:
        raise AssertionError("a failing task did not raise TaskFailed")
    _expect(not (workdir / "after").exists(), "a dependent of a failed task ran")
    _expect((workdir / "independent").exists(), "an independent task was not run")
    _expect(graph.last_run.cancelled == ["after"], f"cancelled {graph.last_run.cancelled}")


def check_exclusive_runs_alone(engine: Engine, workdir: Path) -> None:
    """An ``exclusive`` task overlaps no other task."""
    graph = TaskGraph()
    for i in range(6):
        graph.add(f"t{i}", _timed, f"t{i}", 0.03, exclusive=(i == 2), resources=Resources(0.5))
    results = graph.run(engine, progress=False)
    _, start, end = results["t2"]
    for key, other_start, other_end in results.values():
        if key != "t2":
            _expect(other_end <= start or other_start >= end, f"{key} overlapped exclusive t2")


def check_cache_resumes(engine: Engine, workdir: Path) -> None:
    """With a cache directory a re-run loads finished results instead of running again."""
    graph = TaskGraph()
    a = graph.add("a", _square, 3.0)
    graph.add("b", np.arange, a)
    first = graph.run(engine, cache_dir=workdir / "cache", progress=False)
    _expect(graph.last_run.released == ["a"], f"released {graph.last_run.released}")
    second = graph.run(engine, cache_dir=workdir / "cache", progress=False)
    _expect(graph.last_run.started == [], f"re-run started {graph.last_run.started}")
    _expect(np.array_equal(first["b"], second["b"]), "cached result differs")


def check_worker_lost_is_retried(engine: Engine, workdir: Path) -> None:
    """A worker killed during ``run`` is replaced, its shards and context replayed, call retried."""
    if _is_in_process(engine):
        return  # the worker is the calling process itself
    with engine.workers(2) as group:
        group.assign(fake_shards([30, 20, 10]))
        group.put("seed", 11)
        group.run(_describe, "warm-up")  # fills state.cache on both workers
        expected_shards = [[s.index for s in part] for part in group.shards]
        outcome: dict[str, Any] = {}
        thread = threading.Thread(target=_run_into, args=(group, outcome, str(workdir)))
        thread.start()
        wait_for_file(workdir / "started")
        kill_worker(group, 0)
        thread.join(SYNC_TIMEOUT)
    if "error" in outcome:
        raise AssertionError(f"run did not survive a lost worker: {outcome['error']!r}")
    results = outcome["results"]
    _expect([r["rank"] for r in results] == [0, 1], f"bad results {results}")
    _expect([r["shards"] for r in results] == expected_shards, "shards not replayed")
    _expect(results[0]["context"] == {"seed": 11}, "context not replayed to the new worker")
    _expect(results[0]["cache_was_empty"], "a replacement worker must start with an empty cache")
    _expect(not results[1]["cache_was_empty"], "a healthy worker lost its cache")


def _run_into(group: WorkerGroup, outcome: dict, workdir: str) -> None:
    try:
        outcome["results"] = group.run(_die_once, workdir)
    except Exception as error:
        outcome["error"] = error


def check_task_worker_lost_is_retried(engine: Engine, workdir: Path) -> None:
    """Killing the process that runs a submitted task: the task is retried and succeeds."""
    if _is_in_process(engine):
        return
    future = engine.submit(_task_dies_once, str(workdir), 21)
    wait_for_file(workdir / "task-started")
    os.kill(int((workdir / "task-started").read_text()), signal.SIGKILL)
    _expect(future.result(timeout=SYNC_TIMEOUT) == 42, "the retried task returned a wrong value")


ENGINE_CHECKS: dict[str, Callable[[Engine, Path], None]] = {
    name.removeprefix("check_"): fn
    for name, fn in sorted(globals().items())
    if name.startswith("check_") and name != "check_engine" and callable(fn)
}


def check_engine(engine: Engine, workdir: str | os.PathLike[str] | None = None) -> None:
    """Run every conformance check on ``engine`` (a 2-CPU engine or larger).

    Parameters
    ----------
    engine : Engine
        The engine under test; it must be able to start groups of up to 3 workers.
    workdir : path, optional
        A scratch directory (a fresh temporary one by default).
    """
    import tempfile

    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        for name, check in ENGINE_CHECKS.items():
            folder = Path(scratch) / name
            folder.mkdir()
            check(engine, folder)


def announce_and_wait(workdir: str, name: str, *inputs: Any) -> str:
    """Write ``workdir/<name>.pid`` and then wait (up to a few minutes) to be stopped.

    For tests that interrupt or kill a running computation at a known point.
    """
    write_atomic(Path(workdir) / f"{name}.pid", str(os.getpid()))
    deadline = time.monotonic() + SYNC_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return name


# -- estimator conformance ---------------------------------------------------------------------
# ``check_estimator(estimator)`` runs every check below on one catalogue estimator; each check is
# ``check_*(estimator, bench)`` where ``bench`` (a ConformanceBench) holds the shared data,
# datasets and engines and the contract (tolerances) comes from ESTIMATOR_CONTRACTS.

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


# -- the estimator checks ----------------------------------------------------------------------
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
    _expect(
        to_repeated <= contract.weight_tol,
        _fail(
            estimator,
            name,
            f"weighted fit vs repeated rows: {contract.weight_measure} differ by "
            f"{to_repeated:.3g} (tolerance {contract.weight_tol:g})",
        ),
    )
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
    _expect(
        gap <= tolerance,
        _fail(
            estimator,
            name,
            f"class-weighted fit vs {contract.reference}(class_weight): {what} differ by "
            f"{gap:.3g} (tolerance {tolerance:g})",
        ),
    )
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
    _expect(
        gap <= contract.kill_tol,
        _fail(
            estimator,
            name,
            f"killed before group call {calls // 2} of {calls}: outputs differ by {gap:.3g} "
            f"(tolerance {contract.kill_tol:g})",
        ),
    )


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
    _expect(
        gap <= contract.kill_tol,
        _fail(
            estimator,
            "checkpoint_invariance",
            f"{contract.checkpoint}=1 vs {10**6}: outputs differ by {gap:.3g} "
            f"(tolerance {contract.kill_tol:g})",
        ),
    )


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
