"""The search driver: a slot per core kept busy, a leaderboard, and a refit of the best.

The driver asks the strategy for a trial whenever a slot is free and starts it at once
(:class:`~shardlearn.search._runner.TrialRunner`): there are no waves, so one slow trial holds
only its own slot. Small data gets one slot per CPU of the engine, each trial fitting in one
warm process; large data one slot, each trial using every worker
(:func:`~shardlearn.search._runner.placement`). Preprocessing is fitted once per fold and
reused by every trial (:class:`~shardlearn.search._runner.FoldPreprocessors`). A process
that runs trials keeps, within the search's warm scope (:mod:`shardlearn._warm`), the shard
tables it read, the feature blocks and the XGBoost matrices of each fold, so it reads each
shard once per search and bins each fold once per ``max_bin``; ``SearchResult.reuse`` counts
it. A large-data trial (or one forced onto the workers) fits on the engine's worker group, whose
processes are given the scope too: each keeps its shard tables and feature blocks for the next
trial. The refit of the best configuration runs in the scope as well; the scope ends (every
process drops it) when the search returns. Results are told to the strategy in the
order trials finish, except TPE, which sees them in trial order
(:mod:`shardlearn.search.strategies`), so grid, random, halving and TPE give one leaderboard
per seed whatever the number of cores or the timing.

Each trial is a one-node :class:`~shardlearn.engine.TaskGraph`. With an ``out`` directory the
graph's result cache lives in ``out/cache``: an interrupted search, started again with the same
arguments, loads every finished trial from it instead of running it, and the strategies (all
deterministic given their seed and the results) walk the same path. ``out`` also holds
``search.json`` (the settings, checked on resume), ``log.jsonl`` (one line per finished trial:
started or loaded from the cache, and its ``timings`` per fit phase), ``leaderboard.parquet``
/ ``.csv``, ``result.json`` and the refitted best model (``best_model/``).

Selection does not leak: a trial's early stopping watches an inner split of its training shards,
never the rows it is scored on (:mod:`shardlearn.search.cv`), and records the rounds or epochs
it kept (its ``early_stopping`` field). The best configuration is refitted on train + valid
with early stopping off and its budget parameter set to the rounds the trial selected, so the
refitted model trains as long as the models that were scored; ``SearchResult.refit_params``
(``refit_params`` in ``result.json``) shows what it was trained with. When the trials run on
threads and a slot falls idle with no trial left to start, the refit of the best configuration
so far starts on it while the last trials finish, and is kept when they leave the same refit
to do (:mod:`shardlearn.search._refit`; otherwise it is abandoned as they end), and takes the
cores the trials free once they end; the refit's preprocessing, feature blocks (train + valid,
test) and boosting matrix are built at the search's start, beside the first trials.
``refit_timings`` gives its phases either way. Once no trial is left to start, the trials still
running on threads take the cores the finished ones leave idle (not the early refit's, nor those
other processes keep busy; :class:`~shardlearn.search._runner.TrialCores`), so the last trial
does not train on one core while the others wait.

Promotions of halving and ASHA continue instead of refitting when the budget is a model's
rounds or epochs and the model can continue training (boosting: more rounds on the same booster;
MLP: more epochs from the same weights and optimiser state; :mod:`shardlearn.search._trial`).
The trials keep their fitted models for that in ``out/continue`` (or a temporary folder removed
at the end); each trial result says how it got its budget (``warm_started``, ``warm_start``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardlearn import _warm
from shardlearn._json import json_default
from shardlearn.engine import create_engine, get_engine, show_progress
from shardlearn.engine import engine as use_engine
from shardlearn.exceptions import SpecError
from shardlearn.search._progress import SearchProgress
from shardlearn.search._refit import (
    EarlyRefit,
    Refit,
    prepare_refit,
    refit_best,
    refit_choice,
)
from shardlearn.search._runner import (
    FoldPreprocessors,
    TrialCores,
    TrialRunner,
    placement,
    trial_key,
)
from shardlearn.search._trial import (
    IN_THREADS,
    LOWER_IS_BETTER,
    ONE_PROCESS,
    budget_param,
    routed_warnings,
    warm_scope_name,
)
from shardlearn.search.space import Distribution, ModelSpace, parse_space
from shardlearn.search.strategies import make_strategy

__all__ = ["SearchResult", "parse_duration", "search"]


@dataclass
class SearchResult:
    """What :func:`search` found.

    Attributes
    ----------
    leaderboard : list of dict
        One row per configuration (its highest rung), best first: ``rank``, ``trial``,
        ``model``, ``params``, ``rung``, ``budget``, ``score`` (mean over folds), ``score_std``,
        ``status``, ``error``, ``seconds``, ``early_stopping`` (see
        :func:`~shardlearn.search._trial.run_trial`; ``None`` for models that do not stop).
    trials : list of dict
        Every trial result, rungs included, in completion order.
    best_params, best_model_name, best_score
        The top configuration.
    refit_params : dict or None
        The parameters the best configuration was refitted with: ``best_params`` with the full
        budget, early stopping off and, when it stopped early, its budget parameter
        (``n_estimators``, ``epochs``) set to the rounds selected during the search.
    best_model : Pipeline or None
        The best configuration refitted on train + valid (None for an objective search).
    test_metrics : dict
        The refitted model's metrics on the test split (empty without one).
    model_path : str or None
        Where the refitted model was saved (``out/best_model``).
    refit_seconds : float or None
        Wall time of the refit (its fit and test scores).
    refit_timings : dict or None
        The refit's seconds per fit phase (``start``, ``read``, ``preprocess``, ``train``,
        ``evaluate``: its test scores).
    refit_started_early : bool
        Whether the refit ran beside the last trials, on a slot they left idle.
    notes : list of str
        What the search ignored and why (a space block for a model not searched).
    preprocessor_fits : int
        Preprocessors fitted for the trials: one per fold (per preprocessing profile), however
        many trials ran.
    reuse : dict
        What the trials that ran (not loaded from ``out/cache``) built and reused, summed over
        them (:func:`reuse_summary`): ``shard_reads``, ``block_builds``, ``matrix_builds``,
        ``hits`` per kind, ``refused`` (values not kept: the warm budget was full),
        ``workers`` (processes that ran trials), ``readers`` (processes that read shards:
        the engine's workers too when trials fit on them), ``most_reads_of_a_shard`` (by one
        process: 1 when every process read each shard once), ``preprocessor_fits`` and
        ``preprocessor_shard_reads``; ``refit`` (what the refit built and reused, when there
        was one); on threads also ``refit_preprocessor_fits`` (the refits' preprocessors on
        train + valid: one per model refitted) and ``refit_prepared`` (what was built for the
        refit at the search's start: its and the test rows' feature blocks, boosting's
        matrix).
        Empty for an objective search.
    """

    leaderboard: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    metric: str
    best_params: dict[str, Any] | None = None
    best_model_name: str | None = None
    best_score: float | None = None
    refit_params: dict[str, Any] | None = None
    best_model: Any = None
    test_metrics: dict[str, Any] = field(default_factory=dict)
    model_path: str | None = None
    refit_seconds: float | None = None
    refit_timings: dict[str, float] | None = None
    refit_started_early: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    preprocessor_fits: int = 0
    reuse: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (``model`` is the saved artifact path)."""
        summary = {
            "model": self.model_path,
            "best_model": self.best_model_name,
            "best_params": self.best_params,
            "best_score": self.best_score,
            "refit_params": self.refit_params,
            "refit_seconds": self.refit_seconds,
            "refit_timings": self.refit_timings,
            "refit_started_early": self.refit_started_early,
            "metric": self.metric,
            "test_metrics": self.test_metrics,
            "leaderboard": self.leaderboard,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
            "reuse": self.reuse,
        }
        # Metric values may be numpy scalars or arrays: make the summary plain JSON.
        return json.loads(json.dumps(summary, default=_plain_json))


