"""Data-parallel random forests: RandomForestClassifier and ExtraTreesClassifier.

What "random forest" means here: scikit-learn's forest, tree for tree. Tree ``i`` is a
scikit-learn ``DecisionTreeClassifier`` (``ExtraTreeClassifier`` for extra trees) whose seed is
the ``i``-th draw of ``check_random_state(random_state).randint(2**31 - 1)``, grown on *all*
the training rows: its bootstrap (``max_samples`` draws with replacement, by default as many as
there are rows) is drawn from all rows of all shards with that seed, with probability
proportional to ``sample_weight`` times the class weight, and becomes integer sample weights;
without bootstrap the tree gets those weights directly. A bootstrap tree is handed only its
drawn rows (in row order, a fractional ``min_samples_leaf`` still of all rows): scikit-learn's
builder skips rows of weight 0 anyway, so the tree is the same, without its ``fit`` sorting
the labels of every undrawn row. This is scikit-learn 1.9's algorithm
(``sample_weight``, ``class_weight`` "balanced"/"balanced_subsample"/dict, ``max_samples``
included). The forest's probability is the mean of the trees' leaf class distributions.

The workers only share out the trees: rank ``r`` grows a contiguous range of tree indices
(ranges differ by at most one tree). With the progress bar showing (``verbose``), each range is
grown in up to ``_PROGRESS_ROUNDS`` parts, one ``group.run`` per round, and the bar moves after
every round; without it, in one round. A tree does not depend on which worker grows it, so the
forest depends neither on how the rows were partitioned nor on the number of workers: 1, 2 and
4 workers give the same forest, and on arrays it is scikit-learn's forest with the same
``random_state`` (same trees, same probabilities). On a Dataset the rows are taken in shard
order (train shards by index, the order of ``dataset.read("train")``), so a Dataset's forest is
scikit-learn's forest on the rows in that order.

What it costs: every worker that grows trees holds the whole training set, as scikit-learn's
forest does: float32 features (CSC when sparse; ``4 * rows * features`` bytes dense), class
indices and weights, read from the shards of all workers
(:func:`~shardlearn.models._training.fitting.iter_all_training_blocks`; a dense set is filled into
one preallocated column-major float32 array, one shard at a time).

* Array input (``fit(X, y)``) on the local engine runs on threads of the calling process
  (``_prefer_threads``: scikit-learn's tree builder releases the GIL); the threads share one
  copy of the rows, the memory of scikit-learn's forest.
* Worker processes (Dataset input, Ray) each read and transform every shard (the reading work
  of one pass, times the workers) and hold their own copy. The training set must fit in one
  worker's memory: there is no out-of-core forest. Each shard is transformed once per process
  in a fit; in a warm scope (a search, ``with engine(...)``, a pipeline run) its block is kept
  in the process within the scope's budget, so the scope's next forest on the same shards and
  preprocessor takes it instead of transforming again
  (:func:`shardlearn.preprocess.blocks.iter_shard_blocks`; same rows, same forest).

Measured once (100k x 20 label-sorted rows, 20 trees, 2 workers, a busy 2-core machine): arrays
on threads added 28-38 MiB at peak and took the wall time of scikit-learn's ``n_jobs=2``
forest (which added 34-42 MiB); a Dataset in 8 shards on 2 worker processes added 22 MiB.

The rows are loaded by the first of two calls (which also returns the class counts, the number
of NaN/inf values and the total weight, checked on the driver) and used by the second (which
grows the trees). In between they live in a :class:`_SharedRows` holder that the driver puts in
the workers' context and replaces with None when the fit ends, which frees them. A replacement
worker (after a WorkerLost) gets an empty holder from the replayed context and loads the rows
again.

After ``fit`` no scikit-learn object is kept: the forest is a handful of flat node arrays
(see :class:`ForestClassifier`) and prediction walks all trees at once with vectorised numpy.
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shardlearn._validation import Interval, Options, Type
from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.engine import VERBOSE_CONSTRAINTS, StepProgress, show_progress
from shardlearn.exceptions import ArtifactError, DataError
from shardlearn.models._base import ClassifierMixin
from shardlearn.models._registry import register_model
from shardlearn.models._training.class_weight import resolve_class_weight
from shardlearn.models._training.fitting import (
    TrainingContext,
    iter_all_training_blocks,
    prepare_training,
)

__all__ = ["ExtraTreesClassifier", "ForestClassifier", "RandomForestClassifier"]

# Prediction walks (rows x trees) node indices at once; this bounds that matrix.
_PREDICT_CELLS = 1 << 21
# Tree seeds are drawn below this bound, as scikit-learn's ensembles draw them.
_MAX_SEED = np.iinfo(np.int32).max
# Rounds of tree growing (one group.run each) when the progress bar shows: the bar moves this
# many times; every round waits for its slowest worker, so more rounds cost more barriers.
_PROGRESS_ROUNDS = 10
# Context key of the workers' _SharedRows holder during a fit.
_ROWS_KEY = "shardlearn.models.forest.rows"
# Rows per chunk when counting NaN/inf: bounds the boolean temporary to a few MB.
_FINITE_CHUNK_ROWS = 1 << 16


# ------------------------------------------------------------------ the training rows
@dataclass
class _Rows:
    """All training rows as scikit-learn's forest hands them to its trees."""

    X: Any  # float32 ndarray, or float32 CSC matrix with sorted int32 indices
    y: np.ndarray  # class indices, int64
    y_tree: np.ndarray  # the same as a float64 column (what the trees are fitted on)
    weight: np.ndarray | None  # sample_weight x class weight; None when both are absent
    non_finite: int  # NaN/inf feature values (the fit refuses them)


