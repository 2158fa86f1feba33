"""Worker-side pieces shared by data-parallel and pipeline training: data, rendezvous, optimiser.

These functions run inside a worker (``fn(state, ...)`` through ``WorkerGroup.run``). They are
impure on purpose: ``torch.distributed`` keeps one global process group per process, which is
created by :func:`setup_rank`, kept alive between calls in ``state.cache`` and destroyed by
:func:`teardown`.

Joining a group never hangs on a rank that failed. The driver hosts the rendezvous store
(a ``TCPStore`` it bound to a port the OS chose, so no port is chosen first and bound later);
every attempt to form a group uses its own key prefix in it. :func:`setup_rank` connects to
the store, does all of the rank's local work that can fail (leaving a leftover group, building
the model, restoring a checkpoint) and only then announces itself ready; a rank whose local work
raises writes its error under ``failed`` instead. The ranks wait for every ``ready`` key by
polling, and stop at once with that error when ``failed`` appears -- so no rank enters
``init_process_group`` (which blocks until every rank joined, up to the rendezvous timeout)
unless every rank got that far. In an epoch, a rank that raises leaves the process group at once
(:func:`abandon_on_error`), which makes the others' pending collectives fail with "connection
closed" instead of waiting for the timeout; it keeps a ``failed`` mark so the driver knows the
worker was not replaced (a real error, not a lost worker).

A *training spec* (a plain dict built by the driver) says what to train: ``fit_id``, ``arch``,
``seed``, ``batch_size``, optimiser settings, ``device``, ``data`` (where rows come from) and
``layouts`` (per split, per rank, the (shard index, rows) list of every block), which fixes the
global row index of every row (see :mod:`shardlearn.models.neural_network._torch`).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import time
import traceback
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from shardlearn.exceptions import DataError, EngineError
from shardlearn.models.neural_network._optim import Optimizer
from shardlearn.models.neural_network._torch import require_torch, to_dense_float32

__all__ = [
    "abandon_on_error",
    "load_rows",
    "make_optimizer",
    "probe",
    "setup_rank",
    "teardown",
]

CACHE_KEY = "shardlearn.neural"
# Seconds between two looks at the store while a rank waits for the others to be ready.
_POLL_SECONDS = 0.01


def _split_shards(state: Any, split: str) -> list:
    """This worker's shards of ``split`` in block order (by shard index, like load_block)."""
    return sorted((s for s in state.shards if s.split == split), key=lambda s: s.index)


def load_rows(state: Any, split: str, data: dict) -> tuple[np.ndarray, np.ndarray, Any]:
    """This worker's rows of ``split``: ``(X float32, y int64, sample_weight or None)``.

    The rows are the feature block of :func:`shardlearn.models._training.fitting.training_block`
    (preprocessed dataset rows or array parts), densified to float32 for torch.
    """
    key = (CACHE_KEY, "rows", split, repr(sorted(data.items())))
    cached = state.cache.get(key)
    if cached is not None:
        return cached
    rows: tuple[np.ndarray, np.ndarray, np.ndarray | None]
    if not _split_shards(state, split):
        rows = (np.empty((0, data["n_features"]), np.float32), np.empty(0, np.int64), None)
    else:
        from shardlearn.models._training.fitting import training_block

        block = training_block(state, split)
        weight = block.sample_weight
        rows = (
            to_dense_float32(block.X),
            np.asarray(block.y, dtype=np.int64),
            None if weight is None else np.asarray(weight, dtype=np.float32),
        )
    state.cache[key] = rows
    return rows


def probe(state: Any, data: dict, splits: list[str]) -> dict:
    """Load this worker's rows and describe them: per split the (shard index, rows) layout.

    Also says whether a GPU is visible, so the driver can choose nccl or gloo.
    """
    torch = require_torch()
    layouts: dict[str, list[tuple[int, int]]] = {}
    n_features = None
    for split in splits:
        X, y, _ = load_rows(state, split, data)
        layout = [(shard.index, shard.rows) for shard in _split_shards(state, split)]
        expected = sum(rows for _, rows in layout)
        if X.shape[0] != expected or y.shape[0] != expected:
            raise DataError(
                f"Worker {state.rank} loaded {X.shape[0]} rows of split {split!r} but its "
                f"shards hold {expected}; the dataset's manifest does not match its shards."
            )
        layouts[split] = layout
        if X.shape[0]:
            n_features = int(X.shape[1])
    return {"layouts": layouts, "cuda": bool(torch.cuda.is_available()), "n_features": n_features}


