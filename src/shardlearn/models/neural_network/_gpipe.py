"""Pipeline model parallelism: a network's layers split across workers, GPipe schedule.

Ranks ``0 .. stages-1`` each hold a contiguous slice of the network (balanced by parameter
count, cut only after a layer with weights); every worker, stage or not, also owns shards.
One training step:

1. *Gather.* The step's global batch (same rows, same order as single-process training) is
   assembled on the stages that need it: every rank sends the features of its rows of the
   batch to stage 0 and their labels to the last stage (``isend``/``irecv``).
2. *Forward.* The batch is cut into micro-batches. Stage ``s`` receives micro-batch ``m``'s
   activations from ``s-1``, runs its slice and sends the output to ``s+1`` while it moves on
   to ``m+1`` — the stages work on different micro-batches at the same time. The last stage
   computes ``sum(per-row loss) / global_batch_rows`` per micro-batch.
3. *Backward.* In reverse micro-batch order the last stage back-propagates its losses and sends
   the gradient of its input to ``s-1``, which back-propagates it through its own slice, and
   so on to stage 0. Gradients accumulate over micro-batches.
4. Each stage steps its own optimiser. The accumulated gradient is the full-batch mean
   gradient, so parameters equal single-process training step for step.

Every stage builds the whole network from the same seed and keeps its slice, so initial
weights equal the single-process ones and parameter names stay global. Dropout masks are keyed
by (seed, epoch, dropout layer, global row)
(:func:`shardlearn.models.neural_network._torch.dropout_mask`), so the micro-batch split and the
stage a dropout layer lands on do not change them: with dropout the pipeline also equals
single-process training (and data parallelism) with the same masks.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from shardlearn.models.neural_network._ddp import (
    all_reduce_sum,
    epoch_summary,
    fetch_run,
    row_losses,
)
from shardlearn.models.neural_network._torch import (
    build_network,
    dropout_rows,
    epoch_permutation,
    global_layout,
    require_torch,
    stage_ranges,
)
from shardlearn.models.neural_network._worker import (
    CACHE_KEY,
    abandon_on_error,
    load_rows,
    make_optimizer,
    numpy_state,
    restore,
    setup_rank,
    teardown,
)

__all__ = ["pipeline_epoch", "pipeline_result", "pipeline_setup"]

_TAG_X, _TAG_Y, _TAG_W, _TAG_ACT, _TAG_GRAD = 1, 2, 3, 4, 5


def _ownership(per_rank: list[np.ndarray], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """For every global row: the rank that owns it and its position in that rank's block."""
    owner = np.empty(n_rows, dtype=np.int64)
    position = np.empty(n_rows, dtype=np.int64)
    for rank, ids in enumerate(per_rank):
        owner[ids] = rank
        position[ids] = np.arange(ids.shape[0], dtype=np.int64)
    return owner, position


def _boundary_shapes(torch: Any, net: Any, ranges: list, n_inputs: int) -> list[tuple]:
    """Per-row shape of every stage's input (by a dry run of one zero row).

    The dry run is in eval mode (dropout is the identity, no row indices needed); the epochs
    put the stages back in training mode.
    """
    shapes = []
    net.eval()
    with torch.no_grad():
        activation = torch.zeros(1, n_inputs)
        for start, end in ranges:
            shapes.append(tuple(activation.shape[1:]))
            activation = net[start:end](activation)
    return shapes


def pipeline_setup(state: Any, spec: dict) -> None:
    """Build this rank's stage and optimiser, cache them; then join the process group."""
    torch = require_torch()

    def build() -> None:
        net = build_network(spec["arch"], spec["seed"])
        ranges = stage_ranges(net, spec["stages"])
        ids = {split: global_layout(layout) for split, layout in spec["layouts"].items()}
        n_rows = {split: sum(len(r) for r in per_rank) for split, per_rank in ids.items()}
        stage = None
        if state.rank < spec["stages"]:
            start, end = ranges[state.rank]
            stage = net[start:end]
        state.cache[(CACHE_KEY, spec["fit_id"])] = {
            "spec": spec,
            "stage": stage,
            "optimizer": None if stage is None else make_optimizer(stage.parameters(), spec),
            "shapes": _boundary_shapes(torch, net, ranges, spec["data"]["n_features"]),
            "owners": {split: _ownership(ids[split], n_rows[split]) for split in ids},
            "n_rows": n_rows,
            "best_loss": math.inf,
            "best": None,
            "module": stage,
            "replicated": False,
        }
        restore(state, state.cache[(CACHE_KEY, spec["fit_id"])], spec.get("resume"))

    setup_rank(state, spec["rendezvous"], build)


