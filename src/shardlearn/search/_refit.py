"""The refit of the best configuration on train + valid, started early when a core is idle.

:func:`refit_choice` says what the search refits (the top configuration, its full budget,
early stopping off and the rounds its trials selected); :func:`refit_best` fits it on
:func:`~shardlearn.search.cv.refit_view`, scores the test split and times the fit's phases
(``start``, ``read``, ``preprocess``, ``train``, ``evaluate``: the test scores).

Early refit. When trials run on threads of the search's process and the strategy has no trial
left to ask for, a free slot would stay idle while the last trials finish. :class:`EarlyRefit`
refits the best configuration so far on it, with the slot's share of the cores while trials
run and, once they have finished, the cores other processes leave idle (:meth:`EarlyRefit.widen`,
:class:`IdleCores`): boosting asks between rounds (:func:`shardlearn.models.sharing_cores`;
XGBoost's ``nthread`` changes no tree: hist builds the same trees with any thread count). Only
idle cores: XGBoost's threads wait for each other many times a round, so on a core another
process keeps busy a second thread makes the fit several times slower, not faster (measured
on a shared 2-core machine: 1 thread 1.0-1.6 s, 2 threads 8-19 s). When the last trials leave
the same refit to do -- the same model and refit parameters -- the search keeps that model;
otherwise it refits the new best as before, so the result never depends on the timing, and the
early refit is abandoned at its next round (:meth:`EarlyRefit.settle`: its ``cores()`` raises
:class:`Abandoned`) rather than holding the cores the new refit needs until it has trained every
round. That refit, too, takes only the cores other processes left idle. The early refit's
warnings are recorded and raised again on the search's thread when its model is kept.

Refit data ahead. The refits on threads share one preprocessor fitted on train + valid
(:meth:`~shardlearn.search._runner.FoldPreprocessors.for_refit`), and :func:`prepare_refit`
builds it, the refit's feature block, boosting's training matrix of it (XGBoost's quantile
sketch of train + valid: on Adult about half the CPU of 50 rounds of a depth-9 trial) and the
test rows' feature block at the search's start, beside the first trials (which wait for their
fold's preprocessing and matrix: a core is idle), so the refit reads, fits, transforms and bins
nothing (``reuse["refit_prepared"]``): it scores the test split from that block, as a trial
scores its fold (:func:`~shardlearn.search._trial.fold_metrics`, ``evaluate``'s metrics).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shardlearn import _warm
from shardlearn.search._trial import IN_THREADS, _recorded_warnings, budget_param, fold_metrics

__all__ = [
    "Abandoned",
    "EarlyRefit",
    "IdleCores",
    "Refit",
    "prepare_refit",
    "refit_best",
    "refit_choice",
    "usable_cores",
]


@dataclass
class Refit:
    """A refitted best configuration.

    Attributes
    ----------
    model, params
        The model name and the parameters it was refitted with.
    fitted : Pipeline
    metrics : dict
        Its metrics on the test split (empty without one).
    seconds : float
        Wall time of the refit (fit and test scores).
    timings : dict
        Seconds per fit phase (the test scores are ``evaluate``).
    reuse : dict or None
        What it built and reused in the search's warm scope.
    started_early : bool
        Whether it ran beside the last trials (:class:`EarlyRefit`).
    caught : list
        Warnings recorded while it ran beside the trials (raised again when it is kept).
    """

    model: str
    params: dict[str, Any]
    fitted: Any
    metrics: dict[str, Any]
    seconds: float
    timings: dict[str, float]
    reuse: dict[str, Any] | None
    started_early: bool = False
    caught: list[Any] = field(default_factory=list)


def _refit_params(best: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the refit trains them: early stopping off, the selected budget."""
    record = best.get("early_stopping")
    if record is None:
        return dict(params)
    # The refit has no valid split: it repeats the rounds selected during the search.
    refit = {**params, record["switch"]: record["off"]}
    if record["selected"] is not None:
        refit[record["param"]] = record["selected"]
    return refit


