"""Distributed k-means: k-means|| initialisation and Lloyd iterations over a WorkerGroup.

Data flow of one fit (every arrow into the driver is a ``WorkerGroup.reduce``):

1. A first pass returns a :class:`_Summary` per worker, merged pairwise (Chan et al.'s
   update): the row count, the total sample weight, the weighted per-feature mean and the
   weighted sum of squared deviations from it, and the first centre's candidate. The driver
   sends the mean to the workers, which subtract it from every block before computing a
   distance (as scikit-learn does: at an offset of 1e8, ``|x|^2 - 2 x.c + |c|^2`` of the raw
   rows cancels catastrophically and labels rows to the wrong centre). The tolerance is
   scikit-learn's ``tol * mean(var(X))``, with the variance weighted by ``sample_weight``.
2. k-means|| (Bahmani et al., 2012): the first candidate is the row of positive weight with
   the smallest key; then ``log(cost)`` rounds (capped at :data:`_MAX_ROUNDS`), in each of
   which every worker keeps each of its rows of positive weight with probability
   ``min(1, rate * d^2(x) / cost)`` (``rate = oversampling_factor * n_clusters`` at first,
   raised when a round draws too few distinct rows; ``cost`` the weighted sum of ``d^2``)
   and returns the kept rows. The candidates are then weighted by the sample weight of the
   rows closest to them and reduced to ``n_clusters`` centres on the driver with weighted
   k-means++ (scikit-learn's greedy variant) followed by weighted Lloyd steps.
3. Lloyd: each worker returns per-cluster weighted sums and weights (and its inertia) for the
   current centres; the driver divides, moves the centres, and stops when the squared centre
   shift is at most the tolerance, or after ``max_iter`` iterations (ConvergenceWarning). A
   cluster left without weight is moved onto the row of positive weight farthest from its
   centre (scikit-learn's rule; each worker also returns its ``k`` farthest rows). A last
   pass computes ``inertia_`` for the final centres, which are then moved back by the mean.

A row of weight 0 has no influence: it is never drawn, adds nothing to a sum, a cost or the
variance. Integer weights give the same centres as repeated rows (up to floating-point
summation order), k-means|| included: a draw depends on a row's values and not on its weight,
so identical rows share one draw, and a row's weight counts where its copies would (the cost,
a candidate's mass, the k-means++ potentials, the Lloyd sums).

Why the random draws are *row keys* and not a per-worker generator: the uniform number a row
is compared with is a hash of ``(random_state, round, row bytes)`` of the raw (uncentred) row,
so the same rows are kept whatever the number of workers or the shard layout (1, 2 or 4
workers give the same centres, up to floating-point summation order).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import scipy.sparse as sp
import sklearn.base

from shardlearn._validation import Interval, Options, Type
from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.engine import VERBOSE_CONSTRAINTS, StepProgress, show_progress
from shardlearn.exceptions import ArtifactError, ConvergenceWarning, DataError
from shardlearn.models._registry import register_model
from shardlearn.models._training.fitting import (
    TrainingContext,
    is_dataset,
    iter_training_blocks,
    prepare_training,
)

__all__ = [
    "KMeans",
    "LloydIteration",
    "UnsupervisedMixin",
    "dense_blocks",
    "prepare_unsupervised",
]

_CENTRES_KEY = "shardlearn.kmeans.centres"
# The weighted mean of the training rows; workers subtract it before any distance.
_MEAN_KEY = "shardlearn.kmeans.mean"
# k-means|| needs O(log cost) rounds; 5 is what Bahmani et al. found sufficient in practice.
_MAX_ROUNDS = 5
# Weighted Lloyd steps on the k-means|| candidates after k-means++ (cheap, on the driver).
_CANDIDATE_LLOYD_STEPS = 30
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class LloydIteration:
    """What a KMeans progress callback receives after every Lloyd iteration.

    ``inertia`` is that of the centres the iteration started from; ``center_shift`` is the
    squared distance the centres then moved (compared with the scaled ``tol``).
    """

    run: int
    iteration: int
    inertia: float
    center_shift: float


# ------------------------------------------------------------------ shared unsupervised glue
def prepare_unsupervised(
    estimator: Any, X: Any, *, engine: Any = None, sample_weight: Any = None
) -> TrainingContext:
    """Workers holding ``X`` (a Dataset, dense array or CSR matrix); labels are not used.

    Array input gets a placeholder label (every row in class 0 of a fixed two-class set);
    a Dataset's label column is ignored. ``sample_weight`` is an array of row weights for
    array input, or the name of a weight column for a Dataset.
    """
    if is_dataset(X):
        return prepare_training(estimator, X, engine=engine, sample_weight=sample_weight)
    rows = X.shape[0] if hasattr(X, "shape") else len(np.asarray(X))
    if rows == 0:
        raise DataError(f"{type(estimator).__name__}.fit: X has no rows.")
    placeholder = np.zeros(rows, dtype=np.int64)
    return prepare_training(
        estimator,
        X,
        placeholder,
        engine=engine,
        sample_weight=sample_weight,
        classes=np.array([0, 1]),
    )


def dense_blocks(state: Any, split: str = "train") -> Any:
    """This worker's rows as float64 dense matrices with their row weights (ones if none)."""
    for block in iter_training_blocks(state, split):
        X = block.X.toarray() if sp.issparse(block.X) else block.X
        X = np.asarray(X, dtype=np.float64)
        if not np.isfinite(X).all():
            raise DataError(
                "The features contain NaN or infinity; impute or drop them first, e.g. with "
                "Preprocessor.auto(schema)."
            )
        w = block.sample_weight
        w = np.ones(X.shape[0]) if w is None else np.asarray(w, dtype=np.float64)
        yield X, w


