"""torch plumbing shared by the neural-network trainers: import, networks, weights, data order.

Everything torch-related is imported lazily through :func:`require_torch`, so importing
``shardlearn.models`` never imports torch; a missing extra is an ImportError naming the
``pip install`` that fixes it.

A network is described by an *architecture*: a json-able dict (``kind`` "mlp" or "convnet"
plus its sizes) from which :func:`build_network` builds the same ``torch.nn.Sequential`` on
every process. Built under ``torch.manual_seed(seed)``, the initial weights are identical on
every rank, in the single-process reference and in every pipeline stage (each stage builds the
whole network, then keeps its own slice, whose parameter names stay the global ones).

Data order. The rows of a split have a *global index*: shards sorted by shard index, rows in
shard order. Epoch ``e`` visits the rows in the order of ``epoch_permutation(seed, e, n)``;
step ``t`` is the global batch ``perm[t * B:(t + 1) * B]``. The order depends neither on how
many workers there are nor on which worker owns which shard, which is what lets distributed
training equal single-process training step for step. (It does depend on the row order of the
data itself: label-sorted input gives other batches than shuffled input -- each batch is still
a uniformly random subset of all rows, never a run of one label.)

Dropout. A network's dropout layers are :func:`row_dropout` modules: the mask of a row depends
only on ``(seed, epoch, dropout layer, global row index)`` (:func:`dropout_mask`, a
counter-based hash), never on a random generator's state. Whichever worker, pipeline stage or
micro-batch a row passes through, it gets the same mask, so training with dropout also equals
single-process training with the same masks. The trainer names the rows of each batch with
:func:`dropout_rows`; in ``eval()`` mode the layers are the identity.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = [
    "TORCH_EXTRA_HINT",
    "block_slices",
    "build_network",
    "dropout_mask",
    "dropout_rows",
    "epoch_permutation",
    "global_layout",
    "load_weights",
    "require_torch",
    "row_dropout",
    "save_weights",
    "stage_ranges",
    "step_rows",
    "to_dense_float32",
]

TORCH_EXTRA_HINT = "pip install 'shardlearn[torch]'"

ACTIVATIONS = ("relu", "tanh", "logistic", "gelu")
# Seeds are mixed with a fixed tag so the epoch order is independent of torch's own seeding.
_ORDER_TAG = 0x5EED
# Another tag keeps the dropout masks independent of the epoch order drawn from the same seed.
_DROPOUT_TAG = 0xD50
# splitmix64 (Steele, Lea, Flood 2014): a counter hashed by these constants is a good uniform
# 64-bit stream, and any element can be computed alone -- what per-row masks need.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def require_torch() -> Any:
    """Import and return ``torch``; raise an ImportError naming the extra when it is missing."""
    try:
        import torch
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "Neural networks need PyTorch, which is not installed. "
            f"Install the torch extra: {TORCH_EXTRA_HINT} (CPU wheel: pip install torch==2.13.0)."
        ) from error
    return torch


def _activation(name: str) -> Any:
    nn = require_torch().nn
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "gelu": nn.GELU}[name]()


def _dense_blocks(sizes: Sequence[int], n_classes: int, activation: str, dropout: float) -> list:
    """``Linear -> activation [-> row_dropout]`` per hidden layer, then the output ``Linear``."""
    nn = require_torch().nn
    modules: list = []
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        modules += [nn.Linear(fan_in, fan_out), _activation(activation)]
        if dropout > 0:
            modules.append(row_dropout(dropout, layer))
    modules.append(nn.Linear(sizes[-1], n_classes))
    return modules


def _conv_modules(arch: dict) -> tuple[list, int]:
    """The convolutional front of a ConvNet and the width of its flattened output.

    A side of length 1 (a one-row image: flat rows read as ``1 x n``) is never convolved
    across or pooled: the kernel and the pooling window are 1 along it, so a ``1 x n`` image
    gets a ``1 x k`` kernel -- a 1-D convolution -- and weights that all see pixels.
    """
    nn = require_torch().nn
    channels, height, width = arch["image_shape"]
    modules: list = [nn.Unflatten(1, (channels, height, width))]
    kernel = arch["kernel_size"]
    for out_channels in arch["channels"]:
        kernel_hw = (kernel if height > 1 else 1, kernel if width > 1 else 1)
        padding = (kernel_hw[0] // 2, kernel_hw[1] // 2)
        modules += [
            nn.Conv2d(channels, out_channels, kernel_hw, padding=padding),
            _activation(arch["activation"]),
        ]
        channels = out_channels
        # An even kernel with padding k // 2 grows a side by one.
        height += 2 * padding[0] - kernel_hw[0] + 1
        width += 2 * padding[1] - kernel_hw[1] + 1
        sides = [side for side in (height, width) if side > 1]
        if arch["pool"] and sides and min(sides) >= 4:
            window = (2 if height > 1 else 1, 2 if width > 1 else 1)
            modules.append(nn.MaxPool2d(window))
            height, width = height // window[0], width // window[1]
    modules.append(nn.Flatten())
    return modules, channels * height * width


@functools.cache
def _module_classes() -> SimpleNamespace:
    """The library's own ``torch.nn.Module`` classes, defined once torch is imported."""
    torch = require_torch()
    # torch is imported here, not at module level, so the base class is a value (typed Any).
    module: Any = torch.nn.Module

    class Scale(module):
        """Multiplies its input by ``factor`` (e.g. 1/255 for raw pixels); no parameters."""

        def __init__(self, factor: float) -> None:
            super().__init__()
            self.factor = factor

        def forward(self, x: Any) -> Any:
            return x * self.factor

        def extra_repr(self) -> str:
            return f"factor={self.factor}"

    class RowDropout(module):
        """Dropout whose masks come from :func:`dropout_mask` for the rows named by
        :func:`dropout_rows`; no parameters, so weights load into ``nn.Dropout`` slots."""

        def __init__(self, p: float, layer: int) -> None:
            super().__init__()
            self.p, self.layer = p, layer
            self.batch: tuple[int, int, np.ndarray] | None = None

        def forward(self, x: Any) -> Any:
            if not self.training:
                return x
            if self.batch is None or self.batch[2].shape[0] != x.shape[0]:
                # A random mask here would silently break the worker-count invariance.
                raise RuntimeError(
                    "RowDropout in training mode needs the global indices of the batch's "
                    "rows: wrap the forward pass in "
                    "shardlearn.models.neural_network._torch.dropout_rows."
                )
            seed, epoch, rows = self.batch
            mask = dropout_mask(seed, epoch, self.layer, rows, math.prod(x.shape[1:]), self.p)
            return x * torch.from_numpy(mask).reshape(x.shape).to(x.device, x.dtype)

        def extra_repr(self) -> str:
            return f"p={self.p}, layer={self.layer}"

    return SimpleNamespace(Scale=Scale, RowDropout=RowDropout)


