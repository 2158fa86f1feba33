"""Shared fitting glue: turn a Dataset or in-memory arrays into a WorkerGroup with blocks.

Every distributed trainer starts with :func:`prepare_training`::

    with prepare_training(estimator, X, y, engine=engine) as ctx:
        stats = ctx.group.reduce(my_worker_fn, ...)     # my_worker_fn(state, ...)

and its worker functions read their rows with :func:`training_block`::

    def my_worker_fn(state, ...):
        block = training_block(state, "train")          # FeatureBlock(X, y, sample_weight, ...)

Opening the group, fitting the preprocessor and handing arrays off are timed as the ``start``,
``preprocess`` and ``read`` phases of the current fit
(:mod:`shardlearn.models._training.execution`).

``training_block`` is the one loader for both sources (a worker never needs to know which):

* a :class:`~shardlearn.data.Dataset` — the shards are assigned to the workers and each worker
  calls :func:`shardlearn.preprocess.load_block` with the fitted preprocessor in
  ``state.context["preprocessor"]`` (a bare estimator gets :class:`NumericColumns`, which passes
  the numeric columns through);
* arrays (``fit(X, y)``, dense or CSR) — one part per worker (labels already encoded as class
  indices), described by :class:`Shard` records so the engine assigns and reassigns them like
  Parquet shards (see :mod:`shardlearn.models._training.handoff`). An estimator whose worker
  functions release the GIL (class attribute ``_prefer_threads = True``) asks the engine for
  threads of this process (``workers(prefer="threads")``); when it gets workers that share this
  process's memory, each part is a read-only view of the caller's arrays, nothing is copied,
  and the workers check the parts for NaN/inf in parallel before training. Otherwise (worker
  processes, Ray actors) the parts are written once to a temporary directory.

Blocks are cached in ``state.cache``; after a WorkerLost the replacement worker's cache is empty
and the block is rebuilt from ``state.shards`` and ``state.context`` on first use.

Extra training rows: when ``state.context[EXTRA_TRAIN_ROWS]`` is a ``(function, token)`` pair,
``function(state)`` (module-level) returns a FeatureBlock of labelled rows that the "train" block
gets appended (self-training's pseudo-labelled rows, computed on the worker that owns the
unlabelled shards). ``token`` changes whenever those rows would; the rows are rebuilt lazily
from the context like everything else, so a replacement worker gets them too.

Array input is validated here, once for every estimator, with scikit-learn's rules and the
phrases its estimator checks look for (:func:`as_feature_matrix` for ``X``, also used at
prediction; ``_check_labels``, ``_check_weights``): 2-D, numeric (an object array of numbers
is converted), not complex, at least one row and one feature; labels a 1-D array of classes (a
column vector is raveled with a ``DataConversionWarning``; continuous, NaN or infinite labels
are refused); weights one finite non-negative value per row, not all zero. A pandas
DataFrame's string column names become the model's ``feature_names_in_``.

All the rows on every worker: :func:`iter_all_training_blocks` reads the shards of *all* workers
(listed by the driver), one block per shard in shard-index order, then their extra rows, so
every worker sees the same rows in the same order whatever the assignment (forests: every tree
draws its bootstrap from all rows). Nothing is cached in the worker; the caller keeps what it
needs (in a warm scope each shard's block is kept in the process:
:func:`shardlearn.preprocess.blocks.iter_shard_blocks`).

A random share of all the rows on every worker: :func:`dealt_training_block` reads all the rows
the same way and keeps those that :func:`deal_rows` deals to the worker's rank, a seeded deal of
the rows' global positions (shard-index order), so a worker's rows are a random sample of all
rows whatever the layout, and a replacement worker rebuilds the same sample (SGD's workers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import DataConversionWarning

from shardlearn.exceptions import DataError, SchemaError
from shardlearn.models._training.execution import timed
from shardlearn.models._training.handoff import (
    check_finite,
    hand_off_arrays,
    load_array_part,
    non_finite_parts,
    release_shared,
    share_arrays,
)
from shardlearn.models._training.labels import encode_labels, encode_with_classes

__all__ = [
    "EXTRA_TRAIN_ROWS",
    "NumericColumns",
    "TrainingContext",
    "as_feature_matrix",
    "dataframe_feature_names",
    "deal_rows",
    "dealt_training_block",
    "label_vector",
    "extra_training_rows",
    "is_dataset",
    "iter_all_training_blocks",
    "iter_training_blocks",
    "needs_labels",
    "prepared_training_blocks",
    "prepare_training",
    "training_block",
]

ARRAY_SOURCE = "arrays"
DATASET_SOURCE = "dataset"
_CACHE_KEY = "shardlearn.models.block"
EXTRA_TRAIN_ROWS = "shardlearn.models.extra_train_rows"
# Numeric storage types a bare estimator may use directly.
_NUMERIC_KINDS = ("numeric", "boolean")


@dataclass
class TrainingContext:
    """A WorkerGroup whose workers can load their training (and validation) blocks.

    Attributes
    ----------
    group : WorkerGroup
        Workers with their shards assigned and ``context`` populated.
    classes : ndarray
        Class labels (native values, sorted); the block's ``y`` holds indices into it.
    n_features : int
        Columns of a block.
    feature_names : list of str
        Name of every block column.
    splits : tuple of str
        Splits the workers can load (``"train"``, and ``"valid"`` when the dataset has one).
    preprocessor : object or None
        The fitted preprocessor (None for array input).
    dataset : Dataset or None
        The dataset trained on (None for array input).
    """

    group: Any
    classes: np.ndarray
    n_features: int
    feature_names: list[str]
    splits: tuple[str, ...] = ("train",)
    preprocessor: Any = None
    dataset: Any = None
    _owns_group: bool = True
    _tmpdir: str | None = None
    _closers: list[Any] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def close(self) -> None:
        """Close the worker group (and the engine if this context created it); remove the parts
        that array input was written to."""
        if self._owns_group and self.group is not None:
            self.group.close()
            self.group = None
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> TrainingContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NumericColumns:
    """A pass-through "preprocessor" for a bare estimator: the numeric columns, as float64.

    It has the small interface :func:`shardlearn.preprocess.load_block` needs (``transform``,
    ``input_columns``, ``label_``, ``feature_names_out_``, ``fingerprint``).

    Parameters
    ----------
    columns : list of str
        Input columns, in block column order.
    label : str or None
        The label column.
    """

    def __init__(self, columns: list[str], label: str | None = None) -> None:
        self.columns = list(columns)
        self.label_ = label
        self.input_columns = list(columns)
        self.feature_names_out_ = list(columns)
        self.n_features_out_ = len(columns)
        digest = hashlib.sha256(json.dumps([self.columns, label]).encode()).hexdigest()
        self.fingerprint = "numeric-" + digest[:16]

    def transform(self, batch: Any) -> np.ndarray:
        """The named columns of a pyarrow Table/RecordBatch, DataFrame or dict, as float64."""
        return table_to_matrix(batch, self.columns)


def table_to_matrix(batch: Any, columns: list[str]) -> np.ndarray:
    """Stack ``columns`` of a table-like object into a float64 matrix (missing -> SchemaError)."""
    out = np.empty((_num_rows(batch), len(columns)))
    for j, name in enumerate(columns):
        try:
            values = batch[name]
        except (KeyError, IndexError):
            raise SchemaError(
                f"Input is missing the column {name!r}; the model was fitted on "
                f"{', '.join(columns)}."
            ) from None
        if hasattr(values, "to_numpy"):
            values = values.to_numpy(zero_copy_only=False) if _is_arrow(values) else values
            values = values.to_numpy() if hasattr(values, "to_numpy") else values
        out[:, j] = np.asarray(values, dtype=np.float64)
    return out


def _is_arrow(values: Any) -> bool:
    return type(values).__module__.startswith("pyarrow")


def _num_rows(batch: Any) -> int:
    if hasattr(batch, "num_rows"):
        return int(batch.num_rows)
    if hasattr(batch, "shape"):
        return int(batch.shape[0])
    first = next(iter(batch.values()))
    return len(first)


def is_dataset(X: Any) -> bool:
    """Whether ``X`` is a :class:`shardlearn.data.Dataset` (without importing data eagerly)."""
    return hasattr(X, "shards") and hasattr(X, "schema") and hasattr(X, "manifest")


def prepare_training(
    estimator: Any,
    X: Any,
    y: Any = None,
    *,
    engine: Any = None,
    sample_weight: Any = None,
    preprocessor: Any = None,
    classes: Any = None,
) -> TrainingContext:
    """Start the workers for a fit and give each one its shards.

    Parameters
    ----------
    estimator : BaseEstimator
        The estimator being fitted (its name is used in error messages).
    X : Dataset, ndarray or csr_matrix
        A dataset (``y`` must be None), or a feature matrix.
    y : array-like, optional
        Labels for array input.
    engine : Engine, str or None
        Explicit engine, else the current one (see :func:`shardlearn.engine.get_engine`).
    sample_weight : array-like, optional
        Per-row weights for array input.
    preprocessor : Preprocessor, optional
        For dataset input: fitted on the workers' train shards unless already fitted. Without
        one, the dataset's numeric feature columns are used directly.
    classes : array-like, optional
        Fix the classes (``partial_fit``, warm start on new data): labels are encoded against
        them and a batch may hold fewer than two of them.

    Returns
    -------
    TrainingContext
        Close it (or use it as a context manager) to release the workers.
    """
    owner = type(estimator).__name__
    if is_dataset(X):
        if y is not None:
            raise DataError(f"{owner}.fit: pass y only with arrays; a Dataset carries its label.")
        if sample_weight is not None and not isinstance(sample_weight, str):
            raise DataError(
                f"{owner}.fit: for a Dataset, sample_weight names a weight column "
                "(sample_weight='w'); arrays of weights go with array input."
            )
        supervised = needs_labels(estimator)
        return _prepare_dataset(owner, X, engine, preprocessor, classes, sample_weight, supervised)
    if preprocessor is not None:
        raise DataError(f"{owner}.fit: a preprocessor needs a Dataset, not arrays.")
    if y is None:
        raise DataError(
            f"{owner}.fit(X, y) requires y to be passed, but the target y is None: y is "
            "required when X is an array (a Dataset carries its label)."
        )
    return _prepare_arrays(estimator, X, y, engine, sample_weight, classes)


def needs_labels(estimator: Any) -> bool:
    """Whether ``estimator`` trains on labels.

    Classifiers do (``_estimator_type == "classifier"``, the default); the unsupervised
    estimators (KMeans, PCA: ``"transformer"``, or a Pipeline ending in one) do not, so they
    also fit a dataset without a label column or with a single class.
    """
    return getattr(estimator, "_estimator_type", "classifier") == "classifier"


def _dataset_classes(owner: str, ds: Any, fixed_classes: Any, supervised: bool) -> np.ndarray:
    """The classes the workers encode labels with; checks that a classifier can train."""
    if ds.label is None:
        if supervised:
            raise DataError(
                f"{ds.uri} has no label column; ingest with --label COLUMN (label='COLUMN') to "
                f"train {owner} on it. A dataset without a label fits KMeans or PCA only."
            )
        return np.asarray([])
    classes = np.asarray(ds.classes if fixed_classes is None else fixed_classes)
    unknown = sorted(set(map(str, ds.classes)) - set(map(str, classes.tolist())))
    if unknown:
        raise DataError(
            f"{owner}: the dataset at {ds.uri} has labels {unknown} that the model does not "
            f"know; its classes are {classes.tolist()}."
        )
    if supervised and classes.size < 2:
        raise DataError(
            f"{owner} needs at least two classes in the label; the dataset at {ds.uri} has "
            f"only {list(ds.classes)}."
        )
    return classes


def _open_group(engine: Any, prefer: str | None = None) -> tuple[Any, list[Any]]:
    from shardlearn.engine import get_engine

    # get_engine shares engines created from a name and closes them at exit: never close here.
    return get_engine(engine).workers(prefer=prefer), []


def _prepare_dataset(
    owner: str,
    ds: Any,
    engine: Any,
    preprocessor: Any,
    fixed_classes: Any,
    weight_column: Any,
    supervised: bool = True,
) -> TrainingContext:
    classes = _dataset_classes(owner, ds, fixed_classes, supervised)
    if weight_column is not None and weight_column not in ds.schema.names:
        raise SchemaError(
            f"{owner}.fit: sample_weight column {weight_column!r} is not in the dataset; "
            f"columns: {', '.join(ds.schema.names)}."
        )
    if preprocessor is None:
        preprocessor = _numeric_passthrough(owner, ds, weight_column)
    train_shards = ds.shards("train")
    if not train_shards or ds.num_rows("train") == 0:
        raise DataError(f"{owner}: the dataset at {ds.uri} has no training rows.")
    splits = ("train", "valid") if "valid" in ds.splits and ds.shards("valid") else ("train",)
    shards = [shard for split in splits for shard in ds.shards(split)]
    with timed("start"):
        group, closers = _open_group(engine)
    ctx = TrainingContext(group, classes, 0, [], splits, preprocessor, ds, _closers=closers)
    try:
        with timed("start"):  # the first call waits for worker processes still starting
            group.assign(shards)
        group.put("source", DATASET_SOURCE)
        group.put("classes", classes.tolist())
        group.put("label", ds.schema.label)
        if weight_column is not None:
            group.put("weight_column", weight_column)
        if not hasattr(preprocessor, "feature_names_out_"):
            # _schema records the input columns' kinds on the fitted preprocessor (serving).
            with timed("preprocess"):
                preprocessor.fit_group(group, split="train", _schema=ds.schema)
        group.put("preprocessor", preprocessor)
    except BaseException:
        ctx.close()
        raise
    ctx.feature_names = list(preprocessor.feature_names_out_)
    ctx.n_features = len(ctx.feature_names)
    return ctx


def _numeric_passthrough(owner: str, ds: Any, weight_column: Any) -> NumericColumns:
    features = [c for c in ds.schema.feature_columns if c.name != weight_column]
    other = [c.name for c in features if c.kind not in _NUMERIC_KINDS]
    if other:
        raise SchemaError(
            f"{owner} trains on numeric features only, but the dataset has non-numeric columns "
            f"({', '.join(other)}). Use shardlearn.Pipeline(Preprocessor.auto(ds.schema), "
            f"{owner}(...)) to encode them."
        )
    return NumericColumns([c.name for c in features], ds.schema.label)


def _prepare_arrays(
    estimator: Any, X: Any, y: Any, engine: Any, sample_weight: Any, fixed_classes: Any
) -> TrainingContext:
    owner = type(estimator).__name__
    names = dataframe_feature_names(X)
    X = as_feature_matrix(owner, X)
    y = _check_labels(owner, y, X.shape[0])
    if fixed_classes is None:
        if X.shape[0] == 1:
            raise DataError(
                f"{owner} cannot train on 1 sample: it needs rows of at least two classes."
            )
        classes, y_idx = encode_labels(y, owner)
    else:
        classes, y_idx = encode_with_classes(y, fixed_classes, owner)
    weights = None if sample_weight is None else _check_weights(owner, sample_weight, X.shape[0])
    prefer = "threads" if getattr(estimator, "_prefer_threads", False) else None
    with timed("start"):
        group, closers = _open_group(engine, prefer)
    names = names or [f"x{j}" for j in range(X.shape[1])]
    ctx = TrainingContext(group, classes, X.shape[1], names, _closers=closers)
    try:
        if group.shares_memory and prefer == "threads":
            token, shards = share_arrays(X, y_idx, weights, group.size)
            ctx._closers.append(lambda: release_shared(token))
            group.assign(shards)
            if any(group.run(non_finite_parts)):  # before any worker reads a row
                check_finite(X, owner)
        else:
            # Checks that X is finite (DataError) while writing, before any worker reads a row.
            with timed("read"):
                ctx._tmpdir, shards = hand_off_arrays(X, y_idx, weights, group.size, owner)
            with timed("start"):  # the first call waits for worker processes still starting
                group.assign(shards)
        group.put("source", ARRAY_SOURCE)
        group.put("classes", classes.tolist())
        group.put("n_features", int(X.shape[1]))
    except BaseException:
        ctx.close()
        raise
    return ctx


def as_feature_matrix(owner: str, X: Any) -> Any:
    """``X`` as a CSR matrix or a C-contiguous floating-point array, checked like scikit-learn.

    Integer and object (numeric) arrays become float64; float32 stays float32. Refused with a
    DataError: not 2-D, complex, non-numeric, no rows or no columns. An object array holding
    something that is neither a number nor a string raises numpy's TypeError.
    """
    if sp.issparse(X):
        if np.iscomplexobj(X):
            raise DataError(f"{owner}: Complex data not supported; X has dtype {X.dtype}.")
        X = sp.csr_matrix(X)
        if not np.issubdtype(X.dtype, np.floating):
            X = X.astype(np.float64)
        X.sort_indices()
    else:
        X = _dense_float(owner, np.asarray(X))
    _check_not_empty(owner, X.shape)
    return X


def _dense_float(owner: str, X: np.ndarray) -> np.ndarray:
    if X.ndim != 2:
        raise DataError(
            f"{owner}: X must be 2-D (rows x features); got shape {X.shape}. Reshape your data "
            "either using array.reshape(-1, 1) if your data has a single feature or "
            "array.reshape(1, -1) if it contains a single sample."
        )
    if np.iscomplexobj(X):
        raise DataError(f"{owner}: Complex data not supported; X has dtype {X.dtype}.")
    if X.dtype == object:
        try:
            return np.ascontiguousarray(X.astype(np.float64))
        except ValueError as exc:  # a string that is not a number; TypeError passes unchanged
            raise DataError(f"{owner}: X must be numeric; {exc}.") from exc
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{owner}: X must be numeric; got dtype {X.dtype}.")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    return np.ascontiguousarray(X)


def _check_not_empty(owner: str, shape: tuple[int, ...]) -> None:
    for axis, what in ((0, "sample"), (1, "feature")):
        if shape[axis] == 0:
            raise DataError(
                f"{owner}: Found array with 0 {what}(s) (shape={tuple(shape)}) while a minimum "
                "of 1 is required."
            )


def dataframe_feature_names(X: Any) -> list[str] | None:
    """A DataFrame's column names when they are all strings (scikit-learn's rule), else None."""
    columns = getattr(X, "columns", None)
    if columns is None or sp.issparse(X) or isinstance(X, np.ndarray):
        return None
    names = list(columns)
    return names if names and all(isinstance(n, str) for n in names) else None


def label_vector(owner: str, y: Any) -> np.ndarray:
    """``y`` as a 1-D array; a column vector is raveled with a ``DataConversionWarning``."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            DataConversionWarning(
                "A column-vector y was passed when a 1d array was expected. Please change the "
                "shape of y to (n_samples,), for example using ravel()."
            ),
            stacklevel=4,
        )
        y = y.ravel()
    if y.ndim != 1:
        raise DataError(f"{owner}: y must be 1-D (one label per row); got shape {y.shape}.")
    return y