def _plain_json(value: Any) -> Any:
    try:
        return json_default(value)
    except TypeError:
        return str(value)


def parse_duration(value: float | str | None) -> float | None:
    """``90``, ``"90s"``, ``"10m"``, ``"1.5h"`` -> seconds."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        if value is not None and value <= 0:
            raise SpecError(f"time_budget must be > 0 seconds. Got {value!r}.")
        return None if value is None else float(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise SpecError(f"time_budget must look like 90, 90s, 10m or 1.5h. Got {value!r}.")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _score_key(metric: str) -> Callable[[dict[str, Any]], float]:
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    return lambda r: sign * r["score"] if r["score"] is not None else float("-inf")


def _budget_values(spaces: list[ModelSpace], kind: str) -> dict[str, int | None]:
    """The full budget of each model: its budget parameter's fixed or default value."""
    from shardlearn.models import model_class

    out: dict[str, int | None] = {}
    for space in spaces:
        name = budget_param(space.model, kind) if space.model else None
        if name is None:
            out[space.model] = None
            continue
        value = space.params.get(name, model_class(space.model)().get_params().get(name))
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(
                f"{space.model}: {name!r} is the budget of successive halving, so it must be "
                f"one integer (the full budget), not {value!r}; or use budget='rows'."
            )
        out[space.model] = value
    return out


