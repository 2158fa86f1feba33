"""Warm data: what one process keeps across the fits of a scope, within a budget.

A search fits many configurations on the same folds: every trial reads the same shard files,
transforms them with the same fitted preprocessor, and XGBoost bins the same rows into the same
quantile matrix; a pipeline's train stages, or a script's fits, fit the same preprocessor on
the same dataset. Inside a *scope* the layers below build each such value once per process and
serve it from here afterwards. Three kinds of block of work open one:

* a search (:func:`scope` around each trial and its preprocessing fits, named by the search);
* a pipeline run (its stages, on driver threads, each run in the run's scope);
* a ``with engine(...)`` block (a script's consecutive fits), released when it exits.

A scope lives in a context variable, so it reaches the thread (or task) that opened it and
the code it calls. A ``with engine(...)`` block's scope is also *process-wide*: a thread of
this process with no scope of its own (a user's thread pool or joblib threads running fits
inside the block) works in the innermost such block still open; its own scope (a search's
trial, a pipeline's stage) comes first. Blocks opened on two threads at once are two scopes,
each released at its own end, and withdrawn as the fallback before that.

They nest: :func:`session` inside an open scope works in that scope and releases nothing, so a
pipeline in ``with engine(...)`` keeps the outer block's values (the outer block releases
them); a search inside one :func:`join`\ s it under its own name and releases nothing. The values:

* ``shard_reads`` (``data``): a shard file's table, read whole once
  (:meth:`shardlearn.data.Shard.read` / ``iter_batches`` then serve any columns from memory);
* ``block_builds`` (``preprocess``): a worker's feature block of some shards, or the block of
  one shard (a fit whose every worker reads all shards: a forest), per fitted preprocessor,
  classes, label and weight column;
* ``matrix_builds`` (``models``): the in-process XGBoost matrices of a feature block, per
  ``max_bin``; on a worker group, each worker's share of the collective matrices (their bins
  come from all workers' rows, so every worker builds its share together:
  :func:`keep` after the build, :func:`peek` before the next fit);
* ``preprocessor_builds`` (``models``): a preprocessor fitted by a ``Pipeline`` on a dataset's
  training shards, per preprocessor parameters and dataset digest (driver only).

Keys hold everything the value depends on (file digest, preprocessor fingerprint, ...), so a
reused value is the value a fresh build would give. Outside a scope :func:`fetch` just builds:
nothing is kept and nothing changes for ordinary fits.

Memory. A process keeps one scope at a time: opening another scope drops the values of the
previous one (a task process that ran an earlier search frees them at the first trial of the
next), and :func:`release` drops a scope at the end of the block that opened it. Values are
kept while their estimated sizes add up to at most the budget (:func:`default_budget`:
``$SHARDLEARN_WARM_BUDGET`` bytes per process, else :data:`DEFAULT_MEMORY_SHARE` of physical
memory in equal parts for the processes of the block: the driver and one per slot or worker);
a value that does not fit is built, used and not kept -- it is built again next time -- and
counted as ``refused``, which the search and the pipeline run report.

Counters. :func:`scope` yields a :class:`Counters` for the block it wraps (a trial, a stage):
builds and hits per kind, refused values, and the keys of the shards read with the process that
read each, so the caller can show that each shard was read once per process.

Worker processes. A worker group opened inside a scope (:func:`current`) takes the scope's name
to its workers (the engine passes it in the worker reset message): each worker runs its calls
in a scope of that name (:func:`worker_scope`, budget: :func:`default_budget` for the group's
processes and the driver), so a worker keeps its shard tables and feature blocks for the next
fit of the scope, and what its calls built is added to the scope's counters on the driver
(:meth:`Counters.merge`). Ending a scope with :func:`release` also tells the engines' idle
worker processes to drop their values of it (the hooks of :func:`on_release`), so warm data
lives as long as the scope in every process that served it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "BUDGET_ENV",
    "DEFAULT_MEMORY_SHARE",
    "KINDS",
    "Counters",
    "Handle",
    "active",
    "current",
    "default_budget",
    "fetch",
    "join",
    "keep",
    "on_release",
    "peek",
    "release",
    "scope",
    "session",
    "worker_scope",
]

T = TypeVar("T")

BUDGET_ENV = "SHARDLEARN_WARM_BUDGET"
#: Share of physical memory one process may keep as warm data by default: as much as all
#: workers' feature blocks together may take (``preprocess.blocks``), since warm data is
#: mostly those blocks and the shards they come from.
DEFAULT_MEMORY_SHARE = 0.25
#: What can be kept, as counted in :class:`Counters`.
KINDS = ("shard_reads", "block_builds", "matrix_builds", "preprocessor_builds")
#: Short names of the kinds in :meth:`Counters.summary`.
_SHOWN = {
    "preprocessor_builds": "preprocessors",
    "shard_reads": "shards",
    "block_builds": "blocks",
    "matrix_builds": "matrices",
}


@dataclass
class Counters:
    """What one block of work inside a scope built, reused and could not keep.

    Attributes
    ----------
    builds, hits : dict of str to int
        Per kind (:data:`KINDS`): values built, values served from memory.
    refused : int
        Values built but not kept: the budget was full.
    shards : list
        The keys of the shards read from storage, in order.
    readers : list of int
        The process (pid) that read each of ``shards``: this one, or a worker's.
    parent : Counters or None
        The counters of the block this one is inside (a fit inside a pipeline stage): what
        is counted here is counted there too.
    """

    builds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    refused: int = 0
    shards: list[Any] = field(default_factory=list)
    readers: list[int] = field(default_factory=list)
    parent: Counters | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON: ``{kind: builds}``, ``hits`` per kind, ``refused``."""
        return {**self.builds, "hits": dict(self.hits), "refused": self.refused}

    def summary(self) -> dict[str, int]:
        """Flat counts for a summary line: ``<kind>_reused`` (served from memory) and
        ``<kind>_built`` per kind that counted anything, and ``refused``, when not 0."""
        shown: dict[str, int] = {}
        for kind, name in _SHOWN.items():
            if self.hits[kind] or self.builds[kind]:
                shown[f"{name}_reused"] = self.hits[kind]
                shown[f"{name}_built"] = self.builds[kind]
        if self.refused:
            shown["refused"] = self.refused
        return shown

    def merge(self, other: Counters) -> None:
        """Add what ``other`` counted (a worker's calls) to these counters (and their
        parents')."""
        with _MERGE_LOCK:
            for counters in self._chain():
                for kind in KINDS:
                    counters.builds[kind] += other.builds.get(kind, 0)
                    counters.hits[kind] += other.hits.get(kind, 0)
                counters.refused += other.refused
                counters.shards.extend(other.shards)
                counters.readers.extend(other.readers)

    def count(self, kind: str, *, hit: bool = False, read: Any = None) -> None:
        """Count one value of ``kind`` built (or served: ``hit``); ``read``: the key of the
        shard it read, in this process."""
        with _MERGE_LOCK:
            for counters in self._chain():
                (counters.hits if hit else counters.builds)[kind] += 1
                if read is not None:
                    counters.shards.append(read)
                    counters.readers.append(os.getpid())

    def count_refused(self) -> None:
        """Count one value built but not kept (the budget was full)."""
        with _MERGE_LOCK:
            for counters in self._chain():
                counters.refused += 1

    def _chain(self) -> Iterator[Counters]:
        counters: Counters | None = self
        while counters is not None:
            yield counters
            counters = counters.parent


