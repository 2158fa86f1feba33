"""The ``ray`` engine: the same interface on a Ray cluster.

* ``submit`` runs a Ray task with ``num_cpus`` / ``num_gpus`` / ``memory`` from its
  :class:`~shardlearn.engine.base.Resources`. Ray retries a task whose worker died
  (``max_retries``); an exception inside the task is never retried and becomes
  :class:`~shardlearn.exceptions.TaskFailed` with the remote traceback.
* ``workers(n)`` starts one actor per worker. Without explicit resources an actor uses Ray's
  own default (one CPU to be placed, none held while it lives), so a group never starves the
  tasks of a small cluster; with ``resources=`` each actor holds them.
* Values over :data:`BROADCAST_THRESHOLD` bytes, whether broadcast with ``put`` or passed to
  ``run``, go into the object store once with ``ray.put`` and every actor reads the same object.
* An actor that dies during a call is noticed as soon as Ray reports it (replies are taken in
  the order they come), the group's ``on_worker_lost`` callback is told, and it is replaced by
  a fresh one with the same rank, its shards and the ``put`` context are replayed to it, and
  its part of the call is retried up to ``max_retries`` times.

* Warm data: a group opened inside a warm scope (a search, :mod:`shardlearn._warm`) names it
  to its actors (at start, in ``reset`` when recycled, and to a replacement); each actor runs
  its calls in that scope, keeping its shard tables and feature blocks for the scope's next
  fit, and its counts are added to the driver's. A recycled actor goes back to the rank it
  last served when it can; the idle actors drop a scope's values when it ends on the driver.

Ray is an optional extra: importing this module without it raises an ImportError that says
``pip install 'shardlearn[ray]'``.
"""

from __future__ import annotations

import operator
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from shardlearn import _warm
from shardlearn.engine import _worker
from shardlearn.engine.base import (
    DEFAULT_MAX_RETRIES,
    Engine,
    Resources,
    WorkerGroup,
    WorkerState,
    assign_by_bytes,
    check_prefer,
    tree_combine,
)
from shardlearn.exceptions import EngineError, TaskFailed, WorkerLost

try:
    import ray
    import ray.exceptions
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "The 'ray' engine needs Ray, which is not installed. "
        "Install it with: pip install 'shardlearn[ray]'"
    ) from error

__all__ = ["BROADCAST_THRESHOLD", "RayEngine", "RayGroup"]

#: Payloads larger than this (bytes) are stored once with ``ray.put`` and shared by reference.
BROADCAST_THRESHOLD = 1 << 20

#: Seconds a cluster capacity answer is reused.
_CAPACITY_TTL = 5.0


def _call_task(fn: Callable[..., Any], kw_names: tuple[str, ...], *values: Any) -> tuple:
    _worker.IN_WORKER = True
    args, kwargs = _split(kw_names, values)
    return _worker.call_guarded(fn, args, kwargs)


def _split(kw_names: tuple[str, ...], values: tuple) -> tuple[tuple, dict]:
    n_args = len(values) - len(kw_names)
    return tuple(values[:n_args]), dict(zip(kw_names, values[n_args:], strict=True))


class _Actor:
    """One stateful worker; a Ray actor (``@ray.method`` types each ``handle.method.remote``)."""

    def __init__(self, rank: int, size: int, scope: tuple[str, int | None] | None = None) -> None:
        _worker.IN_WORKER = True
        self.state = WorkerState(rank=rank, size=size)
        self.scope = scope  # the warm scope its calls run in

    @ray.method
    def assign(self, shards: list) -> None:
        self.state.shards = list(shards)

    @ray.method
    def put(self, name: str, value: Any) -> None:
        self.state.context[name] = value

    @ray.method
    def run(self, fn: Callable[..., Any], kw_names: tuple[str, ...], *values: Any) -> tuple:
        args, kwargs = _split(kw_names, values)
        return _worker.run_in_scope(fn, self.state, args, kwargs, self.scope)

    @ray.method
    def reset(self, rank: int, size: int, scope: tuple[str, int | None] | None = None) -> int:
        self.state = WorkerState(rank=rank, size=size)
        self.scope = scope
        return os.getpid()

    @ray.method
    def release(self, scope: str) -> None:
        _warm.release(scope)

    @ray.method
    def pid(self) -> int:
        return os.getpid()


