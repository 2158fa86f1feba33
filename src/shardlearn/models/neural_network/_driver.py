"""The driver side of neural-network training: rendezvous, epoch loop, progress, weights.

The driver never touches a tensor. It asks every worker what it holds (:func:`probe`), picks
the device and backend, hosts the rendezvous store (a ``TCPStore`` on a port the OS gives it
when it binds, so no other process can take the port in between; each attempt to form the
group uses its own key prefix in it) and, for a network of one gradient bucket on CPUs, the
directory through which the ranks exchange gradients in shared memory (one per attempt, removed
when it ends; :mod:`shardlearn.models.neural_network._shared`), sets every rank up once,
calls one epoch at a time (the model and optimiser stay on the workers), shows the epoch's
loss, valid loss and valid accuracy on a progress bar (``verbose``; no bar when the caller
passes a callback, which shows its own), decides early stopping, and finally collects the
weights and the checkpoint behind them (a warm start continues from it,
:mod:`shardlearn.models.neural_network._warm`). A spec with ``resume`` (a checkpoint) and
``first_epoch`` continues a fitted network: every rank restores the checkpoint, and the epochs
are numbered on from ``first_epoch``.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import time
from types import SimpleNamespace
from typing import Any

from shardlearn.engine import StepProgress, show_progress
from shardlearn.exceptions import EngineError, TaskFailed, WorkerLost
from shardlearn.models.neural_network._ddp import (
    BUCKET_BYTES,
    ddp_epoch,
    ddp_result,
    ddp_setup,
    shared_numel,
)
from shardlearn.models.neural_network._gpipe import pipeline_epoch, pipeline_result, pipeline_setup
from shardlearn.models.neural_network._shared import AVAILABLE as SHARED
from shardlearn.models.neural_network._shared import create_exchange, remove_exchange
from shardlearn.models.neural_network._torch import build_network, require_torch, stage_ranges
from shardlearn.models.neural_network._worker import checkpoint, has_run, probe, teardown

__all__ = ["train_on_group", "warm_workers"]

# Seconds a rank waits for the others at the rendezvous and in collectives before failing.
RENDEZVOUS_TIMEOUT = 300
# Times a fit re-forms its process group after losing a worker before giving up.
MAX_RESTARTS = 3
_MODES = {
    "data": (ddp_setup, ddp_epoch, ddp_result),
    "pipeline": (pipeline_setup, pipeline_epoch, pipeline_result),
}
# Size of the largest group of worker processes that trained a network in this interpreter.
# The local engine keeps its processes idle between fits and hands them to the next group,
# torch still imported, so a fit on at most as many workers starts warm (the cost model's
# Machine.warm_workers, models._training.execution).
_WARM = {"workers": 0}


def warm_workers() -> int:
    """How many worker processes of this interpreter have trained a network (see ``_WARM``)."""
    return _WARM["workers"]


def choose_device(requested: str, infos: list[dict]) -> str:
    """ "cuda" when requested or when "auto" and every worker has a GPU; else "cpu"."""
    every_gpu = all(info["cuda"] for info in infos)
    if requested == "cuda" and not every_gpu:
        missing = [rank for rank, info in enumerate(infos) if not info["cuda"]]
        raise EngineError(
            f"device='cuda' but worker(s) {missing} have no GPU visible to torch. "
            "Use device='auto' or 'cpu'."
        )
    return "cuda" if requested != "cpu" and every_gpu else "cpu"


def _host_store(group: Any) -> Any:
    """The rendezvous store of a fit on ``group``, or None for a single worker.

    Bound to port 0: the OS picks a free port as it binds, so no other process can take the
    port between choosing and binding it (the store of rank 0 on a port probed earlier could).
    """
    if group.size == 1:
        return None
    return require_torch().distributed.TCPStore(
        "127.0.0.1",
        0,
        is_master=True,
        wait_for_workers=False,
        timeout=datetime.timedelta(seconds=RENDEZVOUS_TIMEOUT),
    )


def train_on_group(
    estimator: Any, group: Any, spec: dict, splits: list[str], callback: Any = None
) -> tuple:
    """Train on ``group``; return ``(weights as numpy arrays, per-epoch reports, checkpoint)``.

    The checkpoint is that of the epoch behind the weights (per rank, as
    :func:`~shardlearn.models.neural_network._worker.checkpoint` returns it).

    ``spec`` is the estimator's training spec without the layouts, device and rendezvous,
    which are filled in here.
    """
    mode = estimator.parallelism
    if mode == "pipeline":
        # Fails early, on the driver, when the network has fewer weighted layers than stages.
        stage_ranges(build_network(spec["arch"], 0), estimator.stages)
    if mode == "pipeline" and estimator.stages > group.size:
        raise ValueError(
            f"{type(estimator).__name__}(parallelism='pipeline', stages={estimator.stages}) "
            f"needs at least {estimator.stages} workers; the engine gives {group.size}. "
            f"Use engine('local', workers={estimator.stages}) or fewer stages."
        )
    infos = group.run(probe, spec["data"], splits)
    layouts = {split: [info["layouts"][split] for info in infos] for split in splits}
    if not any(rows for rank in layouts["train"] for _, rows in rank):
        raise EngineError("The workers hold no training rows; nothing to train on.")
    device = choose_device(estimator.device, infos)
    spec = {**spec, "layouts": layouts, "device": device}
    session = _Session(group, spec, mode, _host_store(group))
    try:
        session.start()
        history, kept = _epoch_loop(estimator, session, callback)
        parts = group.run(session.result, spec["fit_id"], estimator.early_stopping)
    except BaseException:
        # Closing the store first makes every rank still waiting for the others (to be
        # ready, or inside init_process_group) fail at once -- after a worker lost for good or
        # Ctrl-C the engine stops waiting for them, but the teardown would wait behind them.
        session.store = None
        with contextlib.suppress(Exception):
            group.run(teardown, spec["fit_id"])
        raise
    finally:
        session.remove_exchange()
    session.store = None  # stops the store's server: the ranks have left their group
    estimator.restarts_ = session.restarts
    if not group.shares_memory:  # processes that keep torch imported for the next fit
        _WARM["workers"] = max(_WARM["workers"], group.size)
    weights: dict = {}
    for part in parts:
        weights.update(part or {})
    return weights, history, kept


class _Session:
    """The workers' side of one fit, as seen from the driver: set up, epochs, recovery.

    After every epoch the driver keeps a checkpoint (weights and optimiser state of rank 0,
    or of every pipeline stage). When a worker dies, the engine replaces it; the replacement
    has no model, so the epoch fails. The session then tears the process group down, forms
    a new one (under a new key prefix), restores the checkpoint on every rank and runs the
    epoch again.
    The data order and the dropout masks depend only on (seed, epoch, global row), so the
    resumed fit gives the same model as an uninterrupted one.

    ``store`` is the rendezvous store the driver hosts (None for a single worker); every
    start forms the group under a new key prefix in it, so keys of an abandoned attempt
    cannot mix with the new one's.
    """

    def __init__(self, group: Any, spec: dict, mode: str, store: Any) -> None:
        self.group, self.spec, self.store = group, spec, store
        self.setup, self.epoch_fn, self.result = _MODES[mode]
        self.checkpoint: list | None = None
        self.restarts = 0
        self.backend = "nccl" if spec["device"] == "cuda" else "gloo"
        # The gradient exchange through shared memory of the current attempt (_shared).
        self.exchange: str | None = None
        self.shared_numel = None
        if mode == "data" and spec["device"] == "cpu" and store is not None and SHARED:
            self.shared_numel = shared_numel(spec["arch"], spec.get("bucket_bytes", BUCKET_BYTES))

    def start(self) -> None:
        rendezvous = None
        if self.store is not None:
            # The workers of the local engine run on this machine; the rendezvous is on loopback.
            rendezvous = {
                "address": "127.0.0.1",
                "port": self.store.port,
                "prefix": self._attempt_store_prefix(),
                "backend": self.backend,
                "timeout": RENDEZVOUS_TIMEOUT,
                "exchange": self._new_exchange(),
            }
        try:
            self.group.run(self.setup, {**self.spec, "rendezvous": rendezvous})
        except TaskFailed as error:
            raise self._first_failure(error) from error

    def _new_exchange(self) -> str | None:
        """A fresh gradient exchange for this attempt (None: the network uses gloo)."""
        self.remove_exchange()
        if self.shared_numel is not None:
            self.exchange = create_exchange(self.group.size, self.shared_numel)
        return self.exchange

    def remove_exchange(self) -> None:
        remove_exchange(self.exchange)
        self.exchange = None

    def _attempt_store_prefix(self) -> str:
        return f"{self.spec['fit_id']}/{self.restarts}"

    def _attempt_store(self) -> Any:
        """The keys of the current attempt to form the group (a view of ``store``)."""
        dist = require_torch().distributed
        return dist.PrefixStore(self._attempt_store_prefix(), self.store)

    def _first_failure(self, error: TaskFailed) -> TaskFailed:
        """The error of the rank whose failure stopped the others, as it recorded it in the
        store (the engine reports whichever rank answered first), else ``error``."""
        if self.store is None:
            return error
        store = self._attempt_store()
        if not store.check(["failed"]):
            return error
        message = store.get("failed").decode(errors="replace")
        return TaskFailed(message, store.get("failed/traceback").decode(errors="replace"))

    def epoch(self, epoch: int) -> dict:
        fit_id = self.spec["fit_id"]
        while True:
            # A worker replaced since the last epoch has no model: restart before entering a
            # collective, where the healthy ranks would otherwise wait for it until gloo's
            # timeout.
            if all(self.group.run(has_run, fit_id)):
                try:
                    report = self.group.run(self.epoch_fn, fit_id, epoch)[0]
                    self.checkpoint = self.group.run(checkpoint, fit_id)
                    return report
                except TaskFailed as error:
                    if self.restarts >= MAX_RESTARTS or all(self.group.run(has_run, fit_id)):
                        # No worker was replaced: a real error, not a lost worker.
                        raise self._first_failure(error) from error
                except WorkerLost:
                    if self.restarts >= MAX_RESTARTS or all(self.group.run(has_run, fit_id)):
                        raise
            elif self.restarts >= MAX_RESTARTS:
                raise WorkerLost(
                    f"Workers were lost {self.restarts + 1} times during one fit; giving up."
                )
            self._restart()

    def _restart(self) -> None:
        """Tear the process group down and form a new one from the last checkpoint."""
        self.restarts += 1
        with contextlib.suppress(Exception):
            self.group.run(teardown, self.spec["fit_id"])
        self.spec = {**self.spec, "resume": self.checkpoint}
        self.start()


def _epoch_loop(estimator: Any, session: _Session, callback: Any) -> tuple[list[dict], Any]:
    """The epochs' reports, and the checkpoint behind the weights the workers return: the
    last improving epoch's with early stopping (else the one resumed from, if it kept a best
    epoch), otherwise the last epoch's."""
    history: list[dict] = []
    stale = 0
    first = int(session.spec.get("first_epoch", 0))
    resumed = session.spec.get("resume")
    improved = resumed if resumed and any(p and p["best"] is not None for p in resumed) else None
    # A caller that passes a callback (the CLI) shows its own progress; one bar is enough.
    show = callback is None and show_progress(estimator.verbose)
    name = type(estimator).__name__
    with StepProgress(f"{name} epochs", estimator.epochs, enabled=show) as bar:
        for done, epoch in enumerate(range(first, first + estimator.epochs), start=1):
            started = time.perf_counter()
            report = {**session.epoch(epoch)}
            report["seconds"] = time.perf_counter() - started
            history.append(report)
            if report["improved"]:
                improved = session.checkpoint
            bar.update(done, info=_epoch_figures(report))
            if callback is not None:
                callback(
                    SimpleNamespace(
                        iteration=done,
                        loss=report["loss"],
                        grad_norm=math.nan,
                        valid_accuracy=report["valid_accuracy"],
                    )
                )
            if not estimator.early_stopping or report["valid_loss"] is None:
                continue
            stale = 0 if report["improved"] else stale + 1
            if stale >= estimator.n_iter_no_change:
                break
    kept = improved if estimator.early_stopping and improved is not None else session.checkpoint
    return history, kept


def _epoch_figures(report: dict) -> str:
    """One epoch's figures as the progress bar shows them: training loss, valid loss and
    accuracy (when there is a valid split)."""
    figures = f"loss {report['loss']:.4g}"
    if report["valid_loss"] is not None:
        figures += f"  valid loss {report['valid_loss']:.4g}"
    if report["valid_accuracy"] is not None:
        figures += f"  acc {report['valid_accuracy']:.4f}"
    return figures