class _SharedRows:
    """The training rows of one fit, loaded on first use, shared by a process's workers.

    The driver puts one holder in the context. Thread workers all see that same object, so the
    first to need the rows loads them and the others wait for it (one copy per process); a
    worker process unpickles its own holder, empty (so does a replacement worker).

    Parameters
    ----------
    shards : list of Shard
        Every shard of the group (see :func:`iter_all_training_blocks`).
    class_weight : None, "balanced" or list of float
        Row weights' class factor: per class index, or "balanced" over all rows.
    n_classes : int
    """

    def __init__(self, shards: list[Any], class_weight: Any, n_classes: int) -> None:
        self.shards = shards
        self.class_weight = class_weight
        self.n_classes = n_classes
        self._lock = threading.Lock()
        self._rows: _Rows | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Rebuilt by the constructor, so an unpickled holder starts empty (no rows, own lock).
        return type(self), (self.shards, self.class_weight, self.n_classes)

    def get(self, state: Any) -> _Rows:
        """The rows, loading them with ``state``'s context if no worker has yet."""
        with self._lock:
            if self._rows is None:
                self._rows = _load_rows(state, self.shards, self.class_weight, self.n_classes)
            return self._rows


def _load_rows(state: Any, shards: list[Any], class_weight: Any, n_classes: int) -> _Rows:
    n_rows = sum(s.rows for s in shards if s.split == "train")
    features, labels, weights = [], [], []
    dense: np.ndarray | None = None
    start = 0
    for block in iter_all_training_blocks(state, shards):
        if sp.issparse(block.X):
            features.append(sp.csr_matrix(block.X, dtype=np.float32))
        elif start + block.n_rows <= n_rows:  # a shard: copied into its place, as float32
            if dense is None:  # column-major: see _drawn_rows
                dense = np.empty((n_rows, block.X.shape[1]), dtype=np.float32, order="F")
            dense[start : start + block.n_rows] = block.X
        else:  # extra rows (self-training) beyond the shards' rows
            features.append(np.asarray(block.X, dtype=np.float32))
        start += block.n_rows
        labels.append(np.asarray(block.y, dtype=np.int64))
        weights.append(block.sample_weight)
    X = _stack_features(dense, features)
    y = np.concatenate(labels)
    sample_weight = None
    if any(w is not None for w in weights):
        parts = [np.ones(len(t)) if w is None else w for w, t in zip(weights, labels, strict=True)]
        sample_weight = np.concatenate(parts).astype(np.float64)
    return _Rows(
        X=X,
        y=y,
        y_tree=np.ascontiguousarray(y, dtype=np.float64).reshape(-1, 1),
        weight=_row_weights(y, sample_weight, class_weight, n_classes),
        non_finite=_count_non_finite(X),
    )


