"""Running trials: one per core for small data, one at a time on every worker for large data.

:class:`TrialRunner` starts a trial whenever the driver has a free slot and returns a future
of its result. Each trial is a one-node :class:`~shardlearn.engine.TaskGraph`, so the graph's
result cache (``out/cache``) makes an interrupted search resume without rerunning a finished
trial.

Where a trial runs (:func:`placement`):

* tiny data on the local engine (at most :data:`THREAD_CELLS` raw training cells): as many
  trials at once as the engine has CPUs, each on a thread of this process, fitting in it: no
  task process to start, and one warm store (:mod:`shardlearn._warm`) serves every trial;
* small data (at most :data:`SMALL_CELLS` raw training cells): as many trials at once as the
  engine has CPUs, each a task on the engine's warm task processes (or in this process for an
  in-process engine), fitting in that one process;
* large data: one trial at a time, run from this process with every worker of the engine;
  so are the trials of a search whose every model is forced onto the workers
  (``execution="workers"`` fixed in its space), which one process could not honour. Each
  worker then keeps, in the search's warm scope, the shard tables and feature blocks it
  loaded for the next trial (the engine passes the scope to its workers).

On threads, each trial's boosting asks before every round how many threads it may use
(:class:`TrialCores`): its slot's share while trials start, and once the strategy has none
left to start, an equal part of the cores the finished trials leave idle (those other processes
leave idle too, and the early refit does not use), so the last trial of a search does not train
on one core while the others wait. XGBoost's ``nthread`` changes no tree.

Preprocessing is fitted once per fold (:class:`FoldPreprocessors`): the driver fits the
preprocessor of each distinct trainer view -- the same training shards the trial's Pipeline
would fit it on, so nothing from the scored shards enters -- and hands the fitted one to every
trial on that fold; the trials' Pipelines use it as it is. Fitting in this process, it reads the
view's shards ahead, several at once, into the search's warm scope (:func:`read_ahead`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shardlearn import _warm
from shardlearn.engine import Resources, TaskGraph, create_engine
from shardlearn.models import model_class
from shardlearn.search._trial import (
    ALL_WORKERS,
    IN_THREADS,
    ONE_PROCESS,
    fold_preprocessor,
    run_trial,
    trial_plan,
)

__all__ = [
    "SMALL_CELLS",
    "THREAD_CELLS",
    "FoldPreprocessors",
    "TrialCores",
    "TrialRunner",
    "placement",
    "trial_key",
]

#: Raw training cells (rows x feature columns) up to which a trial fits in one process.
SMALL_CELLS = 20_000_000
#: Raw training cells up to which a search on the local engine runs its trials on threads of
#: its own process instead of the engine's task processes: starting one costs about a second
#: of a core (an interpreter importing scikit-learn, XGBoost, pyarrow), more than a whole
#: trial at this size (XGBoost on Adult, 26k x 14 cells: 0.05-0.3 s), and the fits release
#: the GIL while they train, so the slots still run side by side.
THREAD_CELLS = 2_000_000


def placement(dataset: Any, eng: Any, spaces: list[Any] | None = None) -> tuple[str, int]:
    """Where trials run and how many at once: ``(IN_THREADS, cpus)``, ``(ONE_PROCESS, cpus)``
    or ``(ALL_WORKERS, 1)``.

    ``spaces`` (the search's ModelSpaces): when every one fixes ``execution="workers"``, the
    trials run on every worker whatever the data size.
    """
    slots = max(1, int(eng.capacity.cpus))
    if dataset is None or slots == 1:
        return ONE_PROCESS, slots
    if spaces and all(s.params.get("execution") == "workers" for s in spaces):
        return ALL_WORKERS, 1
    cells = dataset.num_rows("train") * len(dataset.schema.feature_columns)
    if cells > SMALL_CELLS:
        return ALL_WORKERS, 1
    if cells <= THREAD_CELLS and getattr(eng, "name", None) == "local":
        return IN_THREADS, slots
    return ONE_PROCESS, slots


def trial_key(spec: dict[str, Any]) -> str:
    """The task key of a trial at its rung (``t0003-r1``)."""
    return f"{spec['trial']}-r{spec['rung']}"


class FoldPreprocessors:
    """Fitted preprocessors by trainer view, each fitted once per search.

    Parameters
    ----------
    dataset : Dataset
    context : dict
        The search context (its ``preprocess`` spec, if any).
    engine : Engine
        Where to fit (every worker of it).

    Attributes
    ----------
    fits : int
        Preprocessors fitted for the trials so far (one per distinct set of training shards).
    refit_fits : int
        Preprocessors fitted for the refit on train + valid (:meth:`for_refit`): one per
        search, however many refits use it.
    shard_reads : int
        Shard files these fits read in this process (in the search's warm scope, so trials
        running in this process read them no more).
    refit_reads : list of (int, tuple)
        ``(process, shard)`` of each shard file the refit's fits read (the valid shards,
        which the trials would otherwise read first).
    """

    def __init__(self, dataset: Any, context: dict[str, Any], engine: Any) -> None:
        self.dataset, self.context, self.engine = dataset, context, engine
        self.fits = self.refit_fits = self.shard_reads = 0
        self.refit_reads: list[tuple[int, Any]] = []
        self._fitted: dict[tuple[str, tuple[int, ...]], Any] = {}
        self._lock = threading.Lock()
        self._fitting: dict[tuple[str, tuple[int, ...]], threading.Lock] = {}

    def for_trial(self, spec: dict[str, Any]) -> list[Any]:
        """The fitted preprocessor of each of the trial's folds."""
        plan = trial_plan(self.dataset, self.context, spec)
        estimator = model_class(spec["model"])(**plan.params)
        return [self._fitted_for(view, estimator) for view in plan.fit_views]

    def for_refit(self, model: str, params: dict[str, Any]) -> Any:
        """The fitted preprocessor of the refit of ``model(**params)`` on train + valid
        (:func:`~shardlearn.search.cv.refit_view`): the early refit, the search's refit and
        :func:`~shardlearn.search._refit.prepare_refit` share one fit."""
        from shardlearn.search.cv import refit_view

        estimator = model_class(model)(**params)
        return self._fitted_for(refit_view(self.dataset), estimator, refit=True)

    def _fitted_for(self, view: Any, estimator: Any, refit: bool = False) -> Any:
        pre = fold_preprocessor(self.context, view)
        # Model-aware defaults, resolved as the trial's Pipeline would resolve them (it uses a
        # fitted preprocessor as given); a preprocessor without them is used as it is.
        for_estimator = getattr(pre, "for_estimator", None)
        if for_estimator is not None:
            pre = for_estimator(estimator)
            pre.check_memory(estimator, view.num_rows("train"))
        shards = tuple(sorted(int(s.index) for s in view.shards("train")))
        key = (repr(pre.get_params(deep=False)), shards)
        # A lock per view: two trials on one fold wait for one fit instead of both fitting,
        # and the refit's preprocessing fits beside a fold's.
        with self._lock:
            fitting = self._fitting.setdefault(key, threading.Lock())
        with fitting:
            fitted = self._fitted.get(key)
            if fitted is None:
                # In the warm scope: an in-process trial then finds the shards already read.
                processes = self.context.get("warm_processes", 1)
                with _warm.scope(
                    self.context.get("warm"), _warm.default_budget(processes)
                ) as counters:
                    if self.context.get("placement") in (ONE_PROCESS, IN_THREADS):
                        read_ahead(view.shards("train"))  # the fit reads them in this process
                    fitted = pre.fit(view, engine=self.engine)
                with self._lock:
                    self._fitted[key] = fitted
                    if refit:
                        self.refit_fits += 1
                    else:
                        self.fits += 1
                    if counters is not None:
                        self.shard_reads += counters.builds["shard_reads"]
                        if refit:
                            self.refit_reads += zip(counters.readers, counters.shards, strict=True)
        return fitted