def _check_labels(owner: str, y: Any, n_rows: int) -> np.ndarray:
    """``y`` as a 1-D array of class labels for ``n_rows`` rows (see the module notes)."""
    y = label_vector(owner, y)
    if y.shape[0] != n_rows:
        raise DataError(f"{owner}: X has {n_rows} rows but y has {y.shape[0]}.")
    if y.dtype.kind == "f":
        # Linear in the rows, unlike scikit-learn's type_of_target (which sorts y).
        if np.isnan(y).any():
            raise DataError(f"{owner}: Input y contains NaN.")
        if np.isinf(y).any():
            raise DataError(
                f"{owner}: Input y contains infinity or a value too large for dtype('float64')."
            )
        if np.any(y != np.round(y)):
            raise DataError(
                f"{owner}: Unknown label type: 'continuous'. A classifier needs class labels "
                "(integers, strings or booleans), not continuous values."
            )
    return y


def _check_weights(owner: str, sample_weight: Any, n_rows: int) -> np.ndarray:
    """One finite non-negative float64 weight per row, at least one of them non-zero."""
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_rows,):
        raise DataError(
            f"{owner}: sample_weight must be a 1-D array with one weight per row ({n_rows}); "
            f"got shape {weights.shape}."
        )
    if not np.isfinite(weights).all() or weights.min() < 0:
        raise DataError(f"{owner}: sample_weight must hold {n_rows} finite non-negative values.")
    if not weights.any():
        raise DataError(
            f"{owner}: sample_weight is zero for every row; at least one weight must be positive."
        )
    return weights