#: Actors reused across groups and engines of this driver (only resource-free ones), with
#: the rank each last served.
_IDLE: list[tuple[int, Any]] = []
_MAX_IDLE_ACTORS = 16
_DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {"max_restarts": 0, "max_concurrency": 1}

_remote_task = ray.remote(_call_task)
_RemoteActor = ray.remote(_Actor)


def _payload_bytes(value: Any, depth: int = 0) -> int:
    """A cheap estimate of a value's serialised size (arrays, bytes, strings, containers)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes | bytearray | memoryview | str):
        return len(value)
    if depth < 3 and isinstance(value, list | tuple | set | frozenset):
        return sum(_payload_bytes(item, depth + 1) for item in value)
    if depth < 3 and isinstance(value, dict):
        return sum(_payload_bytes(item, depth + 1) for item in value.values())
    nbytes = getattr(value, "nbytes", None)  # pyarrow tables, scipy sparse data...
    return int(nbytes) if isinstance(nbytes, int) else 0


def _share(value: Any) -> Any:
    """``ray.put`` a large value once; small ones travel with the call."""
    return ray.put(value) if _payload_bytes(value) > BROADCAST_THRESHOLD else value


def _is_lost(error: BaseException) -> bool:
    lost = (
        ray.exceptions.RayActorError,
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.ObjectLostError,
        ray.exceptions.NodeDiedError,
    )
    return isinstance(error, lost)


def _unwrap(name: str, reply: tuple) -> Any:
    status, value, tb = reply
    if status == "ok":
        return value
    raise TaskFailed(value if value.startswith(name) else f"{name}: {value}", remote_traceback=tb)


class RayGroup(WorkerGroup):
    """One Ray actor per worker; see the module docstring."""

    def __init__(self, engine: RayEngine, size: int, resources: Resources | None) -> None:
        self.size = size
        self._engine = engine
        self._options: dict[str, Any] = dict(_DEFAULT_ACTOR_OPTIONS)
        if resources is not None:
            self._options.update(num_cpus=resources.cpus, num_gpus=resources.gpus)
            if resources.memory:
                self._options["memory"] = resources.memory
        self._shards: list[list[Any]] = [[] for _ in range(size)]
        self._context: dict[str, Any] = {}
        self._closed = False
        self._warm = _warm.current()  # the scope its actors keep warm data in, if any
        self._scope = None if self._warm is None else self._warm.spec
        self.actors: list[Any] = []
        for rank in range(size):
            self.actors.append(self._start(rank))

    @property
    def shards(self) -> list[list[Any]]:
        return [list(part) for part in self._shards]

    def assign(self, shards: Sequence[Any]) -> None:
        weights = [float(self._options.get("num_cpus", 1.0)) or 1.0] * self.size
        parts = assign_by_bytes(shards, self.size, weights)
        self._shards = parts
        self._call_each(lambda rank: self.actors[rank].assign.remote(parts[rank]), "assign")

    def put(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name:
            raise EngineError(f"A context name must be a non-empty string. Got {name!r}.")
        shared = _share(value)
        self._context[name] = shared
        self._call_each(lambda rank: self.actors[rank].put.remote(name, shared), "put")

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Any]:
        if not callable(fn):
            raise EngineError(f"Expected a function to run on the workers. Got {fn!r}.")
        values = [_share(v) for v in (*args, *kwargs.values())]
        names = tuple(kwargs)
        name = getattr(fn, "__qualname__", repr(fn))
        replies = self._call_each(
            lambda rank: self.actors[rank].run.remote(fn, names, *values), name
        )
        failures = [(rank, r) for rank, r in enumerate(replies) if r[0] != "ok"]
        if failures:
            rank, reply = failures[0]
            _unwrap(f"worker {rank}", reply)
        return [_worker.unwrap_counted(reply[1], self._warm) for reply in replies]

    def reduce(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        combine: Callable[[Any, Any], Any] = operator.add,
        **kwargs: Any,
    ) -> Any:
        return tree_combine(self.run(fn, *args, **kwargs), combine)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for rank, actor in enumerate(self.actors):
            self._engine._release_actor(self._options, actor, rank)
        self.actors = []

    # -- machinery ----------------------------------------------------------------------------
    def _start(self, rank: int) -> Any:
        return self._engine._acquire_actor(self._options, rank, self.size, self._scope)

    def _call_each(self, call: Callable[[int], Any], what: str) -> list[Any]:
        if self._closed:
            raise EngineError("This worker group is closed; start a new one with eng.workers().")
        # Replies are taken as they come, not in rank order: a lost actor is noticed (and the
        # on_worker_lost callback told) while the others still run their part.
        pending = {call(rank): rank for rank in range(self.size)}
        results: list[Any] = [None] * self.size
        attempts = [0] * self.size
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            rank = pending.pop(ready[0])
            try:
                results[rank] = ray.get(ready[0])
            except Exception as error:
                if not _is_lost(error):
                    raise TaskFailed(f"worker {rank}: {what}: {error}") from error
                attempts[rank] += 1
                if attempts[rank] > self._engine.max_retries:
                    raise WorkerLost(
                        f"Worker {rank} (a Ray actor) died {attempts[rank]} times during "
                        f"{what!r}; giving up after max_retries={self._engine.max_retries}."
                    ) from error
                self._worker_lost(rank)
                self._replace(rank)
                pending[call(rank)] = rank
        return results

    def _replace(self, rank: int) -> None:
        _kill(self.actors[rank])
        actor = _RemoteActor.options(**self._options).remote(rank, self.size, self._scope)
        self.actors[rank] = actor
        replay = [actor.assign.remote(self._shards[rank])]
        replay += [actor.put.remote(name, value) for name, value in self._context.items()]
        # Errors here surface on the retried call, which then counts as another attempt.
        ray.wait(replay, num_returns=len(replay))


class RayEngine(Engine):
    """The Ray engine. Create it with ``shardlearn.engine.engine("ray", address=...)``.

    Parameters
    ----------
    address : str, optional
        Cluster to connect to (``"auto"``, ``"ray://host:10001"``). When Ray is not initialised
        and no address is given, a local Ray instance is started (and stopped by ``close``).
    workers : int, optional
        Default group size; default: the cluster's CPU count.
    max_retries : int, default=3
        Retries after a worker process or actor died.
    """

    name = "ray"
    enforces_resources = True  # Ray queues a task until its num_cpus/num_gpus/memory are free

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        if not isinstance(max_retries, int) or max_retries < 0:
            raise EngineError(f"max_retries must be an integer >= 0. Got {max_retries!r}.")
        self.max_retries = max_retries
        self._capacity: tuple[float, Resources] | None = None
        self._started_ray = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"address": address} if address else {}
            if not address:
                options.update(include_dashboard=False)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ray.init(**options)
            except Exception as error:
                where = address or "a new local instance"
                raise EngineError(f"Could not start or reach Ray ({where}): {error}") from error
            self._started_ray = True
        if workers is None:
            workers = max(int(self.capacity.cpus), 1)
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise EngineError(f"The number of workers must be an integer >= 1. Got {workers!r}.")
        self.n_workers = workers
        self._groups: list[RayGroup] = []
        self._closed = False

    @property
    def capacity(self) -> Resources:
        # Asking the cluster costs a round trip to Ray's control store, so the answer is reused
        # for a few seconds (clusters do grow and shrink, but not per task).
        now = time.monotonic()
        if self._capacity is None or now - self._capacity[0] > _CAPACITY_TTL:
            total = ray.cluster_resources()
            resources = Resources(
                cpus=float(total.get("CPU", 0.0)),
                gpus=float(total.get("GPU", 0.0)),
                memory=int(total.get("memory", 0)),
            )
            self._capacity = (now, resources)
        return self._capacity[1]

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, resources: Resources | None = None, **kw: Any
    ) -> Future:
        if not callable(fn):
            raise EngineError(f"Expected a function to submit. Got {fn!r}.")
        self._check_open()
        request = resources or Resources()
        name = str(getattr(fn, "__qualname__", fn))
        self.check_fits(request, f"Task {name!r}")
        options: dict[str, Any] = {
            "num_cpus": request.cpus,
            "num_gpus": request.gpus,
            "max_retries": self.max_retries,
            "retry_exceptions": False,
        }
        if request.memory:
            options["memory"] = request.memory
        ref = _remote_task.options(**options).remote(fn, tuple(kw), *args, *kw.values())
        return _as_future(ref, name)

    def workers(
        self, n: int | None = None, resources: Resources | None = None, prefer: str | None = None
    ) -> WorkerGroup:
        """A group of ``n`` actors; ``prefer="threads"`` is ignored (actors never share the
        driver's memory)."""
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
        group = RayGroup(self, size, resources)
        self._groups.append(group)
        return group

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for group in self._groups:
            group.close()
        self._groups.clear()
        if self._started_ray:
            while _IDLE:
                _kill(_IDLE.pop()[1])
            if ray.is_initialized():
                ray.shutdown()

    # -- actor recycling: starting an actor costs a process start, resetting one does not ----
    def _acquire_actor(
        self,
        options: dict[str, Any],
        rank: int,
        size: int,
        scope: tuple[str, int | None] | None = None,
    ) -> Any:
        """An idle actor (the one that last served ``rank`` if any: it holds that rank's warm
        data) reset to ``rank`` of ``size`` and warm ``scope``, or a new one."""
        while options == _DEFAULT_ACTOR_OPTIONS and _IDLE:
            same = [i for i, (last, _) in enumerate(_IDLE) if last == rank]
            actor = _IDLE.pop(same[-1] if same else -1)[1]
            try:
                ray.get(actor.reset.remote(rank, size, scope))
                return actor
            except Exception:  # it died while idle (or Ray restarted): start a fresh one
                _kill(actor)
        return _RemoteActor.options(**options).remote(rank, size, scope)

    def _release_actor(self, options: dict[str, Any], actor: Any, rank: int) -> None:
        # Only actors that hold no resources are kept: an idle actor then costs nothing but
        # memory, and it dies with the driver (it is not detached).
        if options == _DEFAULT_ACTOR_OPTIONS and len(_IDLE) < _MAX_IDLE_ACTORS:
            _IDLE.append((rank, actor))
        else:
            _kill(actor)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("This engine is closed; create a new one with engine('ray').")


def _release_idle(scope: str) -> None:
    """Tell the idle actors that warm ``scope`` ended (:func:`_warm.on_release`)."""
    idle = [actor for _, actor in _IDLE]
    if not idle or not ray.is_initialized():
        return
    try:
        ray.get([actor.release.remote(scope) for actor in idle])
    except Exception:  # an actor died while idle: the next _acquire_actor replaces it
        pass


_warm.on_release(_release_idle)


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor)
    except Exception:  # already dead, or Ray was shut down: nothing left to stop
        pass


def _as_future(ref: Any, name: str) -> Future:
    """A ``concurrent.futures.Future`` for a task ref, translating Ray's errors to ours."""
    future: Future = Future()
    future.set_running_or_notify_cancel()

    def done(ray_future: Future) -> None:
        try:
            future.set_result(_unwrap(name, ray_future.result()))
        except TaskFailed as error:
            future.set_exception(error)
        except Exception as error:
            if _is_lost(error):
                future.set_exception(WorkerLost(f"Task {name!r}: its Ray worker died: {error}"))
            else:
                future.set_exception(TaskFailed(f"{name}: {error}"))

    ref.future().add_done_callback(done)
    return future
