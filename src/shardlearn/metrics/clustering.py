"""Clustering evaluation: inertia, cluster sizes, a sampled silhouette and, with labels, ARI/NMI.

``evaluate_clustering(model, dataset)`` runs like :func:`shardlearn.metrics.evaluate`: the
model is sent to the workers once, each worker reads its shards of the split batch by batch,
maps the raw records to the model's features (``model.transform_features``: the preprocessor
and any PCA step), assigns every row to its closest centre and folds the batch into a
:class:`ClusteringAccumulator`. The driver merges one accumulator per worker. What crosses the
network is small: the inertia, one count per cluster, the cluster x class contingency table and
the silhouette sample.

The silhouette is O(n^2), so it is computed by scikit-learn's ``silhouette_score`` on a sample.
The sample is seeded and does not depend on the number of workers: every row gets a uniform draw
from a generator seeded with ``(seed, shard index)`` (a shard always holds the same rows in the
same order) and the sample is the ``sample_size`` rows with the smallest draws -- a uniform
sample without replacement, merged across workers by keeping the smallest draws.

The adjusted Rand index and normalized mutual information depend only on the contingency table,
so they are exact over every labelled row; scikit-learn computes them from label arrays rebuilt
from the merged table.

The model is duck-typed (``transform_features`` or ``feature_names_in_``, and
``cluster_centers_`` on it or on its ``estimator``): this module does not import
``shardlearn.models``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from shardlearn._json import json_default
from shardlearn.exceptions import DataError, NotFittedError

__all__ = [
    "DEFAULT_SILHOUETTE_SAMPLE",
    "ClusteringAccumulator",
    "ClusteringReport",
    "clustering_metrics",
    "evaluate_clustering",
    "sample_draws",
]

# The silhouette needs every pairwise distance of the sample: 5,000 rows are 12.5M pairs, a
# second or two on one core, and its standard error is already well under 0.01.
DEFAULT_SILHOUETTE_SAMPLE = 5000
DEFAULT_BATCH_SIZE = 65536


# Metrics that compare the clusters with the label; a dataset without a label has none of them.
LABEL_METRICS = ("labelled_rows", "adjusted_rand_index", "normalized_mutual_info")


def sample_draws(seed: int, shard_index: int, rows: int) -> np.ndarray:
    """The uniform draws of a shard's rows, in row order (the silhouette sample keys)."""
    return np.random.default_rng([int(seed), int(shard_index)]).random(rows)


@dataclass
class ClusteringAccumulator:
    """Mergeable clustering statistics of some rows.

    Attributes
    ----------
    n_clusters, n_classes, sample_size : int
    rows : int
    inertia : float
        Sum of squared distances of the rows to their closest centre.
    sizes : ndarray of int64, shape (n_clusters,)
    contingency : ndarray of int64, shape (n_clusters, n_classes)
        Rows per (cluster, class); unlabelled rows are not counted.
    sample_keys, sample_X, sample_clusters : ndarray
        The rows with the ``sample_size`` smallest draws, sorted by draw.
    """

    n_clusters: int
    n_classes: int
    sample_size: int
    rows: int = 0
    inertia: float = 0.0
    sizes: np.ndarray = field(init=False)
    contingency: np.ndarray = field(init=False)
    sample_keys: np.ndarray = field(init=False)
    sample_X: np.ndarray | None = field(init=False, default=None)
    sample_clusters: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = np.zeros(self.n_clusters, np.int64)
        self.contingency = np.zeros((self.n_clusters, max(self.n_classes, 0)), np.int64)
        self.sample_keys = np.zeros(0)
        self.sample_clusters = np.zeros(0, np.int64)

    def update(
        self,
        X: np.ndarray,
        centres: np.ndarray,
        keys: np.ndarray,
        classes: np.ndarray | None = None,
    ) -> ClusteringAccumulator:
        """Fold rows ``X`` (with their sample draws and class indices, -1 = unlabelled) in."""
        from sklearn.metrics.pairwise import euclidean_distances

        distances = euclidean_distances(X, centres, squared=True)
        clusters = distances.argmin(1)
        self.rows += X.shape[0]
        self.inertia += float(distances[np.arange(X.shape[0]), clusters].sum())
        self.sizes += np.bincount(clusters, minlength=self.n_clusters)
        if classes is not None and self.n_classes:
            known = classes >= 0
            np.add.at(self.contingency, (clusters[known], classes[known]), 1)
        self._keep_sample(keys, X, clusters)
        return self

    def _keep_sample(self, keys: np.ndarray, X: np.ndarray, clusters: np.ndarray) -> None:
        if self.sample_X is not None:
            keys = np.concatenate([self.sample_keys, keys])
            X = np.concatenate([self.sample_X, X])
            clusters = np.concatenate([self.sample_clusters, clusters])
        order = np.argsort(keys, kind="stable")[: self.sample_size]
        self.sample_keys, self.sample_X = keys[order], X[order]
        self.sample_clusters = clusters[order]

    def merge(self, other: ClusteringAccumulator) -> ClusteringAccumulator:
        """Add ``other``'s rows (associative; the sample keeps the smallest draws)."""
        if (other.n_clusters, other.n_classes) != (self.n_clusters, self.n_classes):
            raise ValueError("Cannot merge clustering accumulators of different shapes.")
        self.rows += other.rows
        self.inertia += other.inertia
        self.sizes = self.sizes + other.sizes
        self.contingency = self.contingency + other.contingency
        if other.sample_X is not None:
            self._keep_sample(other.sample_keys, other.sample_X, other.sample_clusters)
        return self