def _stack(parts: list[Any]) -> Any:
    if len(parts) == 1:
        return parts[0]
    if sp.issparse(parts[0]):
        return sp.vstack(parts, format="csr")
    return np.concatenate(parts)


def training_block(state: Any, split: str = "train") -> Any:
    """This worker's rows of ``split`` as a FeatureBlock, built once and cached.

    Works for dataset and array input alike (see the module docstring). Safe to call on a
    replacement worker: the block is rebuilt from ``state.shards`` and ``state.context``.
    """
    from shardlearn.preprocess import FeatureBlock, load_block

    key = (_CACHE_KEY, split)
    token = _extra_token(state, split)
    block = state.cache.get(key)
    if block is not None and state.cache.get((*key, "token")) == token:
        return block
    if state.context.get("source") == ARRAY_SOURCE:
        parts = [load_array_part(s.uri) for s in state.shards if s.split == split]
        n_features = int(state.context.get("n_features", 0))
        names = [f"x{j}" for j in range(n_features)]
        if parts:
            X = _stack([p[0] for p in parts])
            y = np.concatenate([p[1] for p in parts])
            weights = [p[2] for p in parts if p[2] is not None]  # every part's, or none
            w = np.concatenate(weights) if len(weights) == len(parts) else None
        else:
            X, y, w = np.empty((0, n_features)), np.empty(0, dtype=np.int64), None
        block = FeatureBlock(X, y, w, names)
    else:
        block = _with_labels(load_block(state, split), split, state)
    block = _append_rows(block, extra_training_rows(state, split))
    state.cache[key] = block
    state.cache[(*key, "token")] = token
    return block


