"""Shard-level k-fold cross-validation.

Fold ``i`` of ``k`` is the set of train shards whose index is congruent to ``i`` mod ``k``:
no row is moved or copied, a fold is a *view* of the dataset -- a :class:`Dataset` whose
manifest relabels the fold's shards as ``valid`` and the other train shards as ``train``
(the shards keep their files). Because ingest's ``stratified`` strategy keeps the class
proportions in every shard, a stratified dataset gives stratified folds for free.

Preprocessing is part of the model (a :class:`~shardlearn.models.Pipeline`), so it is fitted
on each fold's training shards only: nothing from the held-out shards leaks into the fit.

The trainer never sees the scored shards at all. A fold view (or the holdout view) says what
is trained on and what is scored; :func:`trainer_view` is what the trainer is given: the
fold's training shards only, and -- for an estimator that stops early -- some of them
(:data:`INNER_FRACTION`, at least one, chosen by the search seed) relabelled as its ``valid``
split, so early stopping watches rows that are neither trained on nor scored. A fold with a
single training shard has nothing to carve; the trial then trains without early stopping.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from shardlearn.exceptions import DataError

__all__ = [
    "INNER_FRACTION",
    "fold_assignment",
    "fold_views",
    "holdout_view",
    "inner_shards",
    "refit_view",
    "shard_folds",
    "test_view",
    "trainer_view",
]

#: Share of a fold's training shards held back as the trainer's valid split (early stopping).
INNER_FRACTION = 0.2


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


def inner_shards(train: list[int], seed: int, fold: int) -> list[int]:
    """The training shards a fold's early stopping watches, chosen by ``(seed, fold)``.

    :data:`INNER_FRACTION` of ``train`` rounded, at least one, and always leaving one to train
    on: none when ``train`` has fewer than two shards.
    """
    if len(train) < 2:
        return []
    count = min(len(train) - 1, max(1, round(len(train) * INNER_FRACTION)))
    chosen = np.random.default_rng([seed, fold]).choice(train, count, replace=False)
    return sorted(int(i) for i in chosen)


def trainer_view(view: Any, seed: int, fold: int, early_stopping: bool) -> tuple[Any, list[int]]:
    """What a fold's trainer is given: its training shards, never the scored ``valid`` ones.

    Parameters
    ----------
    view : Dataset
        A fold view (:func:`fold_views`) or the holdout view (:func:`holdout_view`).
    seed, fold : int
        Choose the inner shards (:func:`inner_shards`), so a trial is reproducible.
    early_stopping : bool
        Whether the estimator stops early: then inner shards become the ``valid`` split.

    Returns
    -------
    (Dataset, list of int)
        The view to fit on, and the train shard indices relabelled ``valid`` (empty without
        early stopping, or when the fold has fewer than two non-empty training shards).
    """
    train = [s.index for s in view.shards("train")]
    candidates = [s.index for s in view.shards("train") if s.rows > 0]
    inner = inner_shards(candidates, seed, fold) if early_stopping else []
    keep = {("train", i): "valid" if i in inner else "train" for i in train}
    return _view(view, keep), inner


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


def test_view(dataset: Any) -> Any:
    """The test shards as the ``valid`` split, alone: the refit's test scores read it as a
    trial reads its fold's scored shards."""
    return _view(dataset, {("test", int(s.index)): "valid" for s in dataset.shards("test")})


def fold_assignment(dataset: Any, k: int) -> np.ndarray:
    """The fold of every train row, in ``dataset.read("train")`` order (for ``PredefinedSplit``)."""
    shard_folds(dataset, k)
    return np.concatenate(
        [np.full(s.rows, s.index % k, dtype=np.int64) for s in dataset.shards("train")]
    )