def clustering_metrics(acc: ClusteringAccumulator, seed: int | None = None) -> dict[str, Any]:
    """Inertia, sizes, sampled silhouette, ARI and NMI (scikit-learn) from an accumulator."""
    from sklearn.metrics import (
        adjusted_rand_score,
        normalized_mutual_info_score,
        silhouette_score,
    )

    sample = 0 if acc.sample_X is None else acc.sample_X.shape[0]
    found = np.unique(acc.sample_clusters).size
    silhouette = None
    if sample and 2 <= found <= sample - 1:
        silhouette = float(silhouette_score(acc.sample_X, acc.sample_clusters))
    labelled = int(acc.contingency.sum())
    ari = nmi = None
    if labelled:
        cells = np.nonzero(acc.contingency)
        counts = acc.contingency[cells]
        predicted, true = np.repeat(cells[0], counts), np.repeat(cells[1], counts)
        ari = float(adjusted_rand_score(true, predicted))
        nmi = float(normalized_mutual_info_score(true, predicted))
    return {
        "rows": int(acc.rows),
        "inertia": float(acc.inertia),
        "mean_squared_distance": float(acc.inertia / acc.rows) if acc.rows else None,
        "cluster_sizes": acc.sizes.tolist(),
        "silhouette": silhouette,
        "silhouette_sample_size": int(sample),
        "silhouette_seed": seed,
        "labelled_rows": labelled,
        "adjusted_rand_index": ari,
        "normalized_mutual_info": nmi,
    }