@dataclass(frozen=True)
class Handle:
    """The scope a worker group was opened in (see the module notes).

    Attributes
    ----------
    name : str
        The scope, for the group's workers.
    budget : int or None
        ``$SHARDLEARN_WARM_BUDGET`` as the driver has it (bytes per process), so remote
        workers (Ray) honour it too; None: each worker takes its share of its machine.
    counters : Counters
        Where what the workers' calls counted is added.
    """

    name: str
    budget: int | None
    counters: Counters

    @property
    def spec(self) -> tuple[str, int | None]:
        """What a worker needs: ``(name, budget)`` (see :func:`worker_scope`)."""
        return self.name, self.budget


class _Store:
    """The values of one scope in this process, their sizes and the budget."""

    def __init__(self, name: str, budget: int, workers_budget: int | None = None) -> None:
        self.name, self.budget = name, budget
        self.workers_budget = workers_budget  # for the worker groups of the scope (session)
        self.aliases: set[str] = set()  # other names of this scope here (join)
        self.values: dict[Hashable, Any] = {}
        self.sizes: dict[Hashable, int] = {}  # of the values that can be replaced (keep)
        self.used = 0
        self.lock = threading.Lock()
        self.building: dict[Hashable, threading.Lock] = {}

    def answers_to(self, name: str) -> bool:
        """Whether scope ``name`` is this one (its name or one :func:`join` gave it)."""
        return name == self.name or name in self.aliases


_STORE: _Store | None = None
_STORE_LOCK = threading.Lock()
_MERGE_LOCK = threading.Lock()
_RELEASE_HOOKS: list[Callable[[str], None]] = []
_CURRENT: contextvars.ContextVar[tuple[_Store, Counters] | None] = contextvars.ContextVar(
    "shardlearn_warm_scope", default=None
)
#: The scopes of the ``with engine(...)`` blocks open in this process, in the order they were
#: opened: the last one is the scope of a thread that has none of its own (see :func:`session`).
#: A tuple, replaced whole under ``_STORE_LOCK``, so :func:`_bound` reads it without the lock.
_PROCESS_WIDE: tuple[tuple[_Store, Counters], ...] = ()


