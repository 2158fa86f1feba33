"""Distributed k-means: k-means|| initialisation and Lloyd iterations over a WorkerGroup.

Data flow of one fit (every arrow into the driver is a ``WorkerGroup.reduce``):

1. A first pass returns the row count, the per-feature sums and squared sums (for the
   scikit-learn tolerance scale ``tol * mean(var(X))``) and the row with the smallest
   *row key* -- the first centre.
2. k-means|| (Bahmani et al., 2012): ``log(cost)`` rounds (capped at :data:`_MAX_ROUNDS`);
   in each round every worker keeps each of its rows with probability
   ``min(1, l * d^2(x) / cost)`` (``l = oversampling_factor * n_clusters``) and returns
   the kept rows and its part of the new cost. The candidates are then weighted by the number
   of rows closest to them and reduced to ``n_clusters`` centres on the driver with weighted
   k-means++ followed by weighted Lloyd steps.
3. Lloyd: each worker returns per-cluster weighted sums and weights (and its inertia) for the
   current centres; the driver divides, moves the centres, and stops when the squared centre
   shift is at most the tolerance. A last pass computes ``inertia_`` for the final centres.

Why the random draws are *row keys* and not a per-worker generator: the uniform number a row
is compared with is a hash of ``(random_state, round, row bytes)``, so the same rows are kept
whatever the number of workers or the shard layout (1, 2 or 4 workers give the same centres,
up to floating-point summation order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shardlearn._validation import Interval, Options, Type
from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.exceptions import ArtifactError, DataError, SchemaError
from shardlearn.models._fitting import (
    TrainingContext,
    is_dataset,
    iter_training_blocks,
    prepare_training,
)
from shardlearn.models._registry import register_model

__all__ = [
    "KMeans",
    "LloydIteration",
    "UnsupervisedMixin",
    "dense_blocks",
    "prepare_unsupervised",
]

_CENTRES_KEY = "shardlearn.kmeans.centres"
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
def prepare_unsupervised(estimator: Any, X: Any, *, engine: Any = None) -> TrainingContext:
    """Workers holding ``X`` (a Dataset, dense array or CSR matrix); labels are not used.

    Array input gets a placeholder label (every row in class 0 of a fixed two-class set);
    a Dataset's label column is ignored.
    """
    if is_dataset(X):
        return prepare_training(estimator, X, engine=engine)
    rows = X.shape[0] if hasattr(X, "shape") else len(X)
    if rows == 0:
        raise DataError(f"{type(estimator).__name__}.fit: X has no rows.")
    placeholder = np.zeros(rows, dtype=np.int64)
    return prepare_training(estimator, X, placeholder, engine=engine, classes=np.array([0, 1]))


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


class UnsupervisedMixin:
    """Local input checks and the pickle-free artifact hooks of KMeans and PCA."""

    _estimator_type: ClassVar[str] = "transformer"

    def _check_input(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        if not (sp.issparse(X) or isinstance(X, np.ndarray | list)):
            from shardlearn.models._fitting import table_to_matrix

            X = table_to_matrix(X, list(self.feature_names_in_))
        X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise SchemaError(
                f"{type(self).__name__} was fitted on {self.n_features_in_} features but the "
                f"input has {X.shape[-1] if X.ndim else 0}."
            )
        return X

    def _to_artifact(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        """(JSON metadata with params and fitted scalars, fitted arrays, no extra files)."""
        from shardlearn.models._base import ARTIFACT_FORMAT, _to_json

        check_is_fitted(self, "n_features_in_")
        arrays: dict[str, np.ndarray] = {}
        attributes: dict[str, Any] = {}
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray) and key != "feature_names_in_":
                arrays[key] = value
            else:
                attributes[key] = _to_json(value)
        params = {k: _to_json(v) for k, v in self.get_params(deep=False).items()}  # type: ignore[attr-defined]
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
        params = dict(meta.get("params", {}))
        if isinstance(params.get("init"), list):
            params["init"] = np.asarray(params["init"], dtype=np.float64)
        model = cls(**params)
        for key, value in meta.get("attributes", {}).items():
            setattr(model, key, list(value) if key == "feature_names_in_" else value)
        for key, value in arrays.items():
            setattr(model, key, np.asarray(value))
        return model


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
    """Squared Euclidean distances, shape (n, k), clipped at 0."""
    d = (X * X).sum(1)[:, None] - 2.0 * X @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


# ------------------------------------------------------------------ worker functions
def _summary_worker(state: Any, seed: int) -> dict:
    """Rows, weight, feature sums / squared sums, and the row with the smallest key."""
    out: dict[str, Any] = {"n": 0, "weight": 0.0, "sum": None, "sumsq": None, "key": None}
    for X, w in dense_blocks(state):
        if X.shape[0] == 0:
            continue
        out["n"] += X.shape[0]
        out["weight"] += float(w.sum())
        out["sum"] = (0.0 if out["sum"] is None else out["sum"]) + (w[:, None] * X).sum(0)
        out["sumsq"] = (0.0 if out["sumsq"] is None else out["sumsq"]) + (w[:, None] * X * X).sum(0)
        keys = _row_keys(X, seed)
        i = int(np.argmin(keys))
        if out["key"] is None or keys[i] < out["key"]:
            out["key"], out["row"] = keys[i], X[i].copy()
    return out


def _merge_summaries(a: dict, b: dict) -> dict:
    if a["sum"] is None:
        return b
    if b["sum"] is None:
        return a
    first = a if a["key"] <= b["key"] else b
    return {
        "n": a["n"] + b["n"],
        "weight": a["weight"] + b["weight"],
        "sum": a["sum"] + b["sum"],
        "sumsq": a["sumsq"] + b["sumsq"],
        "key": first["key"],
        "row": first["row"],
    }


def _cost_worker(state: Any) -> float:
    """Weighted sum of squared distances to the nearest current centre."""
    centres = state.context[_CENTRES_KEY]
    return float(sum((w * _sq_distances(X, centres).min(1)).sum() for X, w in dense_blocks(state)))


def _sample_worker(state: Any, seed: int, ell: float, cost: float) -> list:
    """Rows kept with probability min(1, ell * d^2 / cost) (row-keyed draws)."""
    centres = state.context[_CENTRES_KEY]
    kept = []
    for X, _w in dense_blocks(state):
        d2 = _sq_distances(X, centres).min(1)
        keep = _uniform(X, seed) < np.minimum(1.0, ell * d2 / cost)
        kept.extend(X[keep])
    return kept


def _closest_weight_worker(state: Any) -> np.ndarray:
    """Total row weight closest to each candidate centre."""
    centres = state.context[_CENTRES_KEY]
    out = np.zeros(centres.shape[0])
    for X, w in dense_blocks(state):
        out += np.bincount(_sq_distances(X, centres).argmin(1), weights=w, minlength=out.size)
    return out


def _lloyd_worker(state: Any) -> np.ndarray:
    """[per-cluster weighted sums (k*p), per-cluster weights (k), inertia] for this worker."""
    centres = state.context[_CENTRES_KEY]
    k, p = centres.shape
    sums, weights, inertia = np.zeros((k, p)), np.zeros(k), 0.0
    for X, w in dense_blocks(state):
        d2 = _sq_distances(X, centres)
        labels = d2.argmin(1)
        inertia += float((w * d2[np.arange(X.shape[0]), labels]).sum())
        weights += np.bincount(labels, weights=w, minlength=k)
        for j in range(p):
            sums[:, j] += np.bincount(labels, weights=w * X[:, j], minlength=k)
    return np.concatenate([sums.ravel(), weights, [inertia]])


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
    ctx: TrainingContext, k: int, seed: int, oversampling: float, first: np.ndarray
) -> np.ndarray:
    """k-means|| candidates on the workers, reduced to ``k`` centres on the driver."""
    group = ctx.group
    candidates = first[None, :]
    group.put(_CENTRES_KEY, candidates)
    cost = group.reduce(_cost_worker)
    rounds = min(_MAX_ROUNDS, max(1, math.ceil(math.log(cost)))) if cost > 1.0 else 1
    ell = oversampling * k
    round_index = 0
    while cost > 0 and (round_index < rounds or candidates.shape[0] < k):
        if round_index >= 4 * _MAX_ROUNDS:
            break
        kept = group.reduce(_sample_worker, seed + 1 + round_index, ell, cost)
        round_index += 1
        if kept:
            # np.unique sorts: the candidate order does not depend on the worker order.
            candidates = np.unique(np.vstack([candidates, np.asarray(kept)]), axis=0)
            group.put(_CENTRES_KEY, candidates)
            cost = group.reduce(_cost_worker)
    if candidates.shape[0] < k:
        raise DataError(
            f"KMeans: the data has only {candidates.shape[0]} distinct rows, fewer than "
            f"n_clusters={k}. Lower n_clusters."
        )
    weights = group.reduce(_closest_weight_worker)
    rng = np.random.default_rng(seed)
    centres = _weighted_kmeans_pp(candidates, weights, k, rng)
    return _weighted_lloyd(candidates, weights, centres)


def _lloyd(
    ctx: TrainingContext,
    centres: np.ndarray,
    max_iter: int,
    tol: float,
    report: Any = None,
) -> tuple[np.ndarray, float, int, np.ndarray]:
    """Distributed Lloyd iterations; returns (centres, their inertia, iterations, cluster
    weights)."""
    k, p = centres.shape
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        ctx.group.put(_CENTRES_KEY, centres)
        stats = ctx.group.reduce(_lloyd_worker)
        sums, mass = stats[: k * p].reshape(k, p), stats[k * p : k * p + k]
        # An empty cluster keeps its centre (scikit-learn relocates it; rare with k-means||).
        new = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], centres)
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if report is not None:
            report(n_iter, float(stats[-1]), shift)
        if shift <= tol:
            break
    ctx.group.put(_CENTRES_KEY, centres)
    final = ctx.group.reduce(_lloyd_worker)
    return centres, float(final[-1]), n_iter, final[k * p : k * p + k]


@register_model("kmeans")
class KMeans(UnsupervisedMixin, BaseEstimator):
    """K-means clustering with k-means|| initialisation and distributed Lloyd iterations.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : "k-means||" or ndarray of shape (n_clusters, n_features), default="k-means||"
        Scalable k-means++ (oversampled rounds on the workers, weighted k-means++ on the
        driver), or the initial centres themselves.
    max_iter : int, default=300
        Lloyd iterations per run.
    tol : float, default=1e-4
        Stop when the squared centre shift is at most ``tol * mean(feature variance)``
        (scikit-learn's criterion).
    random_state : int or None, default=None
        Seed of the k-means|| draws and of the driver's k-means++.
    oversampling_factor : float, default=2.0
        Rows kept per k-means|| round, in units of ``n_clusters`` (the paper's ``l / k``).
    n_init : int, default=1
        Runs with different seeds; the one with the lowest inertia is kept.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    inertia_ : float
        Sum of (weighted) squared distances of the rows to their closest centre.
    n_iter_ : int
        Lloyd iterations of the kept run.
    cluster_sizes_ : ndarray of shape (n_clusters,)
        Training rows closest to each centre (their total weight with sample weights).
    n_features_in_, feature_names_in_

    Examples
    --------
    >>> import numpy as np
    >>> from shardlearn.models import KMeans
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> KMeans(2, random_state=0).fit(X, engine="local").inertia_  # doctest: +SKIP
    0.01
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_clusters": [Interval("int", 1, None, closed="left")],
        "init": [Type(np.ndarray, "an array of initial centres"), Options(("k-means||",))],
        "max_iter": [Interval("int", 1, None, closed="left")],
        "tol": [Interval("real", 0, None, closed="left")],
        "random_state": [Interval("int", 0, None, closed="left"), Type(type(None))],
        "oversampling_factor": [Interval("real", 0, None, closed="neither")],
        "n_init": [Interval("int", 1, None, closed="left")],
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
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.oversampling_factor = oversampling_factor
        self.n_init = n_init

    def fit(self, X: Any, y: Any = None, *, engine: Any = None, **_ignored: Any) -> KMeans:
        """Cluster a Dataset (distributed over the engine's workers) or an array.

        Parameters
        ----------
        X : Dataset, ndarray or csr_matrix of shape (n_samples, n_features)
        y : ignored
            Accepted so KMeans fits where a classifier does.
        engine : Engine or str, optional
            Engine to fit on; default: the current engine.

        Returns
        -------
        self
        """
        self._validate_params()
        with prepare_unsupervised(self, X, engine=engine) as ctx:
            return self._fit_context(ctx)

    def _fit_context(self, ctx: TrainingContext, callback: Any = None) -> KMeans:
        """Fit on a prepared :class:`TrainingContext` (used by ``fit`` and the CLI)."""
        self._validate_params()
        k = self.n_clusters
        seed = (
            int(np.random.default_rng().integers(2**31))
            if self.random_state is None
            else int(self.random_state)
        )
        summary = ctx.group.reduce(_summary_worker, seed, combine=_merge_summaries)
        if summary["sum"] is None or summary["n"] < k:
            raise DataError(
                f"KMeans: n_clusters={k} but the training data has {summary['n']} rows."
            )
        mean = summary["sum"] / summary["weight"]
        variance = summary["sumsq"] / summary["weight"] - mean**2
        tol = float(self.tol * np.mean(np.maximum(variance, 0.0)))
        best: tuple[np.ndarray, float, int, np.ndarray] | None = None
        for run in range(self.n_init):
            centres = self._initial_centres(
                ctx, k, seed + 7919 * run, summary["row"] if run == 0 else None
            )
            report = None
            if callback is not None:

                def report(i: int, inertia: float, shift: float, run: int = run) -> None:
                    callback(LloydIteration(run, i, inertia, shift))

            result = _lloyd(ctx, centres, self.max_iter, tol, report)
            if best is None or result[1] < best[1]:
                best = result
        self.cluster_centers_, self.inertia_, self.n_iter_, sizes = best  # type: ignore[misc]
        self.cluster_sizes_ = (
            np.rint(sizes).astype(np.int64) if summary["weight"] == summary["n"] else sizes
        )
        self.n_features_in_ = int(ctx.n_features)
        self.feature_names_in_ = list(ctx.feature_names)
        return self

    def _initial_centres(
        self, ctx: TrainingContext, k: int, seed: int, first: np.ndarray | None
    ) -> np.ndarray:
        if isinstance(self.init, np.ndarray):
            centres = np.asarray(self.init, dtype=np.float64)
            if centres.shape != (k, ctx.n_features):
                raise DataError(
                    f"KMeans: init has shape {centres.shape}; expected (n_clusters, n_features)"
                    f" = ({k}, {ctx.n_features})."
                )
            return centres.copy()
        if first is None:  # another n_init run: the first centre under its own seed
            first = ctx.group.reduce(_summary_worker, seed, combine=_merge_summaries)["row"]
        return _kmeans_parallel(ctx, k, seed, float(self.oversampling_factor), first)

    def get_feature_names_out(self) -> list[str]:
        """Names of the :meth:`transform` columns: ``kmeans0`` ... (as scikit-learn)."""
        return [f"kmeans{i}" for i in range(self.n_clusters)]

    def transform(self, X: Any) -> np.ndarray:
        """Euclidean distance of every row to every centre, shape (n, n_clusters)."""
        return np.sqrt(_sq_distances(self._check_input(X), self.cluster_centers_))

    def predict(self, X: Any) -> np.ndarray:
        """Index of the closest centre for every row (local, no engine)."""
        return _sq_distances(self._check_input(X), self.cluster_centers_).argmin(1)

    def fit_predict(self, X: Any, y: Any = None, *, engine: Any = None) -> np.ndarray:
        """Fit on array ``X``, then the cluster of every row."""
        return self.fit(X, engine=engine).predict(X)

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the (unweighted) inertia of ``X`` for the fitted centres."""
        return -float(_sq_distances(self._check_input(X), self.cluster_centers_).min(1).sum())