#: Shard files :func:`read_ahead` reads at once.
READ_AHEAD = 4


def read_ahead(shards: list[Any]) -> None:
    """Read ``shards`` into the warm scope of the calling code, :data:`READ_AHEAD` at once.

    A preprocessor's fit reads its shards one after the other, and a file's read mostly waits
    (for its footer and pages, and for Arrow's threads that decode them) while the trials that
    need the fit wait too. Outside a scope nothing is kept, so nothing is read.
    """
    if len(shards) < 2 or not _warm.active():
        return
    # A thread of the pool runs in a copy of this thread's context: it reads into the scope.
    contexts = [contextvars.copy_context() for _ in shards]
    with ThreadPoolExecutor(min(READ_AHEAD, len(shards)), "shardlearn-read") as pool:
        for _ in pool.map(lambda ctx, shard: ctx.run(shard.read), contexts, shards):
            pass


class TrialCores:
    """The threads each trial on a thread of this process may use, asked before every boosting
    round (:func:`shardlearn.models.sharing_cores`).

    A trial has its slot's ``share`` until :meth:`widen` (no trial is left to start): then the
    cores other processes left idle while the trials ran (:func:`~shardlearn.search._refit.
    usable_cores`), less the shares of the running trials and the threads ``elsewhere()`` says
    other work of the search uses (the early refit), are split equally among the running
    trials.

    Parameters
    ----------
    share : int
        A slot's cores.
    elsewhere : callable
        Threads the search's other work uses now.
    """

    def __init__(self, share: int, elsewhere: Callable[[], int]) -> None:
        from shardlearn.search._refit import IdleCores

        self.share, self._elsewhere = share, elsewhere
        self._watch = IdleCores()  # the machine while the trials run
        self._usable: int | None = None
        self._running = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        """The threads of a running trial's next round."""
        usable = self._usable
        if usable is None:
            return self.share
        with self._lock:
            running = max(1, self._running)
        spare = usable - self.share * running - self._elsewhere()
        return self.share + max(0, spare) // running

    def widen(self) -> int:
        """No trial is left to start: from now on the running trials take the idle cores
        (measured once). Returns the usable cores."""
        from shardlearn.search._refit import usable_cores

        if self._usable is None:
            self._usable = usable_cores(os.cpu_count() or 1, self._watch.others(), self.share)
        return self._usable

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """A trial runs in the block (its fits use :meth:`__call__`'s threads)."""
        from shardlearn.models import sharing_cores

        with self._lock:
            self._running += 1
        try:
            with sharing_cores(self):
                yield
        finally:
            with self._lock:
                self._running -= 1