def _scale(factor: float) -> Any:
    """A parameter-free module multiplying its input by ``factor`` (e.g. 1/255 for pixels)."""
    return _module_classes().Scale(factor)


def row_dropout(p: float, layer: int) -> Any:
    """A dropout module with rate ``p`` whose masks are keyed by global row (module notes).

    ``layer`` numbers the dropout layers of one network, so that two layers draw different
    masks for the same row.
    """
    return _module_classes().RowDropout(p, layer)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic is intended)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def dropout_mask(
    seed: int, epoch: int, layer: int, rows: np.ndarray, width: int, p: float
) -> np.ndarray:
    """The dropout multipliers of ``rows`` (global indices) in dropout layer ``layer``.

    Parameters
    ----------
    seed, epoch : int
        The fit's seed and the epoch (0-based).
    layer : int
        Which dropout layer of the network.
    rows : ndarray of int
        Global row indices (see the module notes), in batch order.
    width : int
        Values per row entering the layer.
    p : float
        Dropout rate.

    Returns
    -------
    ndarray of float32, shape (len(rows), width)
        ``0`` where a unit is dropped, ``1 / (1 - p)`` where it is kept (torch's scaling).
        Entry ``(i, j)`` depends only on ``(seed, epoch, layer, rows[i], j)``.
    """
    key = np.random.SeedSequence([_DROPOUT_TAG, seed, epoch, layer]).generate_state(1, np.uint64)
    counter: np.ndarray = np.asarray(rows, dtype=np.uint64)[:, None] * np.uint64(width)
    counter = counter + np.arange(width, dtype=np.uint64)
    bits = _splitmix64(counter * _GOLDEN + key)
    uniform = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53  # 53 bits: [0, 1)
    return np.where(uniform >= p, np.float32(1.0 / (1.0 - p)), np.float32(0.0))


