"""The engine interface: Engine, WorkerGroup, Resources, WorkerState, and engine selection.

An *engine* runs Python functions somewhere else: in worker processes (``local``) or on a Ray
cluster (``ray``). It offers two things:

* ``submit(fn, *args, resources=...)`` -- one stateless task, returns a ``Future``. The task-graph
  scheduler (:mod:`shardlearn.engine.graph`) is written once against this method.
* ``workers(n)`` -- a :class:`WorkerGroup` of ``n`` long-lived, stateful workers. Each worker owns
  a fixed set of shards (:meth:`WorkerGroup.assign`), keeps broadcast values in
  ``state.context`` (:meth:`WorkerGroup.put`) and whatever it likes in ``state.cache``, which
  persists between calls. ``run(fn, *args)`` calls ``fn(state, *args)`` on every worker.

Shards are treated as opaque objects with a ``bytes`` attribute; the engine never reads them.
The worker functions do, so no data ever travels through the engine's pipes.

``state.cache`` is a *cache*: when a worker dies and is replaced, the new worker receives the
same shards and the replayed ``put`` context, but an empty cache. Functions must rebuild what
they need lazily from ``state.shards`` and ``state.context``.

A ``with engine(...)`` block is a warm scope (:mod:`shardlearn._warm`): worker groups opened
in it keep shard tables and feature blocks for the block's next fit, beyond one group's
``state.cache``, until the block ends.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import heapq
import operator
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from shardlearn import _warm
from shardlearn._engine_choice import ENGINE_ENV, set_lookup
from shardlearn._validation import unknown_name_message
from shardlearn.exceptions import EngineError, ResourceError

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "ENGINE_ENV",
    "Engine",
    "Resources",
    "WorkerGroup",
    "WorkerState",
    "assign_by_bytes",
    "check_prefer",
    "create_engine",
    "engine",
    "engine_from_cli",
    "get_engine",
    "tree_combine",
]

#: How often a call is retried on a fresh worker after its worker died (DESIGN §4).
DEFAULT_MAX_RETRIES = 3


@dataclass(frozen=True)
class Resources:
    """A resource request or a capacity: CPUs, GPUs and memory in bytes.

    Parameters
    ----------
    cpus : float, default=1
        Logical CPUs.
    gpus : float, default=0
        GPUs (fractions allowed, as in Ray).
    memory : int, default=0
        Bytes of memory; ``0`` means "no explicit request".

    Examples
    --------
    >>> Resources(cpus=2).fits(Resources(cpus=4, gpus=0, memory=0))
    True
    >>> Resources(gpus=64).missing(Resources(cpus=2))
    'gpus'
    """

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int = 0

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus", "memory"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"The {name!r} of Resources must be a number >= 0. Got {value!r}.")

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.gpus + other.gpus, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            max(self.cpus - other.cpus, 0.0),
            max(self.gpus - other.gpus, 0.0),
            max(self.memory - other.memory, 0),
        )

    def missing(self, capacity: Resources) -> str | None:
        """The first resource (``"cpus"``, ``"gpus"``, ``"memory"``) over ``capacity``, or None."""
        # A tiny tolerance so that fractional requests summing to the capacity still fit.
        epsilon = 1e-9
        for name in ("cpus", "gpus", "memory"):
            if getattr(self, name) > getattr(capacity, name) + epsilon:
                return name
        return None

    def fits(self, capacity: Resources) -> bool:
        """Whether this request fits into ``capacity`` in every dimension."""
        return self.missing(capacity) is None

    def describe(self) -> str:
        """A short human-readable form: ``'2 cpus, 1 gpus, 512 MiB'``."""
        parts = [f"{self.cpus:g} cpus", f"{self.gpus:g} gpus"]
        if self.memory:
            parts.append(f"{self.memory / 2**20:.0f} MiB")
        return ", ".join(parts)


@dataclass
class WorkerState:
    """What a worker function receives as its first argument.

    Attributes
    ----------
    rank : int
        Position of this worker in its group, ``0 .. size-1``.
    size : int
        Number of workers in the group.
    shards : list
        The shards assigned to this worker (``shardlearn.data.Shard`` objects).
    context : dict
        Values broadcast with :meth:`WorkerGroup.put`; replayed on a replacement worker.
    cache : dict
        Anything the worker wants to keep between calls (loaded shards, feature blocks).
        Empty again on a replacement worker after a :class:`~shardlearn.exceptions.WorkerLost`.
    in_process : bool
        True when the worker runs in the calling process (the in-process group, or a thread of
        a ``prefer="threads"`` group): it shares the caller's memory and BLAS thread pools,
        which its group sizes for it.
    """

    rank: int
    size: int
    shards: list[Any] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    in_process: bool = False


def assign_by_bytes(
    shards: Sequence[Any], n_workers: int, weights: Sequence[float] | None = None
) -> list[list[Any]]:
    """Split ``shards`` over ``n_workers``, balanced by ``shard.bytes``; deterministic.

    Greedy longest-processing-time: shards are taken largest first (ties by original position)
    and each goes to the worker with the lowest load relative to its weight (its CPU count),
    ties to the lowest rank. Within a worker, shards keep their original order.

    Examples
    --------
    >>> from types import SimpleNamespace as S
    >>> parts = assign_by_bytes([S(bytes=5), S(bytes=3), S(bytes=3)], 2)
    >>> [[s.bytes for s in p] for p in parts]
    [[5], [3, 3]]
    """
    if n_workers < 1:
        raise EngineError(f"A worker group needs at least 1 worker. Got {n_workers}.")
    weights = [1.0] * n_workers if weights is None else [float(w) for w in weights]
    if len(weights) != n_workers or min(weights) <= 0:
        raise EngineError("Worker weights must be one positive number per worker.")
    sizes = []
    for position, shard in enumerate(shards):
        size = getattr(shard, "bytes", None)
        if not isinstance(size, int | float) or size < 0:
            raise EngineError(
                f"Shard {position} has no usable 'bytes' attribute ({size!r}); "
                "pass shardlearn.data.Shard objects (from Dataset.shards())."
            )
        sizes.append(size)
    order = sorted(range(len(shards)), key=lambda i: (-sizes[i], i))
    heap = [(0.0, rank) for rank in range(n_workers)]
    picked: list[list[int]] = [[] for _ in range(n_workers)]
    for i in order:
        load, rank = heapq.heappop(heap)
        picked[rank].append(i)
        # Adding at least a tiny amount keeps empty shards round-robin instead of piling up.
        heapq.heappush(heap, (load + (sizes[i] + 1e-9) / weights[rank], rank))
    return [[shards[i] for i in sorted(indices)] for indices in picked]


def tree_combine(values: Sequence[Any], combine: Callable[[Any, Any], Any] = operator.add) -> Any:
    """Combine ``values`` pairwise as a balanced binary tree, keeping their order.

    For an associative ``combine`` this equals a sequential left fold.

    >>> tree_combine([1, 2, 3, 4, 5])
    15
    """
    if not values:
        raise EngineError("Nothing to reduce: the worker group returned no results.")
    level = list(values)
    while len(level) > 1:
        paired = [combine(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


class WorkerGroup(abc.ABC):
    """``size`` long-lived stateful workers (processes, threads or Ray actors).

    Also a context manager.

    Attributes
    ----------
    size : int
        Number of workers.
    shares_memory : bool
        Capability flag: True when the workers run in the calling process (threads, or the
        process itself) and can read the caller's in-memory arrays without a copy.
    """

    size: int
    shares_memory: bool = False
    _on_lost: Callable[[int], None] | None = None

    @abc.abstractmethod
    def assign(self, shards: Sequence[Any]) -> None:
        """Give each worker its shards, balanced by bytes (see :func:`assign_by_bytes`)."""

    @abc.abstractmethod
    def put(self, name: str, value: Any) -> None:
        """Store ``value`` as ``state.context[name]`` on every worker (sent once)."""

    @abc.abstractmethod
    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Any]:
        """Call ``fn(state, *args, **kwargs)`` on every worker; results in worker order."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the workers. Safe to call twice."""

    @property
    @abc.abstractmethod
    def shards(self) -> list[list[Any]]:
        """The shards of each worker, in worker order."""

    def reduce(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        combine: Callable[[Any, Any], Any] = operator.add,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn`` on every worker; combine the results as a tree (:func:`tree_combine`)."""
        return tree_combine(self.run(fn, *args, **kwargs), combine)

    @contextlib.contextmanager
    def on_worker_lost(self, callback: Callable[[int], None]) -> Iterator[None]:
        """Within the block, call ``callback(rank)`` as soon as a call finds worker ``rank`` dead.

        It runs on the driver, in the thread waiting for the call, before the worker is
        replaced and while the other workers may still be running their part. Collective
        training uses it to stop the survivors at once: they would otherwise wait for the lost
        peer until their communication timeout. ``callback`` must return promptly and not
        raise. Workers that live in the calling process (threads) never die alone: it is
        never called for them.
        """
        previous, self._on_lost = self._on_lost, callback
        try:
            yield
        finally:
            self._on_lost = previous

    def _worker_lost(self, rank: int) -> None:
        """Tell the :meth:`on_worker_lost` callback, if any, that worker ``rank`` died."""
        if self._on_lost is not None:
            self._on_lost(rank)

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class Engine(abc.ABC):
    """Where tasks and worker groups run. Use :func:`shardlearn.engine.engine` to create one.

    Attributes
    ----------
    name : str
        ``"local"`` or ``"ray"``.
    n_workers : int
        Default size of :meth:`workers`.
    max_retries : int
        How often a call is retried on a fresh worker after a worker died.
    enforces_resources : bool
        Capability flag: True when the engine itself never runs more tasks than their
        resources allow (Ray). The scheduler may then hand it tasks ahead of time.
    """

    name: str
    n_workers: int
    max_retries: int = DEFAULT_MAX_RETRIES
    enforces_resources: bool = False

    @property
    @abc.abstractmethod
    def capacity(self) -> Resources:
        """Total resources the engine can ever offer at once."""

    @abc.abstractmethod
    def submit(
        self, fn: Callable[..., Any], /, *args: Any, resources: Resources | None = None, **kw: Any
    ) -> Future:
        """Run ``fn(*args, **kw)`` as one task; the Future raises TaskFailed or WorkerLost."""

    @abc.abstractmethod
    def workers(
        self, n: int | None = None, resources: Resources | None = None, prefer: str | None = None
    ) -> WorkerGroup:
        """Start a group of ``n`` (default :attr:`n_workers`) stateful workers.

        ``prefer`` is a soft hint, as in joblib: ``"threads"`` asks for workers that share the
        calling process's memory (see :attr:`WorkerGroup.shares_memory`), for worker functions
        that release the GIL; an engine that cannot offer them (Ray) returns its usual workers.
        ``None`` or ``"processes"``: the engine's usual workers.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every worker and task process this engine started. Safe to call twice."""

    def check_fits(self, resources: Resources, what: str) -> None:
        """Raise ResourceError when ``resources`` can never fit into :attr:`capacity`."""
        capacity = self.capacity
        missing = resources.missing(capacity)
        if missing is not None:
            raise ResourceError(
                f"{what} asks for {getattr(resources, missing):g} {missing} but the "
                f"{self.name!r} engine has only {getattr(capacity, missing):g} {missing} in total "
                f"(capacity: {capacity.describe()}). Lower the request or use a bigger cluster."
            )

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} n_workers={self.n_workers}>"


