"""Shard-level k-fold cross-validation.

Fold ``i`` of ``k`` is the set of train shards whose index is congruent to ``i`` mod ``k``:
no row is moved or copied, a fold is a *view* of the dataset -- a :class:`Dataset` whose
manifest relabels the fold's shards as ``valid`` and the other train shards as ``train``
(the shards keep their files). Because ingest's ``stratified`` strategy keeps the class
proportions in every shard, a stratified dataset gives stratified folds for free.

Preprocessing is part of the model (a :class:`~shardlearn.models.Pipeline`), so it is fitted
on each fold's training shards only: nothing from the held-out shards leaks into the fit.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from shardlearn.exceptions import DataError

__all__ = ["fold_assignment", "fold_views", "holdout_view", "refit_view", "shard_folds"]


def _view(dataset: Any, keep: dict[tuple[str, int], str]) -> Any:
    """A Dataset over the same shard files; ``keep`` maps (split, index) to the new split."""
    from shardlearn.data import Dataset

    manifest = copy.deepcopy(dataset.manifest)
    shards = []
    for entry in manifest["shards"]:
        new = keep.get((entry["split"], int(entry["index"])))
        if new is not None:
            shards.append({**entry, "split": new})
    manifest["shards"] = shards
    return Dataset(dataset.uri, manifest)


def shard_folds(dataset: Any, k: int) -> list[list[int]]:
    """The train shard indices of each of the ``k`` folds (fold i: index ≡ i mod k)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise DataError(f"cv must be an integer >= 2 (or None for the valid split). Got {k!r}.")
    indices = [shard.index for shard in dataset.shards("train") if shard.rows > 0]
    if len(indices) < k:
        raise DataError(
            f"{k}-fold cross-validation needs at least {k} non-empty train shards; the dataset "
            f"at {dataset.uri} has {len(indices)}. Re-ingest with partitions >= {k}, or lower cv."
        )
    return [[i for i in indices if i % k == fold] for fold in range(k)]


def fold_views(dataset: Any, k: int, budget_fraction: float = 1.0) -> list[Any]:
    """One dataset view per fold: held-out shards as ``valid``, the rest as ``train``.

    ``budget_fraction`` < 1 keeps only that fraction of each fold's training shards (the
    "rows" budget of successive halving), at least one.
    """
    views = []
    for held_out in shard_folds(dataset, k):
        train = [s.index for s in dataset.shards("train") if s.index not in held_out]
        train = train[: max(1, math.ceil(len(train) * budget_fraction))]
        keep = {("train", i): "train" for i in train}
        keep.update({("train", i): "valid" for i in held_out})
        views.append(_view(dataset, keep))
    return views


def holdout_view(dataset: Any, budget_fraction: float = 1.0) -> Any:
    """Train on the train split (or a fraction of its shards), score on the valid split."""
    if "valid" not in dataset.splits:
        raise DataError(
            f"The dataset at {dataset.uri} has no valid split; use cross-validation (cv=5) "
            "or re-ingest with a valid split."
        )
    train = [s.index for s in dataset.shards("train")]
    train = train[: max(1, math.ceil(len(train) * budget_fraction))]
    keep = {("train", i): "train" for i in train}
    keep.update({("valid", s.index): "valid" for s in dataset.shards("valid")})
    return _view(dataset, keep)


def refit_view(dataset: Any) -> Any:
    """Train = train + valid shards, test kept: the view the best configuration is refitted on."""
    offset = 1 + max((s.index for s in dataset.shards(None)), default=0)
    manifest = copy.deepcopy(dataset.manifest)
    for entry in manifest["shards"]:
        if entry["split"] == "valid":
            # Shard indices must stay unique within the new train split.
            entry["split"], entry["index"] = "train", int(entry["index"]) + offset
    from shardlearn.data import Dataset

    return Dataset(dataset.uri, manifest)


def fold_assignment(dataset: Any, k: int) -> np.ndarray:
    """The fold of every train row, in ``dataset.read("train")`` order (for ``PredefinedSplit``)."""
    shard_folds(dataset, k)
    return np.concatenate(
        [np.full(s.rows, s.index % k, dtype=np.int64) for s in dataset.shards("train")]
    )
