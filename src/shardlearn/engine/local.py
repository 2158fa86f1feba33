"""The ``local`` engine: worker processes on this machine (or the calling process itself).

* ``workers=1``: everything runs in the calling process -- the debugging path. ``submit``
  runs the task at once; a group of one worker keeps its state in this process.
* ``workers=N``: a :class:`ProcessGroup` owns N spawned processes, each with its own
  :class:`~shardlearn.engine.base.WorkerState`. Only shard metadata, broadcast values,
  arguments and results travel through the pipes; workers read their shards themselves.
  ``submit`` uses a separate pool of N task processes (:mod:`shardlearn.engine._tasks`).
* ``workers(prefer="threads")``: a :class:`~shardlearn.engine._threads.ThreadGroup` of N
  threads of the calling process, for worker functions that release the GIL and read data
  that is already in this process's memory (array input): nothing is copied.

When a worker process dies during a call, the group notices at once (it waits on every
process's exit as well as on its pipe), tells the ``on_worker_lost`` callback, starts a
replacement with the same rank, replays its shard assignment and every ``put``, and retries that
worker's part of the call, up to ``max_retries`` times; then it raises
:class:`~shardlearn.exceptions.WorkerLost`. A closed
group hands its (still healthy) processes to a shared idle pool, which serves the next
group (of any local engine), so a sequence of ``fit`` calls pays the process start-up once.

Warm workers. A group opened inside a warm scope (a search, :mod:`shardlearn._warm`) passes the
scope to its processes (the ``reset`` message of a recycled one, a ``warm`` message to a fresh
or replacement one), so each keeps its shard tables and feature blocks across the fits of the
scope; what their calls built is added to the driver's counters. A recycled process goes back
to the rank it last served when that rank is free, so it gets the same shards again and reuses
what it read. When the scope ends on the driver, the idle processes drop its values.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

import psutil

from shardlearn import _warm
from shardlearn.engine import _worker
from shardlearn.engine._process import Dead, WorkerProcess, next_call_id
from shardlearn.engine._tasks import TaskPool
from shardlearn.engine._threads import ThreadGroup, check_worker_function
from shardlearn.engine.base import (
    DEFAULT_MAX_RETRIES,
    Engine,
    Resources,
    WorkerGroup,
    WorkerState,
    assign_by_bytes,
    check_prefer,
)
from shardlearn.exceptions import EngineError, TaskFailed, WorkerLost

__all__ = ["InProcessGroup", "LocalEngine", "ProcessGroup"]

#: Idle worker processes shared by every local engine of this interpreter. Starting a process
#: costs a second or more (interpreter + imports); resetting an idle one costs a round trip.
#: They are reaped at interpreter exit (``_process.stop_all``) or by their parent watchdog.
_IDLE: list[WorkerProcess] = []
_IDLE_LOCK = threading.Lock()
_MAX_IDLE = 8


def _task_failed(summary: str, tb: str) -> TaskFailed:
    return TaskFailed(summary, remote_traceback=tb)


class InProcessGroup(WorkerGroup):
    """A group whose single worker is the calling process (``engine("local", workers=1)``)."""

    shares_memory = True

    def __init__(self) -> None:
        self.size = 1
        self.state = WorkerState(rank=0, size=1, in_process=True)
        self._closed = False

    @property
    def shards(self) -> list[list[Any]]:
        return [list(self.state.shards)]

    def assign(self, shards: Sequence[Any]) -> None:
        self.state.shards = assign_by_bytes(shards, 1)[0]

    def put(self, name: str, value: Any) -> None:
        self.state.context[name] = value

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Any]:
        check_worker_function(fn)
        if self._closed:
            raise EngineError("This worker group is closed; start a new one with eng.workers().")
        try:
            return [fn(self.state, *args, **kwargs)]
        except Exception as error:
            name = getattr(fn, "__qualname__", repr(fn))
            summary = f"{name}: {type(error).__name__}: {error}"
            raise _task_failed(summary, traceback.format_exc()) from error

    def close(self) -> None:
        self._closed = True
        self.state = WorkerState(rank=0, size=1, in_process=True)


class ProcessGroup(WorkerGroup):
    """``size`` spawned worker processes with persistent state (see the module docstring)."""

    def __init__(self, engine: LocalEngine, size: int) -> None:
        self.size = size
        self._engine = engine
        self._shards: list[list[Any]] = [[] for _ in range(size)]
        self._context: dict[str, tuple[int, bytes]] = {}
        self._procs: list[WorkerProcess | None] = [None] * size
        self._lock = threading.Lock()
        self._closed = False
        self._warm = _warm.current()  # the scope its workers keep warm data in, if any
        scope = None if self._warm is None else self._warm.spec
        try:
            for rank in range(size):
                self._procs[rank] = engine._acquire(rank, size, scope)
        except BaseException:
            self.close()
            raise

    # -- public API ---------------------------------------------------------------------------
    @property
    def shards(self) -> list[list[Any]]:
        return [list(part) for part in self._shards]

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers, in rank order (for monitoring and fault tests)."""
        return [proc.pid if proc is not None else 0 for proc in self._procs]

    def assign(self, shards: Sequence[Any]) -> None:
        weights = [self._engine.cpus_per_worker] * self.size
        parts = assign_by_bytes(shards, self.size, weights)
        self._call_each(lambda rank: ("assign", parts[rank]))
        self._shards = parts

    def put(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name:
            raise EngineError(f"A context name must be a non-empty string. Got {name!r}.")
        # Serialised once, the same bytes go to every worker (and to replacements later).
        call_id = next_call_id()
        self._context[name] = (call_id, bytes(ForkingPickler.dumps(("put", call_id, name, value))))
        self._call_each(lambda rank: None, raw=self._context[name])

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Any]:
        check_worker_function(fn)
        return self._call_each(lambda rank: ("run", fn, args, kwargs))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        procs, self._procs = self._procs, [None] * self.size
        for proc in procs:
            if proc is not None:
                self._engine._release(proc)

    # -- machinery ----------------------------------------------------------------------------
    def _call_each(
        self, build: Callable[[int], tuple | None], raw: tuple[int, bytes] | None = None
    ) -> list:
        """Send each worker its message, collect replies in rank order, replace dead workers."""
        if self._closed:
            raise EngineError("This worker group is closed; start a new one with eng.workers().")
        with self._lock:
            attempts = [0] * self.size
            pending: dict[int, int] = {}
            for rank in range(self.size):
                pending[rank] = self._send(rank, build(rank), raw, attempts)
            results: list[Any] = [None] * self.size
            failures: list[TaskFailed] = []
            while pending:
                self._collect(pending, results, failures, build, raw, attempts)
            if failures:
                raise failures[0]
            return results

    def _send(self, rank: int, message: tuple | None, raw: tuple | None, attempts: list) -> int:
        while True:
            proc = self._procs[rank]
            try:
                if proc is None:
                    raise Dead("no process")
                if raw is not None:  # a pre-serialised put
                    proc.send_bytes(raw[1])
                    return raw[0]
                if message is None:
                    raise RuntimeError("a worker call needs a message or a serialised put")
                return proc.send(*message)
            except Dead:
                self._replace(rank, attempts)

    def _collect(self, pending, results, failures, build, raw, attempts) -> None:
        by_handle: dict[Any, int] = {}
        for rank in pending:
            proc = self._procs[rank]
            by_handle[proc.conn] = rank
            by_handle[proc.sentinel] = rank
        for handle in wait(list(by_handle)):
            rank = by_handle[handle]
            if rank not in pending:
                continue
            try:
                proc = self._procs[rank]
                if proc is None:  # as in _send: a missing process is a dead one
                    raise Dead("no process")
                reply = proc.try_receive(pending[rank])
            except Dead:
                self._replace(rank, attempts)
                pending[rank] = self._send(rank, build(rank), raw, attempts)
                continue
            if reply is None:
                continue
            status, value, tb = reply
            del pending[rank]
            if status == "ok":
                results[rank] = _worker.unwrap_counted(value, self._warm)
            else:
                failures.append(_task_failed(f"worker {rank}: {value}", tb))

    def _replace(self, rank: int, attempts: list[int]) -> None:
        """Start a fresh worker for ``rank`` and replay its shards and context."""
        attempts[rank] += 1
        self._worker_lost(rank)
        old = self._procs[rank]
        pid = old.pid if old is not None else 0
        if old is not None:
            old.stop(graceful=False)
        self._procs[rank] = None
        if attempts[rank] > self._engine.max_retries:
            raise WorkerLost(
                f"Worker {rank} (pid {pid}) died {attempts[rank]} times during one call; "
                f"giving up after max_retries={self._engine.max_retries}. A worker usually dies "
                "from running out of memory: use more workers or smaller shards."
            )
        proc = WorkerProcess(rank, self.size)
        self._procs[rank] = proc
        try:
            replay = [proc.call("warm", None if self._warm is None else self._warm.spec)]
            replay.append(proc.call("assign", self._shards[rank]))
            for call_id, message in self._context.values():
                proc.send_bytes(message)
                replay.append(proc.receive(call_id) or ("error", "no reply", ""))
        except Dead:
            self._replace(rank, attempts)
            return
        for status, value, tb in replay:
            if status != "ok":
                raise _task_failed(f"worker {rank}: replaying its context failed: {value}", tb)