def _bound() -> tuple[_Store, Counters] | None:
    """The scope the calling code works in: its thread's (or task's) own, else the innermost
    process-wide one, else None."""
    bound = _CURRENT.get()
    if bound is not None:
        return bound
    process_wide = _PROCESS_WIDE
    return process_wide[-1] if process_wide else None


def default_budget(processes: int = 1) -> int:
    """Bytes one process may keep: ``$SHARDLEARN_WARM_BUDGET``, else an equal part of
    :data:`DEFAULT_MEMORY_SHARE` of physical memory for each of ``processes``."""
    return memory_budget(BUDGET_ENV, DEFAULT_MEMORY_SHARE, processes)


def memory_budget(env_name: str, share: float, processes: int = 1) -> int:
    """Bytes from the environment variable ``env_name``, else ``share`` of physical memory
    split equally among ``processes`` (the warm store's and the feature blocks' budgets)."""
    env = os.environ.get(env_name)
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ValueError(
                f"${env_name} must be a number of bytes, e.g. 2000000000; got {env!r}."
            ) from None
    import psutil

    return int(psutil.virtual_memory().total * share / max(1, processes))


@contextlib.contextmanager
def scope(name: str | None, budget: int | None = None) -> Iterator[Counters | None]:
    """Keep warm data of scope ``name`` for the block (``None``: no scope, yields None).

    Parameters
    ----------
    name : str or None
        The scope (a search's id). Another scope's values in this process are dropped; inside
        scope ``name`` already (a stage of a pipeline run), a new block of the same values.
    budget : int, optional
        Bytes this process may keep (default :func:`default_budget`); used when the scope
        starts in this process.
    """
    if name is None:
        yield None
        return
    with _block(name, budget) as counters:
        yield counters


@contextlib.contextmanager
def _block(name: str, budget: int | None, workers_budget: int | None = None) -> Iterator[Counters]:
    """:func:`scope` of a named scope: its store bound to this context, with new counters."""
    global _STORE
    bound = _bound()
    parent = None
    with _STORE_LOCK:
        if bound is not None and bound[0].answers_to(name):
            # A block inside the scope: the same values (even if another scope replaced them
            # as this process's), and what it counts is counted in the outer block too.
            store, parent = bound
        else:
            if _STORE is None or not _STORE.answers_to(name):
                budget = default_budget() if budget is None else int(budget)
                _STORE = _Store(name, budget, workers_budget)
            store = _STORE
    counters = Counters(parent=parent)
    token = _CURRENT.set((store, counters))
    try:
        yield counters
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def worker_scope(spec: tuple[str, int | None] | None, processes: int) -> Iterator[Counters | None]:
    """:func:`scope` for one call on a worker of a group of ``processes`` - 1 workers and a
    driver. ``spec`` is :attr:`Handle.spec` (None: no scope); without a budget in it, the
    worker takes :func:`default_budget` of ``processes``."""
    if spec is None:
        yield None
        return
    name, budget = spec
    with scope(name, default_budget(processes) if budget is None else budget) as counters:
        yield counters


@contextlib.contextmanager
def session(
    name: str,
    budget: int | None = None,
    workers_budget: int | None = None,
    *,
    process_wide: bool = False,
) -> Iterator[Counters]:
    """A block of work that keeps warm data: scope ``name``, released when the block ends; or,
    inside an open scope, a block of that scope (nothing released: the outer block owns it).

    For a pipeline run and a ``with engine(...)`` block (see the module notes); ``budget`` as
    in :func:`scope`. ``workers_budget``: the bytes each worker of the groups opened in the
    scope may keep (default: each takes its group's share, see :func:`worker_scope`); a
    pipeline run whose stages open several groups at once gives them a smaller share.

    ``process_wide`` (a ``with engine(...)`` block): while the block is open, its scope is also
    the scope of every thread of this process that has none of its own (a user's thread pool
    running fits, joblib threads), innermost block first; a thread's own scope (a search's
    trial, a pipeline's stage) still comes first. Such a block nests only in its own thread's
    scope, and then is not made process-wide (the outer scope's owner decides where it
    reaches); a block opened on another thread at the same time is a scope of its own,
    released at its own end.
    """
    bound = _CURRENT.get() if process_wide else _bound()
    if bound is not None:
        # Not made process-wide: the outer scope reaches where its owner decided (a trial's
        # `with engine(...)` must not hand the trial's scope to every other thread).
        with _block(bound[0].name, None) as counters:
            yield counters
        return
    store = None
    try:
        with _block(name, budget, workers_budget) as counters, _process_wide(process_wide):
            store = _bound_store()
            yield counters
    finally:
        release(name)
        if store is not None:  # another scope may have replaced it as this process's since
            _clear(store)