def _stack_features(dense: np.ndarray | None, extra: list[Any]) -> Any:
    """One float32 matrix: the dense rows then ``extra``, or the sparse parts as sorted CSC."""
    if extra and sp.issparse(extra[0]):
        X = sp.vstack(extra, format="csr").tocsc()
        X.sort_indices()
        # scikit-learn's trees take int32 indices only (and refuse more than 2**31 values).
        X.indices = X.indices.astype(np.intc, copy=False)
        X.indptr = X.indptr.astype(np.intc, copy=False)
        return X
    if dense is None:
        return np.asfortranarray(np.concatenate(extra))
    return np.asfortranarray(np.concatenate([dense, *extra])) if extra else dense


def _count_non_finite(X: Any) -> int:
    values = X.data if sp.issparse(X) else X
    bad = 0
    for first in range(0, values.shape[0], _FINITE_CHUNK_ROWS):
        chunk = values[first : first + _FINITE_CHUNK_ROWS]
        bad += int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
    return bad


def _balanced(per_class: np.ndarray) -> np.ndarray:
    """scikit-learn's "balanced" class weights: total / (classes present x class total)."""
    present = per_class > 0
    factor = np.zeros(per_class.shape[0])
    factor[present] = per_class[present].sum() / (present.sum() * per_class[present])
    return factor


def _row_weights(
    y: np.ndarray, sample_weight: np.ndarray | None, class_weight: Any, n_classes: int
) -> np.ndarray | None:
    """scikit-learn's forest row weights: ``sample_weight`` x the class weight of each row."""
    if class_weight is None:
        return sample_weight
    if class_weight == "balanced":  # from the (weighted) class totals, as scikit-learn 1.9
        factor = _balanced(np.bincount(y, weights=sample_weight, minlength=n_classes))
    else:
        factor = np.asarray(class_weight, dtype=np.float64)
    expanded = factor[y]
    return expanded if sample_weight is None else sample_weight * expanded


# ------------------------------------------------------------------ worker side
def _load_worker(state: Any, dealt: list[list[int]]) -> np.ndarray | None:
    """Load the rows (workers with trees to grow): [rows per class (K), NaN/inf values, total
    weight, bad weights (negative or not finite)]."""
    if not dealt[state.rank]:
        return None
    holder: _SharedRows = state.context[_ROWS_KEY]
    rows = holder.get(state)
    counts = np.bincount(rows.y, minlength=holder.n_classes).astype(np.float64)
    w = rows.weight
    total = float(rows.y.shape[0]) if w is None else float(np.sum(w))
    bad = 0 if w is None else int(w.size - np.count_nonzero(np.isfinite(w) & (w >= 0)))
    return np.concatenate((counts, [rows.non_finite, total, bad]))


def _tree_sample_weight(
    rows: _Rows, seed: int, p: np.ndarray | None, spec: dict[str, Any]
) -> np.ndarray | None:
    """Sample weights of the tree seeded ``seed``, as scikit-learn's forest computes them.

    With bootstrap: how often each row is drawn (``p``: draw probabilities, None for uniform),
    times the draw's balanced class weights for "balanced_subsample"; without: the row weights.
    """
    if spec["draws"] is None:
        return rows.weight
    n = rows.y.shape[0]
    rng = np.random.RandomState(seed)  # the legacy generator: scikit-learn's draws, exactly
    if p is None:
        indices = rng.randint(0, n, spec["draws"])
    else:
        indices = rng.choice(n, spec["draws"], replace=True, p=p)
    counts = np.bincount(indices.astype(np.int32), minlength=n)
    if not spec["balanced_subsample"]:
        return counts
    drawn = np.bincount(rows.y, weights=counts, minlength=spec["n_classes"])
    return counts * _balanced(drawn)[rows.y]


