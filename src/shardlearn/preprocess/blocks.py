"""Feature blocks: a worker's shards of one split, transformed and kept in worker memory.

:func:`load_block` reads every shard of ``split`` that the worker owns, transforms it with the
fitted preprocessor in ``state.context["preprocessor"]``, maps labels to class indices with
``state.context["classes"]`` and caches the block in ``state.cache`` -- keyed by split, the
preprocessor's fingerprint, the classes and the shard list, so a new preprocessor or a
reassigned shard set never sees a stale block, and a replacement worker (empty cache) rebuilds it.
Inside a warm scope (a search, :mod:`shardlearn._warm`) a block is also kept across fits in
the process, keyed by the same things plus the shard files' digests.

Per shard: :func:`iter_shard_blocks` yields one block per shard, for fits whose every worker
reads all shards (a forest), kept per shard in a warm scope so the scope's next such fit does
not transform them again.

Out-of-core: :func:`iter_blocks` yields the cached block when it fits in the memory budget and
streams one block per shard (never cached) when it does not. Iterating either way visits the
same rows in the same order with the same values. The budget, in bytes, is the ``budget``
argument, else ``state.context["block_budget"]``, else ``$SHARDLEARN_BLOCK_BUDGET``, else a
quarter of the machine's memory divided by the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from shardlearn import _warm
from shardlearn.exceptions import DataError, EngineError

__all__ = [
    "BUDGET_ENV",
    "FeatureBlock",
    "block_budget",
    "iter_blocks",
    "iter_shard_blocks",
    "load_block",
]

BUDGET_ENV = "SHARDLEARN_BLOCK_BUDGET"
#: Share of physical memory the feature blocks of all workers may use by default.
DEFAULT_MEMORY_SHARE = 0.25


@dataclass
class FeatureBlock:
    """Features, labels and weights of some rows.

    Attributes
    ----------
    X : ndarray of float32, shape (rows, features), or CSR matrix of float32
    y : ndarray of int64 or None
        Class indices (positions in the dataset's ``classes``); None without labels.
    sample_weight : ndarray of float64 or None
    feature_names : list of str
    """

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray | None
    sample_weight: np.ndarray | None
    feature_names: list[str]

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        x = self.X
        size = (
            x.nbytes
            if isinstance(x, np.ndarray)
            else x.data.nbytes + x.indices.nbytes + x.indptr.nbytes
        )
        for extra in (self.y, self.sample_weight):
            size += 0 if extra is None else extra.nbytes
        return int(size)

    @classmethod
    def concatenate(cls, blocks: list[FeatureBlock], feature_names: list[str]) -> FeatureBlock:
        """Rows of ``blocks`` stacked in order (an empty list gives a 0-row block)."""
        if not blocks:
            return cls(np.zeros((0, len(feature_names)), np.float32), None, None, feature_names)
        if len(blocks) == 1:
            return blocks[0]
        xs = [b.X for b in blocks]
        x = sp.vstack(xs, format="csr") if sp.issparse(xs[0]) else np.concatenate(xs)
        return cls(
            x,
            _stack([b.y for b in blocks]),
            _stack([b.sample_weight for b in blocks]),
            feature_names,
        )


def _stack(parts: list[np.ndarray | None]) -> np.ndarray | None:
    arrays = [p for p in parts if p is not None]
    return np.concatenate(arrays) if len(arrays) == len(parts) else None


def _context(state: Any) -> tuple[Any, list | None]:
    pre = state.context.get("preprocessor")
    if pre is None:
        raise EngineError(
            "No fitted preprocessor on this worker: call group.put('preprocessor', pre) "
            "before load_block/iter_blocks."
        )
    return pre, state.context.get("classes")


def _class_indices(labels: pa.ChunkedArray, classes: list, label: str) -> np.ndarray:
    if labels.null_count:
        raise DataError(f"Label column {label!r} has {labels.null_count} missing values.")
    value_set = pa.array(classes)
    if labels.type != value_set.type:
        try:
            labels = pc.cast(labels, value_set.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(
                f"Label column {label!r} holds {labels.type} values; classes are {classes!r}."
            ) from None
    index = pc.index_in(labels, value_set=value_set)
    if index.null_count:
        unknown = pc.filter(labels, pc.is_null(index))[0].as_py()
        raise DataError(
            f"Label {unknown!r} in column {label!r} is not one of the classes {classes!r}."
        )
    return index.to_numpy(zero_copy_only=False).astype(np.int64)


def _read_columns(state: Any, pre: Any) -> tuple[list[str], str | None, str | None]:
    label = state.context.get("label", pre.label_)
    weight = state.context.get("weight_column")
    return list(pre.input_columns), label, weight


def _transform_shards(shards: list, pre: Any, classes: list | None, state: Any) -> FeatureBlock:
    """One block of ``shards`` in order, transformed batch by batch.

    A dense block is preallocated from the row counts in the manifest and filled in place, so
    peak memory is the block plus one batch, never two copies of the block.
    """
    columns, label, weight = _read_columns(state, pre)
    rows = sum(s.rows for s in shards)
    sparse = getattr(pre, "sparse_", False)
    dense: np.ndarray | None = None  # allocated at the first batch, in its dtype
    sparse_parts, labels, weights, start = [], [], [], 0
    labelled = classes is not None and bool(label)
    for shard in shards:
        for batch in _shard_batches(shard, columns, label, weight):
            table = pa.Table.from_batches([batch])
            x = pre.transform(table)
            if sparse or sp.issparse(x):
                sparse_parts.append(sp.csr_matrix(x))
            else:
                if dense is None:
                    dense = np.empty((rows, x.shape[1]), dtype=x.dtype)
                dense[start : start + table.num_rows] = x
            start += table.num_rows
            if labelled and label and classes is not None:
                if label not in table.column_names or _no_labels(table, label):
                    labelled = False  # unlabelled rows (new data): the block carries no labels
                else:
                    labels.append(_class_indices(table.column(label), classes, label))
            if weight:
                weights.append(_weights(table, weight, shard))
    if start != rows:
        raise DataError(f"Shards hold {start} rows but the manifest says {rows}.")
    if sparse_parts:
        x = _stack_sparse(sparse_parts, pre.n_features_out_)
    elif dense is not None:
        x = dense
    else:  # no rows at all
        x = np.zeros((0, pre.n_features_out_), dtype=np.float32)
        x = sp.csr_matrix(x) if sparse else x
    y = (
        np.concatenate(labels)
        if labels
        else (np.empty(0, np.int64) if not rows and classes else None)
    )
    sample_weight = np.concatenate(weights) if weights else None
    if y is not None and len(y) != rows:
        y = None  # some shards are unlabelled: the block has no labels
    return FeatureBlock(x, y, sample_weight, pre.feature_names_out_)


def _no_labels(table: pa.Table, label: str) -> bool:
    """A label column that is entirely null: the ``unlabeled`` split of a dataset."""
    column = table.column(label)
    return table.num_rows > 0 and column.null_count == table.num_rows


def _shard_batches(shard: Any, columns: list[str], label: str | None, weight: str | None):
    wanted = columns + [c for c in (label, weight) if c and c not in columns]
    try:
        yield from shard.iter_batches(columns=wanted)
    except (KeyError, pa.ArrowInvalid):
        # An unlabelled shard (e.g. new data to score) has no label column: read the features.
        yield from shard.iter_batches(columns=columns + ([weight] if weight else []))


def _weights(table: pa.Table, weight: str, shard: Any) -> np.ndarray:
    if weight not in table.column_names:
        raise DataError(f"Sample-weight column {weight!r} is not in shard {shard.path}.")
    return pc.cast(table.column(weight), pa.float64()).to_numpy(zero_copy_only=False)


def _stack_sparse(parts: list[sp.csr_matrix], width: int) -> sp.csr_matrix:
    if not parts:
        return sp.csr_matrix((0, width), dtype=np.float32)
    return sp.vstack(parts, format="csr", dtype=np.float32)


def _own_shards(state: Any, split: str) -> list:
    return sorted((s for s in state.shards if s.split == split), key=lambda s: s.index)


def _cache_key(state: Any, split: str, pre: Any, classes: list | None) -> tuple:
    shards = tuple(s.path for s in _own_shards(state, split))
    extra = (state.context.get("label"), state.context.get("weight_column"))
    return ("feature_block", split, pre.fingerprint, repr(classes), shards, extra)


def load_block(state: Any, split: str) -> FeatureBlock:
    """The feature block of all of this worker's shards of ``split`` (cached in the worker).

    Parameters
    ----------
    state : WorkerState
        Needs ``state.context["preprocessor"]`` (fitted) and, for labels,
        ``state.context["classes"]``; optional ``"label"`` and ``"weight_column"``.
    split : str
        "train", "valid" or "test".
    """
    pre, classes = _context(state)
    key = _cache_key(state, split, pre, classes)
    block = state.cache.get(key)
    if block is None:
        for old in [k for k in state.cache if isinstance(k, tuple) and k[:2] == key[:2]]:
            del state.cache[old]  # a block for an older preprocessor or shard set
        shards = _own_shards(state, split)
        block = _warm.fetch(
            "block_builds",
            (*key, tuple((s.uri, s.sha256) for s in shards)),
            lambda: _transform_shards(shards, pre, classes, state),
            lambda built: built.nbytes,
        )
        state.cache[key] = block
    return block


def iter_shard_blocks(state: Any, split: str) -> Iterator[FeatureBlock]:
    """One block per shard of ``split`` in ``state.shards``, in index order, never in
    ``state.cache``; inside a warm scope each is kept in the process's scope.

    For a fit whose every worker reads all shards (a forest, SGD's dealt rows): its next fit
    in the scope (a search trial, a script's next fit in ``with engine(...)``) on the same
    shards with the same fitted preprocessor takes the blocks instead of transforming the
    shards again, so each shard is transformed once per process while the scope's budget
    holds them (:func:`shardlearn._warm.fetch`; the rest are transformed on every pass, as
    :func:`iter_blocks` streams them). The blocks are shared: callers must not modify them.
    """
    pre, classes = _context(state)
    shards = _own_shards(state, split)
    if not sum(s.rows for s in shards):  # no rows: one empty block, as iter_blocks gives
        yield _transform_shards(shards, pre, classes, state)
        return
    extra = (state.context.get("label"), state.context.get("weight_column"))
    for shard in shards:
        key = ("shard_block", split, pre.fingerprint, repr(classes), extra, shard.uri, shard.sha256)
        yield _warm.fetch("block_builds", key, _transformer(shard, pre, classes, state), _nbytes)


def _transformer(
    shard: Any, pre: Any, classes: list | None, state: Any
) -> Callable[[], FeatureBlock]:
    """The build of ``shard``'s block, for :func:`shardlearn._warm.fetch`."""
    return lambda: _transform_shards([shard], pre, classes, state)


def _nbytes(block: FeatureBlock) -> int:
    return block.nbytes


def block_budget(state: Any, budget: int | None = None) -> int:
    """The memory budget in bytes for this worker's feature blocks (see module notes)."""
    if budget is not None:
        return int(budget)
    if state.context.get("block_budget") is not None:
        return int(state.context["block_budget"])
    return _warm.memory_budget(BUDGET_ENV, DEFAULT_MEMORY_SHARE, state.size)


def _estimated_nbytes(pre: Any, rows: int) -> int:
    if hasattr(pre, "estimated_nbytes"):
        return int(pre.estimated_nbytes(rows))
    return rows * pre.n_features_out_ * 8  # a duck-typed preprocessor: assume float64 dense


def iter_blocks(state: Any, split: str, budget: int | None = None) -> Iterator[FeatureBlock]:
    """This worker's rows of ``split`` as blocks: one cached block, or shard by shard.

    When the estimated block (:meth:`Preprocessor.estimated_nbytes`) exceeds the budget the
    shards are read and transformed one at a time on every pass and nothing is cached.
    """
    pre, classes = _context(state)
    key = _cache_key(state, split, pre, classes)
    if key in state.cache:
        yield state.cache[key]
        return
    shards = _own_shards(state, split)
    rows = sum(s.rows for s in shards)
    if _estimated_nbytes(pre, rows) <= block_budget(state, budget):
        yield load_block(state, split)
        return
    for shard in shards:
        yield _transform_shards([shard], pre, classes, state)
