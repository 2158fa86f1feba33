"""TaskGraph: a data-flow graph of tasks, and the one scheduler that runs it on any engine.

A task is a module-level function with arguments. An argument that is a :class:`TaskRef`
(what :meth:`TaskGraph.add` returns) is replaced by that task's result and makes it a
dependency; ``depends_on=`` adds ordering-only dependencies.

The scheduler (:meth:`TaskGraph.run`) is written once against ``Engine.submit``:

1. *Checks before anything runs.* Unknown dependencies and cycles are errors (a cycle shows
   its path, ``a -> b -> a``); a task whose resources can never fit the engine's capacity
   fails at once with :class:`~shardlearn.exceptions.ResourceError` naming the task and the
   resource.
2. *What to run.* Only the ancestors of the requested outputs (default: every task nobody
   depends on). With a cache directory, a task whose token is already cached is loaded
   instead of run, and its ancestors are not needed at all -- so a re-run resumes.
3. *States.* Each task is waiting (on dependencies), ready, running, finished, failed or
   cancelled. Ready tasks sit in a heap ordered by (higher ``priority`` first, then insertion
   order). The head of the heap starts as soon as its resources fit into what the running
   tasks leave free; tasks never overtake the head, so a large task cannot starve. (An engine
   that enforces resources itself -- Ray, the local task pool -- is handed up to one capacity's
   worth of tasks ahead, which it queues until their resources are free.)
   An ``exclusive`` task waits until nothing runs and then runs alone.
4. *Memory.* A result is dropped as soon as every task that consumes it has finished, unless
   it is a requested output.
5. *Failures.* A task that raises is :class:`~shardlearn.exceptions.TaskFailed`; all of its
   dependents are cancelled, independent tasks go on (so their results reach the cache), and
   the first failure is raised at the end. A task whose worker died
   (:class:`~shardlearn.exceptions.WorkerLost`) is resubmitted up to its ``retries``.

With ``engine("local", workers=1)`` submit runs tasks in the calling process, so the graph
runs serially in-process -- the debugging path.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardlearn._validation import unknown_name_message
from shardlearn.engine._cache import ResultCache, task_token
from shardlearn.engine._progress import GraphProgress, show_progress
from shardlearn.engine.base import Engine, Resources, get_engine
from shardlearn.exceptions import GraphCycleError, SpecError

__all__ = ["RunReport", "Task", "TaskGraph", "TaskRef"]


@dataclass(frozen=True)
class TaskRef:
    """A placeholder for the result of task ``key``; pass it as an argument of another task."""

    key: str


@dataclass
class Task:
    """One node of a :class:`TaskGraph` (see :meth:`TaskGraph.add` for the fields)."""

    key: str
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    depends_on: tuple[str, ...]
    priority: float = 0
    resources: Resources = field(default_factory=Resources)
    retries: int = 0
    cache: bool = True
    exclusive: bool = False

    @property
    def dependencies(self) -> list[str]:
        """Keys this task waits for: explicit ``depends_on`` plus every TaskRef argument."""
        found: list[str] = list(self.depends_on)
        _collect_refs((self.args, self.kwargs), found)
        return list(dict.fromkeys(found))


@dataclass
class RunReport:
    """What the last :meth:`TaskGraph.run` did, in start order (useful for logs and tests)."""

    started: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    peak: Resources = field(default_factory=lambda: Resources(0, 0, 0))  # of submitted tasks


def _collect_refs(value: Any, found: list[str]) -> None:
    if isinstance(value, TaskRef):
        found.append(value.key)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _collect_refs(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_refs(item, found)


class TaskGraph:
    """A graph of tasks with dependencies, priorities, resources and an optional cache.

    Examples
    --------
    >>> from operator import add, mul
    >>> from shardlearn.engine import engine
    >>> g = TaskGraph()
    >>> a = g.add("a", add, 1, 2)
    >>> b = g.add("b", mul, a, 10, priority=1)
    >>> with engine("local", workers=1) as eng:
    ...     g.run(eng, progress=False)
    {'b': 30}
    """

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.last_run = RunReport()

    def add(
        self,
        key: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        depends_on: Iterable[str | TaskRef] = (),
        priority: float = 0,
        resources: Resources | None = None,
        retries: int = 0,
        cache: bool = True,
        exclusive: bool = False,
        **kwargs: Any,
    ) -> TaskRef:
        """Add task ``key`` computing ``fn(*args, **kwargs)``; returns a :class:`TaskRef`.

        Parameters
        ----------
        key : str
            Unique name of the task.
        fn : callable
            A module-level function (it is sent to workers by reference).
        *args, **kwargs
            Arguments; :class:`TaskRef` values (also inside lists, tuples, dicts) are replaced
            by the results of those tasks.
        depends_on : iterable of str or TaskRef
            Extra dependencies whose results are not passed.
        priority : float, default=0
            Among ready tasks, higher priorities start first; ties in insertion order.
        resources : Resources, optional
            What the task needs while it runs; default one CPU.
        retries : int, default=0
            Resubmissions when the task's worker dies (the engine retries on its own too).
        cache : bool, default=True
            Whether the result may be stored in / loaded from the run's ``cache_dir``.
        exclusive : bool, default=False
            Run alone: wait until nothing else runs, start nothing else meanwhile.
        """
        if not isinstance(key, str) or not key:
            raise SpecError(f"A task key must be a non-empty string. Got {key!r}.")
        if key in self.tasks:
            raise SpecError(f"Task {key!r} is already in the graph; task keys must be unique.")
        if not callable(fn):
            raise SpecError(f"Task {key!r}: expected a function. Got {fn!r}.")
        if not isinstance(retries, int) or retries < 0:
            raise SpecError(f"Task {key!r}: retries must be an integer >= 0. Got {retries!r}.")
        if resources is not None and not isinstance(resources, Resources):
            raise SpecError(f"Task {key!r}: resources must be a Resources. Got {resources!r}.")
        deps = tuple(d.key if isinstance(d, TaskRef) else str(d) for d in depends_on)
        self.tasks[key] = Task(
            key, fn, args, kwargs, deps, priority, resources or Resources(), retries, cache,
            exclusive,
        )  # fmt: skip
        return TaskRef(key)

    def ref(self, key: str) -> TaskRef:
        """A :class:`TaskRef` to ``key`` (which may be added later)."""
        return TaskRef(key)

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.tasks

    def dependents(self) -> dict[str, list[str]]:
        """For each task, the tasks that depend on it (in insertion order)."""
        out: dict[str, list[str]] = {key: [] for key in self.tasks}
        for key, task in self.tasks.items():
            for dep in task.dependencies:
                if dep in out:
                    out[dep].append(key)
        return out

    def validate(self) -> list[str]:
        """Check dependencies and cycles; return the keys in a topological order."""
        for key, task in self.tasks.items():
            for name in task.dependencies:
                if name not in self.tasks:
                    raise SpecError(
                        f"Task {key!r} depends on {name!r}, which is not in the graph. "
                        + unknown_name_message("task", name, self.tasks)
                    )
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        for root in self.tasks:
            if state.get(root) == 2:
                continue
            # Iterative DFS, so deep chains cannot hit the recursion limit.
            path: list[str] = []
            stack: list[tuple[str, Iterable[str]]] = [(root, iter(self.tasks[root].dependencies))]
            state[root] = 1
            path.append(root)
            while stack:
                node, deps = stack[-1]
                dep = next(iter(deps), None)
                if dep is None:
                    stack.pop()
                    path.pop()
                    state[node] = 2
                    order.append(node)
                elif state.get(dep) == 1:
                    cycle = path[path.index(dep) :] + [dep]
                    raise GraphCycleError("Cycle detected: " + " -> ".join(reversed(cycle)))
                elif state.get(dep) is None:
                    state[dep] = 1
                    path.append(dep)
                    stack.append((dep, iter(self.tasks[dep].dependencies)))
        return order

    def tokens(self) -> dict[str, str]:
        """The deterministic cache token of every task (function, arguments, upstream tokens)."""
        out: dict[str, str] = {}
        for key in self.validate():
            task = self.tasks[key]
            upstream = {dep: out[dep] for dep in task.dependencies}
            extra = {"__depends_on__": [out[d] for d in task.depends_on]} if task.depends_on else {}
            out[key] = task_token(task.fn, task.args, {**task.kwargs, **extra}, upstream)
        return out

    def run(
        self,
        engine: Engine | str | None = None,
        *,
        outputs: Iterable[str] | None = None,
        cache_dir: str | Path | None = None,
        progress: bool | None = None,
    ) -> dict[str, Any]:
        """Run the graph; return ``{key: result}`` for ``outputs`` (default: the sink tasks).

        Parameters
        ----------
        engine : Engine or str, optional
            Where to run; default :func:`~shardlearn.engine.get_engine`.
        outputs : iterable of str, optional
            Tasks whose results to return; only their ancestors run.
        cache_dir : path, optional
            Store results by token there and reuse them, so a re-run resumes.
        progress : bool, optional
            Show a progress bar on stderr; default: when stderr is a terminal (see
            :func:`shardlearn.engine.show_progress`).

        Raises
        ------
        GraphCycleError, SpecError, ResourceError
            Before anything runs.
        TaskFailed, WorkerLost
            The first task failure, after independent tasks have finished.
        """
        from shardlearn.engine._scheduler import Scheduler

        eng = get_engine(engine)
        order = self.validate()
        dependents = self.dependents()
        wanted = list(outputs) if outputs is not None else [k for k in order if not dependents[k]]
        for key in wanted:
            if key not in self.tasks:
                raise SpecError(unknown_name_message("output task", key, self.tasks))
        for key in order:
            eng.check_fits(self.tasks[key].resources, f"Task {key!r}")
        cache = ResultCache(cache_dir) if cache_dir is not None else None
        show = show_progress() if progress is None else progress
        self.last_run = RunReport()
        scheduler = Scheduler(self, eng, wanted, cache, self.last_run)
        with GraphProgress(enabled=show) as bar:
            return scheduler.run(bar)