def _extra_token(state: Any, split: str) -> Any:
    extra = state.context.get(EXTRA_TRAIN_ROWS) if split == "train" else None
    return None if extra is None else extra[1]


def extra_training_rows(state: Any, split: str = "train") -> Any:
    """The extra labelled rows for ``split`` (see the module notes), cached per token, or None."""
    token = _extra_token(state, split)
    if token is None:
        return None
    key = (_CACHE_KEY, split, "extra")
    cached = state.cache.get(key)
    if cached is None or cached[0] != token:
        cached = state.cache[key] = (token, state.context[EXTRA_TRAIN_ROWS][0](state))
    return cached[1]


def _append_rows(block: Any, extra: Any) -> Any:
    """``block`` followed by ``extra``; weights are kept (ones for the side that has none)."""
    from shardlearn.preprocess import FeatureBlock

    if extra is None or extra.n_rows == 0:
        return block
    if (block.sample_weight is None) != (extra.sample_weight is None):
        block, extra = (
            FeatureBlock(
                b.X,
                b.y,
                np.ones(b.n_rows) if b.sample_weight is None else b.sample_weight,
                b.feature_names,
            )
            for b in (block, extra)
        )
    X = sp.vstack([block.X, extra.X], format="csr") if sp.issparse(block.X) else None
    if X is None:
        X = np.concatenate([block.X, np.asarray(extra.X, dtype=block.X.dtype)])
    weights = None
    if block.sample_weight is not None:
        weights = np.concatenate([block.sample_weight, extra.sample_weight])
    y = np.concatenate([block.y, np.asarray(extra.y, dtype=np.int64)])
    return FeatureBlock(X, y, weights, block.feature_names)