def _exchange(
    torch: Any,
    state: Any,
    local: np.ndarray,
    dst: int,
    owner: np.ndarray,
    tag: int,
    dtype: Any,
    row_shape: tuple,
) -> Any:
    """Send this rank's rows of a batch to ``dst``; on ``dst``, assemble the whole batch.

    ``local`` holds this rank's rows in batch order; ``owner`` gives each batch row's rank.
    Returns the assembled batch on ``dst`` and ``None`` elsewhere.
    """
    dist = torch.distributed
    if state.rank != dst:
        if local.shape[0]:
            dist.send(torch.from_numpy(np.ascontiguousarray(local)), dst, tag=tag)
        return None
    batch = torch.empty((owner.shape[0], *row_shape), dtype=dtype)
    for rank in range(state.size):
        where = np.flatnonzero(owner == rank)
        if rank == dst:
            batch[where] = torch.from_numpy(np.ascontiguousarray(local))
        elif where.shape[0]:
            buffer = torch.empty((where.shape[0], *row_shape), dtype=dtype)
            dist.recv(buffer, rank, tag=tag)
            batch[where] = buffer
    return batch


def _gather_batch(torch: Any, state: Any, run: dict, split: str, batch_ids: np.ndarray):
    """``(X on stage 0, y on the last stage, weights on the last stage)`` for one batch.

    Senders go in a fixed order (features to stage 0 first, then labels and weights to the
    last stage) and receivers drain ranks in rank order, so the blocking sends cannot deadlock.
    """
    spec = run["spec"]
    X, y, w = load_rows(state, split, spec["data"])
    owners, positions = run["owners"][split]
    owner = owners[batch_ids]
    mine = positions[batch_ids[owner == state.rank]]
    last = spec["stages"] - 1
    xb = _exchange(torch, state, X[mine], 0, owner, _TAG_X, torch.float32, run["shapes"][0])
    yb = _exchange(torch, state, y[mine], last, owner, _TAG_Y, torch.int64, ())
    wb = None
    if w is not None and split == "train":
        wb = _exchange(torch, state, w[mine], last, owner, _TAG_W, torch.float32, ())
    return xb, yb, wb


def _forward(
    torch: Any, state: Any, run: dict, xb: Any, micro_ids: list[np.ndarray], epoch: int | None
) -> list:
    """Forward every micro-batch through this stage; returns ``(input, output)`` per micro-batch.

    ``micro_ids`` holds each micro-batch's global row indices. ``epoch`` is the training
    epoch (gradients on, dropout masks keyed by those rows) or ``None`` to evaluate.
    """
    stage, rank, last = run["stage"], state.rank, run["spec"]["stages"] - 1
    shape, grad = run["shapes"][rank], epoch is not None
    sizes = [ids.shape[0] for ids in micro_ids]
    inputs = xb.split(sizes) if rank == 0 else [None] * len(sizes)
    pending, kept = [], []
    for m, rows in enumerate(sizes):
        if rank > 0:
            inputs_m = torch.empty((rows, *shape))
            torch.distributed.recv(inputs_m, rank - 1, tag=_TAG_ACT)
            inputs_m.requires_grad_(grad)
        else:
            inputs_m = inputs[m]
        masks: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if epoch is not None:  # training (grad)
            masks = dropout_rows(stage, run["spec"]["seed"], epoch, micro_ids[m])
        with torch.set_grad_enabled(grad), masks:
            output = stage(inputs_m)
        if rank < last:
            sent = output.detach().contiguous()
            pending.append((torch.distributed.isend(sent, rank + 1, tag=_TAG_ACT), sent))
        kept.append((inputs_m, output))
    for request, _ in pending:
        request.wait()
    return kept


