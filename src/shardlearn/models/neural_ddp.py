"""Data-parallel training: torch DistributedDataParallel over a WorkerGroup.

One pinned task per worker (``WorkerGroup.run``) joins a process group through an explicit
rendezvous chosen by the driver (address, free port, rank, world size; gloo on CPU, nccl when
every worker has a GPU). The model, its DDP wrapper and the optimiser state live on the
workers in ``state.cache`` between calls; the driver calls :func:`ddp_epoch` once per epoch and
receives that epoch's losses and valid accuracy.

Why distributed equals single-process. Every step's global batch is the same set of rows as in
single-process training (the data order is defined on global row indices, see
:mod:`shardlearn.models._torch`); each rank takes the rows of that batch it owns. A rank's loss
is ``world_size * sum(its per-row losses) / global_batch_rows``; DDP averages gradients over the
ranks, so the averaged gradient is exactly ``sum(all per-row losses) / global_batch_rows``, the
gradient of the single-process mean loss. A rank that owns no row of a step still runs forward
and backward on an empty batch so that the all-reduce happens on every rank. Dropout masks are
keyed by global row (:func:`shardlearn.models._torch.dropout_mask`), so a row is masked the
same whichever rank owns it: with dropout too, 1, 2 or 4 workers train the same model, up to
the order in which the all-reduce sums the ranks' gradients (float32 rounding).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shardlearn.exceptions import EngineError
from shardlearn.models._neural_worker import (
    CACHE_KEY,
    init_distributed,
    load_rows,
    make_optimizer,
    numpy_state,
    restore,
    teardown,
)
from shardlearn.models._torch import (
    build_network,
    dropout_rows,
    epoch_permutation,
    global_layout,
    require_torch,
    step_rows,
)

__all__ = ["ddp_epoch", "ddp_result", "ddp_setup", "evaluate_rows", "fetch_run"]

# Rows per forward pass when evaluating: bounds memory, does not change results.
EVAL_CHUNK = 8192


def _device(torch: Any, spec: dict, rank: int) -> Any:
    if spec["device"] == "cuda":
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def ddp_setup(state: Any, spec: dict) -> None:
    """Join the process group, build the network and optimiser, keep them in ``state.cache``."""
    torch = require_torch()
    init_distributed(state, spec["rendezvous"])
    device = _device(torch, spec, state.rank)
    net = build_network(spec["arch"], spec["seed"]).to(device)
    model = net
    if state.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    ids = {split: global_layout(layout) for split, layout in spec["layouts"].items()}
    state.cache[(CACHE_KEY, spec["fit_id"])] = {
        "spec": spec,
        "device": device,
        "net": net,
        "model": model,
        "optimizer": make_optimizer(net.parameters(), spec),
        "ids": {split: per_rank[state.rank] for split, per_rank in ids.items()},
        "n_rows": {split: sum(len(r) for r in per_rank) for split, per_rank in ids.items()},
        "best_loss": math.inf,
        "best": None,
        "module": net,
        "replicated": True,
    }
    restore(state, state.cache[(CACHE_KEY, spec["fit_id"])], spec.get("resume"))


def fetch_run(state: Any, fit_id: str) -> dict:
    """The cached training run, or an EngineError when this worker lost it."""
    run = state.cache.get((CACHE_KEY, fit_id))
    if run is None:
        raise EngineError(
            f"Worker {state.rank} has no state for neural-network fit {fit_id}: it was "
            "replaced after a failure. Start the fit again."
        )
    return run


def row_losses(torch: Any, logits: Any, y: Any, weight: Any) -> Any:
    """Per-row cross-entropy, times the sample weight when there is one."""
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    return losses if weight is None else losses * weight


def _train_epoch(torch: Any, run: dict, state: Any, epoch: int) -> float:
    spec = run["spec"]
    X, y, w = load_rows(state, "train", spec["data"])
    n_rows, batch = run["n_rows"]["train"], spec["batch_size"]
    steps = step_rows(run["ids"]["train"], epoch_permutation(spec["seed"], epoch, n_rows), batch)
    model, optimizer, device = run["model"], run["optimizer"], run["device"]
    model.train()
    loss_sum = 0.0
    for t, rows in enumerate(steps):
        global_rows = min(batch, n_rows - t * batch)
        xb = torch.from_numpy(X[rows]).to(device)
        yb = torch.from_numpy(y[rows]).to(device)
        wb = None if w is None else torch.from_numpy(w[rows]).to(device)
        optimizer.zero_grad(set_to_none=True)
        with dropout_rows(run["net"], spec["seed"], epoch, run["ids"]["train"][rows]):
            logits = model(xb)
        part = row_losses(torch, logits, yb, wb).sum()
        (part * (state.size / global_rows)).backward()
        optimizer.step()
        loss_sum += float(part.detach())
    return loss_sum


def evaluate_rows(torch: Any, net: Any, X: np.ndarray, y: np.ndarray, device: Any) -> tuple:
    """``(sum of cross-entropy, number correct)`` of ``net`` on rows ``X``, ``y``."""
    net.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, X.shape[0], EVAL_CHUNK):
            logits = net(torch.from_numpy(X[start : start + EVAL_CHUNK]).to(device))
            yb = torch.from_numpy(y[start : start + EVAL_CHUNK]).to(device)
            loss_sum += float(row_losses(torch, logits, yb, None).sum())
            correct += int((logits.argmax(dim=1) == yb).sum())
    return loss_sum, correct


def all_reduce_sum(torch: Any, values: list[float], size: int) -> list[float]:
    """Sum ``values`` over every rank (float64 so counts stay exact)."""
    if size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def epoch_summary(run: dict, totals: list[float], keep_best: Any) -> dict:
    """Turn the summed ``[train_loss, valid_loss, valid_correct]`` into the epoch's report.

    ``keep_best`` is called when the valid loss improved by more than ``tol``; it snapshots
    the weights so early stopping can restore them.
    """
    n_rows = run["n_rows"]
    report = {"loss": totals[0] / n_rows["train"], "valid_loss": None, "valid_accuracy": None}
    n_valid = n_rows.get("valid", 0)
    report["improved"] = False
    if n_valid:
        report["valid_loss"] = totals[1] / n_valid
        report["valid_accuracy"] = totals[2] / n_valid
        if report["valid_loss"] < run["best_loss"] - run["spec"]["tol"]:
            run["best_loss"] = report["valid_loss"]
            report["improved"] = True
            keep_best()
    return report


def ddp_epoch(state: Any, fit_id: str, epoch: int) -> dict:
    """Train one epoch on this rank's rows; return the epoch's global loss and valid accuracy."""
    torch = require_torch()
    run = fetch_run(state, fit_id)
    loss_sum = _train_epoch(torch, run, state, epoch)
    valid = (0.0, 0)
    if run["n_rows"].get("valid"):
        X, y, _ = load_rows(state, "valid", run["spec"]["data"])
        valid = evaluate_rows(torch, run["net"], X, y, run["device"])
    totals = all_reduce_sum(torch, [loss_sum, *valid], state.size)

    def keep_best() -> None:
        if state.rank == 0:
            run["best"] = numpy_state(run["net"])

    return epoch_summary(run, totals, keep_best)


def ddp_result(state: Any, fit_id: str, best: bool) -> dict | None:
    """Rank 0's weights (the best epoch's when ``best`` and one was kept); then tear down."""
    weights = _final_weights(fetch_run(state, fit_id), state.rank, best)
    # No reference to the run may outlive this line: teardown must free the DDP wrapper
    # before it destroys the process group (see teardown).
    teardown(state, fit_id)
    return weights


def _final_weights(run: dict, rank: int, best: bool) -> dict | None:
    if rank != 0:
        return None
    return run["best"] if best and run["best"] is not None else numpy_state(run["net"])
