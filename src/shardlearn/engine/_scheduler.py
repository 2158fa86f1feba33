"""The scheduler loop behind :meth:`shardlearn.engine.graph.TaskGraph.run`.

See the docstring of :mod:`shardlearn.engine.graph` for the behaviour; this module keeps the
state: ``plan`` (run or cached, per needed task), ``waiting`` (unfinished dependencies per task),
``ready`` (a heap of ``(-priority, insertion index, key)``), ``running`` (future -> key),
``consumers`` (unfinished dependents per result, for releasing it) and ``in_use`` (the summed
resources of the running tasks, never above the engine's capacity).
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from shardlearn.engine._cache import ResultCache
from shardlearn.engine._progress import GraphProgress
from shardlearn.engine.base import Engine, Resources
from shardlearn.exceptions import ShardlearnError, TaskFailed, WorkerLost

if TYPE_CHECKING:
    from shardlearn.engine.graph import RunReport, TaskGraph

__all__ = ["Scheduler"]

#: Seconds between two redraws of the progress bar.
_PROGRESS_INTERVAL = 0.1


class Scheduler:
    """Runs one :class:`~shardlearn.engine.graph.TaskGraph` once."""

    def __init__(
        self,
        graph: TaskGraph,
        engine: Engine,
        wanted: list[str],
        cache: ResultCache | None,
        report: RunReport,
    ) -> None:
        self.graph = graph
        self.tasks = graph.tasks
        self.engine = engine
        self.capacity = engine.capacity
        # What may be submitted at once. An engine that enforces resources itself (Ray) gets
        # one capacity's worth of tasks ahead, queued on its side, so a finishing task is
        # followed at once instead of after a round trip to this scheduler.
        ahead = 2 if engine.enforces_resources else 1
        self.limit = Resources(
            self.capacity.cpus * ahead, self.capacity.gpus * ahead, self.capacity.memory * ahead
        )
        self.wanted = set(wanted)
        self.wanted_order = list(dict.fromkeys(wanted))
        self.cache = cache
        self.report = report
        self.tokens = graph.tokens() if cache is not None else {}
        self.index = {key: i for i, key in enumerate(self.tasks)}
        self.deps = {key: task.dependencies for key, task in self.tasks.items()}
        self.dependents = graph.dependents()
        self.results: dict[str, Any] = {}
        self.to_run: list[str] = []
        self.waiting: dict[str, int] = {}
        self.consumers: dict[str, int] = {}
        self.ready: list[tuple[float, int, str]] = []
        self.running: dict[Future, str] = {}
        self.attempts: dict[str, int] = {}
        self.in_use = Resources(0, 0, 0)
        self.exclusive_running = False
        self.failures: list[tuple[str, BaseException]] = []
        self.cancelled: set[str] = set()
        self.finished = 0
        # Driving state (see _drive): finished futures not yet processed, who drives, the end.
        self.lock = threading.Lock()
        self.done: deque[Future] = deque()
        self.driving = False
        self.stopped = False
        self.fatal: BaseException | None = None
        self.all_done = threading.Event()

    # -- planning -----------------------------------------------------------------------------
    def _plan(self) -> None:
        """Decide which tasks run and which come from the cache (their ancestors are skipped)."""
        plan: dict[str, str] = {}
        stack = list(reversed(self.wanted_order))
        while stack:
            key = stack.pop()
            if key in plan:
                continue
            task = self.tasks[key]
            if self.cache is not None and task.cache:
                hit, value = self.cache.load(self.tokens[key])
                if hit:
                    plan[key] = "cached"
                    self.results[key] = value
                    self.report.cached.append(key)
                    continue
            plan[key] = "run"
            stack.extend(reversed(self.deps[key]))
        self.to_run = [key for key in self.tasks if plan.get(key) == "run"]
        self.report.skipped = [key for key in self.tasks if key not in plan]
        run_set = set(self.to_run)
        for key in self.to_run:
            self.waiting[key] = sum(1 for dep in self.deps[key] if dep in run_set)
            for dep in self.deps[key]:
                self.consumers[dep] = self.consumers.get(dep, 0) + 1
            if self.waiting[key] == 0:
                self._push(key)

    def _push(self, key: str) -> None:
        heapq.heappush(self.ready, (-float(self.tasks[key].priority), self.index[key], key))

    # -- the loop -----------------------------------------------------------------------------
    def run(self, bar: GraphProgress) -> dict[str, Any]:
        self._plan()
        self._drive(None)  # start the first tasks from this thread
        try:
            # Progress is redrawn here; the scheduling itself happens in _drive.
            while not self.all_done.wait(_PROGRESS_INTERVAL):
                self._show(bar)
        except BaseException:
            self.stopped = True
            for future in list(self.running):
                future.cancel()
            raise
        self._show(bar)
        if self.fatal is not None:
            raise self.fatal
        if self.failures:
            self._raise_first_failure()
        return {key: self.results[key] for key in self.wanted_order}

    def _drive(self, future: Future | None) -> None:
        """Process finished futures and start ready tasks; one thread drives at a time.

        Called with None to start, then as the done-callback of every task future -- in
        whichever thread completes it (the local task pool's dispatcher, Ray's callback
        thread). Starting the next task right there saves a thread hand-off per task. A
        callback that arrives while another thread drives only queues its future.
        """
        with self.lock:
            if future is not None:
                self.done.append(future)
            if self.driving:
                return
            self.driving = True
        try:
            while True:
                if not self.stopped:
                    self._start_ready()
                with self.lock:
                    if not self.done:
                        self.driving = False
                        if not self.running:
                            self.all_done.set()
                        return
                    future = self.done.popleft()
                self._finish(future)
        except BaseException as error:  # a scheduler bug must not vanish in a callback thread
            self.fatal = error
            self.driving = False
            self.all_done.set()

    def _show(self, bar: GraphProgress) -> None:
        cached = len(self.report.cached)
        bar.update(
            total=len(self.to_run) + cached,
            done=self.finished + cached,
            running=len(self.running),
            cached=cached,
            failed=len(self.failures),
        )

    def _start_ready(self) -> None:
        while self.ready and not self.exclusive_running:
            key = self.ready[0][2]
            task = self.tasks[key]
            if task.exclusive and self.running:
                return
            if self.running and not (self.in_use + task.resources).fits(self.limit):
                return
            heapq.heappop(self.ready)
            self._submit(key)
            if task.exclusive:
                self.exclusive_running = True

    def _submit(self, key: str) -> None:
        task = self.tasks[key]
        args = _substitute(task.args, self.results)
        kwargs = _substitute(task.kwargs, self.results)
        try:
            future = self.engine.submit(task.fn, *args, resources=task.resources, **kwargs)
        except ShardlearnError as error:
            future = Future()
            future.set_exception(error)
        self.report.started.append(key)
        with self.lock:
            self.running[future] = key
        self.in_use = self.in_use + task.resources
        peak = self.report.peak
        self.report.peak = Resources(
            max(peak.cpus, self.in_use.cpus),
            max(peak.gpus, self.in_use.gpus),
            max(peak.memory, self.in_use.memory),
        )
        future.add_done_callback(self._drive)

    def _finish(self, future: Future) -> None:
        with self.lock:
            key = self.running.pop(future)
        task = self.tasks[key]
        self.in_use = self.in_use - task.resources
        if task.exclusive:
            self.exclusive_running = False
        try:
            value = future.result()
        except WorkerLost as error:
            if self.attempts.get(key, 0) < task.retries:
                self.attempts[key] = self.attempts.get(key, 0) + 1
                self.report.retried.append(key)
                self._push(key)
                return
            self._fail(key, error)
            return
        except Exception as error:
            self._fail(key, error)
            return
        self.finished += 1
        self.results[key] = value
        if self.cache is not None and task.cache:
            self.cache.store(self.tokens[key], key, value)
        for dep in self.deps[key]:
            self.consumers[dep] -= 1
            if self.consumers[dep] == 0 and dep not in self.wanted:
                self.results.pop(dep, None)
                self.report.released.append(dep)
        for child in self.dependents[key]:
            if child in self.waiting and child not in self.cancelled:
                self.waiting[child] -= 1
                if self.waiting[child] == 0:
                    self._push(child)

    def _fail(self, key: str, error: BaseException) -> None:
        self.failures.append((key, error))
        self.report.failed.append(key)
        stack = list(self.dependents[key])
        while stack:
            child = stack.pop()
            if child in self.waiting and child not in self.cancelled:
                self.cancelled.add(child)
                self.report.cancelled.append(child)
                stack.extend(self.dependents[child])

    def _raise_first_failure(self) -> None:
        key, error = self.failures[0]
        cancelled = [k for k in self.tasks if k in self.cancelled]
        note = f" Cancelled dependents: {', '.join(cancelled)}." if cancelled else ""
        others = [k for k, _ in self.failures[1:]]
        if others:
            note += f" Also failed: {', '.join(others)}."
        if isinstance(error, TaskFailed):
            raise TaskFailed(
                f"Task {key!r} failed: {error.args[0] if error.args else error}.{note}",
                remote_traceback=error.remote_traceback,
            ) from error
        if isinstance(error, WorkerLost):
            raise WorkerLost(f"Task {key!r}: {error}{note}") from error
        raise TaskFailed(f"Task {key!r} failed: {type(error).__name__}: {error}.{note}") from error


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    from shardlearn.engine.graph import TaskRef

    if isinstance(value, TaskRef):
        return results[value.key]
    if isinstance(value, list | tuple):
        return type(value)(_substitute(item, results) for item in value)
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    return value