def setup_rank(state: Any, rendezvous: dict | None, build: Callable[[], None]) -> None:
    """Run this rank's local setup ``build()``, then join the process group of ``rendezvous``.

    ``rendezvous`` holds the driver's store (``address``, ``port``), this attempt's ``prefix``,
    the ``backend`` and the ``timeout``; ``None`` (a single worker) joins nothing. See the module
    docstring for why ``build`` runs before the rank announces itself ready.
    """
    torch = require_torch()
    if rendezvous is None:
        _one_thread(torch, state)
        build()
        return
    dist = torch.distributed
    timeout = datetime.timedelta(seconds=rendezvous["timeout"])
    client = dist.TCPStore(rendezvous["address"], rendezvous["port"], timeout=timeout)
    store = dist.PrefixStore(rendezvous["prefix"], client)
    try:
        _one_thread(torch, state)
        if dist.is_initialized():
            # A group left over from an interrupted fit (torch allows one per process). Free
            # what still refers to it first, for the reason teardown() gives.
            gc.collect()
            dist.destroy_process_group()
        build()
    except BaseException as error:
        _record_failure(store, state.rank, error)
        raise
    state.cache[(CACHE_KEY, "store")] = store
    _wait_for_every_rank(store, state.rank, state.size, rendezvous["timeout"])
    dist.init_process_group(
        backend=rendezvous["backend"],
        store=store,
        rank=state.rank,
        world_size=state.size,
        timeout=timeout,
    )


def _one_thread(torch: Any, state: Any) -> None:
    """One intra-op thread per worker: workers share the machine's cores, and torch's thread
    pool on a busy core is slower than one thread by an order of magnitude for small layers.
    The in-process worker (size 1) restores the caller's setting in teardown()."""
    state.cache.setdefault((CACHE_KEY, "threads"), torch.get_num_threads())
    torch.set_num_threads(1)


def _record_failure(store: Any, rank: int, error: BaseException) -> None:
    """Record ``error`` in the store as what stopped the group, unless a rank's came first.

    Call it from the ``except`` block that caught ``error`` (it keeps the traceback). The
    driver raises the recorded error rather than the ones it caused on the other ranks. A
    store that is gone (the driver already gave up) records nothing: ``error`` is still raised,
    not the store's.
    """
    with contextlib.suppress(Exception):
        if store.add("failures", 1) == 1:
            store.set("failed/traceback", traceback.format_exc())
            store.set("failed", f"worker {rank}: {type(error).__name__}: {error}")


def _wait_for_every_rank(store: Any, rank: int, size: int, timeout: float) -> None:
    """Announce ``rank`` ready; return when every rank is, raise when one failed or when
    ``timeout`` seconds pass."""
    store.set(f"ready/{rank}", "1")
    keys = [f"ready/{other}" for other in range(size)]
    deadline = time.monotonic() + timeout
    while not store.check(keys):
        if store.check(["failed"]):
            failure = store.get("failed").decode(errors="replace")
            raise EngineError(
                f"Worker {rank} stopped joining the process group: {failure} (while setting "
                "up). That error is the one to fix."
            )
        if time.monotonic() > deadline:
            missing = [other for other, key in enumerate(keys) if not store.check([key])]
            raise EngineError(
                f"Worker(s) {missing} did not join the process group within {timeout:g} s. "
                "A worker is stuck or the machine is overloaded; try again with fewer workers."
            )
        time.sleep(_POLL_SECONDS)


def teardown(state: Any, fit_id: str) -> None:
    """Forget the fit's model and leave the process group (run on every worker).

    The caller must hold no reference to the fit's run. What it holds of the process group
    (gradient buckets' hooks and collective work, a DDP-style reducer) freed after
    ``destroy_process_group`` could hold the last reference and destroy the group itself with
    the GIL held, joining gloo threads that may need the
    GIL to free a finished collective's tensors -- a deadlock (seen under load). So the run
    is freed first, reference cycles included, while the group is still registered.
    """
    torch = require_torch()
    survivors = _weak_refs(state.cache.pop((CACHE_KEY, fit_id), None))
    state.cache.pop((CACHE_KEY, fit_id, "failed"), None)
    threads = state.cache.pop((CACHE_KEY, "threads"), None)
    if state.size == 1 and threads is not None:
        torch.set_num_threads(threads)
    if state.size > 1 and torch.distributed.is_initialized():
        if any(ref() is not None for ref in survivors):
            gc.collect()
        torch.distributed.destroy_process_group()
    state.cache.pop((CACHE_KEY, "store"), None)


