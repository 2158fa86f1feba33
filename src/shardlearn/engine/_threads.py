"""A worker group whose workers are threads of the calling process (``prefer="threads"``).

Work on data that is already in the calling process's memory (``fit(X, y)`` on arrays) does
not need to be copied anywhere when the workers are threads of that process: each worker
reads its rows where they are. This pays off only for worker functions that spend their time
in code that releases the GIL (numpy reductions, BLAS, numba ``nogil`` kernels); a worker
function that runs Python bytecode most of the time would serialise on the GIL, and such work
belongs on worker processes.

State
    Each worker keeps its own :class:`~shardlearn.engine.base.WorkerState` (rank, shards,
    context, cache), exactly as a worker process would, with ``in_process=True``. Values given
    to :meth:`ThreadGroup.put` are shared, not copied: every worker sees the same object, so
    worker functions must treat ``state.context`` as read-only (as they must anyway: a process
    worker's changes would be lost on a replacement).

Calls
    :meth:`ThreadGroup.run` starts the function on every worker at once, one thread each, and
    waits for all of them before it returns or raises, so no worker is ever left running. An
    exception in a worker becomes :class:`~shardlearn.exceptions.TaskFailed` carrying its
    traceback (the first failing rank's), as on the other engines. Calls are serialised: one
    ``run`` at a time per group.

BLAS threads
    The workers share the process's BLAS thread pools. While the group is open, those pools are
    limited to ``cpus // size`` threads (worker processes get the same share each), so that
    ``size`` workers each calling BLAS do not oversubscribe the cores. The limit holds between
    calls too: the calling process's own BLAS work (an optimiser's small products) would
    otherwise wake a second OpenBLAS thread, which then spins, waiting for more work, on a core
    the workers need (a 2M-row pass took 50 ms instead of 32 after one). Closing the group
    restores the setting it found; close groups in the reverse order of opening (``with``
    blocks do).

Failures
    There is no WorkerLost: a thread cannot die without the calling process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from shardlearn.engine import _worker
from shardlearn.engine.base import WorkerGroup, WorkerState, assign_by_bytes
from shardlearn.exceptions import EngineError, TaskFailed

__all__ = ["ThreadGroup", "check_worker_function", "limit_blas"]

_BLAS_CONTROLLER: Any = None
_BLAS_LOCK = threading.Lock()


def check_worker_function(fn: Any) -> None:
    """EngineError unless ``fn`` is callable (the message every local group uses)."""
    if not callable(fn):
        raise EngineError(f"Expected a function to run on the workers. Got {fn!r}.")


def limit_blas(threads: int) -> Any:
    """Limit every loaded BLAS library to ``threads`` threads.

    Returns threadpoolctl's limiter: use it as a context manager, or call its
    ``restore_original_limits()``. The libraries are scanned once per process.
    """
    global _BLAS_CONTROLLER
    from threadpoolctl import ThreadpoolController

    with _BLAS_LOCK:
        # Building a controller scans the loaded libraries: once per process is enough.
        if _BLAS_CONTROLLER is None:
            _BLAS_CONTROLLER = ThreadpoolController()
        return _BLAS_CONTROLLER.limit(limits=threads, user_api="blas")


def _fresh_states(size: int) -> list[WorkerState]:
    return [WorkerState(rank, size, in_process=True) for rank in range(size)]


class ThreadGroup(WorkerGroup):
    """``size`` workers that are threads of the calling process (see the module docstring).

    Parameters
    ----------
    size : int
        Number of workers.
    cpus : int, optional
        CPUs the group may use (default: all of this machine's); while the group is open, the
        process's BLAS pools get ``cpus // size`` threads.

    Examples
    --------
    >>> from shardlearn.engine import engine
    >>> def rank(state):
    ...     return state.rank
    >>> with engine("local", workers=2) as eng, eng.workers(prefer="threads") as group:
    ...     group.shares_memory, group.run(rank)
    (True, [0, 1])
    """

    shares_memory = True

    def __init__(self, size: int, cpus: int | None = None) -> None:
        if not isinstance(size, int) or size < 1:
            raise EngineError(f"A worker group needs n >= 1 workers. Got {size!r}.")
        self.size = size
        self.blas_threads = max(1, (cpus or os.cpu_count() or 1) // size)
        self._states = _fresh_states(size)
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=size, thread_name_prefix="shardlearn-worker"
        )
        self._lock = threading.Lock()
        self._blas = limit_blas(self.blas_threads)

    @property
    def shards(self) -> list[list[Any]]:
        return [list(state.shards) for state in self._states]

    def assign(self, shards: Sequence[Any]) -> None:
        for state, part in zip(self._states, assign_by_bytes(shards, self.size), strict=True):
            state.shards = part

    def put(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name:
            raise EngineError(f"A context name must be a non-empty string. Got {name!r}.")
        for state in self._states:
            state.context[name] = value

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Any]:
        check_worker_function(fn)
        with self._lock:
            if self._pool is None:
                raise EngineError(
                    "This worker group is closed; start a new one with eng.workers()."
                )
            futures = [
                self._pool.submit(_worker.call_guarded, fn, (state, *args), kwargs)
                for state in self._states
            ]
            wait(futures)
        outcomes = [future.result() for future in futures]
        for rank, (status, value, tb) in enumerate(outcomes):
            if status != "ok":
                raise TaskFailed(f"worker {rank}: {value}", remote_traceback=tb)
        return [value for _, value, _ in outcomes]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._states = _fresh_states(self.size)
        if pool is not None:
            pool.shutdown(wait=True)
            self._blas.restore_original_limits()