@contextlib.contextmanager
def _process_wide(enabled: bool) -> Iterator[None]:
    """Make the calling block's scope the scope of threads without one, for the block (see
    :func:`session`); withdrawn before the scope is released, so no thread takes it after."""
    global _PROCESS_WIDE
    entry = _CURRENT.get()
    if not enabled or entry is None:
        yield
        return
    with _STORE_LOCK:
        _PROCESS_WIDE = (*_PROCESS_WIDE, entry)
    try:
        yield
    finally:
        with _STORE_LOCK:
            # Blocks on several threads may end in any order: withdraw this one, not the last.
            last = max(i for i, open_ in enumerate(_PROCESS_WIDE) if open_ is entry)
            _PROCESS_WIDE = _PROCESS_WIDE[:last] + _PROCESS_WIDE[last + 1 :]


def join(name: str) -> None:
    """Make ``name`` another name of the calling code's scope in this process (no effect
    outside a scope): a search inside a pipeline run names its scope after its dataset (its
    trials' cache keys hold that name), and its trials on this process's threads then open the
    run's scope under it, keeping the run's values. Worker groups get the scope's own name."""
    bound = _bound()
    if bound is not None and name != bound[0].name:
        with _STORE_LOCK:
            bound[0].aliases.add(name)


def release(name: str) -> None:
    """Drop the values of scope ``name`` kept in this process (the end of a search) and in
    the engines' idle worker processes (:func:`on_release`)."""
    global _STORE
    with _STORE_LOCK:
        store, released = _STORE, _STORE is not None and _STORE.name == name
        if released:
            _STORE = None
    if store is not None and released:  # also for blocks of it still open on other threads
        _clear(store)
    for hook in list(_RELEASE_HOOKS):
        hook(name)


def _clear(store: _Store) -> None:
    with store.lock:
        store.values.clear()
        store.sizes.clear()
        store.used = 0


def _bound_store() -> _Store | None:
    bound = _CURRENT.get()
    return None if bound is None else bound[0]


def on_release(hook: Callable[[str], None]) -> None:
    """Call ``hook(name)`` whenever scope ``name`` is released in this process (an engine
    then tells its idle workers to drop their values of it)."""
    if hook not in _RELEASE_HOOKS:
        _RELEASE_HOOKS.append(hook)


def active() -> bool:
    """Whether the calling code runs inside a scope."""
    return _bound() is not None


def current() -> Handle | None:
    """The scope the calling code runs in, for a worker group opened now (None outside)."""
    bound = _bound()
    if bound is None:
        return None
    budget = (
        memory_budget(BUDGET_ENV, DEFAULT_MEMORY_SHARE)
        if os.environ.get(BUDGET_ENV)
        else bound[0].workers_budget
    )
    return Handle(bound[0].name, budget, bound[1])


def fetch(kind: str, key: Hashable, build: Callable[[], T], nbytes: Callable[[T], int]) -> T:
    """The value of ``key``: kept from an earlier build in this scope, else ``build()``.

    Outside a scope this is ``build()``. Two threads asking for one key wait for one build.
    ``nbytes(value)`` estimates what keeping the value costs.
    """
    current = _bound()
    if current is None:
        return build()
    store, counters = current
    full = (kind, key)
    with store.lock:
        building = store.building.setdefault(full, threading.Lock())
    with building:
        with store.lock:
            if full in store.values:
                counters.count(kind, hit=True)
                return store.values[full]
        value = build()
        counters.count(kind, read=key if kind == "shard_reads" else None)
        size = int(nbytes(value))
        with store.lock:
            if store.used + size > store.budget:
                counters.count_refused()
            else:
                store.values[full] = value
                store.used += size
            store.building.pop(full, None)
    return value


def peek(kind: str, key: Hashable) -> Any:
    """The value kept under ``key`` in this scope (counted as a hit), else None; never builds.

    For values built elsewhere than in one call (:func:`keep`): XGBoost's collective matrices,
    built by every worker of a group together.
    """
    current = _bound()
    if current is None:
        return None
    store, counters = current
    with store.lock:
        value = store.values.get((kind, key))
    if value is not None:
        counters.count(kind, hit=True)
    return value


def keep(kind: str, key: Hashable, value: Any, nbytes: int) -> None:
    """Count ``value`` as built and keep it under ``key`` if the budget allows (see
    :func:`fetch`); outside a scope nothing happens."""
    current = _bound()
    if current is None:
        return
    store, counters = current
    counters.count(kind)
    with store.lock:
        old = store.values.pop((kind, key), None)
        if old is not None:  # a rebuild replaces the kept value; nbytes were counted for it
            store.used -= store.sizes.pop((kind, key), 0)
        if store.used + nbytes > store.budget:
            counters.count_refused()
        else:
            store.values[(kind, key)] = value
            store.sizes[(kind, key)] = int(nbytes)
            store.used += int(nbytes)