def _with_labels(block: Any, split: str, state: Any) -> Any:
    from shardlearn.preprocess import FeatureBlock

    if block.y is None and "label" in state.context and state.context["label"] is None:
        return block  # a dataset without a label column: only unsupervised fits get here
    if block.y is None:
        if block.X.shape[0]:
            raise DataError(f"The {split!r} rows have no label column; cannot train on them.")
        block = FeatureBlock(block.X, np.empty(0, np.int64), None, block.feature_names)
    return block


def iter_training_blocks(state: Any, split: str = "train") -> Any:
    """This worker's rows of ``split``: the cached block, or shard by shard when it is too big.

    Out-of-core: when the dataset's block would exceed the worker's memory budget
    (:func:`shardlearn.preprocess.block_budget`), the shards are streamed on every pass
    (:func:`shardlearn.preprocess.iter_blocks`) and nothing is cached. Array input is always
    one cached block. A pass over the yielded blocks visits every row once.
    """
    if state.context.get("source") == ARRAY_SOURCE or (_CACHE_KEY, split) in state.cache:
        yield training_block(state, split)
        return
    from shardlearn.preprocess import iter_blocks

    blocks = iter_blocks(state, split)
    first = next(blocks, None)
    rest = next(blocks, None)
    if rest is None:  # it fitted in memory: load_block cached it; keep our labelled view too
        yield training_block(state, split)
        return
    yield _with_labels(first, split, state)
    yield _with_labels(rest, split, state)
    for block in blocks:
        yield _with_labels(block, split, state)
    extra = extra_training_rows(state, split)
    if extra is not None and extra.n_rows:
        yield extra


