"""Data-parallel random forests: RandomForestClassifier and ExtraTreesClassifier.

Each worker grows its share of the trees on its own rows with scikit-learn's tree builder
(``DecisionTreeClassifier`` or ``ExtraTreeClassifier``); no row ever leaves its worker. The
driver merges the trees into one forest whose probability is the mean of the trees' leaf class
distributions, as in scikit-learn's forests.

Determinism: tree ``i`` gets the ``i``-th seed of ``SeedSequence(random_state)`` and the trees are
dealt to the workers in proportion to their row counts, in rank order. For a fixed
``random_state`` and worker count the forest is therefore identical from run to run.

Bootstrap happens within each worker's shards (a tree sees a resample of one worker's rows);
like scikit-learn, the resample is expressed as integer sample weights, not copied rows.

After ``fit`` no scikit-learn object is kept: the forest is a handful of flat node arrays
(see :class:`ForestClassifier`) and prediction walks all trees at once with vectorised numpy.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shardlearn._validation import Interval, Options, Type
from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.exceptions import DataError
from shardlearn.models._base import ClassifierMixin
from shardlearn.models._fitting import TrainingContext, prepare_training, training_block
from shardlearn.models._registry import register_model
from shardlearn.models.linear import resolve_class_weight

__all__ = ["ExtraTreesClassifier", "ForestClassifier", "RandomForestClassifier"]

# Prediction walks (rows x trees) node indices at once; this bounds that matrix.
_PREDICT_CELLS = 1 << 21


# ------------------------------------------------------------------ worker side
def _summary_worker(state: Any, n_classes: int) -> np.ndarray:
    """[rows per class (K), weight per class (K), non-finite feature values] of this worker."""
    block = training_block(state, "train")
    y = np.asarray(block.y, dtype=np.int64)
    w = None if block.sample_weight is None else np.asarray(block.sample_weight, np.float64)
    values = block.X.data if sp.issparse(block.X) else block.X
    nonfinite = float(np.size(values) - np.count_nonzero(np.isfinite(values)))
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.bincount(y, weights=w, minlength=n_classes) if w is not None else counts
    return np.concatenate((counts, weights, [nonfinite]))


def _draws(max_samples: Any, n_local: int, n_total: int) -> int:
    """Bootstrap draws on one worker: its share of ``max_samples`` (all its rows by default)."""
    if max_samples is None:
        return n_local
    if isinstance(max_samples, numbers.Integral):
        return max(1, round(max_samples * n_local / n_total))
    return max(1, round(float(max_samples) * n_local))


def _tree_weights(
    y: np.ndarray, base: np.ndarray, rng: np.random.Generator, spec: dict[str, Any]
) -> np.ndarray:
    """Per-row weights of one tree: bootstrap counts x class weights x sample weights."""
    n = y.shape[0]
    weights = base.copy()
    if spec["bootstrap"]:
        draws = _draws(spec["max_samples"], n, spec["n_total"])
        weights *= np.bincount(rng.integers(0, n, draws), minlength=n)
    if spec["class_weight"] == "balanced_subsample":
        per_class = np.bincount(y, weights=weights, minlength=spec["n_classes"])
        present = per_class > 0
        factor = np.ones_like(per_class)
        factor[present] = per_class.sum() / (present.sum() * per_class[present])
        weights *= factor[y]
    return weights


def _tree_arrays(tree: Any, n_classes: int) -> dict[str, np.ndarray]:
    """Node arrays of a fitted scikit-learn tree, class columns mapped to all ``n_classes``."""
    t = tree.tree_
    local = np.asarray(t.value[:, 0, :], dtype=np.float64)
    value = np.zeros((t.node_count, n_classes))
    value[:, np.asarray(tree.classes_, dtype=np.int64)] = local
    totals = value.sum(axis=1, keepdims=True)
    value /= np.where(totals > 0, totals, 1.0)
    internal = t.children_left >= 0
    return {
        "left": t.children_left.astype(np.int64),
        "right": t.children_right.astype(np.int64),
        "feature": np.where(internal, t.feature, -1).astype(np.int64),
        "threshold": np.where(internal, t.threshold, 0.0),
        "value": value,
        "gain": np.asarray(tree.feature_importances_, dtype=np.float64),
        "depth": np.asarray(t.max_depth),
    }


def _grow_worker(state: Any, spec: dict[str, Any], seeds: list[list[int]]) -> list[dict]:
    """Grow this worker's trees (``seeds[state.rank]``) on its training block.

    Impure on purpose: randomness comes only from the seeds the driver dealt to this rank.
    """
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    my_seeds = seeds[state.rank]
    if not my_seeds:
        return []
    block = training_block(state, "train")
    X = block.X
    X = X.astype(np.float32) if X.dtype != np.float32 else X
    y = np.asarray(block.y, dtype=np.int64)
    base = np.ones(y.shape[0]) if block.sample_weight is None else block.sample_weight
    base = np.asarray(base, dtype=np.float64) * np.asarray(spec["class_factor"])[y]
    builder = ExtraTreeClassifier if spec["extra"] else DecisionTreeClassifier
    trees = []
    for seed in my_seeds:
        rng = np.random.default_rng(seed)
        weights = _tree_weights(y, base, rng, spec)
        tree = builder(
            criterion=spec["criterion"],
            max_depth=spec["max_depth"],
            min_samples_leaf=spec["min_samples_leaf"],
            max_features=spec["max_features"],
            random_state=int(seed % (2**31 - 1)),
        )
        tree.fit(X, y, sample_weight=weights, check_input=True)
        trees.append(_tree_arrays(tree, spec["n_classes"]))
    return trees


# ------------------------------------------------------------------ driver side
def _deal_trees(n_trees: int, rows: np.ndarray) -> list[int]:
    """Trees per worker in proportion to its rows (largest remainder, ties to lower rank)."""
    share = n_trees * rows / rows.sum()
    counts = np.floor(share).astype(int)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: n_trees - counts.sum()]] += 1
    return counts.tolist()


def _merge_trees(trees: list[dict], n_classes: int) -> dict[str, np.ndarray]:
    """One flat forest: global node indices; a leaf's class row is ``value_[children_right_]``."""
    offsets = np.cumsum([0] + [t["left"].shape[0] for t in trees])
    left, right, feature, threshold, values = [], [], [], [], []
    n_leaves = 0
    for start, tree in zip(offsets[:-1], trees, strict=True):
        leaf = tree["left"] < 0
        leaf_rows = n_leaves + np.cumsum(leaf) - 1
        left.append(np.where(leaf, -1, tree["left"] + start))
        right.append(np.where(leaf, leaf_rows, tree["right"] + start))
        feature.append(tree["feature"])
        threshold.append(tree["threshold"])
        values.append(tree["value"][leaf])
        n_leaves += int(leaf.sum())
    return {
        "tree_offsets_": offsets.astype(np.int64),
        "children_left_": np.concatenate(left).astype(np.int64),
        "children_right_": np.concatenate(right).astype(np.int64),
        "feature_": np.concatenate(feature).astype(np.int64),
        "threshold_": np.concatenate(threshold).astype(np.float64),
        "value_": np.concatenate(values).reshape(-1, n_classes),
    }