@dataclass
class ClusteringReport:
    """What :func:`evaluate_clustering` returns: metrics plus what was evaluated, how."""

    metrics: dict[str, Any]
    model: dict[str, Any]
    dataset: dict[str, Any]
    evaluation: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.metrics[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``metrics``, ``model``, ``dataset``, ``evaluation``."""
        return {
            "kind": "clustering",
            "metrics": self.metrics,
            "model": self.model,
            "dataset": self.dataset,
            "evaluation": self.evaluation,
        }


def _centres(model: Any) -> np.ndarray:
    for holder in (model, getattr(model, "estimator", None)):
        centres = getattr(holder, "cluster_centers_", None)
        if centres is not None:
            return np.asarray(centres, dtype=np.float64)
    final = getattr(model, "estimator", model)
    if hasattr(final, "n_clusters") or hasattr(model, "n_clusters"):
        raise NotFittedError(f"This {type(final).__name__} is not fitted yet; fit it first.")
    raise TypeError(
        f"evaluate_clustering() needs a fitted clustering model (KMeans, or a Pipeline ending "
        f"in one); {type(final).__name__} has no cluster_centers_."
    )


def features_of(model: Any, table: pa.Table) -> np.ndarray:
    """The model's input features for raw records, as a dense float64 matrix."""
    if callable(getattr(model, "transform_features", None)):
        X = model.transform_features(table)
    else:
        names = list(getattr(model, "feature_names_in_", []))
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise DataError(f"The data has no column {missing[0]!r}; the model needs {names}.")
        X = np.column_stack(
            [table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names]
        )
    X = X.toarray() if sp.issparse(X) else X
    return np.asarray(X, dtype=np.float64)


def _class_indices(table: pa.Table, label: str | None, value_set: pa.Array) -> np.ndarray | None:
    """Class index of each row; -1 for a missing or unknown label; None without labels."""
    if not label or label not in table.column_names or not len(value_set):
        return None
    labels = table.column(label)
    try:
        values = value_set.cast(labels.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = value_set
    index = pc.fill_null(pc.index_in(labels, value_set=values), -1)
    return index.to_numpy(zero_copy_only=False).astype(np.int64)


def _clustering_worker(state: Any, split: str) -> ClusteringAccumulator:
    """On a worker: this worker's shards of ``split``, batch by batch, into one accumulator."""
    config = state.context["clustering"]
    model = state.context["model"]
    centres = _centres(model)
    value_set = pa.array(config["classes"])
    acc = ClusteringAccumulator(centres.shape[0], len(config["classes"]), config["sample_size"])
    shards = sorted((s for s in state.shards if s.split == split), key=lambda s: s.index)
    for shard in shards:
        draws, start = sample_draws(config["seed"], shard.index, shard.rows), 0
        for batch in shard.iter_batches(batch_size=config["batch_size"]):
            table = pa.Table.from_batches([batch])
            keys = draws[start : start + table.num_rows]
            start += table.num_rows
            if keys.size != table.num_rows:
                raise DataError(f"Shard {shard.path} holds more rows than its manifest says.")
            classes = _class_indices(table, config["label"], value_set)
            X = features_of(model, table)
            acc.update(X, centres, keys, classes)
    return acc


def _merge(a: ClusteringAccumulator, b: ClusteringAccumulator) -> ClusteringAccumulator:
    return a.merge(b)


def _check_arguments(sample_size: Any, seed: Any, batch_size: Any) -> None:
    for name, value, low in (("sample_size", sample_size, 2), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"The '{name}' parameter must be an int >= {low}. Got {value!r}.")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"The 'seed' parameter must be an int >= 0. Got {seed!r}.")


def evaluate_clustering(
    model: Any,
    dataset: Any,
    split: str = "test",
    engine: Any = None,
    *,
    sample_size: int = DEFAULT_SILHOUETTE_SAMPLE,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ClusteringReport:
    """Evaluate a fitted KMeans (or a Pipeline ending in one) on one split, in parallel.

    Parameters
    ----------
    model : fitted clustering model
        A :class:`shardlearn.Pipeline` whose final step is KMeans, or a bare KMeans fitted on
        the dataset's numeric columns.
    dataset : Dataset or str
    split : str, default "test"
    engine : Engine or str, optional
    sample_size : int, default 5000
        Rows in the silhouette sample (all rows when the split has fewer).
    seed : int, default 0
        Seed of the silhouette sample.
    batch_size : int, default 65536

    Returns
    -------
    ClusteringReport
        ``metrics``: ``inertia``, ``mean_squared_distance``, ``cluster_sizes``,
        ``silhouette`` (None when the sample holds fewer than 2 clusters),
        ``adjusted_rand_index`` / ``normalized_mutual_info`` and ``labelled_rows`` (None
        when the split holds no labelled rows; left out when the dataset has no label column).

    Examples
    --------
    >>> import numpy as np
    >>> import pyarrow as pa
    >>> import shardlearn as sl
    >>> from shardlearn.data import write_dataset
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.1, (100, 2)), rng.normal(5, 0.1, (100, 2))])
    >>> table = pa.table({"a": X[:, 0], "b": X[:, 1], "y": np.repeat(["p", "q"], 100)})
    >>> ds = write_dataset(table, "data/blobs", label="y", partitions=2, split=(0.8, 0, 0.2))
    >>> with sl.engine("local", workers=1):
    ...     model = sl.KMeans(2, random_state=0).fit(ds)
    ...     report = evaluate_clustering(model, "data/blobs", split="test")
    >>> round(report["inertia"], 2), round(report["silhouette"], 2)
    (1.03, 0.97)
    """
    from shardlearn.data import Dataset
    from shardlearn.engine import get_engine

    centres = _centres(model)
    _check_arguments(sample_size, seed, batch_size)
    if not isinstance(dataset, Dataset):
        dataset = Dataset.open(dataset)
    shards = dataset.shards(split)
    classes = [json_default(c) if isinstance(c, np.generic) else c for c in dataset.classes]
    config = {
        "label": dataset.label,
        "classes": classes if dataset.label else [],
        "sample_size": sample_size,
        "seed": seed,
        "batch_size": batch_size,
    }
    eng = get_engine(engine)
    started = time.perf_counter()
    if shards:
        with eng.workers(max(1, min(eng.n_workers, len(shards)))) as group:
            group.assign(shards)
            group.put("model", model)
            group.put("clustering", config)
            acc = group.reduce(_clustering_worker, split, combine=_merge)
            workers = group.size
    else:
        acc, workers = ClusteringAccumulator(centres.shape[0], len(classes), sample_size), 0
    metrics = clustering_metrics(acc, seed)
    if dataset.label is None:  # no label column: nothing to compare the clusters with
        for name in LABEL_METRICS:
            metrics.pop(name)
    final = getattr(model, "estimator", model)
    return ClusteringReport(
        metrics=metrics,
        model={
            "type": type(model).__name__,
            "estimator": type(final).__name__,
            "n_clusters": int(centres.shape[0]),
        },  # fmt: skip
        dataset={
            "uri": str(dataset.uri),
            "split": split,
            "label": dataset.label,
            "rows": sum(s.rows for s in shards),
            "shards": len(shards),
        },  # fmt: skip
        evaluation={
            "engine": eng.name,
            "workers": workers,
            "seconds": round(time.perf_counter() - started, 3),
        },  # fmt: skip
    )