#: Values of the ``prefer`` hint of :meth:`Engine.workers`.
PREFER_OPTIONS = ("processes", "threads")


def check_prefer(prefer: str | None) -> None:
    """EngineError for a ``prefer`` hint that is not None or one of :data:`PREFER_OPTIONS`."""
    if prefer is not None and prefer not in PREFER_OPTIONS:
        raise EngineError(
            f"The 'prefer' parameter of workers() must be one of {PREFER_OPTIONS} or None. "
            f"Got {prefer!r}."
        )


# -- choosing an engine ------------------------------------------------------------------------
# ENGINE_ENV (``SHARDLEARN_ENGINE``) is defined in the bottom layer, which data reads too.
ENGINE_NAMES = ("local", "ray")

_current: list[Engine] = []  # the stack of ``with engine(...)`` blocks, innermost last
_defaults: dict[str, Engine] = {}  # engines created implicitly, closed at interpreter exit
_selection_lock = threading.Lock()


def _parse_spec(spec: str) -> tuple[str, str | None]:
    name, _, address = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in ENGINE_NAMES:
        raise EngineError(unknown_name_message("engine", name or spec, ENGINE_NAMES))
    if name == "local" and address:
        raise EngineError(f"The local engine takes no address. Got {spec!r}; use 'local'.")
    return name, (address or None)