class ForestClassifier(ClassifierMixin, BaseEstimator):
    """Shared fitting and node-array prediction of the forests.

    Fitted node arrays (all trees concatenated; node ``tree_offsets_[t]`` is the root of tree
    ``t``): ``children_left_`` / ``children_right_`` (global node indices; a leaf has
    ``children_left_ == -1`` and its class distribution in
    ``value_[children_right_[node]]``), ``feature_`` (-1 at leaves), ``threshold_`` (go left
    when ``x[feature] <= threshold`` with ``x`` rounded to float32, as scikit-learn does) and
    ``value_`` (one row per leaf, ``len(classes_)`` columns, summing to 1).
    """

    _extra: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_estimators": [Interval("int", 1, None)],
        "criterion": [Options(("gini", "entropy", "log_loss"))],
        "max_depth": [Interval("int", 1, None), Type(type(None))],
        "min_samples_leaf": [Interval("int", 1, None), Interval("float", 0, 1, "right")],
        "max_features": [
            Options(("sqrt", "log2")),
            Interval("int", 1, None),
            Interval("float", 0, 1, "right"),
            Type(type(None)),
        ],
        "class_weight": [
            Options(("balanced", "balanced_subsample")),
            Type(dict, "a dict of class -> weight"),
            Type(type(None)),
        ],
        "bootstrap": [Type(bool)],
        "max_samples": [
            Interval("int", 1, None),
            Interval("float", 0, 1, "right"),
            Type(type(None)),
        ],
        "random_state": [Interval("int", 0, None), Type(type(None))],
    }

    def __init__(
        self,
        n_estimators: int = 100,
        *,
        criterion: str = "gini",
        max_depth: int | None = None,
        min_samples_leaf: int | float = 1,
        max_features: str | int | float | None = "sqrt",
        class_weight: str | dict | None = None,
        bootstrap: bool = True,
        max_samples: int | float | None = None,
        random_state: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.bootstrap = bootstrap
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        engine: Any = None,
        sample_weight: Any = None,
        callback: Callable | None = None,
    ) -> Any:
        """Grow the forest on a Dataset (distributed over the engine's workers) or on arrays.

        Parameters
        ----------
        X : Dataset, ndarray or csr_matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
            Labels, for array input only.
        engine : Engine or str, optional
            Engine to train on; default: the current engine.
        sample_weight : array-like of shape (n_samples,), optional
            Row weights (array input) or a weight column name (Dataset).
        callback : callable, optional
            Accepted for a uniform ``fit`` signature; forests grow in one round.

        Returns
        -------
        self
        """
        self._validate_params()
        with prepare_training(self, X, y, engine=engine, sample_weight=sample_weight) as ctx:
            return self._fit_context(ctx, callback=callback)

    def _fit_context(self, ctx: TrainingContext, callback: Callable | None = None) -> Any:
        """Fit on a prepared :class:`TrainingContext` (used by ``fit`` and by Pipeline)."""
        self._validate_params()
        owner = type(self).__name__
        k = ctx.n_classes
        if self.max_samples is not None and not self.bootstrap:
            raise ValueError(
                f"{owner}: max_samples={self.max_samples!r} needs bootstrap=True; "
                "drop max_samples or set bootstrap=True."
            )
        summaries = np.asarray(ctx.group.run(_summary_worker, k))
        totals = summaries.sum(axis=0)
        if totals[2 * k] > 0:
            raise DataError(
                f"{owner}: {int(totals[2 * k])} feature values are NaN or infinite. Impute or "
                "drop them first, e.g. with Pipeline(Preprocessor.auto(dataset.schema), model)."
            )
        counts = totals[:k]
        if np.count_nonzero(counts) < 2:
            raise DataError(f"{owner} needs at least two classes in the training rows.")
        rows = summaries[:, :k].sum(axis=1)
        fixed = self.class_weight if self.class_weight != "balanced_subsample" else None
        spec = {
            "extra": self._extra,
            "criterion": self.criterion,
            "max_depth": self.max_depth,
            "min_samples_leaf": self.min_samples_leaf,
            "max_features": self.max_features,
            "bootstrap": self.bootstrap,
            "max_samples": self.max_samples,
            "class_weight": self.class_weight,
            "class_factor": resolve_class_weight(fixed, ctx.classes, totals[k : 2 * k]).tolist(),
            "n_classes": k,
            "n_total": int(rows.sum()),
        }
        seeds = np.random.SeedSequence(self.random_state).generate_state(self.n_estimators)
        dealt = np.split(seeds.astype(np.int64), np.cumsum(_deal_trees(self.n_estimators, rows)))
        trees = [
            t
            for part in ctx.group.run(_grow_worker, spec, [d.tolist() for d in dealt[:-1]])
            for t in part
        ]
        for key, value in _merge_trees(trees, k).items():
            setattr(self, key, value)
        self.max_depth_ = int(max(int(t["depth"]) for t in trees))
        gain = np.mean([t["gain"] for t in trees], axis=0)
        total_gain = gain.sum()
        self.feature_importances_ = gain / total_gain if total_gain > 0 else gain
        used = self.feature_[self.feature_ >= 0]
        self.split_importances_ = np.bincount(used, minlength=ctx.n_features).astype(np.float64)
        self.n_estimators_ = len(trees)
        self.classes_ = np.asarray(ctx.classes)
        self.n_features_in_ = ctx.n_features
        self.feature_names_in_ = list(ctx.feature_names)
        return self

    # ------------------------------------------------------------------ prediction
    def apply(self, X: Any) -> np.ndarray:
        """Leaf row (into ``value_``) reached by each sample in each tree: (n_samples, n_trees)."""
        X = self._check_predict_input(X)
        n_trees = self.tree_offsets_.shape[0] - 1
        step = max(1, _PREDICT_CELLS // max(n_trees, self.n_features_in_))
        parts = [self._apply_chunk(X[i : i + step]) for i in range(0, X.shape[0], step)]
        return np.concatenate(parts) if parts else np.zeros((0, n_trees), np.int64)

    def _apply_chunk(self, chunk: Any) -> np.ndarray:
        chunk = chunk.toarray() if sp.issparse(chunk) else chunk
        # scikit-learn compares float32 features with float64 thresholds; so do we.
        chunk = np.asarray(chunk, dtype=np.float32)
        rows = np.arange(chunk.shape[0])[:, None]
        node = np.broadcast_to(
            self.tree_offsets_[:-1], (chunk.shape[0], len(self.tree_offsets_) - 1)
        )
        node = node.copy()
        left, right = self.children_left_, self.children_right_
        for _ in range(self.max_depth_):
            child = left[node]
            internal = child >= 0
            if not internal.any():
                break
            feature = np.maximum(self.feature_[node], 0)
            go_left = chunk[rows, feature] <= self.threshold_[node]
            node = np.where(internal, np.where(go_left, child, right[node]), node)
        return right[node]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Mean of the trees' leaf class distributions; columns in the order of ``classes_``."""
        leaves = self.apply(X)
        proba = np.zeros((leaves.shape[0], self.value_.shape[1]))
        for t in range(leaves.shape[1]):
            proba += self.value_[leaves[:, t]]
        return proba / max(leaves.shape[1], 1)

    def importances(self) -> dict[str, dict[str, float]]:
        """Feature importances of both kinds, by feature name.

        Returns
        -------
        dict
            ``{"gain": {feature: mean decrease in impurity, normalised to sum to 1},
            "split": {feature: number of splits on it in the whole forest}}``.
        """
        check_is_fitted(self)
        names = list(self.feature_names_in_)
        return {
            "gain": dict(zip(names, map(float, self.feature_importances_), strict=True)),
            "split": dict(zip(names, map(float, self.split_importances_), strict=True)),
        }


@register_model("random_forest")
class RandomForestClassifier(ForestClassifier):
    """A random forest grown in parallel: each worker grows trees on its own shards.

    Trees are scikit-learn ``DecisionTreeClassifier`` s (best split among ``max_features``
    random features); the forest averages their class probabilities.

    Parameters
    ----------
    n_estimators : int, default=100
        Number of trees in the whole forest (dealt to the workers by row count).
    criterion : {"gini", "entropy", "log_loss"}, default="gini"
    max_depth : int or None, default=None
        Maximum depth of a tree; None grows until leaves are pure or ``min_samples_leaf``.
    min_samples_leaf : int or float, default=1
        Minimum (weighted) rows per leaf; a float is a fraction of the worker's rows.
    max_features : {"sqrt", "log2"}, int, float or None, default="sqrt"
        Features considered per split.
    class_weight : "balanced", "balanced_subsample", dict or None, default=None
        "balanced" uses the class counts of all workers; "balanced_subsample" those of each
        tree's bootstrap sample.
    bootstrap : bool, default=True
        Resample each tree's rows (with replacement) within its worker's shards.
    max_samples : int, float or None, default=None
        Rows drawn per tree: a float is a fraction of the worker's rows; an int is a total
        over all workers, split by their row counts.
    random_state : int or None, default=None
        Seed; with a fixed seed and worker count the forest is reproducible.

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_, n_estimators_, max_depth_,
    feature_importances_ (gain), split_importances_ (split counts), and the node arrays
    described in :class:`ForestClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from shardlearn.engine import engine
    >>> X = np.random.default_rng(0).normal(size=(200, 3)); y = (X[:, 0] > 0).astype(int)
    >>> with engine("local", workers=1):
    ...     model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    >>> model.predict(X[:3]).shape
    (3,)
    """


@register_model("extra_trees")
class ExtraTreesClassifier(ForestClassifier):
    """Extremely randomised trees grown in parallel: each worker grows trees on its shards.

    Same parameters and attributes as :class:`RandomForestClassifier`, but each split uses a
    random threshold per candidate feature (scikit-learn's ``ExtraTreeClassifier``), and
    ``bootstrap`` defaults to False.
    """

    _extra: ClassVar[bool] = True

    def __init__(
        self,
        n_estimators: int = 100,
        *,
        criterion: str = "gini",
        max_depth: int | None = None,
        min_samples_leaf: int | float = 1,
        max_features: str | int | float | None = "sqrt",
        class_weight: str | dict | None = None,
        bootstrap: bool = False,
        max_samples: int | float | None = None,
        random_state: int | None = None,
    ) -> None:
        super().__init__(
            n_estimators,
            criterion=criterion,
            max_depth=max_depth,
            min_samples_leaf=min_samples_leaf,
            max_features=max_features,
            class_weight=class_weight,
            bootstrap=bootstrap,
            max_samples=max_samples,
            random_state=random_state,
        )