def _backward(torch: Any, state: Any, run: dict, kept: list, losses: list) -> None:
    """Back-propagate the micro-batches in reverse order, passing input gradients upstream."""
    rank, last = state.rank, run["spec"]["stages"] - 1
    pending = []
    for m in reversed(range(len(kept))):
        inputs_m, output = kept[m]
        if rank == last:
            losses[m].backward()
        else:
            upstream = torch.empty_like(output)
            torch.distributed.recv(upstream, rank + 1, tag=_TAG_GRAD)
            output.backward(upstream)
        if rank > 0:
            sent = inputs_m.grad.contiguous()
            pending.append((torch.distributed.isend(sent, rank - 1, tag=_TAG_GRAD), sent))
    for request, _ in pending:
        request.wait()


def _micro_batches(batch_ids: np.ndarray, micro_batches: int) -> list[np.ndarray]:
    """The global row indices of each micro-batch (consecutive, sizes differing by at most 1)."""
    return np.array_split(batch_ids, min(micro_batches, batch_ids.shape[0]))


def _train_step(torch: Any, state: Any, run: dict, batch_ids: np.ndarray, epoch: int) -> float:
    """One GPipe step over the global batch ``batch_ids``; returns the summed loss (last stage)."""
    spec = run["spec"]
    xb, yb, wb = _gather_batch(torch, state, run, "train", batch_ids)
    if run["stage"] is None:
        return 0.0
    micro_ids = _micro_batches(batch_ids, spec["micro_batches"])
    sizes = [ids.shape[0] for ids in micro_ids]
    run["optimizer"].zero_grad()
    kept = _forward(torch, state, run, xb, micro_ids, epoch)
    losses, total = [], 0.0
    if state.rank == spec["stages"] - 1:
        ys = yb.split(sizes)
        ws = wb.split(sizes) if wb is not None else [None] * len(sizes)
        for (_, output), y_m, w_m in zip(kept, ys, ws, strict=True):
            part = row_losses(torch, output, y_m, w_m).sum()
            losses.append(part / batch_ids.shape[0])
            total += float(part.detach())
    _backward(torch, state, run, kept, losses)
    run["optimizer"].step()
    return total


def _evaluate(torch: Any, state: Any, run: dict) -> tuple[float, int]:
    """Valid loss sum and correct count, forwarded through the pipeline in batches."""
    spec, n_rows = run["spec"], run["n_rows"].get("valid", 0)
    loss_sum, correct = 0.0, 0
    if run["stage"] is not None:
        run["stage"].eval()
    for start in range(0, n_rows, spec["batch_size"]):
        batch_ids = np.arange(start, min(start + spec["batch_size"], n_rows), dtype=np.int64)
        xb, yb, _ = _gather_batch(torch, state, run, "valid", batch_ids)
        if run["stage"] is None:
            continue
        micro_ids = _micro_batches(batch_ids, spec["micro_batches"])
        kept = _forward(torch, state, run, xb, micro_ids, None)
        if state.rank == spec["stages"] - 1:
            logits = torch.cat([output for _, output in kept])
            loss_sum += float(row_losses(torch, logits, yb, None).sum())
            correct += int((logits.argmax(dim=1) == yb).sum())
    return loss_sum, correct


@abandon_on_error
def pipeline_epoch(state: Any, fit_id: str, epoch: int) -> dict:
    """Train one epoch through the pipeline; return the epoch's loss and valid accuracy."""
    torch = require_torch()
    run = fetch_run(state, fit_id)
    spec = run["spec"]
    n_rows, batch = run["n_rows"]["train"], spec["batch_size"]
    perm = epoch_permutation(spec["seed"], epoch, n_rows)
    if run["stage"] is not None:
        run["stage"].train()
    loss_sum = 0.0
    for start in range(0, n_rows, batch):
        loss_sum += _train_step(torch, state, run, perm[start : start + batch], epoch)
    valid = _evaluate(torch, state, run) if run["n_rows"].get("valid") else (0.0, 0)
    totals = all_reduce_sum(torch, [loss_sum, *valid], state.size)

    def keep_best() -> None:
        if run["stage"] is not None:
            run["best"] = numpy_state(run["stage"])

    return epoch_summary(run, totals, keep_best)


def pipeline_result(state: Any, fit_id: str, best: bool) -> dict:
    """This stage's weights (global names; empty on a rank without a stage); then tear down."""
    weights = _final_weights(fetch_run(state, fit_id), best)
    # No reference to the run may outlive this line (see teardown).
    teardown(state, fit_id)
    return weights


def _final_weights(run: dict, best: bool) -> dict:
    if run["stage"] is None:
        return {}
    return run["best"] if best and run["best"] is not None else numpy_state(run["stage"])