def _leaderboard(results: list[dict[str, Any]], key: Callable) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for result in results:
        old = latest.get(result["trial"])
        if old is None or result["rung"] >= old["rung"]:
            latest[result["trial"]] = result
    columns = ("trial", "model", "params", "rung", "budget", "score", "score_std", "status")
    rows: list[dict[str, Any]] = [
        {
            **{c: r.get(c) for c in columns},
            "error": r.get("error"),
            "seconds": r.get("seconds"),
            "early_stopping": r.get("early_stopping"),
            "timings": r.get("timings"),
            "warm_started": r.get("warm_started"),
        }
        for r in latest.values()
    ]
    rows.sort(key=lambda r: (r["status"] != "ok", -r["rung"], -key(r), r["trial"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(rows)]


class _Output:
    """The ``out`` directory: settings check, wave log, leaderboard files."""

    def __init__(self, out: str | Path | None, settings: dict[str, Any]) -> None:
        self.root = Path(out) if out is not None else None
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "search.json"
        if path.exists():
            previous = json.loads(path.read_text())
            if previous != settings:
                changed = sorted(k for k in settings if previous.get(k) != settings[k])
                raise SpecError(
                    f"{self.root} holds a different search (changed: {', '.join(changed)}); "
                    "resume with the same arguments, or choose another out directory."
                )
        else:
            path.write_text(json.dumps(settings, indent=2, sort_keys=True))

    @property
    def cache_dir(self) -> Path | None:
        return None if self.root is None else self.root / "cache"

    def log(self, key: str, cached: bool, result: dict[str, Any]) -> None:
        """One line per finished trial: its key under ``started`` or ``cached``, its seconds
        and their phases (``timings``), and whether a promotion continued its model
        (``warm_started``)."""
        if self.root is None:
            return
        entry = {"trial": key, "started": [] if cached else [key],
                 "cached": [key] if cached else [], "seconds": result.get("seconds"),
                 "timings": result.get("timings"),
                 "warm_started": result.get("warm_started")}  # fmt: skip
        with open(self.root / "log.jsonl", "a") as stream:
            stream.write(json.dumps(entry) + "\n")

    def write(self, leaderboard: list[dict[str, Any]], summary: dict[str, Any] | None) -> None:
        if self.root is None:
            return
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        # Nested values as JSON text: one column type whatever each model's record holds.
        rows = [
            {**r, "params": json.dumps(r["params"], sort_keys=True),
             "early_stopping": json.dumps(r.get("early_stopping"), sort_keys=True),
             "timings": json.dumps(r.get("timings"))}
            for r in leaderboard
        ]  # fmt: skip
        table = pa.Table.from_pylist(rows) if rows else pa.table({"rank": pa.array([], pa.int64())})
        pq.write_table(table, self.root / "leaderboard.parquet")
        pcsv.write_csv(table, self.root / "leaderboard.csv")
        if summary is not None:
            (self.root / "result.json").write_text(json.dumps(summary, indent=2))


def _settings(dataset: Any, spaces: list[ModelSpace], **kw: Any) -> dict[str, Any]:
    space = {s.model: {k: repr(v) for k, v in s.params.items()} for s in spaces}
    return json.loads(json.dumps({"dataset": dataset, "space": space, **kw}, default=repr))


def search(
    dataset: Any = None,
    models: str | list[str] | None = None,
    space: dict[str, Any] | None = None,
    *,
    strategy: str = "random",
    trials: int | None = 20,
    cv: int | None = None,
    metric: str = "roc_auc",
    engine: Any = None,
    out: str | Path | None = None,
    time_budget: float | str | None = None,
    seed: int = 0,
    objective: Callable[[dict[str, Any], Any], float] | None = None,
    budget: str = "auto",
    eta: int = 3,
    rungs: int = 3,
    refit: bool = True,
    callback: Callable[[list[dict[str, Any]]], None] | None = None,
    preprocess: dict[str, Any] | None = None,
    verbose: bool | int = True,
) -> SearchResult:
    """Search hyperparameters, each trial a task-graph node, scored by shard-level CV.

    Parameters
    ----------
    dataset : Dataset or str
        The dataset (path/URI). Not used with ``objective``.
    models : str or list of str
        CLI model names (``"logistic"``, ``"xgboost"``...); several make one joint search.
    space : dict
        ``{param: distribution | list | value}``, or keyed by model name
        (see :mod:`shardlearn.search.space`). Names are checked against the models.
    strategy : {"grid", "random", "halving", "asha", "tpe"}
    trials : int
        Configurations to try (ignored by ``grid``).
    cv : int, optional
        Folds of shard-level cross-validation; ``None`` scores on the valid split. Either way
        the scored rows are never the trainer's: early stopping watches an inner split of the
        training shards (see :mod:`shardlearn.search.cv`).
    metric : str, default "roc_auc"
        A metric of :func:`shardlearn.metrics.evaluate` (log_loss and brier are minimised).
    engine : Engine or str, optional
        Where trials run. On small data (up to ``SMALL_CELLS`` raw training cells) one trial
        per CPU of the engine at once, each in one warm process; on larger data one trial at
        a time on every worker.
    out : path, optional
        Results (Parquet, CSV, JSON), the refitted model and the resumable trial cache.
    time_budget : float or str, optional
        Start no new trial after this long (``"10m"``); running trials finish.
    seed : int
    objective : callable, optional
        ``objective(params, budget_fraction) -> float`` to maximise instead of a model
        (module-level, so workers can import it).
    budget : str, default "auto"
        What halving/ASHA rungs scale: ``"rows"`` (a fraction of the training shards), a
        parameter name, or ``"auto"`` (boosting rounds / trees / ``max_iter`` by model).
    eta, rungs : int
        Successive halving keeps the top ``1/eta`` per rung, over ``rungs`` budgets.
    refit : bool, default True
        Refit the best configuration on train + valid and evaluate it on test. A model that
        stopped early in its trials is refitted with early stopping off and the rounds or
        epochs its trials selected (``SearchResult.refit_params``).
    callback : callable, optional
        Called with the leaderboard after every finished trial.
    verbose : bool or int, default True
        Draw the live leaderboard on stderr when it is a terminal (0: never), and print the
        final leaderboard once.
    preprocess : dict, optional
        A preprocessing spec (:meth:`Preprocessor.from_spec`, e.g. from
        :func:`shardlearn.preprocess.read_spec`) for every trial and the refit; default
        ``Preprocessor.auto`` with each model's defaults. Fitted once per fold.

    Returns
    -------
    SearchResult

    Examples
    --------
    Not run as a test (twenty trials of five folds each take minutes):

    >>> from shardlearn.search import search, loguniform                 # doctest: +SKIP
    >>> result = search("data/adult", models="logistic",
    ...                 space={"C": loguniform(1e-3, 1e2)}, trials=20, cv=5)   # doctest: +SKIP
    >>> result.best_params, result.test_metrics["roc_auc"]               # doctest: +SKIP
    """
    started = time.perf_counter()
    names = [models] if isinstance(models, str) else (list(models) if models else None)
    if objective is None and names is None:
        raise SpecError("search needs models=['logistic', ...] (or an objective function).")
    if objective is None and dataset is None:
        raise SpecError("search needs a dataset to fit the models on.")
    if objective is None and metric in ("", None):
        raise SpecError("search needs a metric, e.g. metric='roc_auc'.")
    notes: list[str] = []
    spaces = parse_space(space, names if objective is None else None, notes=notes)
    deadline = parse_duration(time_budget)
    key = _score_key(metric)
    plan = make_strategy(strategy, spaces, trials, seed, key, eta, rungs)
    halving = strategy in ("halving", "asha")
    full = _budget_values(spaces, budget) if halving and objective is None else {}
    uri = None
    if dataset is not None:
        from shardlearn.data import Dataset

        dataset = dataset if hasattr(dataset, "manifest") else Dataset.open(dataset)
        uri = dataset.uri
        if cv:
            from shardlearn.search.cv import shard_folds

            shard_folds(dataset, cv)  # a clear error before any trial starts
    context: dict[str, Any] = {
        "dataset": uri, "cv": cv, "metric": metric, "budget": budget, "seed": seed,
        "preprocess": preprocess, "warm": None if dataset is None else warm_scope_name(dataset),
    }  # fmt: skip
    # Inside a warm scope (a pipeline run, `with engine(...)`) the search works in it, so the
    # values it keeps and those of the block around it stay (its owner releases them).
    outer = _warm.current()
    if outer is not None and context["warm"] is not None:
        _warm.join(context["warm"])
    settings = _settings(uri, spaces, strategy=strategy, trials=trials, cv=cv, metric=metric,
                         seed=seed, budget=budget, eta=eta, rungs=rungs,
                         objective=None if objective is None else repr(objective),
                         # only when set: an earlier search's out directory still resumes
                         **({} if preprocess is None else {"preprocess": preprocess}))  # fmt: skip
    output = _Output(out, settings)
    scratch = None
    if halving and objective is None:
        scratch = _keep_models_for_promotions(context, output.root, rungs)
    eng = get_engine(engine)
    where, slots = placement(dataset if objective is None else None, eng, spaces)
    context["placement"] = where
    # Trials side by side share the cores; a trial alone (or on every worker) takes them all.
    cores = os.cpu_count() or 1
    one_process = where in (ONE_PROCESS, IN_THREADS)
    context["threads"] = max(1, cores // slots) if one_process and slots > 1 else None
    # Warm data: an equal share of the memory for this process and each slot's (on threads,
    # this process is the only one).
    context["warm_processes"] = 1 if where == IN_THREADS else slots + 1
    display = SearchProgress(metric, plan.total, enabled=show_progress(verbose))
    # Small data: preprocessing is fitted in this process; large data: on every worker. On
    # threads the refit and its test scores stay in this process too, as the trials did.
    fit_engine = create_engine("local", workers=1) if one_process else eng
    refit_engine = create_engine("local", workers=1) if where == IN_THREADS else eng
    # Trials on threads share this process's warnings machinery (routed_warnings).
    warned = routed_warnings() if where == IN_THREADS else contextlib.nullcontext()
    prepared = None if objective is not None else FoldPreprocessors(dataset, context, fit_engine)
    early = refit_pre = ahead = trial_cores = None
    if where == IN_THREADS and slots > 1 and refit and prepared is not None:
        # The refits fit in this process as the preprocessors do: they share one fitted on
        # train + valid, and its data is built while the first trials leave a core idle.
        refit_pre = prepared.for_refit
        early = EarlyRefit(functools.partial(_refit_on_a_slot, dataset, context, refit_pre),
                           context["threads"])  # fmt: skip
        if len(spaces) == 1:
            ahead = _RefitAhead(dataset, prepared, context, spaces[0])
    if where == IN_THREADS and slots > 1:
        # The last trials take the cores the finished ones leave idle, but the early refit's.
        trial_cores = TrialCores(context["threads"], early.busy if early else lambda: 0)
    runner = TrialRunner(eng, context, objective, output.cache_dir, prepared, slots, trial_cores)
    idle = None
    if trial_cores is not None:
        idle = functools.partial(_slot_idle, early, trial_cores, key, full, budget)
    try:
        with use_engine(eng), display, warned:
            try:
                if ahead is not None:
                    ahead.start()
                results = _drive(plan, runner, slots, deadline, started, full, output, key,
                                 display, callback, idle)  # fmt: skip
                if early is not None:  # an early refit of another configuration stops now
                    choice = refit_choice(_leaderboard(results, key), full, budget)
                    early.settle(None if choice is None else (choice[0]["model"], choice[2]))
            finally:
                runner.close()
                if ahead is not None:
                    ahead.join()
                if early is not None:  # its warnings are recorded while routed_warnings is on
                    early.widen(cores)  # no trial runs: the cores no other process uses
                    early.wait()
                if scratch is not None:
                    scratch.cleanup()
            display.finish(_leaderboard(results, key))
        ahead_built = None if ahead is None else ahead.counters
        reuse = {} if prepared is None else reuse_summary(results, prepared, ahead_built)
        if reuse.get("refused"):
            notes.append(
                f"warm data: {reuse['refused']} shard tables, feature blocks or XGBoost "
                f"matrices were built but not kept, so they were built again: the budget of "
                f"${_warm.BUDGET_ENV} bytes per process was full; raise it to reuse them"
            )
        if ahead_built is not None:
            reuse["refit_prepared"] = ahead_built.as_dict()
        result = _finish(results, key, metric, dataset, objective, refit, full, budget,
                         refit_engine, output, started, preprocess, notes=notes, reuse=reuse,
                         warm=context["warm"], early=early, refit_pre=refit_pre)  # fmt: skip
    finally:
        # The preprocessors' engine fits the refit's preprocessor too (refit_pre).
        for opened in (fit_engine, refit_engine):
            if opened is not eng:
                opened.close()
        # The refit ran in the scope too. This process's and the idle workers' warm data
        # (task processes keep theirs until another scope; _warm).
        if context["warm"] is not None and outer is None:
            _warm.release(context["warm"])
    result.preprocessor_fits = 0 if prepared is None else prepared.fits
    if prepared is not None and refit_pre is not None:
        result.reuse["refit_preprocessor_fits"] = prepared.refit_fits
    return result


def reuse_summary(
    results: list[dict[str, Any]],
    prepared: FoldPreprocessors,
    ahead: _warm.Counters | None = None,
) -> dict[str, Any]:
    """What the trials that ran built and reused (see :attr:`SearchResult.reuse`); the reads
    count those of the refit's data built ahead (``prepared.refit_reads``, ``ahead``): shards
    the trials would otherwise read first."""
    ran = [r["reuse"] for r in results if r.get("reuse")]
    summary: dict[str, Any] = {kind: sum(r[kind] for r in ran) for kind in _warm.KINDS}
    summary["hits"] = {kind: sum(r["hits"][kind] for r in ran) for kind in _warm.KINDS}
    summary["refused"] = sum(r["refused"] for r in ran)
    pairs = list(prepared.refit_reads)
    if ahead is not None:
        pairs += zip(ahead.readers, ahead.shards, strict=True)
    for r in ran:
        readers = r.get("readers") or [r["worker"]] * len(r["shards"])
        pairs += zip(readers, r["shards"], strict=True)
    reads: dict[tuple[int, Any], int] = {}
    for pair in pairs:
        reads[pair] = reads.get(pair, 0) + 1
    summary["workers"] = len({r["worker"] for r in ran})
    summary["readers"] = len({reader for reader, _ in reads})
    summary["most_reads_of_a_shard"] = max(reads.values(), default=0)
    summary["preprocessor_fits"] = prepared.fits
    summary["preprocessor_shard_reads"] = prepared.shard_reads
    return summary


def _keep_models_for_promotions(
    context: dict[str, Any], root: Path | None, rungs: int
) -> tempfile.TemporaryDirectory | None:
    """Say in ``context`` where trials keep their fitted models for their promotions:
    ``out/continue`` (kept, so a resumed search continues them), or a temporary folder,
    returned so the search removes it."""
    scratch: tempfile.TemporaryDirectory | None = None
    if root is None:
        scratch = tempfile.TemporaryDirectory(prefix="shardlearn-continue-")
        folder = Path(scratch.name)
    else:
        folder = Path(root) / "continue"
    context.update(continue_dir=str(folder), top_rung=rungs - 1)
    return scratch


def _refit_on_a_slot(
    dataset: Any,
    context: dict[str, Any],
    refit_pre: Callable[[str, dict[str, Any]], Any],
    model: str,
    params: dict[str, Any],
    cores: Callable[[], int],
) -> Refit:
    """The early refit (:class:`~shardlearn.search._refit.EarlyRefit`): in this process, with
    the cores ``cores()`` gives it (a slot's share, then all of them) and the search's
    preprocessor for the refit (``refit_pre``)."""
    here = create_engine("local", workers=1)
    try:
        return refit_best(dataset, model, params, here, None, context["warm"], cores,
                          refit_pre(model, params))  # fmt: skip
    finally:
        here.close()


class _RefitAhead:
    """:func:`~shardlearn.search._refit.prepare_refit` on a thread from the search's start: the
    first trials wait for their fold's preprocessor, feature block and XGBoost matrix (one
    builds, the others wait), which leaves a core idle. ``counters``: what it built.

    The refit's matrix is built for the space's fixed parameters (its ``max_bin``), unless a
    parameter the matrix depends on is searched: then the refit builds its own."""

    def __init__(self, dataset: Any, prepared: FoldPreprocessors, context: dict[str, Any],
                 space: ModelSpace) -> None:  # fmt: skip
        budget = _warm.default_budget(context.get("warm_processes", 1))
        pre = functools.partial(prepared.for_refit, space.model, {})
        self._args = (dataset, pre, context["warm"], budget)
        self._space = space
        self._thread = threading.Thread(target=self._run, name="shardlearn-refit-ahead",
                                        daemon=True)  # fmt: skip
        self.counters: _warm.Counters | None = None

    def _estimator(self) -> Any:
        """The model with the space's fixed parameters, or None when its matrix depends on a
        searched one."""
        from shardlearn.models import model_class

        params = self._space.params
        if any(_searched(params.get(name)) for name in _MATRIX_PARAMS):
            return None
        return model_class(self._space.model)(
            **{k: v for k, v in params.items() if not _searched(v)}
        )

    def _run(self) -> None:
        try:
            self.counters = prepare_refit(*self._args, self._estimator())
        except Exception:  # noqa: BLE001 -- only a head start: the refit meets it and raises
            self.counters = None

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()


#: The parameters a model's training matrix depends on (boosting's binning).
_MATRIX_PARAMS = ("max_bin",)


def _searched(value: Any) -> bool:
    """Whether a space value is searched (a distribution or a list of choices)."""
    return isinstance(value, Distribution | list)


def _slot_idle(
    early: EarlyRefit | None,
    cores: TrialCores,
    key: Callable,
    full: dict,
    budget: str,
    results: list[dict[str, Any]],
) -> None:
    """A slot is idle for good: the early refit of the best configuration so far starts on it
    (when the search refits), and the running trials take the cores nothing else uses."""
    choice = None if early is None else refit_choice(_leaderboard(results, key), full, budget)
    if early is not None and choice is not None:
        early.start(choice[0]["model"], choice[2])
    cores.widen()


def _drive(plan, runner, slots, deadline, started, full, output, key, display, callback,
           idle=None):  # fmt: skip
    """Keep every slot busy until the strategy has nothing more; the results, as finished.

    ``idle(results)`` is called when a slot is free, trials still run and the strategy will
    start no more (it has none left, or the time budget is spent)."""
    results: list[dict[str, Any]] = []
    running: dict[Any, dict[str, Any]] = {}
    cached = 0
    while True:
        expired = deadline is not None and results and time.perf_counter() - started > deadline
        while len(running) < slots and not expired:
            spec = plan.ask()
            if spec is None:
                break
            spec.pop("priority", None)
            if spec.get("budget") is not None and full.get(spec["model"]) is not None:
                spec["budget_value"] = max(1, round(spec["budget"] * full[spec["model"]]))
            running[runner.start(spec)] = spec
        if not running:
            return results
        finished = expired or getattr(plan, "exhausted", False)
        if idle is not None and results and len(running) < slots and finished:
            idle(results)
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        # Several at once: in trial order, so what the strategy is told does not depend on
        # which thread noticed first.
        for future in sorted(done, key=lambda f: trial_key(running[f])):
            running.pop(future)
            result, from_cache = future.result()
            cached += from_cache
            if from_cache:  # built nothing in this run
                result["reuse"] = None
            output.log(trial_key(result), from_cache, result)
            plan.tell(result)
            results.append(result)
        board = _leaderboard(results, key)
        display.update(board, len(running), cached)
        if callback is not None:
            callback(board)


def _finish(results, key, metric, dataset, objective, refit, full, budget, eng, output, started,
            preprocess=None, notes=None, reuse=None, warm=None, early=None,
            refit_pre=None):  # fmt: skip
    board = _leaderboard(results, key)
    result = SearchResult(board, results, metric, notes=notes or [], reuse=reuse or {})
    choice = refit_choice(board, full, budget)
    if choice is not None:
        best, result.best_params, refit_params = choice
        result.best_model_name = best["model"]
        result.best_score = best["score"]
        result.refit_params = None if objective is not None else refit_params
        if refit and result.refit_params is not None and dataset is not None:
            done = None if early is None else early.kept(best["model"], refit_params)
            if done is None:
                pre = None if refit_pre is None else refit_pre(best["model"], refit_params)
                # On threads, the cores other processes left idle, as the early refit's.
                cores = None if early is None else early.idle_cores
                done = refit_best(dataset, best["model"], refit_params, eng, preprocess, warm,
                                  cores, pre)  # fmt: skip
            _keep_refit(result, done, output.root)
    result.seconds = time.perf_counter() - started
    output.write(board, result.to_dict())
    return result


def _keep_refit(result: SearchResult, done: Refit, root: Path | None) -> None:
    """Put the refit in ``result`` and save its model to ``root/best_model``."""
    result.best_model, result.test_metrics = done.fitted, done.metrics
    result.refit_seconds, result.refit_timings = round(done.seconds, 4), done.timings
    result.refit_started_early = done.started_early
    if done.reuse is not None:
        result.reuse["refit"] = done.reuse
    if root is not None:
        from shardlearn.registry import save

        path = save(done.fitted, root / "best_model", metrics=done.metrics, overwrite=True)
        result.model_path = str(path)
