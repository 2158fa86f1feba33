"""Where a fit runs: a small cost model, and the per-fit timings that keep overhead visible.

Modes
    ``"in_process"``: the calling process trains alone with all its cores (boosting:
    XGBoost's own loop with ``nthread`` = the cores, no worker processes, no tracker, no
    hand-off). ``"workers"``: the engine's worker group (today's distributed path); it is
    reported as ``"ray"`` when the engine is Ray. An estimator takes ``execution="auto"``
    (default), ``"in_process"`` or ``"workers"``; a forced mode is always honoured.

The cost model (:func:`choose_execution`) is a pure function of a :class:`Work` (algorithm,
rows, features, passes over the data, collective rounds and how they are exchanged) and a
:class:`Machine` (engine kind, workers, cores of the calling process and of the cluster, memory,
the configured start-up cost of a distributed fit, workers already warm for the algorithm), so
the automatic choice is deterministic for a given data size and machine description. It
estimates::

    in_process = syncs * step_seconds
                 + rows * features * passes * seconds_per_value / in-process cores
    workers    = start + syncs * (step_seconds + sync)
                 + rows * features * passes * seconds_per_value / parallel cores

(in-process cores: the algorithm's ``in_process_cpus``, else ``local_cpus``; syncs: the work's
collective rounds, else one per pass; step_seconds: what a round costs every process whatever
its rows -- an MLP's optimiser step --, 0 for boosting; sync: the round's exchange, from the
work's transport (:data:`TRANSPORTS`: latency + bytes) when it names one, else the algorithm's
``sync_seconds_per_pass``; parallel cores: ``cluster_cpus``, or at most ``cores_per_worker``
per worker; start: the machine's ``start_seconds`` plus the algorithm's ``import_seconds``
(torch in a fresh worker), or its ``warm_start_seconds`` when the machine's
``warm_workers`` already ran it)

and picks the cheaper, in-process on a tie; in-process only when the training block fits in a
share of this machine's memory (:data:`IN_PROCESS_MEMORY_SHARE`). On the local engine the
workers share this machine's cores, so one process with all of them wins whenever it can use
them (boosting); workers pay off when a Ray cluster offers more cores than this machine has,
when the rows do not fit in one process, or when the in-process fit uses fewer cores than the
workers together (an MLP trains on one torch thread) and the rows x epochs pay for the
workers' start and per-step exchange.

Why in ``models`` and not ``engine``: the decision needs what an algorithm costs per value and
per pass, and the engine layer knows nothing about models (DESIGN §11); it reads only the
engine's public description (name, worker count, capacity). A trainer opts in by declaring
``_execution_algorithm`` (a key of :data:`ALGORITHMS`) and ``_execution_passes()`` (or
``_execution_work(rows, features)``, and ``_execution_machine(machine)`` to add what it knows of
its workers: an MLP's warm ones); the fit
entry points wrap their ``prepare_training`` in :func:`execution_engine`, which gives the
engine to prepare on (a one-worker in-process engine for ``"in_process"``).

Timings. :func:`recording` opens a :class:`FitTimings` for the current fit (in a context
variable, so nested entry points share one) and :func:`timed` adds a phase's seconds to it:
``start`` (opening the worker group), ``read`` (handing rows to the workers and loading their
feature blocks), ``preprocess`` (fitting the preprocessor), ``train``, ``evaluate`` (validation
scores during training, and the CLI's scoring after it). Outside a recording, ``timed`` costs
one context-variable read.

Cores between rounds. :func:`sharing_cores` gives the in-process fits of a block a function
that says how many threads they may use; boosting asks it before every round
(:func:`round_cores`), so a fit that started beside other work (a search's early refit, on the
core its last trials leave idle) takes the other cores as soon as that work ends. XGBoost's
hist builds the same trees with any thread count, so the model does not depend on when the
count changes.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ALGORITHMS",
    "EXECUTION_OPTIONS",
    "IN_PROCESS_MEMORY_SHARE",
    "PHASES",
    "STARTUP_SECONDS",
    "AlgorithmCost",
    "FitTimings",
    "Machine",
    "TRANSPORTS",
    "Plan",
    "Transport",
    "Work",
    "add_time",
    "choose_execution",
    "describe_machine",
    "execution_engine",
    "local_cpus",
    "recording",
    "round_cores",
    "sharing_cores",
    "timed",
]

#: Values of an estimator's ``execution`` parameter.
EXECUTION_OPTIONS = ("auto", "in_process", "workers")
#: The phases of :class:`FitTimings`, in the order a fit goes through them.
PHASES = ("start", "read", "preprocess", "train", "evaluate")
#: Share of this machine's memory the training block may take to train in-process: the
#: default feature-block budget of all workers together (preprocess.blocks).
IN_PROCESS_MEMORY_SHARE = 0.25
#: Configured fixed cost, in seconds, of a distributed fit beyond the training itself: giving
#: the workers their rows, the rendezvous (XGBoost's tracker), checkpoints. Measured on a
#: 2-core machine with warm local workers: 3.7 s over single-process XGBoost for 100 rounds at
#: 80k rows (issue #23); a Ray actor round trip costs more than a pipe's.
STARTUP_SECONDS = {"local": 1.0, "ray": 2.0}


@dataclass(frozen=True)
class AlgorithmCost:
    """What one pass of an algorithm costs.

    Attributes
    ----------
    seconds_per_value : float
        One core's seconds per row x feature x pass.
    bytes_per_value : float
        Memory per row x feature while training (block plus the library's own matrix).
    sync_seconds_per_pass : float
        Coordination cost of a distributed pass (an allreduce, a barrier), or of one
        collective round when the work counts them (:attr:`Work.syncs`).
    in_process_cpus : int or None
        Cores an in-process fit uses (None: all of the calling process's).
    step_seconds : float
        Fixed cost of one collective round (:attr:`Work.syncs`) that every process pays
        whatever its share of the rows, in-process too (an MLP's optimiser step: autograd,
        kernel launches, the optimiser's update of every weight).
    cores_per_worker : int or None
        Cores one worker trains on (None: the workers use ``cluster_cpus`` together).
    import_seconds : float
        What a fresh worker pays before its first round (importing torch).
    warm_start_seconds : float or None
        The whole start cost when the machine's workers already ran this algorithm
        (:attr:`Machine.warm_workers`); None: no warm figure, ``start_seconds`` always.
    """

    seconds_per_value: float
    bytes_per_value: float
    sync_seconds_per_pass: float
    in_process_cpus: int | None = None
    step_seconds: float = 0.0
    cores_per_worker: int | None = None
    import_seconds: float = 0.0
    warm_start_seconds: float | None = None


#: Per-algorithm costs. ``hist_boosting``: XGBoost hist, one pass per tree level (histograms
#: are built level by level): 100 trees of depth 10 on 80k x 8 airline rows take 1.0 s on 2
#: cores, 3e-9 s per value and level; a float32 block plus the quantile matrix and gradients;
#: one histogram allreduce per level.
#: ``mlp``: data-parallel MLP (neural_network._ddp); a value is one multiply-add of one row,
#: passes are forward + backward (3 forward's worth) per epoch, a sync is one optimiser step.
#: Calibrated on issue #23's benchmark (900k x 20 rows, (64, 64), 4 classes, batch 1024, one
#: torch thread per process; quiet 2-core machine, 17:04 UTC run): a step costs 0.3 ms
#: whatever its rows (CPU time of a 1-row step against a 1024-row one, shared machine: 0.3 of
#: it) -- ``step_seconds`` -- and 0.85 ms per 1024 rows, 5e-11 s per multiply-add; predicted
#: 1.01 s/epoch in-process against 1.04 measured (0.10 against 0.11 at 90k). Each worker
#: trains on one core. A fresh worker imports torch (about 2 s beside the engine's 1 s start:
#: first fits 2.9-3.2 s slower than warm ones); a warm one starts a fit in about 0.15 s
#: (hand-off, rendezvous, set-up). In-process training uses one torch thread: two intra-op
#: threads on 64-wide layers were slower than one (3-10 s of CPU per epoch against 0.2 s on a
#: shared 2-core machine).
ALGORITHMS: dict[str, AlgorithmCost] = {
    "hist_boosting": AlgorithmCost(3e-9, 8.0, 1e-3),
    "mlp": AlgorithmCost(
        5e-11,
        8.0,
        3e-3,
        in_process_cpus=1,
        step_seconds=3e-4,
        cores_per_worker=1,
        import_seconds=2.0,
        warm_start_seconds=0.15,
    ),
}


@dataclass(frozen=True)
class Transport:
    """What one collective round costs through a transport: ``latency_seconds`` plus
    ``seconds_per_byte`` times the bytes each rank contributes."""

    latency_seconds: float
    seconds_per_byte: float


#: The MLP's gradient exchanges (neural_network._ddp). ``shared_memory`` (a network of one
#: bucket on CPUs): the all-reduce itself takes 12-16 us, but a step waits for the slower rank
#: (each rank's share of a random global batch differs by a few rows, and the scheduler wakes
#: the waiting rank), so the latency is the measured lock-step cost: 2 workers at 0.83 s/epoch
#: over 880 steps against the 0.63 s their compute and step costs predict, 0.22 ms a step
#: (0.30 ms at 90k rows); the bytes are copied into a slot and summed (about 2e-10 s/byte for
#: 4 MB, one core). ``gloo``: 0.7-1.7 ms per all-reduce of 23 KB between two local processes
#: (issue #23), about 1 GB/s over loopback.
TRANSPORTS: dict[str, Transport] = {
    "shared_memory": Transport(2.2e-4, 2e-10),
    "gloo": Transport(1.2e-3, 1e-9),
}


@dataclass(frozen=True)
class Work:
    """The size of a fit: ``rows`` x ``features`` values visited ``passes`` times.

    ``syncs``: collective rounds of a distributed fit when they are not one per pass (an MLP
    all-reduces once per optimiser step); None: one per pass. ``transport`` (a key of
    :data:`TRANSPORTS`) and ``sync_bytes`` (what each rank contributes to a round): how a
    round is exchanged; None: the algorithm's ``sync_seconds_per_pass``.
    """

    algorithm: str
    rows: int
    features: int
    passes: int
    syncs: int | None = None
    transport: str | None = None
    sync_bytes: int = 0

    @property
    def values(self) -> float:
        """Row x feature x pass visits."""
        return float(self.rows) * self.features * self.passes


@dataclass(frozen=True)
class Machine:
    """What the cost model knows about where a fit can run.

    Attributes
    ----------
    engine : str
        ``"local"`` or ``"ray"``.
    workers : int
        Workers of the engine's group.
    local_cpus : int
        Cores of the calling process.
    cluster_cpus : float
        Cores the workers use together.
    memory_bytes : int
        Physical memory of the calling process's machine.
    start_seconds : float
        Fixed cost of a distributed fit (:data:`STARTUP_SECONDS`).
    warm_workers : int
        Workers that already ran the planned algorithm in this interpreter (their processes
        are kept idle between fits, its library imported): a fit on at most that many pays
        the algorithm's ``warm_start_seconds``. Filled in by the estimator
        (``_execution_machine``); 0 by :func:`describe_machine`.
    """

    engine: str
    workers: int
    local_cpus: int
    cluster_cpus: float
    memory_bytes: int
    start_seconds: float
    warm_workers: int = 0


@dataclass(frozen=True)
class Plan:
    """The choice for one fit: ``mode``, what was asked, and the estimates behind it."""

    mode: str
    requested: str
    estimates: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def local_cpus() -> int:
    """Cores the calling process may run on."""
    if hasattr(os, "sched_getaffinity"):  # the cores this process may run on (containers)
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def describe_machine(engine: Any) -> Machine:
    """The :class:`Machine` of ``engine`` as seen from the calling process."""
    import psutil

    local = local_cpus()
    name = str(getattr(engine, "name", "local"))
    # Local workers share this machine's cores; a Ray cluster may have more of them.
    cluster = float(engine.capacity.cpus) if name == "ray" else float(local)
    return Machine(
        engine=name,
        workers=int(engine.n_workers),
        local_cpus=local,
        cluster_cpus=max(cluster, 1.0),
        memory_bytes=int(psutil.virtual_memory().total),
        start_seconds=STARTUP_SECONDS.get(name, max(STARTUP_SECONDS.values())),
    )


def _workers_mode(machine: Machine) -> str:
    return "ray" if machine.engine == "ray" else "workers"


def _start_seconds(cost: AlgorithmCost, machine: Machine) -> float:
    """A distributed fit's fixed cost: warm workers' figure, else start plus import."""
    warm = 0 < machine.workers <= machine.warm_workers
    if warm and cost.warm_start_seconds is not None:
        return cost.warm_start_seconds
    return machine.start_seconds + cost.import_seconds


def _sync_seconds(cost: AlgorithmCost, work: Work) -> float:
    """One collective round: through the work's transport, else the algorithm's figure."""
    if work.transport is None:
        return cost.sync_seconds_per_pass
    transport = TRANSPORTS[work.transport]
    return transport.latency_seconds + work.sync_bytes * transport.seconds_per_byte


def _parallel_cores(cost: AlgorithmCost, machine: Machine) -> float:
    """Cores the workers train on together."""
    if cost.cores_per_worker is None:
        return machine.cluster_cpus
    return max(1.0, min(machine.cluster_cpus, float(machine.workers * cost.cores_per_worker)))


def choose_execution(work: Work, machine: Machine, requested: str = "auto") -> Plan:
    """Where ``work`` runs on ``machine``: deterministic, from the sizes alone.

    Parameters
    ----------
    work : Work
    machine : Machine
    requested : {"auto", "in_process", "workers"}
        A forced mode is returned as is (``"workers"`` on Ray is ``"ray"``).

    Returns
    -------
    Plan
    """
    cost = ALGORITHMS[work.algorithm]
    compute = work.values * cost.seconds_per_value
    syncs = work.passes if work.syncs is None else work.syncs
    steps = syncs * cost.step_seconds
    estimates = {
        "in_process": steps + compute / (cost.in_process_cpus or machine.local_cpus),
        _workers_mode(machine): _start_seconds(cost, machine)
        + steps
        + syncs * _sync_seconds(cost, work)
        + compute / _parallel_cores(cost, machine),
    }
    if requested == "in_process":
        return Plan("in_process", requested, estimates, "requested")
    if requested == "workers":
        return Plan(_workers_mode(machine), requested, estimates, "requested")
    needed = float(work.rows) * work.features * cost.bytes_per_value
    budget = machine.memory_bytes * IN_PROCESS_MEMORY_SHARE
    if needed > budget:
        reason = f"the rows need about {needed / 1e9:.1f} GB, over {budget / 1e9:.1f} GB here"
        return Plan(_workers_mode(machine), requested, estimates, reason)
    mode = min(estimates, key=lambda m: (estimates[m], m != "in_process"))
    return Plan(mode, requested, estimates, "estimated faster")


def _work_of(estimator: Any, X: Any) -> Work | None:
    """The :class:`Work` of fitting ``estimator`` on ``X`` (a Dataset or an array), or None."""
    algorithm = getattr(estimator, "_execution_algorithm", None)
    if algorithm is None:
        return None
    estimator._validate_params()  # the passes are computed from the parameters
    if hasattr(X, "manifest") and hasattr(X, "schema"):  # a Dataset: sizes from its manifest
        rows = X.num_rows("train") + (X.num_rows("valid") if "valid" in X.splits else 0)
        features = len(X.schema.feature_columns)
    else:
        shape = getattr(X, "shape", None)
        if shape is None:  # a list of rows
            try:
                shape = np.shape(X)
            except (ValueError, TypeError):  # ragged, or an array-like numpy cannot size
                return None  # without converting it: prepare_training reads it
        if len(shape) != 2:
            return None  # not a matrix: prepare_training says what is wrong with it
        rows, features = int(shape[0]), int(shape[1])
    custom = getattr(estimator, "_execution_work", None)
    if custom is not None:  # the estimator sizes its own work (an MLP: its network's size)
        return custom(int(rows), max(1, int(features)))
    return Work(algorithm, int(rows), max(1, int(features)), int(estimator._execution_passes()))


@contextlib.contextmanager
def execution_engine(estimator: Any, X: Any, engine: Any) -> Iterator[Any]:
    """The engine to prepare ``estimator``'s fit on, after choosing where it runs.

    The :class:`Plan` is stored as ``estimator._execution_plan``. For ``"in_process"`` this
    yields a one-worker local engine (the calling process); otherwise ``engine`` unchanged.
    An estimator without ``_execution_algorithm`` is not planned.
    """
    from shardlearn.engine import create_engine, get_engine

    work = _work_of(estimator, X)
    if work is None:
        estimator._execution_plan = None
        yield engine
        return
    requested = getattr(estimator, "execution", "auto")
    machine = describe_machine(get_engine(engine))
    adjust = getattr(estimator, "_execution_machine", None)
    if adjust is not None:  # what the estimator knows of its workers (an MLP: warm ones)
        machine = adjust(machine)
    plan = choose_execution(work, machine, requested)
    estimator._execution_plan = plan
    if plan.mode != "in_process":
        yield engine
        return
    with create_engine("local", workers=1) as here:
        yield here


# ------------------------------------------------------------------ timings
@dataclass
class FitTimings:
    """Seconds spent in each phase of one fit (see the module notes).

    Phases nest exclusively, as a profiler's self time: a phase timed inside another (the
    workers' reads inside training) is subtracted from the enclosing one, so the phases add up
    to the fit's wall time instead of counting a second twice.
    """

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    # Open phases, innermost last: [phase, started, seconds of its nested phases].
    _open: list[list[Any]] = field(default_factory=list)

    def add(self, phase: str, seconds: float) -> None:
        """Add ``seconds`` measured elsewhere (a worker's) to ``phase``, taking them out of the
        enclosing phase."""
        if phase not in self.seconds:
            raise ValueError(f"Unknown fit phase {phase!r}; one of {', '.join(PHASES)}.")
        self.seconds[phase] += float(seconds)
        if self._open:
            self._open[-1][2] += float(seconds)

    def as_dict(self) -> dict[str, float]:
        """``{phase: seconds}`` in :data:`PHASES` order; open phases count up to now."""
        now = time.perf_counter()
        out = dict(self.seconds)
        for phase, started, nested in self._open:
            out[phase] += max(0.0, now - started - nested)
        # Nested open phases are inside their parents' spans: take them out once more.
        for parent, child in zip(self._open, self._open[1:], strict=False):
            out[parent[0]] -= max(0.0, now - child[1])
        return {phase: round(max(0.0, value), 6) for phase, value in out.items()}

    @contextlib.contextmanager
    def phase(self, phase: str) -> Iterator[None]:
        """Time the block as ``phase`` (minus the phases nested in it)."""
        frame: list[Any] = [phase, time.perf_counter(), 0.0]
        self._open.append(frame)
        try:
            yield
        finally:
            self._open.pop()
            self.add(phase, time.perf_counter() - frame[1] - frame[2])
            if self._open:  # the parent lost the nested phases' time too, not only our own
                self._open[-1][2] += frame[2]


_CURRENT: contextvars.ContextVar[FitTimings | None] = contextvars.ContextVar(
    "shardlearn_fit_timings", default=None
)


@contextlib.contextmanager
def recording() -> Iterator[FitTimings]:
    """The current fit's timings: the enclosing recording's, or a new one for this block."""
    current = _CURRENT.get()
    if current is not None:
        yield current
        return
    timings = FitTimings()
    token = _CURRENT.set(timings)
    try:
        yield timings
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def timed(phase: str) -> Iterator[None]:
    """Time the block as ``phase`` of the current recording (nothing outside a recording)."""
    timings = _CURRENT.get()
    if timings is None:
        yield
        return
    with timings.phase(phase):
        yield


def add_time(phase: str, seconds: float) -> None:
    """Add ``seconds`` measured elsewhere (a worker's) to ``phase`` of the current recording."""
    timings = _CURRENT.get()
    if timings is not None:
        timings.add(phase, seconds)


# ------------------------------------------------------------------ cores between rounds
_CORES: contextvars.ContextVar[Callable[[], int] | None] = contextvars.ContextVar(
    "shardlearn_fit_cores", default=None
)


@contextlib.contextmanager
def sharing_cores(cores: Callable[[], int]) -> Iterator[None]:
    """In-process fits in the block use ``cores()`` threads, asked again before every round
    (see the module notes)."""
    token = _CORES.set(cores)
    try:
        yield
    finally:
        _CORES.reset(token)


def round_cores() -> int | None:
    """The threads an in-process fit may use for its next round; None outside
    :func:`sharing_cores` (the fit keeps its own setting)."""
    cores = _CORES.get()
    return None if cores is None else max(1, int(cores()))