class UnsupervisedMixin(sklearn.base.TransformerMixin):
    """Local input checks and the pickle-free artifact hooks of KMeans and PCA.

    scikit-learn's TransformerMixin gives the transformer tags, ``fit_transform`` and
    ``set_output``.
    """

    _estimator_type: ClassVar[str] = "transformer"

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR arrays are accepted (densified block by block)
        return tags

    def _check_input(self, X: Any) -> np.ndarray:
        from shardlearn.models._base import check_prediction_input

        check_is_fitted(self, "n_features_in_")
        X = check_prediction_input(self, X)
        return X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)

    def _to_artifact(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        """(JSON metadata with params and fitted scalars, fitted arrays, no extra files)."""
        from shardlearn.models._base import ARTIFACT_FORMAT, _to_json, fitted_items

        check_is_fitted(self, "n_features_in_")
        arrays: dict[str, np.ndarray] = {}
        attributes: dict[str, Any] = {}
        for key, value in fitted_items(self):
            if isinstance(value, np.ndarray) and key != "feature_names_in_":
                arrays[key] = value
            else:
                attributes[key] = _to_json(value)
        params = {k: _to_json(v) for k, v in self.get_params(deep=False).items()}
        meta = {
            "type": type(self).__name__,
            "format": ARTIFACT_FORMAT,
            "params": params,
            "attributes": attributes,
        }
        return meta, arrays, {}

    @classmethod
    def _from_artifact(
        cls, meta: dict, arrays: dict[str, np.ndarray], files: dict[str, bytes]
    ) -> Any:
        """Rebuild a fitted model from :meth:`_to_artifact` output."""
        if meta.get("type") != cls.__name__:
            raise ArtifactError(
                f"Artifact holds a {meta.get('type')!r}, not a {cls.__name__}; load it with "
                "the matching class."
            )
        from shardlearn.models._base import artifact_params, restore_fitted

        params = artifact_params(cls, meta)
        if isinstance(params.get("init"), list):
            params["init"] = np.asarray(params["init"], dtype=np.float64)
        attributes = meta.get("attributes", {})
        if not isinstance(attributes, dict):
            raise ArtifactError(f"The artifact's {cls.__name__} attributes are not an object.")
        attributes = {k: list(v) if k == "feature_names_in_" else v for k, v in attributes.items()}
        return restore_fitted(cls(**params), attributes, arrays)


# ------------------------------------------------------------------ row keys
def _row_keys(X: np.ndarray, seed: int) -> np.ndarray:
    """A splitmix64 hash of ``(seed, row bytes)`` per row, independent of the shard layout."""
    bits = np.ascontiguousarray(X, dtype=np.float64).view(np.uint64)
    h = np.full(X.shape[0], np.uint64(seed) & _MASK64, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bits.shape[1]):
            h = h ^ bits[:, j]
            h = h + np.uint64(0x9E3779B97F4A7C15)
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(31))
    return h