def _drawn_rows(rows: _Rows, weight: Any, bootstrap: bool) -> tuple[Any, np.ndarray, Any]:
    """Features, labels and weights a tree is fitted on: with bootstrap, the drawn rows only.

    Most rows are not drawn (about 78% with ``max_samples=0.25``): their weight is 0 and
    scikit-learn's tree builder skips them, but its ``fit`` still sorts every row's label
    (``np.unique``: a quarter of a tree's time on the demo's data). So only the rows of
    positive weight, in their order, go to the tree: the builder sees the same rows in the same
    order and grows the same tree, on fewer and more compact rows. Without bootstrap the rows
    go as they are (every row usually counts).

    Dense rows are column-major (Fortran order), copied column by column: the splitter reads
    one feature of a node's rows at a time, which is then one contiguous column (row-major, each
    value sat in another row of the whole matrix). Same values, same tree; tree growing took
    11% less CPU on 800k x 76 rows.
    """
    if not bootstrap:
        return rows.X, rows.y_tree, weight
    keep = np.flatnonzero(weight)
    if sp.issparse(rows.X):  # the trees take CSC with sorted int32 indices only
        X = rows.X[keep].tocsc()
        X.sort_indices()
        X.indices = X.indices.astype(np.intc, copy=False)
        X.indptr = X.indptr.astype(np.intc, copy=False)
    else:
        X = np.empty((keep.size, rows.X.shape[1]), dtype=rows.X.dtype, order="F")
        for j in range(X.shape[1]):
            X[:, j] = rows.X[:, j][keep]
    return X, rows.y_tree[keep], weight[keep]


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


def _grow_worker(state: Any, spec: dict[str, Any], dealt: list[list[int]]) -> list[dict]:
    """Grow this worker's trees (seeds ``dealt[state.rank]``) on all the training rows.

    Impure on purpose: randomness comes only from the seeds the driver dealt to this rank.
    """
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    seeds = dealt[state.rank]
    if not seeds:
        return []
    rows = state.context[_ROWS_KEY].get(state)
    p = None
    if spec["draws"] is not None and rows.weight is not None:
        p = rows.weight / np.sum(rows.weight)
    builder = ExtraTreeClassifier if spec["extra"] else DecisionTreeClassifier
    trees = []
    for seed in seeds:
        tree = builder(
            criterion=spec["criterion"],
            max_depth=spec["max_depth"],
            min_samples_leaf=_min_samples_leaf(spec, rows.y.shape[0]),
            min_weight_fraction_leaf=spec["min_weight_fraction_leaf"],
            max_features=spec["max_features"],
            random_state=seed,
        )
        weight = _tree_sample_weight(rows, seed, p, spec)
        # The rows are already float32 (CSC with sorted int32 indices when sparse), as the
        # trees need them; the forest checked them once for all trees.
        X, y, weight = _drawn_rows(rows, weight, spec["draws"] is not None)
        tree.fit(X, y, sample_weight=weight, check_input=False)
        trees.append(_tree_arrays(tree, spec["n_classes"]))
    return trees


def _min_samples_leaf(spec: dict[str, Any], n_rows: int) -> int:
    """``min_samples_leaf`` as a row count: a fraction is of all training rows, as in
    scikit-learn's forest (the trees may be handed only the drawn rows)."""
    value = spec["min_samples_leaf"]
    return int(value) if isinstance(value, numbers.Integral) else math.ceil(value * n_rows)


# ------------------------------------------------------------------ driver side
def _tree_seeds(random_state: int | None, n_trees: int) -> list[int]:
    """Seed of each tree: scikit-learn's forest draws them one by one from its random_state."""
    from sklearn.utils import check_random_state

    generator = check_random_state(random_state)
    return [int(generator.randint(_MAX_SEED)) for _ in range(n_trees)]