@contextlib.contextmanager
def dropout_rows(network: Any, seed: int, epoch: int, rows: np.ndarray) -> Iterator[None]:
    """Within the block, the dropout layers of ``network`` mask the rows ``rows`` of epoch
    ``epoch`` (global indices, one per row of the next forward pass, in batch order)."""
    layers = [m for m in network.modules() if isinstance(m, _module_classes().RowDropout)]
    for layer in layers:
        layer.batch = (int(seed), int(epoch), np.asarray(rows, dtype=np.int64))
    try:
        yield
    finally:
        for layer in layers:
            layer.batch = None


def build_network(arch: dict, seed: int) -> Any:
    """Build the ``torch.nn.Sequential`` described by ``arch`` with weights seeded by ``seed``.

    Parameters
    ----------
    arch : dict
        ``{"kind": "mlp", "n_features", "hidden", "activation", "dropout", "n_classes"}`` or
        ``{"kind": "convnet", "image_shape": [C, H, W], "channels", "kernel_size", "pool",
        "hidden", "activation", "dropout", "n_classes"}``; optional ``input_scale`` multiplies
        the input first (1/255 for raw pixels).
    seed : int
        Seed of the initial weights; the same seed gives the same network on every process.
    """
    torch = require_torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch["kind"] == "mlp":
            sizes = [arch["n_features"], *arch["hidden"]]
            modules = _dense_blocks(sizes, arch["n_classes"], arch["activation"], arch["dropout"])
        else:
            modules, width = _conv_modules(arch)
            modules += _dense_blocks(
                [width, *arch["hidden"]], arch["n_classes"], arch["activation"], arch["dropout"]
            )
        if arch.get("input_scale") is not None:
            modules.insert(0, _scale(float(arch["input_scale"])))
        return torch.nn.Sequential(*modules)


def block_slices(network: Any) -> list[tuple[int, int]]:
    """Module index ranges that a pipeline may cut between: one per layer with weights.

    Each range starts at a module with parameters and runs up to the next one, so that an
    activation, pooling or dropout stays with the layer it follows.
    """
    starts = [i for i, module in enumerate(network) if any(True for _ in module.parameters())]
    starts[0] = 0
    ends = [*starts[1:], len(network)]
    return list(zip(starts, ends, strict=True))


def stage_ranges(network: Any, stages: int) -> list[tuple[int, int]]:
    """Split ``network`` into ``stages`` contiguous module ranges, balanced by parameter count.

    Raises ``ValueError`` when the network has fewer weighted layers than ``stages``.
    """
    blocks = block_slices(network)
    if stages > len(blocks):
        raise ValueError(
            f"stages={stages} is more than the {len(blocks)} layers with weights in this "
            "network; use fewer stages or more hidden layers."
        )
    weights = [sum(p.numel() for m in network[a:b] for p in m.parameters()) for a, b in blocks]
    cuts = _balanced_cuts(weights, stages)
    bounds = [0, *cuts, len(blocks)]
    return [(blocks[bounds[i]][0], blocks[bounds[i + 1] - 1][1]) for i in range(stages)]


