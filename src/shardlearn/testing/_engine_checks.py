"""The engine conformance checks: ``check_*(engine, workdir)``, :data:`ENGINE_CHECKS` (every
check by name, for a test suite to parametrise over) and :func:`check_engine` (all of them).

Synchronisation between the test driver and workers goes through files in ``workdir``, never
through sleeps: a worker writes a file when it reaches a point, the driver waits for it.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shardlearn.engine import Engine, Resources, TaskGraph, WorkerGroup
from shardlearn.exceptions import GraphCycleError, ResourceError, TaskFailed
from shardlearn.testing._engine_workers import (
    _big_result,
    _checksum,
    _describe,
    _die_once,
    _dies_while_rank_0_waits,
    _raise_in_worker,
    _raise_value_error,
    _rank_list,
    _square,
    _task_dies_once,
    _timed,
    _touch,
)
from shardlearn.testing._support import (
    SYNC_TIMEOUT,
    _expect,
    fake_shards,
    kill_worker,
    wait_for_file,
    write_atomic,
)


def _is_in_process(engine: Engine) -> bool:
    return bool(getattr(engine, "in_process", False))


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


def check_worker_lost_is_reported_at_once(engine: Engine, workdir: Path) -> None:
    """``on_worker_lost`` hears of a dead worker while the others still run their part (so a
    collective can stop them), and the call is retried on a replacement."""
    if _is_in_process(engine):
        return  # the worker is the calling process itself
    lost: list[int] = []

    def report(rank: int) -> None:
        lost.append(rank)
        write_atomic(workdir / "lost", str(rank))

    with engine.workers(2) as group, group.on_worker_lost(report):
        results = group.run(_dies_while_rank_0_waits, str(workdir))
    _expect(lost == [1], f"on_worker_lost was told {lost}, not [1]")
    _expect(results == [0, 1], f"bad results {results}")


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