def _deal_trees(seeds: list[int], n_workers: int) -> list[list[int]]:
    """Contiguous ranges of tree seeds, one per worker, sizes differing by at most one."""
    return [part.tolist() for part in np.array_split(np.asarray(seeds, np.int64), n_workers)]


def _rounds(dealt: list[list[int]], n_rounds: int) -> list[list[list[int]]]:
    """``dealt`` cut into ``n_rounds`` rounds: in each, every worker grows the next part of its
    range (part sizes differing by at most one). Round ``r`` of worker ``w`` is
    ``rounds[r][w]``; concatenating a worker's parts gives back its range."""
    per_worker = [np.array_split(np.asarray(seeds, np.int64), n_rounds) for seeds in dealt]
    return [[parts[r].tolist() for parts in per_worker] for r in range(n_rounds)]


def _grow(
    ctx: TrainingContext, spec: dict[str, Any], dealt: list[list[int]], bar: StepProgress
) -> list[dict]:
    """Every tree, in tree order; in rounds that move the progress bar when it shows.

    A tree depends only on its seed, so the rounds change when trees are reported, not which
    trees are grown: the forest is the same with or without the bar.
    """
    n_rounds = min(_PROGRESS_ROUNDS, max(map(len, dealt))) if bar.enabled else 1
    grown: list[list[dict]] = [[] for _ in dealt]
    for round_seeds in _rounds(dealt, n_rounds):
        for rank, part in enumerate(ctx.group.run(_grow_worker, spec, round_seeds)):
            grown[rank].extend(part)
        bar.update(sum(map(len, grown)))
    return [tree for part in grown for tree in part]


