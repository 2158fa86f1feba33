"""The driver side of neural-network training: rendezvous, epoch loop, progress, weights.

The driver never touches a tensor. It asks every worker what it holds (:func:`probe`), picks
the device and backend, chooses a free port for the rendezvous, sets every rank up once,
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
import math
import socket
import time
from types import SimpleNamespace
from typing import Any

from shardlearn.engine import StepProgress, show_progress
from shardlearn.exceptions import EngineError, TaskFailed, WorkerLost
from shardlearn.models.neural_network._ddp import ddp_epoch, ddp_result, ddp_setup
from shardlearn.models.neural_network._gpipe import pipeline_epoch, pipeline_result, pipeline_setup
from shardlearn.models.neural_network._torch import build_network, stage_ranges
from shardlearn.models.neural_network._worker import checkpoint, has_run, probe, teardown

__all__ = ["train_on_group"]

# Seconds a rank waits for the others at the rendezvous and in collectives before failing.
RENDEZVOUS_TIMEOUT = 300
# Times a fit re-forms its process group after losing a worker before giving up.
MAX_RESTARTS = 3
_MODES = {
    "data": (ddp_setup, ddp_epoch, ddp_result),
    "pipeline": (pipeline_setup, pipeline_epoch, pipeline_result),
}


def free_port() -> int:
    """A TCP port free on this machine right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _rendezvous(group: Any, device: str) -> dict | None:
    if group.size == 1:
        return None
    # The workers of the local engine run on this machine; the rendezvous is on loopback.
    return {
        "address": "127.0.0.1",
        "port": free_port(),
        "backend": "nccl" if device == "cuda" else "gloo",
        "timeout": RENDEZVOUS_TIMEOUT,
    }


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
    spec = {**spec, "layouts": layouts, "device": device, "rendezvous": _rendezvous(group, device)}
    session = _Session(group, spec, mode)
    try:
        session.start()
        history, kept = _epoch_loop(estimator, session, callback)
        parts = group.run(session.result, spec["fit_id"], estimator.early_stopping)
    except BaseException:
        with contextlib.suppress(Exception):
            group.run(teardown, spec["fit_id"])
        raise
    estimator.restarts_ = session.restarts
    weights: dict = {}
    for part in parts:
        weights.update(part or {})
    return weights, history, kept


class _Session:
    """The workers' side of one fit, as seen from the driver: set up, epochs, recovery.

    After every epoch the driver keeps a checkpoint (weights and optimiser state of rank 0,
    or of every pipeline stage). When a worker dies, the engine replaces it; the replacement
    has no model, so the epoch fails. The session then tears the process group down, joins
    a new one on a new port, restores the checkpoint on every rank and runs the epoch again.
    The data order and the dropout masks depend only on (seed, epoch, global row), so the
    resumed fit gives the same model as an uninterrupted one.
    """

    def __init__(self, group: Any, spec: dict, mode: str) -> None:
        self.group, self.spec = group, spec
        self.setup, self.epoch_fn, self.result = _MODES[mode]
        self.checkpoint: list | None = None
        self.restarts = 0

    def start(self) -> None:
        self.group.run(self.setup, self.spec)

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
                except (TaskFailed, WorkerLost):
                    if self.restarts >= MAX_RESTARTS or all(self.group.run(has_run, fit_id)):
                        raise  # no worker was replaced: a real error, not a lost worker
            elif self.restarts >= MAX_RESTARTS:
                raise WorkerLost(
                    f"Workers were lost {self.restarts + 1} times during one fit; giving up."
                )
            self._restart()

    def _restart(self) -> None:
        """Tear the process group down and rejoin on a new port from the last checkpoint."""
        self.restarts += 1
        with contextlib.suppress(Exception):
            self.group.run(teardown, self.spec["fit_id"])
        rendezvous = self.spec["rendezvous"]
        if rendezvous is not None:
            rendezvous = {**rendezvous, "port": free_port()}
        self.spec = {**self.spec, "rendezvous": rendezvous, "resume": self.checkpoint}
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