def create_engine(
    spec: str = "local",
    *,
    workers: int | None = None,
    address: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> Engine:
    """Create an engine from ``"local"``, ``"ray"`` or ``"ray:ADDRESS"`` (caller closes it)."""
    if not isinstance(spec, str):
        raise EngineError(f"An engine is named by a string like 'local' or 'ray'. Got {spec!r}.")
    from shardlearn.engine import _worker

    if _worker.IMPORTING_MAIN:
        raise EngineError(
            "Your script started an engine while a worker imported it (to find a function "
            "defined in it). Put the script's code under `if __name__ == '__main__':`."
        )
    name, spec_address = _parse_spec(spec)
    if name == "local":
        if address is not None:
            raise EngineError("The local engine takes no address; did you mean engine('ray')?")
        from shardlearn.engine.local import LocalEngine

        return LocalEngine(workers=workers, max_retries=max_retries)
    from shardlearn.engine.ray import RayEngine

    return RayEngine(address=address or spec_address, workers=workers, max_retries=max_retries)


@contextlib.contextmanager
def engine(
    spec: str | Engine = "local",
    /,
    *,
    workers: int | None = None,
    address: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> Iterator[Engine]:
    """Use an engine for the duration of a ``with`` block (it becomes the current engine).

    Parameters
    ----------
    spec : str or Engine, default="local"
        ``"local"``, ``"ray"`` or ``"ray:ADDRESS"``; an existing Engine is made current and
        left open at the end of the block.
    workers : int, optional
        Default number of workers. ``engine("local", workers=1)`` runs in this process.
    address : str, optional
        Ray only: ``"auto"``, ``"ray://host:10001"``...; default starts a local Ray.
    max_retries : int, default=3
        Retries on a fresh worker after a worker process or actor died.

    Notes
    -----
    The block is a warm scope (:mod:`shardlearn._warm`): its fits keep, within
    ``$SHARDLEARN_WARM_BUDGET`` (default a quarter of the memory, shared by the driver and
    the workers), the shard tables they read, their feature blocks and the preprocessors a
    ``Pipeline`` fitted, on the driver and on the worker processes, so the next fit on the same
    data reuses them; they are dropped when the block ends. Fits started on other threads of
    this process while the block is open (a thread pool running several fits) work in the
    block's scope too, unless their thread has a scope of its own. Inside another warm scope
    on this thread (a pipeline run, a search) the block uses that scope.

    Examples
    --------
    >>> from shardlearn.engine import engine, get_engine
    >>> with engine("local", workers=1) as eng:
    ...     get_engine() is eng
    True
    """
    owned = not isinstance(spec, Engine)
    eng = (
        spec
        if isinstance(spec, Engine)
        else create_engine(spec, workers=workers, address=address, max_retries=max_retries)
    )
    with _selection_lock:
        _current.append(eng)
    try:
        # The block's fits keep their shard tables, feature blocks and fitted preprocessors
        # for the next fit, on the driver and the workers, until the block ends (_warm); fits
        # on other threads of this process (a user's thread pool) work in its scope too.
        budget = _warm.default_budget(eng.n_workers + 1)
        with _warm.session(_scope_name(eng), budget, process_wide=True):
            yield eng
    finally:
        with _selection_lock:
            _current.remove(eng)
        if owned:
            eng.close()


def _scope_name(eng: Engine) -> str:
    """The warm scope of one ``with engine(...)`` block: unique to the block."""
    return f"engine {eng.name} {os.getpid()} {uuid.uuid4().hex[:12]}"


def get_engine(explicit: Engine | str | None = None) -> Engine:
    """The engine to use: explicit > ``with engine(...)`` > ``$SHARDLEARN_ENGINE`` > local.

    Engines created here from a name are shared per name and closed when the interpreter exits.
    Inside a worker process the default is an in-process local engine, so nested work does not
    start processes from processes.
    """
    if isinstance(explicit, Engine):
        return explicit
    if explicit is None:
        with _selection_lock:
            if _current:
                return _current[-1]
        from shardlearn.engine import _worker

        explicit = "local:in-worker" if _worker.IN_WORKER else os.environ.get(ENGINE_ENV, "local")
    if isinstance(explicit, contextlib.AbstractContextManager):
        raise EngineError(
            "engine= got the context manager engine(...), not an Engine: write "
            "`with engine('local', workers=2) as eng:` and pass engine=eng, or pass "
            "create_engine('local', workers=2), or just run inside the `with` block."
        )
    if not isinstance(explicit, str):
        raise EngineError(
            f"engine must be an Engine, 'local', 'ray' or 'ray:ADDRESS'. Got {explicit!r}."
        )
    key = explicit.strip() or "local"
    with _selection_lock:
        eng = _defaults.get(key)
        if eng is None:
            if key == "local:in-worker":
                eng = create_engine("local", workers=1)
            else:
                eng = create_engine(key)
            _defaults[key] = eng
        return eng


def _chosen_engine() -> Engine | None:
    """The engine a caller chose without naming it (innermost ``with engine(...)``, else
    ``$SHARDLEARN_ENGINE``'s), or None: for ``data``, below this layer (_engine_choice)."""
    with _selection_lock:
        if _current:
            return _current[-1]
    return get_engine() if os.environ.get(ENGINE_ENV, "").strip() else None


set_lookup(_chosen_engine)


def engine_from_cli(spec: str | None, workers: int | None) -> Engine:
    """Create the engine asked for by the CLI options ``--engine`` and ``--workers``.

    ``spec`` is ``local``, ``ray`` or ``ray:ADDRESS`` (None: ``$SHARDLEARN_ENGINE`` or local).
    The caller closes the engine, usually with ``with engine(engine_from_cli(...)) as eng``.
    """
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise EngineError(f"--workers must be an integer >= 1. Got {workers!r}.")
    return create_engine(spec or os.environ.get(ENGINE_ENV, "local"), workers=workers)


def _close_defaults() -> None:
    with _selection_lock:
        engines = list(_defaults.values())
        _defaults.clear()
    for eng in engines:
        try:
            eng.close()
        except Exception:  # at interpreter exit, best effort
            pass


atexit.register(_close_defaults)