def iter_all_training_blocks(
    state: Any, shards: Sequence[Any], split: str = "train"
) -> Iterator[Any]:
    """The rows of ``split`` of every worker, not only this one's, as FeatureBlocks.

    Parameters
    ----------
    state : WorkerState
        This worker's state (its context: source, preprocessor, classes, extra rows).
    shards : sequence of Shard
        Every shard of the group (``[s for part in group.shards for s in part]``).
    split : str, default "train"

    Yields
    ------
    FeatureBlock
        One per shard of ``split`` in shard-index order, then the extra training rows of all
        shards (see the module notes). The same rows in the same order on every worker, and
        nothing is cached in the worker: a replacement worker reads them again like any other
        (in a warm scope a process keeps each shard's block: ``iter_shard_blocks``).
    """
    from shardlearn.preprocess import FeatureBlock
    from shardlearn.preprocess.blocks import iter_shard_blocks

    whole = dataclasses.replace(state, shards=list(shards), cache={})
    if state.context.get("source") == ARRAY_SOURCE:
        names = [f"x{j}" for j in range(int(state.context.get("n_features", 0)))]
        for shard in sorted((s for s in shards if s.split == split), key=lambda s: s.index):
            X, y, w = load_array_part(shard.uri)
            yield FeatureBlock(X, y, w, names)
    else:
        # One block per shard (in index order), never in the worker's cache; in a warm
        # scope kept in the process, so the scope's next such fit does not transform again.
        for block in iter_shard_blocks(whole, split):
            yield _with_labels(block, split, whole)
    extra = extra_training_rows(whole, split)
    if extra is not None and extra.n_rows:
        yield extra


