"""Data-parallel training over a WorkerGroup: one flat gradient buffer, bucketed all-reduces.

One pinned task per worker (``WorkerGroup.run``) joins a process group through an explicit
rendezvous hosted by the driver (its store's address and port, rank, world size; gloo on CPU,
nccl when every worker has a GPU; see :mod:`shardlearn.models.neural_network._worker`). The
model, its gradient buckets and the optimiser state live on the workers in ``state.cache``
between calls; the driver calls :func:`ddp_epoch` once per epoch and
receives that epoch's losses and valid accuracy.

Communication (:class:`GradientBuckets`, what torch's DistributedDataParallel does, without its
per-step bookkeeping). Every parameter's ``.grad`` is a view into one flat buffer, laid out in
the order backward produces the gradients (last layer first), so autograd accumulates straight
into it and no gradient is copied. The buffer is cut into buckets of at most
:data:`BUCKET_BYTES`; a post-accumulate hook launches a bucket's asynchronous all-reduce as soon
as its last gradient is written, so communication overlaps the rest of backward, and the ranks
launch the buckets in the same order. A network of a few MB is one bucket: one all-reduce per
optimiser step. The step's loss rides in the first bucket (one more float), so the epoch's
training loss needs no all-reduce of its own; only the valid scores do. Counted with torch's
profiler (issue #23): an epoch of 16 steps of a (64, 64) network made 17 all-reduces with torch
DDP and makes 16; 8 steps of a (512, 512) one (over DDP's 1 MB first bucket) 16, now 8.

A network of one bucket on CPUs (up to :data:`BUCKET_BYTES` of gradients) waits for latency, not
bandwidth, and its bucket could only be launched at the very end of backward anyway: its one
all-reduce per step goes through shared memory instead of gloo
(:mod:`shardlearn.models.neural_network._shared`; 12-16 us instead of 0.7-1.7 ms for a (64, 64)
MLP on a shared 2-core machine), no hook. The parameters too live in one flat buffer, laid out
like the gradients, so the optimiser updates all of them with one call of each kernel
(:mod:`shardlearn.models.neural_network._optim`).

What a step costs every rank. A step's work splits over the ranks, but each rank also pays a
fixed cost per step whatever its share of the rows (autograd's graph, kernel launches, the
optimiser's update of every weight): 0.3 of a 1024-row step of issue #23's (64, 64) network on
one core, which bounds what 2 workers can gain over 1. So the loop keeps the rest of it small:
the epoch's step lists are built in linear time (:func:`~shardlearn.models.neural_network.
_torch.step_rows`), the rows of consecutive steps are gathered into blocks with one ``np.take``
and one tensor per block, each step taking views (:func:`epoch_batches`), and without sample
weights the loss is summed by the loss kernel and back-propagated with the factor ``1 / rows``
(no division node; the same gradients, bit for bit). A plain MLP on CPUs (linear layers and
activations, no dropout) skips autograd altogether: :class:`~shardlearn.models.neural_network.
_dense.DenseStep` calls the kernels autograd's backward would call (bit-equal gradients), a
one-row step's fixed cost 0.37 -> 0.21 ms on one core.

Why distributed equals single-process. Every step's global batch is the same set of rows as in
single-process training (the data order is defined on global row indices, see
:mod:`shardlearn.models.neural_network._torch`); each rank takes the rows of that batch it owns. A
rank's loss is ``sum(its per-row losses) / global_batch_rows``; the all-reduce sums the ranks'
gradients, so every rank steps with ``sum(all per-row losses) / global_batch_rows``'s gradient, the
gradient of the single-process mean loss -- the whole global batch is one accumulation, never
split over optimiser steps. A rank that owns no row of a step still runs forward and backward
on an empty batch so that the all-reduce happens on every rank. Dropout masks are keyed by
global row (:func:`shardlearn.models.neural_network._torch.dropout_mask`), so a row is masked the
same whichever rank owns it: with dropout too, 1, 2 or 4 workers train the same model, up to the
order in which the all-reduce sums the ranks' gradients (float32 rounding). The initial weights
are equal on every rank (built from the same seed, or restored from rank 0's checkpoint), so
no broadcast is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np

from shardlearn.exceptions import EngineError
from shardlearn.models.neural_network._dense import DenseStep
from shardlearn.models.neural_network._shared import SharedAllReduce
from shardlearn.models.neural_network._torch import (
    build_network,
    dropout_rows,
    epoch_permutation,
    global_layout,
    require_torch,
    step_rows,
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

__all__ = [
    "GradientBuckets",
    "ddp_epoch",
    "ddp_result",
    "ddp_setup",
    "epoch_batches",
    "evaluate_rows",
    "fetch_run",
    "shared_numel",
]

# Rows per forward pass when evaluating: bounds memory, does not change results.
EVAL_CHUNK = 8192
# Bytes of training rows gathered at once for the steps of an epoch (epoch_batches): large
# enough that a block holds many steps, small beside a worker's feature block.
GATHER_BYTES = 16 * 1024 * 1024
# Largest gradient bucket: torch DDP's default cap (25 MB). A network up to that size is one
# all-reduce per step; a bigger one is several, the first launched while backward still runs.
BUCKET_BYTES = 25 * 1024 * 1024


def _device(torch: Any, spec: dict, rank: int) -> Any:
    if spec["device"] == "cuda":
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


class GradientBuckets:
    """The gradients of ``net`` as views of one flat buffer, all-reduced bucket by bucket.

    Slot 0 of the buffer holds the step's loss (summed over the ranks with the gradients);
    then the parameters in reverse order (backward's order), cut into buckets of at most
    ``bucket_bytes`` (a spec's ``bucket_bytes`` overrides :data:`BUCKET_BYTES`, so tests can
    exercise several buckets on a small network). ``size == 1`` communicates nothing.
    Use: :meth:`zero`, :meth:`loss`, ``backward()``, :meth:`wait`, then the optimiser step.
    """

    def __init__(
        self,
        torch: Any,
        net: Any,
        size: int,
        device: Any,
        bucket_bytes: int = BUCKET_BYTES,
        shared: SharedAllReduce | None = None,
    ) -> None:
        self.torch, self.size, self.shared = torch, size, shared
        params = [p for p in net.parameters() if p.requires_grad][::-1]
        self.flat = torch.zeros(1 + sum(p.numel() for p in params), device=device)
        self.grads = self.flat[1:]
        # The parameters themselves, laid out like their gradients: a flat optimiser step.
        self.values = torch.empty_like(self.grads)
        self.buckets: list[tuple[int, int]] = []  # [start, end) of each bucket in ``flat``
        self.grads_per_bucket: list[int] = []
        start, offset = 0, 1
        for param in params:
            if offset > start and (offset + param.numel() - start) * 4 > bucket_bytes:
                self.buckets.append((start, offset))
                start = offset
            if len(self.grads_per_bucket) == len(self.buckets):
                self.grads_per_bucket.append(0)
            self.grads_per_bucket[-1] += 1
            value = self.values[offset - 1 : offset - 1 + param.numel()].view_as(param)
            param.data = value.copy_(param.detach())
            param.grad = self.flat[offset : offset + param.numel()].view_as(param)
            if size > 1 and shared is None:
                param.register_post_accumulate_grad_hook(self._hook(len(self.buckets)))
            offset += param.numel()
        self.buckets.append((start, offset))
        # Whether hooks launch buckets while backward still runs (else all at its end).
        self.overlaps_backward = size > 1 and shared is None and len(self.buckets) > 1
        self.pending: list[int] = []  # gradients each bucket still waits for in this step
        self.works: list[Any] = []
        self.launched = 0

    def _hook(self, bucket: int) -> Any:
        def ready(_param: Any) -> None:
            self.pending[bucket] -= 1
            self._launch_ready()

        return ready

    def _launch_ready(self, force: bool = False) -> None:
        """Launch complete buckets in bucket order (every rank must issue the same order)."""
        while self.launched < len(self.buckets) and (force or self.pending[self.launched] == 0):
            start, end = self.buckets[self.launched]
            op = self.torch.distributed.all_reduce
            self.works.append(op(self.flat[start:end], async_op=True))
            self.launched += 1

    def zero(self) -> None:
        """Start a step: gradients and loss to zero, no bucket launched."""
        self.flat.zero_()
        self.pending = list(self.grads_per_bucket)
        self.works, self.launched = [], 0

    def loss(self, value: Any) -> None:
        """This rank's loss of the step; after :meth:`wait`, slot 0 holds the global one."""
        self.flat[0] = value.detach()

    def wait(self) -> float:
        """Finish the step's all-reduces (launching any bucket a hook did not); the step's
        loss summed over the ranks."""
        if self.shared is not None:
            self.shared.all_reduce(self.flat)
        elif self.size > 1:
            self._launch_ready(force=True)
            for work in self.works:
                work.wait()
        return float(self.flat[0])


def shared_numel(arch: dict, bucket_bytes: int = BUCKET_BYTES) -> int | None:
    """The length of the gradient buffer of ``arch`` when it is one bucket (its per-step
    all-reduce is latency-bound: shared memory, :mod:`._shared`); None when it is more."""
    torch = require_torch()
    with torch.device("meta"):  # shapes only: no memory for the weights
        numel = 1 + sum(p.numel() for p in build_network(arch, 0).parameters())
    return numel if 4 * numel <= bucket_bytes else None


def ddp_setup(state: Any, spec: dict) -> None:
    """Build the network, its gradient buckets and optimiser, keep them in ``state.cache``;
    then join the process group."""
    torch = require_torch()

    def build() -> None:
        device = _device(torch, spec, state.rank)
        net = build_network(spec["arch"], spec["seed"]).to(device)
        bucket_bytes = spec.get("bucket_bytes", BUCKET_BYTES)
        exchange = (spec["rendezvous"] or {}).get("exchange")
        shared = None
        if exchange is not None:
            numel = shared_numel(spec["arch"], bucket_bytes)
            timeout = spec["rendezvous"]["timeout"]
            shared = SharedAllReduce(torch, exchange, state.rank, state.size, numel or 0, timeout)
        buckets = GradientBuckets(torch, net, state.size, device, bucket_bytes, shared)
        ids = {split: global_layout(layout) for split, layout in spec["layouts"].items()}
        # Autograd where hooks overlap buckets with backward, where the network needs it, and
        # on GPUs (where the dense step is untested and the per-step fixed cost is not the CPU's).
        plain = not buckets.overlaps_backward and device.type == "cpu"
        dense = DenseStep.build(torch, net) if plain else None
        state.cache[(CACHE_KEY, spec["fit_id"])] = {
            "spec": spec,
            "device": device,
            "net": net,
            "buckets": buckets,
            "dense": dense,
            "optimizer": make_optimizer(
                net.parameters(), spec, flat=(buckets.values, buckets.grads)
            ),
            "ids": {split: per_rank[state.rank] for split, per_rank in ids.items()},
            "n_rows": {split: sum(len(r) for r in per_rank) for split, per_rank in ids.items()},
            "best_loss": math.inf,
            "best": None,
            "module": net,
            "replicated": True,
        }
        restore(state, state.cache[(CACHE_KEY, spec["fit_id"])], spec.get("resume"))

    setup_rank(state, spec["rendezvous"], build)
    shared = state.cache[(CACHE_KEY, spec["fit_id"])]["buckets"].shared
    if shared is not None:  # every rank's reading ends are open: they announced it
        shared.connect()
        torch.distributed.barrier()  # every writer is there before any rank reads


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


def summed_loss(torch: Any, logits: Any, y: Any, weight: Any) -> Any:
    """The sum of :func:`row_losses`; without weights one kernel and one autograd node
    (the same gradients: the sum's backward hands every row the same factor)."""
    if weight is None:
        return torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    return row_losses(torch, logits, y, weight).sum()


def epoch_batches(
    torch: Any, rows: tuple, steps: list[np.ndarray], device: Any
) -> Iterator[tuple[Any, ...]]:
    """Per step, ``(X, y, weight or None)`` of the step's rows as tensors on ``device``.

    The rows of consecutive steps are gathered together, :data:`GATHER_BYTES` at a time, and
    each step gets views of the gathered block: one ``np.take`` and one tensor per block
    instead of per step (each costs the step a fixed few microseconds that does not shrink
    with the rows a rank holds).
    """
    X, y, w = rows
    row_bytes = X[:1].nbytes + y[:1].nbytes + (0 if w is None else w[:1].nbytes)
    block_rows = max(1, GATHER_BYTES // max(1, row_bytes))
    ends = np.cumsum([rows.size for rows in steps])  # rows up to the end of each step
    first = 0
    while first < len(steps):
        # The steps that end within block_rows of this block's first row (at least one).
        start = ends[first] - steps[first].size
        last = max(first + 1, int(np.searchsorted(ends, start + block_rows, side="right")))
        picked = np.concatenate(steps[first:last])
        sizes = [steps[t].size for t in range(first, last)]
        blocks = [np.take(X, picked, axis=0), np.take(y, picked)]
        if w is not None:
            blocks.append(np.take(w, picked))
        tensors = [torch.from_numpy(block).to(device).split(sizes) for block in blocks]
        if w is None:
            tensors.append([None] * len(sizes))
        yield from zip(*tensors, strict=True)
        first = last


def _train_epoch(torch: Any, run: dict, state: Any, epoch: int) -> float:
    """One epoch of optimiser steps; the training loss summed over every rank's rows."""
    spec = run["spec"]
    rows = load_rows(state, "train", spec["data"])
    n_rows, batch = run["n_rows"]["train"], spec["batch_size"]
    steps = step_rows(run["ids"]["train"], epoch_permutation(spec["seed"], epoch, n_rows), batch)
    net, optimizer, dense = run["net"], run["optimizer"], run["dense"]
    buckets, ids = run["buckets"], run["ids"]["train"]
    masked = spec["arch"]["dropout"] > 0  # else naming each batch's rows is wasted work
    # d(sum / n)/d(sum) = 1/n, as float32 division rounds it (what backward of a division
    # by n gives): backward from the sum with this factor skips a division node per step.
    sizes = {batch, n_rows - (len(steps) - 1) * batch}  # a full global batch, the last one
    scale = {n: torch.tensor(np.float32(1) / np.float32(n)) for n in sizes}
    net.train()
    loss_sum = 0.0
    batches = epoch_batches(torch, rows, steps, run["device"])
    for t, (xb, yb, wb) in enumerate(batches):
        factor = scale[min(batch, n_rows - t * batch)]
        # Not optimizer.zero_grad(): the gradients must stay views of the flat buffer.
        buckets.zero()
        if dense is not None:  # the same kernels as autograd's, called directly
            buckets.loss(dense(xb, yb, wb, factor))
        else:
            with dropout_rows(net, spec["seed"], epoch, ids[steps[t]]) if masked else nullcontext():
                logits = net(xb)
            part = summed_loss(torch, logits, yb, wb)
            buckets.loss(part)
            part.backward(factor)
        loss_sum += buckets.wait()
        optimizer.step()
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


@abandon_on_error
def ddp_epoch(state: Any, fit_id: str, epoch: int) -> dict:
    """Train one epoch on this rank's rows; return the epoch's global loss and valid accuracy."""
    torch = require_torch()
    run = fetch_run(state, fit_id)
    loss_sum = _train_epoch(torch, run, state, epoch)  # already summed over the ranks
    totals = [loss_sum, 0.0, 0.0]
    if run["n_rows"].get("valid"):
        X, y, _ = load_rows(state, "valid", run["spec"]["data"])
        valid = evaluate_rows(torch, run["net"], X, y, run["device"])
        totals[1:] = all_reduce_sum(torch, list(valid), state.size)

    def keep_best() -> None:
        if state.rank == 0:
            run["best"] = numpy_state(run["net"])

    return epoch_summary(run, totals, keep_best)


def ddp_result(state: Any, fit_id: str, best: bool) -> dict | None:
    """Rank 0's weights (the best epoch's when ``best`` and one was kept); then tear down."""
    weights = _final_weights(fetch_run(state, fit_id), state.rank, best)
    # No reference to the run may outlive this line: teardown frees the run (its buckets'
    # hooks and in-flight work) before it destroys the process group (see teardown).
    teardown(state, fit_id)
    return weights


def _final_weights(run: dict, rank: int, best: bool) -> dict | None:
    if rank != 0:
        return None
    return run["best"] if best and run["best"] is not None else numpy_state(run["net"])