class LocalEngine(Engine):
    """Worker processes on this machine. Create it with ``shardlearn.engine.engine("local")``.

    Parameters
    ----------
    workers : int, optional
        Default group size and number of task processes. ``1`` runs everything in the calling
        process. Default: ``$SHARDLEARN_WORKERS`` or the number of CPUs.
    max_retries : int, default=3
        Retries of a call on a fresh worker after its worker process died.
    """

    name = "local"
    enforces_resources = True  # the task pool never runs more than its capacity at once

    def __init__(self, workers: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES) -> None:
        self.n_workers = _resolve_workers(workers)
        if not isinstance(max_retries, int) or max_retries < 0:
            raise EngineError(f"max_retries must be an integer >= 0. Got {max_retries!r}.")
        self.max_retries = max_retries
        self.cpus_per_worker = 1.0
        self._capacity = Resources(cpus=float(self.n_workers), gpus=0.0, memory=_total_memory())
        self._groups: list[WorkerGroup] = []
        self._pool: TaskPool | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def in_process(self) -> bool:
        """True when this engine runs everything in the calling process (``workers=1``)."""
        return self.n_workers == 1

    @property
    def capacity(self) -> Resources:
        return self._capacity

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, resources: Resources | None = None, **kw: Any
    ) -> Future:
        check_worker_function(fn)
        self._check_open()
        self.check_fits(resources or Resources(), f"Task {getattr(fn, '__qualname__', fn)!r}")
        if self.in_process:
            future: Future = Future()
            future.set_running_or_notify_cancel()
            status, value, tb = _worker.call_guarded(fn, args, kw)
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(_task_failed(value, tb))
            return future
        with self._lock:
            if self._pool is None:
                self._pool = TaskPool(self.n_workers, self.max_retries, self.capacity)
        return self._pool.submit(fn, args, kw, resources or Resources())

    def workers(
        self, n: int | None = None, resources: Resources | None = None, prefer: str | None = None
    ) -> WorkerGroup:
        """A group of ``n`` workers: the calling process for one worker on an in-process
        engine, threads of the calling process with ``prefer="threads"`` (see
        :mod:`shardlearn.engine._threads`), else worker processes."""
        self._check_open()
        check_prefer(prefer)
        size = self.n_workers if n is None else n
        if not isinstance(size, int) or size < 1:
            raise EngineError(f"A worker group needs n >= 1 workers. Got {size!r}.")
        if resources is not None:
            self.check_fits(
                Resources(resources.cpus * size, resources.gpus * size, resources.memory * size),
                f"A group of {size} workers",
            )
        if self.in_process and size == 1:
            return InProcessGroup()
        group: WorkerGroup
        if prefer == "threads":
            group = ThreadGroup(size, cpus=self.n_workers)
        else:
            group = ProcessGroup(self, size)
        self._groups.append(group)
        return group

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for group in reversed(self._groups):  # thread groups restore BLAS limits last-in first
            group.close()
        self._groups.clear()
        if self._pool is not None:
            self._pool.close()

    # -- process recycling --------------------------------------------------------------------
    def _acquire(
        self, rank: int, size: int, scope: tuple[str, int | None] | None = None
    ) -> WorkerProcess:
        """An idle process (the one that last served ``rank`` if any) or a new one, reset to
        ``rank`` of ``size`` and warm ``scope``."""
        with _IDLE_LOCK:
            same = [i for i, idle in enumerate(_IDLE) if idle.rank == rank]
            proc = _IDLE.pop(same[-1] if same else -1) if _IDLE else None
        if proc is not None:
            try:
                # A recycled process also takes the driver's current environment (credentials
                # or settings exported since it started), as a fresh one would inherit it.
                status, _, _ = proc.call("reset", rank, size, dict(os.environ), scope)
                if status == "ok":
                    proc.rank = rank
                    return proc
            except Dead:
                pass
            proc.stop(graceful=False)
        proc = WorkerProcess(rank, size)
        if scope is not None:  # not waited for, like init: the next call's reply comes after
            proc.send("warm", scope)
        return proc

    def _release(self, proc: WorkerProcess) -> None:
        with _IDLE_LOCK:
            keep = proc.is_alive() and len(_IDLE) < _MAX_IDLE
            if keep:
                _IDLE.append(proc)
        if not keep:
            proc.stop()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("This engine is closed; create a new one with engine('local').")


def _release_idle(scope: str) -> None:
    """Tell the idle worker processes that warm ``scope`` ended (:func:`_warm.on_release`)."""
    with _IDLE_LOCK:  # taken out meanwhile: no group may talk to them at the same time
        idle, _IDLE[:] = list(_IDLE), []
    kept = []
    for proc in idle:
        try:
            proc.call("release", scope)
            kept.append(proc)
        except Dead:  # it died while idle
            proc.stop(graceful=False)
    with _IDLE_LOCK:
        _IDLE.extend(kept)


_warm.on_release(_release_idle)


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        if _worker.IN_WORKER:
            return 1  # nested work inside a worker stays in that worker
        env = os.environ.get("SHARDLEARN_WORKERS")
        if env:
            try:
                workers = int(env)
            except ValueError:
                raise EngineError(f"SHARDLEARN_WORKERS must be an integer. Got {env!r}.") from None
        else:
            workers = os.cpu_count() or 1
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise EngineError(f"The number of workers must be an integer >= 1. Got {workers!r}.")
    return workers


def _total_memory() -> int:
    return int(psutil.virtual_memory().total)