def _balanced_cuts(weights: list[int], stages: int) -> list[int]:
    """Cut points (block indices) giving each of ``stages`` parts about equal weight."""
    total = float(sum(weights))
    cuts: list[int] = []
    running = 0.0
    for i, weight in enumerate(weights[:-1]):
        running += weight
        remaining_blocks = len(weights) - (i + 1)
        remaining_cuts = stages - 1 - len(cuts)
        if remaining_cuts == 0:
            break
        # Cut when this part reached its share, or when every later block must start a stage.
        if running >= total * (len(cuts) + 1) / stages or remaining_blocks == remaining_cuts:
            cuts.append(i + 1)
    return cuts


def save_weights(state_dict: dict, metadata: dict[str, Any]) -> bytes:
    """Weights as safetensors bytes; ``metadata`` values are stored as JSON strings."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    return save(tensors, metadata={key: json.dumps(value) for key, value in metadata.items()})


def load_weights(blob: bytes) -> tuple[dict, dict[str, Any]]:
    """Inverse of :func:`save_weights`: ``(state_dict, metadata)``. Never unpickles."""
    require_torch()
    from safetensors.torch import load

    tensors = load(blob)
    metadata: dict[str, Any] = {}
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    for key, value in header.get("__metadata__", {}).items():
        metadata[key] = json.loads(value)
    return tensors, metadata


def epoch_permutation(seed: int, epoch: int, n_rows: int) -> np.ndarray:
    """The order (global row indices) in which epoch ``epoch`` visits ``n_rows`` rows."""
    return np.random.default_rng([_ORDER_TAG, seed, epoch]).permutation(n_rows)


def global_layout(rank_shards: list[list[tuple[int, int]]]) -> list[np.ndarray]:
    """Global row indices of every rank's block.

    Parameters
    ----------
    rank_shards : list of list of (shard index, rows)
        Per rank, its shards of one split in the order its block concatenates them.

    Returns
    -------
    list of ndarray
        Per rank, the global index of each row of its block.
    """
    by_index = sorted((index, rows) for shards in rank_shards for index, rows in shards)
    offsets: dict[int, int] = {}
    position = 0
    for index, rows in by_index:
        offsets[index] = position
        position += rows
    return [
        np.concatenate(
            [np.arange(offsets[i], offsets[i] + rows, dtype=np.int64) for i, rows in shards]
            or [np.empty(0, dtype=np.int64)]
        )
        for shards in rank_shards
    ]


def step_rows(global_ids: np.ndarray, perm: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """For one epoch: per global step, the positions in this rank's block of that step's rows.

    Rows come out in the order the permutation visits them, so a rank that owns every row
    reproduces the single-process batches exactly. Linear in the rows: the permutation is
    walked once through a table of this rank's positions (a stable argsort of the visit
    positions, which gives the same lists, took 29 ms an epoch at 270k rows, issue #23).
    """
    n_rows = perm.shape[0]
    if n_rows == 0:
        return []
    local = np.full(n_rows, -1, dtype=np.int64)  # global row -> position in this rank's block
    local[global_ids] = np.arange(global_ids.shape[0], dtype=np.int64)
    visited = local[perm]  # in visiting order: this rank's position of the row, or -1
    mine = visited >= 0
    order = visited[mine]
    counts = np.add.reduceat(mine, np.arange(0, n_rows, batch_size), dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    return [order[bounds[t] : bounds[t + 1]] for t in range(counts.shape[0])]


def to_dense_float32(X: Any) -> np.ndarray:
    """A dense C-contiguous float32 copy (CSR blocks are densified for torch)."""
    if hasattr(X, "toarray"):
        X = X.toarray()
    return np.ascontiguousarray(X, dtype=np.float32)