def refit_choice(
    board: list[dict[str, Any]], full: dict[str, int | None], budget: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """``(best row, best_params with the full budget, refit parameters)``, or None when no
    trial succeeded."""
    best = board[0] if board and board[0]["status"] == "ok" else None
    if best is None:
        return None
    params = dict(best["params"])
    name = budget_param(best["model"], budget) if best["model"] else None
    if name is not None and full.get(best["model"]) is not None:
        params[name] = full[best["model"]]
    return best, params, _refit_params(best, params)


def refit_best(
    dataset: Any,
    model: str,
    params: dict[str, Any],
    eng: Any,
    preprocess: Any = None,
    warm: str | None = None,
    cores: Callable[[], int] | None = None,
    preprocessor: Any = None,
) -> Refit:
    """Fit ``model(**params)`` on train + valid in the search's warm scope and score the test
    split; ``cores``: how many cores the fit may use, asked between boosting rounds
    (:func:`shardlearn.models.sharing_cores`; the model does not depend on it);
    ``preprocessor``: fitted on train + valid (the search's
    :meth:`~shardlearn.search._runner.FoldPreprocessors.for_refit`), used as it is; the test
    scores are then computed from the test rows' feature block, as a trial scores its fold
    (:func:`~shardlearn.search._trial.fold_metrics`: ``evaluate``'s metrics, every key)."""
    from shardlearn.metrics import evaluate
    from shardlearn.models import Pipeline, model_class, recording, sharing_cores
    from shardlearn.preprocess import Preprocessor
    from shardlearn.search.cv import refit_view, test_view

    started = time.perf_counter()
    view = refit_view(dataset)
    estimator = model_class(model)(**params)
    given = preprocessor is not None
    if preprocessor is None:
        preprocessor = Preprocessor.for_schema(view.schema, preprocess)
    fitted = Pipeline(preprocessor, estimator)
    shared = contextlib.nullcontext() if cores is None else sharing_cores(cores)
    # In the search's warm scope: the shards the trials and their preprocessing read (here
    # or on the workers) are not read again.
    with _warm.scope(warm) as counters, recording() as timings, shared:
        fitted.fit(view, engine=eng)
        metrics: dict[str, Any] = {}
        if "test" in dataset.splits:
            with timings.phase("evaluate"):
                if given:  # the search's: prepare_refit has built the test rows' block
                    metrics = fold_metrics(fitted, test_view(dataset), eng, IN_THREADS)
                else:
                    metrics = dict(evaluate(fitted, dataset, split="test", engine=eng).metrics)
    reuse = None if counters is None else counters.as_dict()
    return Refit(model, params, fitted, metrics, time.perf_counter() - started,
                 timings.as_dict(), reuse)  # fmt: skip


def prepare_refit(
    dataset: Any,
    preprocessor: Callable[[], Any],
    warm: str | None,
    budget: int,
    estimator: Any = None,
) -> _warm.Counters | None:
    """Build what the refit reads before it starts, on a core the first trials leave idle.

    ``preprocessor()`` fits (once per search) the refit's preprocessor on train + valid; this
    then transforms those rows into the refit's feature block, builds from it the matrix
    ``estimator`` trains on (when it has one: boosting's ``build_matrices``, for the
    ``max_bin`` every refit of the search uses) and the test rows' feature block, in the
    search's warm scope, where the refit finds them (a block's key is the one the refit asks
    for: the same shards, preprocessor, classes and label; the matrix's, that block and
    ``max_bin``). Returns what it built (the scope's counters), or None outside a scope.
    """
    import numpy as np

    from shardlearn.engine import create_engine
    from shardlearn.search.cv import refit_view, test_view

    fitted = preprocessor()
    view = refit_view(dataset)
    here = create_engine("local", workers=1)
    try:
        with _warm.scope(warm, budget) as counters:
            with here.workers(1) as group:
                group.assign(view.shards("train"))
                group.put("preprocessor", fitted)
                group.put("classes", np.asarray(view.classes).tolist())
                group.put("label", view.schema.label)
                group.run(_training_block, getattr(estimator, "build_matrices", None))
            tests = test_view(dataset)
            if tests.num_rows("valid"):
                with here.workers(1) as group:  # keyed as fold_metrics asks for it
                    group.assign(tests.shards("valid"))
                    group.put("preprocessor", fitted)
                    group.put("classes", list(tests.classes))
                    group.put("label", tests.label)
                    group.run(_scored_block)
    finally:
        here.close()
    return counters


def _training_block(state: Any, build_matrices: Callable[[Any], None] | None) -> None:
    """On the worker: the feature block of its train shards and, with ``build_matrices``, the
    estimator's matrix of them (both kept in the warm scope)."""
    from shardlearn.preprocess import load_block

    load_block(state, "train")
    if build_matrices is not None:
        build_matrices(state)


def _scored_block(state: Any) -> None:
    """On the worker: the feature block of its test shards, scored as ``valid`` (kept in the
    warm scope)."""
    from shardlearn.preprocess import load_block

    load_block(state, "valid")


class IdleCores:
    """How many cores other processes kept busy since this was made, on average.

    The machine's busy CPU time (psutil) minus this process's, over the wall time: a search
    measures the machine it shares while its trials run.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        import psutil

        times = psutil.cpu_times()
        busy = sum(getattr(times, name, 0.0) for name in _BUSY)
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system

    def others(self) -> float:
        """Cores other processes used on average since the start."""
        (wall0, busy0, own0), (wall1, busy1, own1) = self._start, self._sample()
        if wall1 <= wall0:
            return 0.0
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)


#: psutil's CPU time fields that are not idle (guest time is inside user time on Linux).
_BUSY = ("user", "nice", "system", "irq", "softirq", "steal")


def usable_cores(cores: int, others: float, share: int) -> int:
    """The cores a refit may take once the trials end: ``cores`` less those other processes
    kept busy (``others``, rounded), never fewer than the slot's ``share``."""
    return max(share, min(cores, round(cores - others)))


class Abandoned(Exception):
    """Raised in an abandoned early refit's fit (:meth:`EarlyRefit.settle`) to end it."""


class EarlyRefit:
    """Refit the best configuration so far on a thread while the last trials run.

    Parameters
    ----------
    run : callable
        ``run(model, params, cores) -> Refit``: :func:`refit_best` with the search's data and
        engine settings; ``cores()`` says how many cores it may use now.
    threads : int
        The cores of one slot: what the refit uses while trials still run.
    """

    def __init__(
        self, run: Callable[[str, dict[str, Any], Callable[[], int]], Refit], threads: int
    ) -> None:
        self._run = run
        self._threads = self._share = threads
        self._watch = IdleCores()  # the machine while the trials run
        self._thread: threading.Thread | None = None
        self._choice: tuple[str, dict[str, Any]] | None = None
        self._result: Refit | None = None
        self._abandoned = False

    def cores(self) -> int:
        """The cores the early refit may use now; raises :class:`Abandoned` once it is
        abandoned (:meth:`settle`), which ends its fit at its next round."""
        if self._abandoned:
            raise Abandoned("the trials left another refit to do")
        return self._threads

    def busy(self) -> int:
        """The threads the early refit uses now: 0 before it starts and once it has ended."""
        thread = self._thread
        return self._threads if thread is not None and thread.is_alive() else 0

    def idle_cores(self) -> int:
        """The slot's share of the cores while trials run; after :meth:`widen`, the cores
        other processes left idle: what a refit after the trials uses."""
        return self._threads

    def settle(self, choice: tuple[str, dict[str, Any]] | None) -> None:
        """The trials have finished and ``choice`` (model, refit parameters; None when no
        trial succeeded) is the refit to keep: an early refit of anything else is abandoned
        at its next boosting round instead of holding the cores the right refit needs."""
        if self._choice is None:
            return
        if choice is None or self._choice != (choice[0], dict(choice[1])):
            self._abandoned = True

    def widen(self, cores: int) -> int:
        """The trials have finished: from its next round the refit takes those of the machine's
        ``cores`` that other processes left idle while they ran (:func:`usable_cores`).
        Returns that count."""
        self._threads = usable_cores(cores, self._watch.others(), self._share)
        return self._threads

    def start(self, model: str, params: dict[str, Any]) -> None:
        """Refit ``model(**params)`` on a new thread (once per search)."""
        if self._thread is not None:
            return
        self._choice = (model, dict(params))
        self._thread = threading.Thread(
            target=self._target, args=self._choice, name="shardlearn-early-refit", daemon=True
        )
        self._thread.start()

    def _target(self, model: str, params: dict[str, Any]) -> None:
        try:
            with _recorded_warnings() as caught:
                result = self._run(model, params, self.cores)
            result.started_early, result.caught = True, list(caught)
            self._result = result
        except BaseException:  # noqa: BLE001 -- not kept: the search refits and meets it again
            self._result = None  # (an abandoned refit ends here too, its fit failed by Abandoned)

    def wait(self) -> None:
        """Wait for the early refit, if one started."""
        if self._thread is not None:
            self._thread.join()

    def kept(self, model: str, params: dict[str, Any]) -> Refit | None:
        """The early refit when it fitted ``model(**params)`` and succeeded, else None (the
        search refits: a failure is then raised on its thread). Its warnings are raised again
        here, on the calling thread."""
        self.wait()
        if self._result is None or self._choice != (model, dict(params)):
            return None
        for caught in self._result.caught:
            warnings.warn_explicit(caught.message, caught.category, caught.filename, caught.lineno)
        return self._result