def _weak_refs(run: dict | None) -> list[weakref.ReferenceType]:
    """Weak references to what ``run`` holds (its network, optimiser, gradient buckets).

    Reference counting frees them as the run is dropped unless a reference cycle holds them;
    only then does :func:`teardown` pay a full ``gc.collect()``, which scans every object
    torch's import created (0.3-0.9 s per fit on a shared 2-core machine, issue #23).
    """
    refs = []
    for value in (run or {}).values():
        with contextlib.suppress(TypeError):  # dicts, numbers: not weakly referenceable
            refs.append(weakref.ref(value))
    return refs


def make_optimizer(parameters: Any, spec: dict, flat: tuple | None = None) -> Optimizer:
    """The optimiser named by ``spec["optimizer"]`` over ``parameters`` (torch.optim's Adam or
    SGD arithmetic without its torch._dynamo import; ``flat`` buffers as
    :class:`~shardlearn.models.neural_network._optim.Optimizer` takes them)."""
    settings = {"lr": spec["learning_rate"], "weight_decay": spec["weight_decay"]}
    if spec["optimizer"] == "sgd":
        settings["momentum"] = spec["momentum"]
    return Optimizer(parameters, spec["optimizer"], flat=flat, **settings)


def numpy_state(module: Any) -> dict[str, np.ndarray]:
    """A module's parameters and buffers as numpy arrays (for transport to the driver)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in module.state_dict().items()}


def _to_numpy(value: Any) -> Any:
    """Tensors inside an optimiser state dict -> numpy arrays (for transport)."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, dict):
        return {key: _to_numpy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_numpy(item) for item in value]
    return value


def _to_tensor(torch: Any, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {key: _to_tensor(torch, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_tensor(torch, item) for item in value]
    return value


def checkpoint(state: Any, fit_id: str) -> dict | None:
    """This rank's part of the driver-side checkpoint (None when it holds nothing unique).

    Data parallel: rank 0's weights and optimiser state (every rank holds the same). Pipeline:
    each stage's own. Also the early-stopping state, so a resumed fit keeps its best epoch.
    """
    run = state.cache.get((CACHE_KEY, fit_id))
    if run is None or run["module"] is None or (run["replicated"] and state.rank != 0):
        return None
    return {
        "weights": numpy_state(run["module"]),
        "optimizer": _to_numpy(run["optimizer"].state_dict()),
        "best": run["best"],
        "best_loss": run["best_loss"],
    }


def restore(state: Any, run: dict, parts: list | None) -> None:
    """Load this rank's part of a checkpoint (see :func:`checkpoint`) into a fresh run."""
    if not parts or run["module"] is None:
        return
    part = parts[0] if run["replicated"] else parts[state.rank]
    torch = require_torch()
    weights = {name: torch.from_numpy(array.copy()) for name, array in part["weights"].items()}
    run["module"].load_state_dict(weights)
    run["optimizer"].load_state_dict(_to_tensor(torch, part["optimizer"]))
    run["best"], run["best_loss"] = part["best"], part["best_loss"]


def has_run(state: Any, fit_id: str) -> bool:
    """Whether this worker still holds the fit's state, or the mark of an epoch that failed
    on it (False after it was replaced)."""
    return (CACHE_KEY, fit_id) in state.cache or (CACHE_KEY, fit_id, "failed") in state.cache


def abandon_on_error(epoch_fn: Callable[..., dict]) -> Callable[..., dict]:
    """``epoch_fn(state, fit_id, epoch)``, leaving the process group when it raises.

    A rank that raises in an epoch while the others wait in a collective for it would keep
    them waiting until the collective timeout; leaving the group makes their collectives fail
    at once. Its error is recorded in the store first (the driver reports it, not the
    others' "connection closed"). The run is freed before the group (see :func:`teardown`):
    the traceback's frames, which refer to it, are cleared (their lines stay in the report).
    """

    @functools.wraps(epoch_fn)  # its name too: workers receive it pickled by reference
    def guarded(state: Any, fit_id: str, epoch: int) -> dict:
        try:
            return epoch_fn(state, fit_id, epoch)
        except BaseException as error:
            if (CACHE_KEY, fit_id) in state.cache:
                store = state.cache.get((CACHE_KEY, "store"))
                if store is not None:  # before leaving: the others fail because it leaves
                    _record_failure(store, state.rank, error)
                traceback.clear_frames(error.__traceback__)
                teardown(state, fit_id)
                state.cache[(CACHE_KEY, fit_id, "failed")] = True
            raise

    return guarded