def prepared_training_blocks(
    state: Any, problem_key: str, cache_key: str, prepare: Callable[[dict, Any], tuple]
) -> Any:
    """Each train block with ``prepare(problem, block)`` (targets, weights, ...), computed once
    per cached block and problem; a streamed (out-of-core) block is prepared on every pass.

    ``problem`` is ``state.context[problem_key]`` and must carry a ``"token"`` that changes
    whenever what ``prepare`` computes would change.
    """
    problem = state.context[problem_key]
    cached = state.cache.get(cache_key)
    for block in iter_training_blocks(state, "train"):
        # Identity check: a streamed block is a new object on every pass.
        if cached is not None and cached[0] == problem["token"] and cached[1] is block:
            yield (block, *cached[2])
            continue
        prepared = prepare(problem, block)
        state.cache[cache_key] = cached = (problem["token"], block, prepared)
        yield (block, *prepared)


# splitmix64's increment and finaliser constants (Steele et al. 2014): a bijective mix of 64 bits
# whose output bits each depend on every input bit, so consecutive positions get unrelated keys.
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def deal_rows(seed: int, start: int, n_rows: int, n_workers: int) -> np.ndarray:
    """The worker (rank) each of the global row positions ``start .. start + n_rows - 1`` is
    dealt to: a seeded random deal that depends only on the position, not on the layout.

    Positions are taken in runs of ``n_workers`` (0..W-1, W..2W-1, ...) and each run is dealt
    out by a seeded random permutation of the ranks, so every worker gets a random sample of
    the rows, the samples' sizes differ by at most one row, and rows sorted by label are spread
    evenly (each run of W consecutive rows gives one row to every worker).

    Parameters
    ----------
    seed : int
        Seed of the deal (a non-negative int).
    start : int
        Global position of the first row.
    n_rows : int
        Number of rows.
    n_workers : int
        Number of workers (ranks ``0 .. n_workers - 1``).

    Returns
    -------
    ndarray of int64, shape (n_rows,)
    """
    first = start // n_workers * n_workers  # the run that holds ``start`` begins here
    runs = -(-(start + n_rows - first) // n_workers)
    offset = np.uint64((seed + 1) * _GOLDEN_GAMMA % 2**64)
    positions = np.arange(first, first + runs * n_workers, dtype=np.uint64)
    keys = _splitmix64(_splitmix64(positions + offset)).reshape(runs, n_workers)
    # The rank of a row's key within its run is the worker it goes to: a random permutation.
    ranks = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    return ranks.ravel()[start - first : start - first + n_rows].astype(np.int64)


def dealt_training_block(state: Any, shards: Sequence[Any], seed: int, split: str = "train") -> Any:
    """This worker's dealt share of the rows of ``split`` of all workers, as one FeatureBlock.

    Every worker reads all the rows (:func:`iter_all_training_blocks`, in shard-index order)
    and keeps the rows whose global position :func:`deal_rows` deals to its rank, in that
    order. So each worker holds a random sample of all rows, about ``1 / state.size`` of them,
    that depends on the rows' global order, ``seed`` and the worker count, and not on which
    shards the worker was assigned: a replacement worker gets the same rows. Nothing is cached.
    """
    from shardlearn.preprocess import FeatureBlock

    parts, start = [], 0
    names: list[str] = []
    for block in iter_all_training_blocks(state, shards, split):
        mine = np.flatnonzero(deal_rows(seed, start, block.n_rows, state.size) == state.rank)
        start += block.n_rows
        names = block.feature_names
        weights = None if block.sample_weight is None else np.asarray(block.sample_weight)[mine]
        parts.append(FeatureBlock(block.X[mine], np.asarray(block.y)[mine], weights, names))
    if not parts:
        n_features = int(state.context.get("n_features", 0))
        names = [f"x{j}" for j in range(n_features)]
        return FeatureBlock(np.empty((0, n_features)), np.empty(0, dtype=np.int64), None, names)
    if any(p.sample_weight is not None for p in parts):
        weights = np.concatenate(
            [np.ones(p.n_rows) if p.sample_weight is None else p.sample_weight for p in parts]
        )
    else:
        weights = None
    X = _stack([p.X for p in parts])
    return FeatureBlock(X, np.concatenate([p.y for p in parts]), weights, names)