def _node_array_problem(forest: Any) -> str | None:
    """What makes a forest's node arrays unsafe to walk, or None.

    Prediction indexes the arrays with node ids and loops at most ``max_depth_`` times, so
    every child must be a later node (no cycle: the walk ends within the node count), every
    index in range and ``max_depth_`` at most the node count. :func:`_merge_trees` always
    produces such arrays; a crafted artifact may not.
    """
    left, right = np.asarray(forest.children_left_), np.asarray(forest.children_right_)
    n, node = len(left), np.arange(len(left))
    arrays = (right, forest.feature_, forest.threshold_)
    if any(np.shape(a) != (n,) for a in arrays) or left.ndim != 1:
        return "node arrays of different lengths"
    if not all(np.issubdtype(np.asarray(a).dtype, np.integer) for a in (left, right)):
        return "child indices are not integers"
    offsets = np.asarray(forest.tree_offsets_)
    if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or offsets[-1] != n:
        return "tree_offsets_ do not span the nodes"
    if np.any(np.diff(offsets) <= 0):
        return "tree_offsets_ are not increasing"
    internal = left >= 0
    if np.any(left[internal] <= node[internal]) or np.any(right[internal] <= node[internal]):
        return "a child node precedes its parent"
    if np.any(left[internal] >= n) or np.any(right[internal] >= n):
        return "a child index is out of range"
    leaves = right[~internal]
    if np.any(leaves < 0) or np.any(leaves >= np.shape(forest.value_)[0]):
        return "a leaf's value row is out of range"
    features = np.asarray(forest.feature_)[internal]
    if np.any(features < 0) or np.any(features >= int(forest.n_features_in_)):
        return "a split feature is out of range"
    if not isinstance(forest.max_depth_, int) or not 0 <= forest.max_depth_ <= n:
        return "max_depth_ is not a depth of these trees"
    return None


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

    # What an artifact may restore (models._base.restore_fitted); saving refuses any other.
    _fitted_attributes: ClassVar[frozenset[str]] = frozenset(
        {
            "children_left_",
            "children_right_",
            "classes_",
            "feature_",
            "feature_importances_",
            "feature_names_in_",
            "max_depth_",
            "n_estimators_",
            "n_features_in_",
            "split_importances_",
            "threshold_",
            "tree_offsets_",
            "value_",
        }
    )

    _extra: ClassVar[bool] = False
    # scikit-learn's tree builder releases the GIL: array fits grow trees on threads that share
    # one copy of the rows (see the module notes).
    _prefer_threads: ClassVar[bool] = True
    # Preprocessing defaults (preprocess.profiles): split search visits every column.
    _preprocess_profile: ClassVar[str] = "compact"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_estimators": [Interval("int", 1, None)],
        "criterion": [Options(("gini", "entropy", "log_loss"))],
        "max_depth": [Interval("int", 1, None), Type(type(None))],
        "min_samples_leaf": [Interval("int", 1, None), Interval("float", 0, 1, "right")],
        "min_weight_fraction_leaf": [Interval("real", 0, 0.5, "both")],
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
        "verbose": VERBOSE_CONSTRAINTS,
    }

    def __init__(
        self,
        n_estimators: int = 100,
        *,
        criterion: str = "gini",
        max_depth: int | None = None,
        min_samples_leaf: int | float = 1,
        min_weight_fraction_leaf: float = 0.0,
        max_features: str | int | float | None = "sqrt",
        class_weight: str | dict | None = None,
        bootstrap: bool = True,
        max_samples: int | float | None = None,
        random_state: int | None = None,
        verbose: bool | int = True,
    ) -> None:
        self.n_estimators = n_estimators
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.min_weight_fraction_leaf = min_weight_fraction_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.bootstrap = bootstrap
        self.max_samples = max_samples
        self.random_state = random_state
        self.verbose = verbose

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
            Accepted for a uniform ``fit`` signature and not called: the trees grown show on
            the ``verbose`` progress bar.

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
        if self.max_samples is not None and not self.bootstrap:
            raise ValueError(
                f"{owner}: max_samples={self.max_samples!r} needs bootstrap=True; "
                "drop max_samples or set bootstrap=True."
            )
        k = ctx.n_classes
        dealt = _deal_trees(_tree_seeds(self.random_state, self.n_estimators), ctx.group.size)
        shards = [shard for part in ctx.group.shards for shard in part]
        ctx.group.put(_ROWS_KEY, _SharedRows(shards, self._row_class_weight(ctx), k))
        show = show_progress(self.verbose)
        name = type(self).__name__
        try:
            with StepProgress(f"{name} trees", self.n_estimators, enabled=show) as bar:
                # Every worker reads all the training rows first: say so, it can take a while.
                bar.update(0, info="reading the training rows")
                summary = ctx.group.run(_load_worker, dealt)[0]  # rank 0 always grows a tree
                spec = {
                    "extra": self._extra,
                    "criterion": self.criterion,
                    "max_depth": self.max_depth,
                    "min_samples_leaf": self.min_samples_leaf,
                    "min_weight_fraction_leaf": self.min_weight_fraction_leaf,
                    "max_features": self.max_features,
                    "draws": self._bootstrap_draws(summary, k),
                    "balanced_subsample": (
                        self.bootstrap and self.class_weight == "balanced_subsample"
                    ),
                    "n_classes": k,
                }
                trees = _grow(ctx, spec, dealt, bar)
        finally:
            ctx.group.put(_ROWS_KEY, None)  # every worker lets go of its copy of the rows
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

    def _row_class_weight(self, ctx: TrainingContext) -> Any:
        """The class factor of the row weights: None, "balanced" or one float per class.

        "balanced_subsample" weighs each bootstrap sample instead (in the trees), and without
        bootstrap it is "balanced", as in scikit-learn.
        """
        if self.class_weight is None:
            return None
        if self.class_weight == "balanced_subsample":
            return None if self.bootstrap else "balanced"
        if self.class_weight == "balanced":
            return "balanced"
        return resolve_class_weight(self.class_weight, ctx.classes, np.ones(ctx.n_classes)).tolist()

    def _bootstrap_draws(self, summary: np.ndarray, k: int) -> int | None:
        """Check the rows' summary (:func:`_load_worker`); rows drawn per tree, None without
        bootstrap. A fractional ``max_samples`` is of the total weight, as in scikit-learn."""
        owner = type(self).__name__
        counts, non_finite, total, bad = summary[:k], summary[k], summary[k + 1], summary[k + 2]
        if non_finite > 0:
            raise DataError(
                f"{owner}: {int(non_finite)} feature values are NaN or infinite. Impute or "
                "drop them first, e.g. with Pipeline(Preprocessor.auto(dataset.schema), model)."
            )
        if np.count_nonzero(counts) < 2:
            raise DataError(f"{owner} needs at least two classes in the training rows.")
        if bad > 0 or not total > 0:
            raise DataError(
                f"{owner}: the row weights (sample_weight times class_weight) must be finite, "
                f"non-negative and not all zero; {int(bad)} are not, and they sum to {total}."
            )
        if not self.bootstrap:
            return None
        n_rows = int(counts.sum())
        if self.max_samples is None:
            return n_rows
        if isinstance(self.max_samples, numbers.Integral):
            return int(self.max_samples)
        draws = max(int(self.max_samples * total), 1)
        if draws < max(10, n_rows ** (1 / 3)):
            warnings.warn(
                f"{owner}: max_samples={self.max_samples} of a total weight of {total} gives "
                f"only {draws} bootstrap draws per tree; pass max_samples as an integer.",
                UserWarning,
                stacklevel=4,
            )
        return draws

    # ------------------------------------------------------------------ prediction
    def apply(self, X: Any) -> np.ndarray:
        """Leaf row (into ``value_``) reached by each sample in each tree: (n_samples, n_trees)."""
        X = self._check_predict_input(X)
        n_trees = self.tree_offsets_.shape[0] - 1
        step = max(1, _PREDICT_CELLS // max(n_trees, self.n_features_in_))
        parts = [self._apply_chunk(X[i : i + step]) for i in range(0, X.shape[0], step)]
        return np.concatenate(parts) if parts else np.zeros((0, n_trees), np.int64)

    def _apply_chunk(self, chunk: Any) -> np.ndarray:
        # Imported here: loading shardlearn (and numba with it) for a linear model stays light.
        from shardlearn.models.ensemble._forest_kernels import walk_trees

        chunk = chunk.toarray() if sp.issparse(chunk) else chunk
        # scikit-learn compares float32 features with float64 thresholds; so do we.
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        return walk_trees(
            chunk,
            np.ascontiguousarray(self.tree_offsets_[:-1]),
            self.children_left_,
            self.children_right_,
            self.feature_,
            self.threshold_,
            int(self.max_depth_),
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """Mean of the trees' leaf class distributions; columns in the order of ``classes_``."""
        leaves = self.apply(X)
        proba = np.zeros((leaves.shape[0], self.value_.shape[1]))
        for t in range(leaves.shape[1]):
            proba += self.value_[leaves[:, t]]
        return proba / max(leaves.shape[1], 1)

    @classmethod
    def _from_artifact(
        cls, meta: dict, arrays: dict[str, np.ndarray], files: dict[str, bytes]
    ) -> Any:
        """Rebuild a fitted forest, refusing node arrays prediction could not walk safely."""
        model = super()._from_artifact(meta, arrays, files)
        problem = _node_array_problem(model)
        if problem:
            raise ArtifactError(f"{cls.__name__} artifact: {problem}.")
        return model

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
    """A random forest grown in parallel; every tree sees all the training rows.

    scikit-learn's ``RandomForestClassifier``, tree for tree (see the module notes): trees are
    ``DecisionTreeClassifier`` s (best split among ``max_features`` random features), each
    grown on a bootstrap drawn from all training rows of all shards, and the forest averages
    their class probabilities. The workers share out the trees, so the forest is the same for
    any shard layout and worker count, and on arrays equals scikit-learn's for the same
    ``random_state``. Each worker that grows trees holds all the training rows (float32).

    Parameters
    ----------
    n_estimators : int, default=100
        Number of trees in the whole forest (dealt to the workers in contiguous ranges).
    criterion : {"gini", "entropy", "log_loss"}, default="gini"
    max_depth : int or None, default=None
        Maximum depth of a tree; None grows until leaves are pure or ``min_samples_leaf``.
    min_samples_leaf : int or float, default=1
        Minimum rows per leaf; a float is a fraction of all training rows.
    min_weight_fraction_leaf : float, default=0.0
        Minimum share of a tree's total weight (its bootstrap counts x row weights) per leaf.
    max_features : {"sqrt", "log2"}, int, float or None, default="sqrt"
        Features considered per split.
    class_weight : "balanced", "balanced_subsample", dict or None, default=None
        Multiplies the row weights by class: "balanced" from the class totals of ``sample_weight``
        over all rows, "balanced_subsample" from each tree's bootstrap counts ("balanced"
        without bootstrap), a dict by class label.
    bootstrap : bool, default=True
        Draw each tree's rows with replacement from all training rows, with probability
        proportional to ``sample_weight`` x class weight; without bootstrap every tree gets all
        rows with those weights.
    max_samples : int, float or None, default=None
        Draws per tree (bootstrap only): None as many as there are rows, an int that many, a
        float that fraction of the rows' total weight (of the row count when unweighted).
    random_state : int or None, default=None
        Seed of the forest: tree ``i`` gets scikit-learn's ``i``-th tree seed, so a fixed seed
        gives the same forest whatever the layout and the number of workers.
    verbose : bool or int, default=True
        Show a progress bar on stderr with the trees grown, when stderr is a terminal (see
        :func:`shardlearn.engine.show_progress`); 0 or False never. The forest is the same
        either way.

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

    # scikit-learn lists the same two for its own forest: a bootstrap drawn in proportion to
    # the weights is not one of repeated rows (the number of draws follows the row count).
    _sklearn_expected_failures: ClassVar[dict[str, str]] = {
        "check_sample_weight_equivalence_on_dense_data": (
            "as scikit-learn's RandomForestClassifier: sample_weight is not equivalent to "
            "repeating rows, the bootstrap draws as many rows as there are."
        ),
        "check_sample_weight_equivalence_on_sparse_data": (
            "as scikit-learn's RandomForestClassifier: sample_weight is not equivalent to "
            "repeating rows, the bootstrap draws as many rows as there are."
        ),
    }


@register_model("extra_trees")
class ExtraTreesClassifier(ForestClassifier):
    """Extremely randomised trees grown in parallel; every tree sees all the training rows.

    scikit-learn's ``ExtraTreesClassifier``, tree for tree. Same parameters and attributes as
    :class:`RandomForestClassifier`, but each split uses a random threshold per candidate
    feature (scikit-learn's ``ExtraTreeClassifier``), and ``bootstrap`` defaults to False: every
    tree grows on all the training rows, weighted by ``sample_weight`` x class weight.
    """

    _extra: ClassVar[bool] = True

    def __init__(
        self,
        n_estimators: int = 100,
        *,
        criterion: str = "gini",
        max_depth: int | None = None,
        min_samples_leaf: int | float = 1,
        min_weight_fraction_leaf: float = 0.0,
        max_features: str | int | float | None = "sqrt",
        class_weight: str | dict | None = None,
        bootstrap: bool = False,
        max_samples: int | float | None = None,
        random_state: int | None = None,
        verbose: bool | int = True,
    ) -> None:
        super().__init__(
            n_estimators,
            criterion=criterion,
            max_depth=max_depth,
            min_samples_leaf=min_samples_leaf,
            min_weight_fraction_leaf=min_weight_fraction_leaf,
            max_features=max_features,
            class_weight=class_weight,
            bootstrap=bootstrap,
            max_samples=max_samples,
            random_state=random_state,
            verbose=verbose,
        )
