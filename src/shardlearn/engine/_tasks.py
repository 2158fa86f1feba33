"""A pool of stateless task processes behind ``LocalEngine.submit``.

One dispatcher thread owns the processes. It keeps a FIFO queue of submitted tasks, sends the
next task to any idle process, and waits (``multiprocessing.connection.wait``) on the busy
processes' pipes and sentinels plus a wake-up pipe that ``submit`` writes to. A process that
dies while running a task is replaced and the task re-queued, up to ``max_retries`` times;
then the task's future raises :class:`~shardlearn.exceptions.WorkerLost`.

The pool enforces resources: the tasks *running* (the first task sent to each process) never
need more than the pool's capacity together. A task starts on an idle process when it fits next
to the running ones. Otherwise it may be queued behind a running task that needs at least as
much as it does (like ``ProcessPoolExecutor``'s queued calls): it inherits that task's budget
when it starts, so the total cannot grow, and the process moves on without a round trip through
the driver. Tasks leave the queue in order; the first one that cannot be placed waits.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from shardlearn.engine._process import Dead, WorkerProcess
from shardlearn.engine.base import Resources
from shardlearn.exceptions import EngineError, TaskFailed, WorkerLost

__all__ = ["TaskPool"]


@dataclass
class _Task:
    future: Future
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    resources: Resources
    attempts: int = 0

    @property
    def name(self) -> str:
        return str(getattr(self.fn, "__qualname__", self.fn))


class TaskPool:
    """``size`` task processes started on demand; see the module docstring."""

    def __init__(self, size: int, max_retries: int, capacity: Resources) -> None:
        self.size = size
        self.max_retries = max_retries
        self.capacity = capacity
        self._queue: deque[_Task] = deque()
        self._lock = threading.Lock()
        self._procs: list[WorkerProcess | None] = [None] * size
        self._running: dict[int, deque[tuple[_Task, int]]] = {}
        self._wake_read, self._wake_write = os.pipe()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="shardlearn-tasks", daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict, resources: Resources
    ) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise EngineError("This engine is closed; create a new one.")
            self._queue.append(_Task(future, fn, args, kwargs, resources))
        self._wake()
        return future

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join()
        for proc in self._procs:
            if proc is not None:
                proc.stop(graceful=not self._running)
        for outstanding in self._running.values():
            for task, _ in outstanding:
                task.future.set_exception(EngineError("The engine was closed while it ran."))
        for task in self._queue:
            task.future.cancel()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except OSError:  # closed meanwhile
            pass

    # -- dispatcher thread --------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            self._dispatch()
            handles: dict[Any, int] = {}
            for slot in self._running:
                proc = self._running_process(slot)
                handles[proc.conn] = slot
                handles[proc.sentinel] = slot
            ready = wait([self._wake_read, *handles])
            if self._wake_read in ready:
                os.read(self._wake_read, 4096)
            for slot in sorted({handles[h] for h in ready if h in handles}):
                self._poll(slot)

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                task = self._queue[0] if self._queue else None
            if task is None:
                return
            slot = self._place(task)
            if slot is None:
                return  # the first task waits for resources; later ones wait behind it
            with self._lock:
                self._queue.popleft()
            if task.attempts == 0 and not task.future.set_running_or_notify_cancel():
                continue  # cancelled before it started
            self._start(slot, task)

    def _place(self, task: _Task) -> int | None:
        """A process for ``task`` (see the module docstring), or None if it must wait."""
        heads = [queue[0][0].resources for queue in self._running.values() if queue]
        in_use = sum(heads, Resources(0, 0, 0))
        if not heads or (in_use + task.resources).fits(self.capacity):
            for slot in range(self.size):
                if not self._running.get(slot):
                    return slot
        for slot in range(self.size):
            queue = self._running.get(slot)
            if queue and len(queue) == 1 and task.resources.fits(queue[0][0].resources):
                return slot
        return None

    def _start(self, slot: int, task: _Task) -> None:
        try:
            proc = self._procs[slot]
            if proc is None:
                proc = self._procs[slot] = WorkerProcess(slot, self.size)
            call_id = proc.send("call", task.fn, task.args, task.kwargs)
        except Dead:
            self._running.setdefault(slot, deque()).append((task, 0))
            self._lost(slot)
            return
        except Exception as error:  # e.g. an argument that cannot be pickled
            task.future.set_exception(
                TaskFailed(f"{task.name}: cannot send the task to a worker: {error!r}")
            )
            return
        self._running.setdefault(slot, deque()).append((task, call_id))

    def _poll(self, slot: int) -> None:
        outstanding = self._running[slot]
        while outstanding:
            task, call_id = outstanding[0]
            try:
                reply = self._running_process(slot).try_receive(call_id)
            except Dead:
                self._lost(slot)
                return
            if reply is None:
                return
            outstanding.popleft()
            status, value, tb = reply
            if status == "ok":
                task.future.set_result(value)
            else:
                task.future.set_exception(TaskFailed(value, remote_traceback=tb))
        del self._running[slot]

    def _running_process(self, slot: int) -> WorkerProcess:
        """The process of a slot with running tasks (a slot loses its tasks with its process)."""
        proc = self._procs[slot]
        if proc is None:
            raise RuntimeError(f"task slot {slot} has running tasks but no process")
        return proc

    def _lost(self, slot: int) -> None:
        """The process of ``slot`` died: its running task counts an attempt, all are re-queued."""
        proc = self._procs[slot]
        pid = proc.pid if proc is not None else 0
        if proc is not None:
            proc.stop(graceful=False)
        self._procs[slot] = None
        outstanding = list(self._running.pop(slot, ()))
        if not outstanding:
            return
        head = outstanding[0][0]
        head.attempts += 1
        retry = [task for task, _ in outstanding[1:]]
        if head.attempts > self.max_retries:
            head.future.set_exception(
                WorkerLost(
                    f"Task {head.name!r}: its worker process (pid {pid}) died {head.attempts} "
                    f"times; giving up after max_retries={self.max_retries}."
                )
            )
        else:
            retry.insert(0, head)
        with self._lock:
            self._queue.extendleft(reversed(retry))