def _uniform(X: np.ndarray, seed: int) -> np.ndarray:
    return (_row_keys(X, seed) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _sq_distances(X: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape (n, k), clipped at 0.

    Accurate only when ``X`` and ``centres`` are near the origin (the expansion cancels
    catastrophically far from it): workers pass centred rows, :func:`_nearest_distances` moves
    raw rows first.
    """
    d = (X * X).sum(1)[:, None] - 2.0 * X @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _nearest_distances(X: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """:func:`_sq_distances` of raw rows, computed around the centres' mean (predict time)."""
    origin = centres.mean(0)
    return _sq_distances(X - origin, centres - origin)


def _centred_blocks(state: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This worker's training rows minus the global weighted mean, with their weights."""
    mean = state.context[_MEAN_KEY]
    for X, w in dense_blocks(state):
        yield X - mean, w


# ------------------------------------------------------------------ worker functions
@dataclass(frozen=True)
class _Summary:
    """One pass of mergeable statistics: ``a + b`` is the summary of both workers' rows.

    ``moments`` is (weighted mean, weighted sum of squared deviations from it) per feature,
    None while ``weight`` is 0; merged with Chan et al.'s update, so the variance stays exact
    at any offset. ``first_row`` is the row of positive weight with the smallest key: uniform
    over the distinct rows, whatever the layout, and the same for a row of weight 3 as for
    three copies of it. ``unit_weights``: every weight is 1 (cluster sizes are then counts).
    """

    unit_weights: bool = True
    rows: int = 0
    positive_rows: int = 0
    weight: float = 0.0
    moments: tuple[np.ndarray, np.ndarray] | None = None
    first_key: float = math.inf
    first_row: np.ndarray | None = None

    @classmethod
    def of_block(cls, X: np.ndarray, w: np.ndarray, seed: int) -> _Summary:
        positive = w > 0
        if not positive.any():
            return cls(unit_weights=False, rows=X.shape[0])
        total = float(w.sum())
        mean = (w @ X) / total
        deviations = w @ (X - mean) ** 2  # two passes over the block: exact at any offset
        keys = np.where(positive, _uniform(X, seed), math.inf)
        first = int(np.argmin(keys))
        return cls(
            bool((w == 1.0).all()),
            X.shape[0],
            int(positive.sum()),
            total,
            (mean, deviations),
            float(keys[first]),
            X[first].copy(),
        )

    def __add__(self, other: _Summary) -> _Summary:
        if self.moments is None or other.moments is None:
            kept = self if other.moments is None else other
            return _Summary(
                self.unit_weights and other.unit_weights,
                self.rows + other.rows,
                kept.positive_rows,
                kept.weight,
                kept.moments,
                kept.first_key,
                kept.first_row,
            )
        (mean_a, dev_a), (mean_b, dev_b) = self.moments, other.moments
        weight = self.weight + other.weight
        delta = mean_b - mean_a
        moments = (
            mean_a + delta * (other.weight / weight),
            dev_a + dev_b + delta**2 * (self.weight * other.weight / weight),
        )
        first = self if self.first_key <= other.first_key else other
        return _Summary(
            self.unit_weights and other.unit_weights,
            self.rows + other.rows,
            self.positive_rows + other.positive_rows,
            weight,
            moments,
            first.first_key,
            first.first_row,
        )


def _summary_worker(state: Any, seed: int) -> _Summary:
    """This worker's :class:`_Summary` (raw rows: the keys and the mean are of raw values)."""
    summary = _Summary()
    for X, w in dense_blocks(state):
        summary = summary + _Summary.of_block(X, w, seed)
    return summary


def _cost_worker(state: Any) -> float:
    """Weighted sum of squared distances to the nearest current centre."""
    centres = state.context[_CENTRES_KEY]
    return float(
        sum((w * _sq_distances(X, centres).min(1)).sum() for X, w in _centred_blocks(state))
    )


def _sample_worker(state: Any, seed: int, rate: float, cost: float) -> list:
    """Raw rows of positive weight kept with probability min(1, rate * d^2 / cost).

    The probability does not depend on the row's weight: identical rows share one draw (the
    key of their values), so only then is a row of weight 3 drawn exactly as three copies.
    """
    centres, mean = state.context[_CENTRES_KEY], state.context[_MEAN_KEY]
    kept = []
    for X, w in dense_blocks(state):
        d2 = _sq_distances(X - mean, centres).min(1)
        keep = _uniform(X, seed) < np.minimum(1.0, rate * d2 / cost)
        kept.extend(X[keep & (w > 0)])
    return kept


def _closest_weight_worker(state: Any) -> np.ndarray:
    """Total row weight closest to each candidate centre."""
    centres = state.context[_CENTRES_KEY]
    out = np.zeros(centres.shape[0])
    for X, w in _centred_blocks(state):
        out += np.bincount(_sq_distances(X, centres).argmin(1), weights=w, minlength=out.size)
    return out


@dataclass(frozen=True)
class _LloydStats:
    """One Lloyd pass over some rows; ``a + b`` covers both workers' rows.

    Per cluster the weighted sums of the (centred) rows and their weights; the weighted
    inertia; and the ``k`` rows of positive weight farthest from their centre (distance,
    row, weight, cluster), farthest first, ties broken by the row's values so the choice does
    not depend on the layout -- the rows an empty cluster is moved to, as scikit-learn does.
    """

    sums: np.ndarray
    weights: np.ndarray
    inertia: float
    far_distances: np.ndarray
    far_rows: np.ndarray
    far_weights: np.ndarray
    far_labels: np.ndarray

    @classmethod
    def farthest(
        cls,
        sums: np.ndarray,
        weights: np.ndarray,
        inertia: float,
        far: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ) -> _LloydStats:
        distances, rows, row_weights, labels = far
        order = np.lexsort([*rows.T[::-1], -distances])[: sums.shape[0]]
        return cls(
            sums, weights, inertia, distances[order], rows[order], row_weights[order], labels[order]
        )

    def __add__(self, other: _LloydStats) -> _LloydStats:
        far = (
            np.concatenate([self.far_distances, other.far_distances]),
            np.concatenate([self.far_rows, other.far_rows]),
            np.concatenate([self.far_weights, other.far_weights]),
            np.concatenate([self.far_labels, other.far_labels]),
        )
        return _LloydStats.farthest(
            self.sums + other.sums, self.weights + other.weights, self.inertia + other.inertia, far
        )


def _lloyd_worker(state: Any) -> _LloydStats:
    """Per-cluster weighted sums and weights, inertia and farthest rows of this worker."""
    centres = state.context[_CENTRES_KEY]
    k, p = centres.shape
    stats = _LloydStats(np.zeros((k, p)), np.zeros(k), 0.0, *_no_rows(p))
    for X, w in _centred_blocks(state):
        d2 = _sq_distances(X, centres)
        labels = d2.argmin(1)
        closest = d2[np.arange(X.shape[0]), labels]
        sums = np.stack(
            [np.bincount(labels, weights=w * X[:, j], minlength=k) for j in range(p)], axis=1
        )
        far = np.flatnonzero(w > 0)
        if far.size > k:  # the k largest, unordered; the merge orders them
            far = far[np.argpartition(closest[far], far.size - k)[-k:]]
        block = (closest[far], X[far], w[far], labels[far])
        weights = np.bincount(labels, weights=w, minlength=k)
        stats = stats + _LloydStats(sums, weights, float(w @ closest), *block)
    return stats


def _no_rows(p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0), np.zeros((0, p)), np.zeros(0), np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------ driver helpers
def _weighted_kmeans_pp(
    points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedy weighted k-means++ (``2 + log k`` trials per centre, as scikit-learn does)."""
    n = points.shape[0]
    chosen = [int(rng.choice(n, p=weights / weights.sum()))]
    closest = _sq_distances(points, points[chosen[0]][None]).ravel()
    trials = 2 + int(math.log(k))
    for _ in range(1, k):
        potential = weights * closest
        if potential.sum() <= 0:  # every remaining point coincides with a centre
            chosen.append(int(rng.choice(n, p=weights / weights.sum())))
            continue
        candidates = rng.choice(n, size=trials, p=potential / potential.sum())
        options = np.minimum(closest[:, None], _sq_distances(points, points[candidates]))
        best = int(np.argmin((weights[:, None] * options).sum(0)))
        chosen.append(int(candidates[best]))
        closest = options[:, best]
    return points[chosen].copy()


def _weighted_lloyd(points: np.ndarray, weights: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """A few weighted Lloyd steps on the (small) candidate set, on the driver."""
    k = centres.shape[0]
    for _ in range(_CANDIDATE_LLOYD_STEPS):
        labels = _sq_distances(points, centres).argmin(1)
        mass = np.bincount(labels, weights=weights, minlength=k)
        sums = np.stack(
            [
                np.bincount(labels, weights=weights * points[:, j], minlength=k)
                for j in range(points.shape[1])
            ],
            axis=1,
        )
        new = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], centres)
        if np.array_equal(new, centres):
            break
        centres = new
    return centres


def _kmeans_parallel(
    ctx: TrainingContext,
    k: int,
    seed: int,
    oversampling: float,
    first: np.ndarray,
    mean: np.ndarray,
) -> np.ndarray:
    """k-means|| candidates on the workers, reduced to ``k`` centres on the driver.

    ``first`` and the candidates are raw rows (deduplicated exactly); the workers receive
    them, and the centres are returned, minus ``mean`` (the mean the workers subtract). The
    weights enter through the cost the draws are scaled by, the mass of each candidate (the
    weight of the rows closest to it) and the weighted k-means++ and Lloyd steps on it.
    """
    candidates = _oversample(ctx, k, seed, oversampling * k, first, mean)
    if candidates.shape[0] < k:
        raise DataError(
            f"KMeans: the data has only {candidates.shape[0]} distinct rows with a positive "
            f"sample weight, fewer than n_clusters={k}. Lower n_clusters."
        )
    ctx.group.put(_CENTRES_KEY, candidates - mean)
    weights = ctx.group.reduce(_closest_weight_worker)
    rng = np.random.default_rng(seed)
    centres = _weighted_kmeans_pp(candidates - mean, weights, k, rng)
    return _weighted_lloyd(candidates - mean, weights, centres)


def _oversample(
    ctx: TrainingContext, k: int, seed: int, ell: float, first: np.ndarray, mean: np.ndarray
) -> np.ndarray:
    """The k-means|| rounds: the distinct raw rows drawn, in sorted order.

    A round draws ``ell`` new rows in expectation when rows are distinct and of weight 1.
    Repeated or heavy rows raise the cost but are drawn once, so fewer come: a round that
    brings fewer than ``ell / 2`` does not count as one of the ``log(cost)`` rounds and
    raises the rate for the next by ``ell / drawn`` (at least 2x). The counts are of distinct
    rows, so weights and repeated rows still draw alike.
    """
    group = ctx.group
    candidates = first[None, :]
    group.put(_CENTRES_KEY, candidates - mean)
    cost = group.reduce(_cost_worker)
    rounds = min(_MAX_ROUNDS, max(1, math.ceil(math.log(cost)))) if cost > 1.0 else 1
    rate, full_rounds, round_index = ell, 0, 0
    while cost > 0 and (full_rounds < rounds or candidates.shape[0] < k):
        if round_index >= 4 * _MAX_ROUNDS:
            break
        kept = group.reduce(_sample_worker, seed + 1 + round_index, rate, cost)
        round_index += 1
        before = candidates.shape[0]
        if kept:
            # np.unique sorts: the candidate order does not depend on the worker order.
            candidates = np.unique(np.vstack([candidates, np.asarray(kept)]), axis=0)
            group.put(_CENTRES_KEY, candidates - mean)
            cost = group.reduce(_cost_worker)
        drawn = candidates.shape[0] - before
        if drawn >= ell / 2:
            full_rounds += 1
        else:  # a starved round does not count as one of the log(cost) rounds
            rate *= max(2.0, ell / max(drawn, 1))
    return candidates


@dataclass(frozen=True)
class _Run:
    """One Lloyd run: centres (minus the mean), their inertia, iterations done, cluster
    weights, and whether the last centre shift was within the tolerance."""

    centres: np.ndarray
    inertia: float
    n_iter: int
    sizes: np.ndarray
    converged: bool
    shift: float


def _lloyd(
    ctx: TrainingContext,
    centres: np.ndarray,
    max_iter: int,
    tol: float,
    report: Any = None,
) -> _Run:
    """At most ``max_iter`` distributed Lloyd iterations from ``centres`` (minus the mean)."""
    shift = math.inf
    n_iter = 0
    while n_iter < max_iter and shift > tol:
        ctx.group.put(_CENTRES_KEY, centres)
        stats = ctx.group.reduce(_lloyd_worker)
        n_iter += 1
        sums, mass = _relocate_empty_clusters(stats)
        # A cluster still empty (no row of positive weight left to move) keeps its centre.
        new = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], centres)
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if report is not None:
            report(n_iter, stats.inertia, shift)
    ctx.group.put(_CENTRES_KEY, centres)
    final = ctx.group.reduce(_lloyd_worker)
    return _Run(centres, final.inertia, n_iter, final.weights, shift <= tol, shift)


def _reporter(callback: Any, bar: StepProgress, run: int) -> Any:
    """What :func:`_lloyd` calls after each iteration of run ``run``: the callback (with a
    :class:`LloydIteration`) and the progress bar; None when neither listens."""
    if callback is None and not bar.enabled:
        return None

    def report(i: int, inertia: float, shift: float) -> None:
        if callback is not None:
            callback(LloydIteration(run, i, inertia, shift))
        label = f"KMeans run {run + 1} iterations" if run else "KMeans iterations"
        bar.update(i, info=f"inertia {inertia:.6g}  shift {shift:.2e}", description=label)

    return report


def _relocate_empty_clusters(stats: _LloydStats) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums and weights after moving each empty cluster onto a far row.

    scikit-learn's rule (``_relocate_empty_clusters_dense``): the i-th empty cluster takes
    the i-th farthest row from its centre, which leaves its old cluster. Only rows of positive
    weight are moved (a zero weight has no influence); if every row sits on its centre,
    nothing moves.
    """
    sums, mass = stats.sums.copy(), stats.weights.copy()
    empty = np.flatnonzero(mass == 0)
    if empty.size == 0 or stats.far_distances.size == 0 or stats.far_distances[0] == 0:
        return sums, mass
    far = zip(stats.far_rows, stats.far_weights, stats.far_labels, strict=False)
    for cluster, (row, weight, old) in zip(empty, far, strict=False):
        sums[old] -= row * weight
        mass[old] -= weight
        sums[cluster], mass[cluster] = row * weight, weight
    return sums, mass


@register_model("kmeans")
class KMeans(UnsupervisedMixin, sklearn.base.ClusterMixin, BaseEstimator):
    """K-means clustering with k-means|| initialisation and distributed Lloyd iterations.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : "k-means||" or ndarray of shape (n_clusters, n_features), default="k-means||"
        Scalable k-means++ (oversampled rounds on the workers, weighted k-means++ on the
        driver), or the initial centres themselves.
    max_iter : int, default=300
        Lloyd iterations per run, a hard budget: ``n_iter_ <= max_iter``, and a
        :class:`~shardlearn.exceptions.ConvergenceWarning` when a run stops at it without
        meeting ``tol``.
    tol : float, default=1e-4
        Stop when the squared centre shift is at most ``tol * mean(feature variance)``
        (scikit-learn's criterion; the variance is weighted by ``sample_weight``, where
        scikit-learn's ignores the weights, so that integer weights equal repeated rows).
    random_state : int or None, default=None
        Seed of the k-means|| draws and of the driver's k-means++.
    oversampling_factor : float, default=2.0
        Rows kept per k-means|| round, in units of ``n_clusters`` (the paper's ``l / k``).
    n_init : int, default=1
        Runs with different seeds; the one with the lowest inertia is kept.
    verbose : bool or int, default=True
        Show a progress bar on stderr with each Lloyd iteration's inertia and centre shift,
        when stderr is a terminal (see :func:`shardlearn.engine.show_progress`) and no
        ``callback`` is given; 0 or False never.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    inertia_ : float
        Sum of (weighted) squared distances of the rows to their closest centre.
    n_iter_ : int
        Lloyd iterations of the kept run (at most ``max_iter``).
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Training rows closest to each centre (their total weight with sample weights).
    n_features_in_, feature_names_in_

    Notes
    -----
    Distances and the tolerance are computed on rows minus their weighted mean, as
    scikit-learn does, so data far from the origin (an offset of 1e8) converges as it would
    at the origin. From the same initial centres, a fit equals scikit-learn's
    ``KMeans(init=centres, n_init=1, algorithm="lloyd")`` with the same ``sample_weight``
    (up to floating-point summation order), except that the tolerance uses the weighted
    variance and that an empty cluster is moved only onto a row of positive weight (and,
    with several empty clusters, onto the farthest rows in order). A row of weight 0 has no
    influence and integer weights equal repeated rows, in the k-means|| initialisation too
    (its draws are scikit-learn's k-means++ weighting only where the candidates are reduced:
    a row's chance to become a candidate depends on its distance, not on its weight).

    Examples
    --------
    >>> import numpy as np
    >>> from shardlearn.models import KMeans
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> round(KMeans(2, random_state=0).fit(X, engine="local").inertia_, 4)
    0.01
    """

    # What an artifact may restore (models._base.restore_fitted); saving refuses any other.
    _fitted_attributes: ClassVar[frozenset[str]] = frozenset(
        {
            "cluster_centers_",
            "cluster_sizes_",
            "feature_names_in_",
            "inertia_",
            "n_features_in_",
            "n_iter_",
        }
    )

    # scikit-learn checks this class fails, and why (BaseEstimator._expected_failed_checks).
    _sklearn_expected_failures: ClassVar[dict[str, str]] = dict.fromkeys(
        (
            "check_clustering",
            "check_clustering(readonly_memmap=True)",
        ),
        "no labels_: the training rows stay on the workers and are not sent back to the "
        "driver; predict(X) and fit_predict(X) give the labels",
    )
    # Preprocessing defaults (preprocess.profiles): Lloyd passes densify the blocks.
    _preprocess_profile: ClassVar[str] = "dense"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval("int", 1, None, closed="left")],
        "init": [Type(np.ndarray, "an array of initial centres"), Options(("k-means||",))],
        "max_iter": [Interval("int", 1, None, closed="left")],
        "tol": [Interval("real", 0, None, closed="left")],
        "random_state": [Interval("int", 0, None, closed="left"), Type(type(None))],
        "oversampling_factor": [Interval("real", 0, None, closed="neither")],
        "n_init": [Interval("int", 1, None, closed="left")],
        "verbose": VERBOSE_CONSTRAINTS,
    }

    def __init__(
        self,
        n_clusters: int = 8,
        init: str | np.ndarray = "k-means||",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | None = None,
        oversampling_factor: float = 2.0,
        n_init: int = 1,
        verbose: bool | int = True,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.oversampling_factor = oversampling_factor
        self.n_init = n_init
        self.verbose = verbose

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        sample_weight: Any = None,
        engine: Any = None,
        callback: Any = None,
    ) -> KMeans:
        """Cluster a Dataset (distributed over the engine's workers) or an array.

        Parameters
        ----------
        X : Dataset, ndarray or csr_matrix of shape (n_samples, n_features)
        y : ignored
            Accepted so KMeans fits where a classifier does.
        sample_weight : array-like of shape (n_samples,) or str, optional
            Non-negative row weights (array input), or the name of a Dataset's weight
            column. They weight the initialisation, the centre updates, ``inertia_`` and the
            tolerance's variance; a row of weight 0 has no influence.
        engine : Engine or str, optional
            Engine to fit on; default: the current engine.
        callback : callable, optional
            Called on the driver with a :class:`LloydIteration` after every Lloyd iteration.

        Returns
        -------
        self
        """
        self._validate_params()
        with prepare_unsupervised(self, X, engine=engine, sample_weight=sample_weight) as ctx:
            return self._fit_context(ctx, callback)

    def _fit_context(self, ctx: TrainingContext, callback: Any = None) -> KMeans:
        """Fit on a prepared :class:`TrainingContext` (used by ``fit`` and the CLI)."""
        self._validate_params()
        seed = (
            int(np.random.default_rng().integers(2**31))
            if self.random_state is None
            else int(self.random_state)
        )
        summary, mean, tol = self._summarise(ctx, seed)
        ctx.group.put(_MEAN_KEY, mean)
        # A caller that passes a callback (the CLI) shows its own progress; one bar is enough.
        show = callback is None and show_progress(self.verbose)
        runs = []
        with StepProgress("KMeans iterations", self.max_iter, enabled=show) as bar:
            for run in range(self.n_init):
                first = summary.first_row if run == 0 else None
                centres = self._initial_centres(ctx, seed + 7919 * run, first, mean)
                runs.append(_lloyd(ctx, centres, self.max_iter, tol, _reporter(callback, bar, run)))
        self._warn_unconverged(runs, tol)
        best = min(runs, key=lambda r: r.inertia)  # the first of equal inertias
        self.cluster_centers_ = best.centres + mean
        self.inertia_, self.n_iter_ = best.inertia, best.n_iter
        sizes = best.sizes
        self.cluster_sizes_ = np.rint(sizes).astype(np.int64) if summary.unit_weights else sizes
        self.n_features_in_ = int(ctx.n_features)
        self.feature_names_in_ = list(ctx.feature_names)
        return self

    def _summarise(self, ctx: TrainingContext, seed: int) -> tuple[_Summary, np.ndarray, float]:
        """The merged one-pass summary, the weighted mean and the scaled tolerance; refuses
        too little data."""
        k = self.n_clusters
        summary = ctx.group.reduce(_summary_worker, seed)
        if summary.rows < k:
            raise DataError(
                f"KMeans: n_clusters={k} but the training data has {summary.rows} rows."
            )
        if summary.moments is None or summary.positive_rows < k:
            raise DataError(
                f"KMeans: n_clusters={k} but only {summary.positive_rows} of the "
                f"{summary.rows} training rows have a positive sample weight."
            )
        mean, deviations = summary.moments
        return summary, mean, float(self.tol * np.mean(deviations / summary.weight))

    def _warn_unconverged(self, runs: list[_Run], tol: float) -> None:
        """One ConvergenceWarning if any run used its whole ``max_iter`` budget."""
        stopped = [r for r in runs if not r.converged]
        if stopped:
            warnings.warn(
                f"KMeans: {len(stopped)} of {len(runs)} runs stopped at max_iter="
                f"{self.max_iter} Lloyd iterations without converging (squared centre shift "
                f"{stopped[0].shift:.3g} > tolerance {tol:.3g}). Raise max_iter or tol.",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _initial_centres(
        self, ctx: TrainingContext, seed: int, first: np.ndarray | None, mean: np.ndarray
    ) -> np.ndarray:
        """The run's initial centres, minus ``mean``."""
        k = self.n_clusters
        if isinstance(self.init, np.ndarray):
            centres = np.asarray(self.init, dtype=np.float64)
            if centres.shape != (k, ctx.n_features):
                raise DataError(
                    f"KMeans: init has shape {centres.shape}; expected (n_clusters, n_features)"
                    f" = ({k}, {ctx.n_features})."
                )
            return centres - mean
        if first is None:  # another n_init run: the first centre under its own seed
            # Not None: _summarise saw a row with a positive weight.
            first = cast(np.ndarray, ctx.group.reduce(_summary_worker, seed).first_row)
        return _kmeans_parallel(ctx, k, seed, float(self.oversampling_factor), first, mean)

    def get_feature_names_out(self) -> list[str]:
        """Names of the :meth:`transform` columns: ``kmeans0`` ... (as scikit-learn)."""
        return [f"kmeans{i}" for i in range(self.n_clusters)]

    def transform(self, X: Any) -> np.ndarray:
        """Euclidean distance of every row to every centre, shape (n, n_clusters)."""
        return np.sqrt(_nearest_distances(self._check_input(X), self.cluster_centers_))

    def predict(self, X: Any) -> np.ndarray:
        """Index of the closest centre for every row (local, no engine)."""
        return _nearest_distances(self._check_input(X), self.cluster_centers_).argmin(1)

    def fit_predict(
        self, X: Any, y: Any = None, *, sample_weight: Any = None, engine: Any = None
    ) -> np.ndarray:
        """Fit on array ``X`` (with optional ``sample_weight``), then the cluster of every
        row."""
        return self.fit(X, sample_weight=sample_weight, engine=engine).predict(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Minus the inertia of ``X`` for the fitted centres, weighted by ``sample_weight``
        (ones if None), as scikit-learn's ``KMeans.score``."""
        X = self._check_input(X)
        closest = _nearest_distances(X, self.cluster_centers_).min(1)
        if sample_weight is None:
            return -float(closest.sum())
        weights = np.asarray(sample_weight, dtype=np.float64).ravel()
        if weights.shape != closest.shape:
            raise DataError(
                f"KMeans.score: sample_weight has {weights.size} values but X has "
                f"{closest.size} rows."
            )
        return -float(weights @ closest)