class TrialRunner:
    """Start trials on ``slots`` threads of this process, each waiting on its own trial.

    Parameters
    ----------
    eng : Engine
        The search's engine.
    context : dict
        The search context (with ``placement``).
    objective : callable or None
    cache_dir : Path or None
        The trial result cache.
    preprocessors : FoldPreprocessors or None
        None for an objective search.
    slots : int
    cores : TrialCores, optional
        On threads: the threads each trial may use (its slot's share without).
    """

    def __init__(
        self,
        eng: Any,
        context: dict[str, Any],
        objective: Any,
        cache_dir: Path | None,
        preprocessors: FoldPreprocessors | None,
        slots: int,
        cores: TrialCores | None = None,
    ) -> None:
        self.eng, self.context, self.objective = eng, context, objective
        self.cache_dir, self.preprocessors, self.cores = cache_dir, preprocessors, cores
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix="shardlearn-trial")

    def start(self, spec: dict[str, Any]) -> Future:
        """A future of ``(result, cached)`` for the trial ``spec``."""
        return self._pool.submit(self._run, spec)

    def _run(self, spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        pre = None
        if self.preprocessors is not None:
            try:
                pre = self.preprocessors.for_trial(spec)
            except Exception:  # noqa: BLE001 -- the trial meets it again and records it
                pre = None
        key = trial_key(spec)
        graph = TaskGraph()
        graph.add(key, run_trial, self.context, spec, self.objective, pre,
                  resources=Resources(cpus=1))  # fmt: skip
        if self.context.get("placement") in (ALL_WORKERS, IN_THREADS):
            # Run from this thread (the search made its engine current), so the trial's fits
            # use every worker of the engine (or, on threads, fit in this process).
            here = create_engine("local", workers=1)
            sharing = self.cores.running() if self.cores is not None else contextlib.nullcontext()
            try:
                with sharing:
                    results = graph.run(here, cache_dir=self.cache_dir, progress=False)
            finally:
                here.close()
        else:
            results = graph.run(self.eng, cache_dir=self.cache_dir, progress=False)
        return results[key], key in graph.last_run.cached

    def close(self) -> None:
        """Wait for the running trials and stop the threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)
