"""Gradient boosting on XGBoost, in one process or across the workers: XGBoostClassifier.

Where a fit runs is chosen per fit (``execution``, :mod:`shardlearn.models._training.execution`):
when the rows fit in this process and its cores are at least the workers' (always on the local
engine), ``xgboost``'s own loop runs in the calling process with all its cores, with no
workers, tracker or hand-off (``execution_ == "in_process"``); otherwise on the workers:

One pinned call per worker: each worker builds a ``QuantileDMatrix`` from its own rows, joins
XGBoost's communicator (the driver runs the tracker) and trains with ``tree_method="hist"``;
XGBoost allreduces the quantile sketch once and the gradient histograms every level, so every
worker grows the same trees. The protocol, checkpoints and failure handling are described in
:mod:`shardlearn.models.ensemble._xgb_collective`.

What is guaranteed (each checked in ``tests/models/test_boosting.py``):

* the checkpoint interval never changes the model: row and column samples are drawn from
  (``random_state``, round), so a checkpointed or resumed run equals an uninterrupted one bit
  for bit, sampling included;
* validation scores are the values on all valid rows (``auc``/``aucpr`` from merged exact
  score statistics rather than XGBoost's per-worker average), so the early-stopping round does
  not depend on the shard layout;
* one worker equals single-process ``xgboost.train`` (hist) bit for bit without sampling; with
  several workers the model is the same when XGBoost's distributed quantile sketch is exact
  (every feature has at most ``max_bin`` distinct values) and column sampling does not change
  that; otherwise the sketch's cuts, and each worker drawing its own rows for ``subsample``,
  make small per-row differences (test AUC within 0.002 of single-process XGBoost);
* in-process training is single-process XGBoost on all the rows, so it equals one worker bit
  for bit and several workers within the same tolerance.

Continue-training (``warm_start=True``, scikit-learn's contract): a refit of a fitted model with a
larger ``n_estimators`` adds the missing rounds to the same booster -- the earlier trees are
kept as they are, and the new rounds equal ``xgboost.train(params, dtrain, rounds,
xgb_model=booster)`` on the same rows -- in every execution mode (the booster is the
checkpoint both loops start from). Rounds keep their global numbers, so with sampling a
continued fit equals one that trained all the rounds at once. A smaller ``n_estimators``, other
XGBoost parameters, features or classes are refused: the trees could not be kept.

Like LightGBM's ``dask.py``, the driver strips cluster-only settings (thread counts, tracker
address) after training: the fitted model is a plain XGBoost booster, stored in artifacts as
XGBoost's UBJSON (``booster.save_raw("ubj")``), never pickled. Loading an artifact hands
XGBoost only a booster that :mod:`._booster_file` has decoded and checked (XGBoost's own
loader crashes the process on some malformed files), and refuses one that does not fit the
model's features, rounds and classes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shardlearn._validation import Interval, Options, Type, unknown_name_message, validate_params
from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.engine import VERBOSE_CONSTRAINTS, StepProgress, show_progress
from shardlearn.exceptions import ArtifactError, DataError, WorkerLost
from shardlearn.models._base import ClassifierMixin
from shardlearn.models._registry import register_model
from shardlearn.models._training.execution import (
    EXECUTION_OPTIONS,
    add_time,
    execution_engine,
    local_cpus,
    recording,
    timed,
)
from shardlearn.models._training.fitting import TrainingContext, prepare_training
from shardlearn.models.ensemble._booster_file import checked_booster

__all__ = ["BoostingProgress", "XGBoostClassifier"]

_BOOSTER_FILE = "booster.ubj"
#: How often a chunk is restarted after lost workers before the fit gives up.
MAX_RESTARTS = 3

# Extra XGBoost tree-booster parameters accepted through ``xgb_params`` (validated here so a
# bad value is a Python error naming the parameter, not a C++ trace from XGBoost).
_EXTRA_PARAMS: dict[str, list] = {
    "max_leaves": [Interval("int", 0, None)],
    "grow_policy": [Options(("depthwise", "lossguide"))],
    "max_delta_step": [Interval("real", 0, None)],
    "colsample_bylevel": [Interval("real", 0, 1, "right")],
    "colsample_bynode": [Interval("real", 0, 1, "right")],
    "scale_pos_weight": [Interval("real", 0, None, "neither")],
    "num_parallel_tree": [Interval("int", 1, None)],
    "max_cat_to_onehot": [Interval("int", 1, None)],
    "monotone_constraints": [Type((str, tuple, list, dict))],
    "interaction_constraints": [Type((str, list))],
    "base_score": [Interval("real", 0, 1, "neither")],
    "max_cached_hist_node": [Interval("int", 1, None)],
    "nthread": [Interval("int", 1, None)],
    "verbosity": [Interval("int", 0, 3)],
}
# Parameters the estimator sets itself, and where to set them instead.
_RESERVED = {
    "objective": "it is chosen from the classes (binary:logistic or multi:softprob)",
    "num_class": "it is the number of classes in the label",
    "tree_method": "distributed training uses 'hist'",
    "eta": "use learning_rate",
    "lambda": "use reg_lambda",
    "alpha": "use reg_alpha",
    "min_split_loss": "use gamma",
    "seed": "use random_state",
    "seed_per_iteration": "samples are always seeded per round, from random_state",
    "random_state": "use random_state",
    "n_estimators": "use n_estimators",
    "num_boost_round": "use n_estimators",
    "eval_metric": "use eval_metric",
    "device": "only CPU training is supported by the distributed trainer",
}
_METRICS = {
    "binary": ("logloss", "error", "auc", "aucpr"),
    "multiclass": ("mlogloss", "merror", "auc"),
}
# Settings that describe the cluster a model was trained on, not the model.
_CLUSTER_ONLY = ("nthread",)
#: Tree levels the cost model assumes for max_depth=0 (unlimited, lossguide): XGBoost's default
#: depth.
_UNLIMITED_DEPTH_LEVELS = 6


@dataclass
class BoostingProgress:
    """What a ``fit(callback=...)`` receives after every checkpoint (every round in-process).

    Attributes
    ----------
    rounds : int
        Boosting rounds done so far.
    total : int
        ``n_estimators``.
    scores : dict
        The latest value of every validation metric (empty without a valid split).
    restarts : int
        Chunks restarted after a lost worker so far.
    """

    rounds: int
    total: int
    scores: dict[str, float] = field(default_factory=dict)
    restarts: int = 0


def _is_ray(group: Any) -> bool:
    return type(group).__module__.startswith("shardlearn.engine.ray")


def _tracker_host(group: Any) -> str:
    """The driver address workers can reach: this node's IP on Ray, loopback otherwise."""
    if _is_ray(group):
        import ray.util

        return str(ray.util.get_node_ip_address())
    return "127.0.0.1"


# Artifacts saved before the rename record the type name "GradientBoostingClassifier".
@register_model("xgboost", formerly=("GradientBoostingClassifier",))
class XGBoostClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees trained with XGBoost's collective across the workers.

    XGBoost's algorithm with XGBoost's defaults (``learning_rate=0.3``, ``max_depth=6``,
    histogram splits), not scikit-learn's ``GradientBoostingClassifier``. It was called
    ``GradientBoostingClassifier`` in shardlearn too; that name is a deprecated alias for one
    release (see :mod:`shardlearn.models`).

    Parameters
    ----------
    n_estimators : int, default=100
        Boosting rounds (trees per class for multiclass).
    learning_rate : float, default=0.3
    max_depth : int, default=6
    min_child_weight : float, default=1.0
    subsample : float, default=1.0
        Row fraction sampled per round. Each worker samples its own rows, so the sampled rows
        (not their number or distribution) depend on the worker count.
    colsample_bytree : float, default=1.0
        Column fraction sampled per tree (the same columns on every worker).
    reg_lambda : float, default=1.0
        L2 regularisation of leaf weights.
    reg_alpha : float, default=0.0
    gamma : float, default=0.0
        Minimum loss reduction to split.
    max_bin : int, default=256
        Histogram bins per feature (global quantile sketch).
    early_stopping_rounds : int or None, default=None
        Stop when ``eval_metric`` on the dataset's valid split has not improved for this many
        rounds; the model keeps the rounds up to the best one.
    eval_metric : str or None, default=None
        ``logloss``/``error``/``auc``/``aucpr`` (binary) or ``mlogloss``/``merror``/``auc``
        (multiclass); default: log loss. Always the value on all valid rows, as one process
        computes it, whatever the layout (XGBoost's distributed AUC is a per-worker average).
    checkpoint_interval : int, default=10
        Rounds between checkpoints; a lost worker costs at most this many rounds. It does not
        change the model.
    random_state : int, default=0
        Seed of the row and column sampling; round ``i`` is seeded from ``(random_state, i)``.
    xgb_params : dict or None, default=None
        Further XGBoost tree-booster parameters (``max_leaves``, ``grow_policy``,
        ``scale_pos_weight``, ``colsample_bynode``, ``nthread``...), validated before training.
    warm_start : bool, default=False
        When the model is already fitted, ``fit`` keeps its booster and trains only the rounds
        from ``n_estimators_`` to ``n_estimators`` on the data given (scikit-learn's
        continue-training). The XGBoost parameters, features and classes must be those of the
        fitted booster and ``n_estimators`` at least ``n_estimators_``; equal does nothing.
        With early stopping, the fitted model's best round and score are the ones to beat.
        Validation history (``evals_result_``) is extended (entry ``i`` is round ``i``).
    execution : {"auto", "in_process", "workers"}, default="auto"
        Where the fit runs: ``"in_process"`` trains in the calling process with all its cores
        (no workers, no tracker); ``"workers"`` on the engine's workers (Ray actors on Ray);
        ``"auto"`` picks the faster by a deterministic cost model (rows x features x tree
        levels, cores, memory; see :mod:`shardlearn.models._training.execution`). The model does not
        depend on it beyond the worker-count tolerance above.
    verbose : bool or int, default=True
        Show a progress bar of the rounds with the latest validation score (on a terminal
        only; 0 or False never).

    Attributes
    ----------
    booster_ : xgboost.Booster
        The plain fitted booster (no cluster settings).
    classes_, n_features_in_, feature_names_in_
    n_estimators_ : int
        Rounds in the model (``best_iteration_ + 1`` after early stopping): the
        ``n_estimators`` to refit with on all the data.
    best_iteration_, best_score_ : int, float or None
        With early stopping: the best round (0-based) and its validation score; None
        without early stopping.
    evals_result_ : dict
        Validation metric history, ``{"valid": {metric: [values...]}}``.
    feature_importances_ : ndarray
        Total gain per feature, normalised to sum to 1.
    split_importances_ : ndarray
        Number of splits on each feature.
    params_ : dict
        The XGBoost parameters trained with, cluster-only ones removed.
    restarts_ : int
        Chunks restarted after a lost worker.
    execution_ : str
        Where the fit ran: ``"in_process"``, ``"workers"`` or ``"ray"``.
    fit_timings_ : dict
        Seconds per phase of the fit: ``start`` (workers), ``read`` (rows to the workers and
        into blocks), ``preprocess`` (fitting the preprocessor, in a Pipeline), ``train``,
        ``evaluate`` (validation scores).

    Examples
    --------
    >>> import numpy as np
    >>> from shardlearn.engine import engine
    >>> X = np.random.default_rng(0).normal(size=(300, 4)); y = (X[:, 0] > 0).astype(int)
    >>> with engine("local", workers=1):
    ...     model = XGBoostClassifier(n_estimators=5).fit(X, y)
    >>> model.predict_proba(X[:2]).shape
    (2, 2)
    """

    # What an artifact may restore (models._base.restore_fitted); saving refuses any other.
    _fitted_attributes: ClassVar[frozenset[str]] = frozenset(
        {
            "best_iteration_",
            "best_score_",
            "classes_",
            "evals_result_",
            "execution_",
            "feature_importances_",
            "fit_timings_",
            "feature_names_in_",
            "n_estimators_",
            "n_features_in_",
            "params_",
            "restarts_",
            "split_importances_",
        }
    )

    # scikit-learn checks this class fails, and why (BaseEstimator._expected_failed_checks).
    _sklearn_expected_failures: ClassVar[dict[str, str]] = dict.fromkeys(
        (
            "check_sample_weight_equivalence_on_dense_data",
            "check_sample_weight_equivalence_on_sparse_data",
        ),
        "single-process XGBoost (XGBClassifier(tree_method='hist')) fails it too on the same "
        "data: float32 gradient sums differ by 1e-7 and a near tie between splits then goes "
        "the other way",
    )
    # Preprocessing defaults (preprocess.profiles): histograms cover every column.
    _preprocess_profile: ClassVar[str] = "compact"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_estimators": [Interval("int", 1, None)],
        "learning_rate": [Interval("real", 0, None, "neither")],
        "max_depth": [Interval("int", 0, None)],
        "min_child_weight": [Interval("real", 0, None)],
        "subsample": [Interval("real", 0, 1, "right")],
        "colsample_bytree": [Interval("real", 0, 1, "right")],
        "reg_lambda": [Interval("real", 0, None)],
        "reg_alpha": [Interval("real", 0, None)],
        "gamma": [Interval("real", 0, None)],
        "max_bin": [Interval("int", 2, None)],
        "early_stopping_rounds": [Interval("int", 1, None), Type(type(None))],
        "eval_metric": [Options(_METRICS["binary"] + _METRICS["multiclass"]), Type(type(None))],
        "checkpoint_interval": [Interval("int", 1, None)],
        "random_state": [Interval("int", 0, None)],
        "xgb_params": [Type(dict, "a dict of XGBoost parameters"), Type(type(None))],
        "warm_start": [Type(bool)],
        "execution": [Options(EXECUTION_OPTIONS)],
        "verbose": VERBOSE_CONSTRAINTS,
    }
    # The cost model's algorithm (models._execution.ALGORITHMS).
    _execution_algorithm: ClassVar[str] = "hist_boosting"

    def __init__(
        self,
        n_estimators: int = 100,
        *,
        learning_rate: float = 0.3,
        max_depth: int = 6,
        min_child_weight: float = 1.0,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        reg_lambda: float = 1.0,
        reg_alpha: float = 0.0,
        gamma: float = 0.0,
        max_bin: int = 256,
        early_stopping_rounds: int | None = None,
        eval_metric: str | None = None,
        checkpoint_interval: int = 10,
        random_state: int = 0,
        xgb_params: dict | None = None,
        warm_start: bool = False,
        execution: str = "auto",
        verbose: bool | int = True,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.gamma = gamma
        self.max_bin = max_bin
        self.early_stopping_rounds = early_stopping_rounds
        self.eval_metric = eval_metric
        self.checkpoint_interval = checkpoint_interval
        self.random_state = random_state
        self.xgb_params = xgb_params
        self.warm_start = warm_start
        self.execution = execution
        self.verbose = verbose

    # ------------------------------------------------------------------ parameters
    def _validate_params(self) -> None:
        super()._validate_params()
        owner = type(self).__name__
        extra = dict(self.xgb_params or {})
        for name in extra:
            if not isinstance(name, str):
                raise ValueError(f"{owner}: xgb_params keys must be strings. Got {name!r}.")
            if name in _RESERVED:
                raise ValueError(f"{owner}: xgb_params may not set {name!r}: {_RESERVED[name]}.")
            if name not in _EXTRA_PARAMS:
                raise ValueError(
                    f"{owner}: "
                    + unknown_name_message("XGBoost parameter in xgb_params", name, _EXTRA_PARAMS)
                )
        validate_params(f"{owner} (xgb_params)", extra, _EXTRA_PARAMS)

    def _booster_params(self, n_classes: int, nthread: int) -> dict[str, Any]:
        """XGBoost parameters for ``n_classes``; checks the metric fits the problem."""
        kind = "binary" if n_classes == 2 else "multiclass"
        if self.eval_metric is not None and self.eval_metric not in _METRICS[kind]:
            raise ValueError(
                f"The 'eval_metric' parameter of {type(self).__name__} must be one of "
                f"{', '.join(map(repr, _METRICS[kind]))} for a {kind} problem. "
                f"Got {self.eval_metric!r}."
            )
        params: dict[str, Any] = {
            "objective": "binary:logistic" if kind == "binary" else "multi:softprob",
            "tree_method": "hist",
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "alpha": self.reg_alpha,
            "gamma": self.gamma,
            "max_bin": self.max_bin,
            "seed": self.random_state,
            "eval_metric": self.eval_metric or ("logloss" if kind == "binary" else "mlogloss"),
            "nthread": nthread,
        }
        if kind == "multiclass":
            params["num_class"] = n_classes
        params.update(self.xgb_params or {})
        return params

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        engine: Any = None,
        sample_weight: Any = None,
        callback: Callable[[BoostingProgress], None] | None = None,
    ) -> Any:
        """Train on a Dataset (one XGBoost worker per engine worker) or on arrays.

        Parameters
        ----------
        X : Dataset, ndarray or csr_matrix of shape (n_samples, n_features)
            With a Dataset that has a valid split, it is evaluated every round (and used for
            early stopping).
        y : array-like of shape (n_samples,), optional
            Labels, for array input only.
        engine : Engine or str, optional
            Engine to train on; default: the current engine.
        sample_weight : array-like of shape (n_samples,), optional
            Row weights (array input) or a weight column name (Dataset).
        callback : callable, optional
            Called on the driver with a :class:`BoostingProgress` after every checkpoint
            (every round when the fit runs in-process).

        Returns
        -------
        self
        """
        self._validate_params()
        with recording(), execution_engine(self, X, engine) as run_on:
            with prepare_training(self, X, y, engine=run_on, sample_weight=sample_weight) as ctx:
                return self._fit_context(ctx, callback=callback)

    def _execution_passes(self) -> int:
        """Passes over the rows for the cost model: one per tree level of every round."""
        levels = self.max_depth or _UNLIMITED_DEPTH_LEVELS
        trees = int((self.xgb_params or {}).get("num_parallel_tree", 1))
        return self.n_estimators * levels * trees

    def build_matrices(self, state: Any) -> None:
        """On a worker, in a warm scope: build the matrix an in-process fit of this model on
        the worker's ``train`` rows (no ``valid`` split) trains on, where that fit finds it
        (:mod:`shardlearn._warm`). A search builds its refit's ahead, beside its first trials."""
        from shardlearn.models.ensemble import _xgb_collective as coll

        coll._reused_matrices(state, self.max_bin, use_valid=False)

    def _fit_context(
        self, ctx: TrainingContext, callback: Callable[[BoostingProgress], None] | None = None
    ) -> Any:
        """Fit on a prepared :class:`TrainingContext` (used by ``fit`` and by Pipeline).

        A group whose one worker is this process trains in-process (unless ``execution`` is
        ``"workers"``); any other group trains with the collective.
        """
        from shardlearn.models.ensemble import _xgb_collective as coll

        self._validate_params()
        mode = self._execution_mode(ctx.group)
        warm = self._warm_start_from(ctx)
        if warm is not None and warm.rounds == self.n_estimators:
            return self  # no round to add: scikit-learn's warm start leaves the model as it is
        with recording() as timings:
            with timed("read"):  # the first ping loads every worker's blocks
                probes = ctx.group.run(coll.ping_worker, None, ctx.splits)
            use_valid = self._check_rows(ctx, probes)
            stopping = self._stopping(warm)
            reporter = self._reporter(callback, ctx.n_classes, use_valid)
            with timed("train"), reporter as report:
                result, params = self._train(ctx, mode, use_valid, stopping, report, warm)
                # Measured inside training: taken out of its time.
                add_time("evaluate", result.evaluate_seconds)
            if warm is not None:
                result.history = _joined_history(warm.history, result.history)
            self._set_fitted(ctx, result, params)
            self.execution_ = mode
            self.fit_timings_ = timings.as_dict()
        return self

    def _train(
        self,
        ctx: TrainingContext,
        mode: str,
        use_valid: bool,
        stopping: dict | None,
        report: _Reporter,
        warm: _WarmStart | None = None,
    ) -> tuple[_BoostResult, dict]:
        """Train in this process (all its cores) or with the collective (a share each), from
        round 0 or, warm-started, on top of the fitted booster."""
        from shardlearn.models.ensemble import _xgb_collective as coll

        start, first_round = (None, 0) if warm is None else (warm.model, warm.rounds)
        if mode == "in_process":
            params = self._booster_params(ctx.n_classes, local_cpus())
            out = ctx.group.run(
                coll.train_in_process,
                params,
                self.max_bin,
                use_valid,
                self.n_estimators - first_round,
                stopping,
                report.round,
                start,
                first_round,
            )[0]
            result = _BoostResult(
                out["booster"], out["history"], out["stopping"], 0, out["evaluate_seconds"]
            )
            return result, params
        nthread = max(1, (os.cpu_count() or 1) // ctx.group.size)
        params = self._booster_params(ctx.n_classes, nthread)
        run = _BoostRun(ctx.group, coll, params, use_valid, ctx.splits)
        run.warm_session = coll.warm_session(ctx, self.max_bin, use_valid)
        # The fitted booster is the checkpoint the first chunk continues from.
        run.model, run.rounds = start, first_round
        run.train(self.n_estimators, self.checkpoint_interval, stopping, report)
        return run.result(), params

    def _warm_start_from(self, ctx: TrainingContext) -> _WarmStart | None:
        """The fitted booster this fit continues (``warm_start``), after checking it can."""
        if not self.warm_start or getattr(self, "_booster", None) is None:
            return None
        owner = f"{type(self).__name__}(warm_start=True)"
        if ctx.n_features != self.n_features_in_ or not np.array_equal(
            np.asarray(ctx.classes), self.classes_
        ):
            raise ValueError(
                f"{owner} adds trees to a booster fitted on {self.n_features_in_} features and "
                f"classes {self.classes_.tolist()}; this data has {ctx.n_features} features and "
                f"classes {np.asarray(ctx.classes).tolist()}. Fit data with the same columns "
                "and classes, or set warm_start=False to train a new booster."
            )
        now = _plain_params(self._booster_params(ctx.n_classes, 1))
        before = _plain_params(self.params_)
        changed = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
        if changed:
            was = ", ".join(f"{k}={before.get(k)!r} (now {now.get(k)!r})" for k in changed)
            raise ValueError(
                f"{owner} adds trees to the fitted booster, which was trained with {was}; its "
                "trees cannot be kept under other parameters. Set them back, or set "
                "warm_start=False to train a new booster."
            )
        if self.n_estimators < self.n_estimators_:
            raise ValueError(
                f"The 'n_estimators' parameter of {owner} must be larger than or equal to "
                f"n_estimators_={self.n_estimators_} (the rounds in the fitted booster). Got "
                f"{self.n_estimators}. Raise it, or set warm_start=False to train a new booster."
            )
        # Scores of rounds early stopping cut off are dropped with them: entry i is round i.
        rounds = self.n_estimators_
        history = {
            name: {metric: list(values[:rounds]) for metric, values in metrics.items()}
            for name, metrics in self.evals_result_.items()
        }
        return _WarmStart(bytes(self._booster.save_raw("ubj")), rounds, history)

    def _stopping(self, warm: _WarmStart | None) -> dict | None:
        """The early-stopping state to start from: fresh, or the fitted model's best round."""
        if not self.early_stopping_rounds:
            return None
        stopping: dict[str, Any] = {"rounds": self.early_stopping_rounds}
        if warm is not None and self.best_iteration_ is not None:
            stopping.update(best_score=self.best_score_, best_iteration=self.best_iteration_)
        return stopping

    def _execution_mode(self, group: Any) -> str:
        """Where this fit runs on ``group``; refuses ``in_process`` on a group of workers."""
        here = group.size == 1 and group.shares_memory
        if self.execution == "in_process" and not here:
            raise ValueError(
                f"{type(self).__name__}: execution='in_process' cannot be honoured here: the "
                f"caller has already started {group.size} worker(s) in other processes. Use "
                "execution='auto' or 'workers', or fit the estimator itself."
            )
        if here and self.execution != "workers":
            return "in_process"
        return "ray" if _is_ray(group) else "workers"

    @contextlib.contextmanager
    def _reporter(
        self, callback: Callable | None, n_classes: int, use_valid: bool
    ) -> Iterator[_Reporter]:
        """The progress bar (when it shows) and the user's callback, fed the same rounds."""
        metric = self.eval_metric or ("logloss" if n_classes == 2 else "mlogloss")
        # A caller that passes a callback shows its own progress; one bar is enough.
        show = callback is None and show_progress(self.verbose)
        name = f"{type(self).__name__} rounds"
        with StepProgress(name, self.n_estimators, enabled=show) as bar:
            yield _Reporter(bar, callback, self.n_estimators, metric if use_valid else None)

    def _check_rows(self, ctx: TrainingContext, probes: list[dict]) -> bool:
        """DataError for a single class; whether there is a valid split to evaluate on."""
        owner = type(self).__name__
        counts = np.zeros(ctx.n_classes)
        for probe in probes:
            counts[: len(probe["counts"])] += probe["counts"]
        if np.count_nonzero(counts) < 2:
            raise DataError(f"{owner} needs at least two classes in the training rows.")
        valid_rows = sum(p["valid_rows"] for p in probes)
        if self.early_stopping_rounds is not None and valid_rows == 0:
            raise DataError(
                f"{owner}: early_stopping_rounds={self.early_stopping_rounds} needs a valid "
                "split; ingest the data with a valid fraction (e.g. split=(0.8, 0.1, 0.1)) or "
                "set early_stopping_rounds=None."
            )
        return valid_rows > 0

    def _set_fitted(self, ctx: TrainingContext, result: _BoostResult, params: dict) -> None:
        booster = result.booster
        best = (result.stopping or {}).get("best_iteration")
        if best is not None:
            booster = booster[: best + 1]
        self._booster = booster
        self.best_iteration_ = best
        self.best_score_ = (result.stopping or {}).get("best_score")
        self.n_estimators_ = int(booster.num_boosted_rounds())
        self.evals_result_ = result.history
        self.restarts_ = result.restarts
        self.params_ = {k: v for k, v in params.items() if k not in _CLUSTER_ONLY}
        self.classes_ = np.asarray(ctx.classes)
        self.n_features_in_ = ctx.n_features
        self.feature_names_in_ = list(ctx.feature_names)
        self._set_importances()

    def _set_importances(self) -> None:
        p = self.n_features_in_
        gain, splits = np.zeros(p), np.zeros(p)
        for kind, out in (("total_gain", gain), ("weight", splits)):
            for name, value in self._booster.get_score(importance_type=kind).items():
                out[int(name[1:])] = float(value)
        total = gain.sum()
        self.feature_importances_ = gain / total if total > 0 else gain
        self.split_importances_ = splits

    # ------------------------------------------------------------------ prediction
    @property
    def booster_(self) -> Any:
        """The fitted ``xgboost.Booster``."""
        check_is_fitted(self)
        return self._booster

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        import xgboost as xgb

        X = self._check_predict_input(X)
        if sp.issparse(X):
            raw = self._booster.predict(xgb.DMatrix(X))
        else:
            raw = self._booster.inplace_predict(X)
        raw = np.asarray(raw, dtype=np.float64)
        if len(self.classes_) == 2:
            return np.column_stack((1.0 - raw, raw))
        return raw.reshape(X.shape[0], len(self.classes_))

    def importances(self) -> dict[str, dict[str, float]]:
        """Feature importances of both kinds, by feature name.

        Returns
        -------
        dict
            ``{"gain": {feature: share of the total gain}, "split": {feature: splits}}``.
        """
        check_is_fitted(self)
        names = list(self.feature_names_in_)
        return {
            "gain": dict(zip(names, map(float, self.feature_importances_), strict=True)),
            "split": dict(zip(names, map(float, self.split_importances_), strict=True)),
        }

    # ------------------------------------------------------------------ artifact hooks
    def _to_artifact(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        """Metadata and importances, plus the booster as XGBoost UBJSON."""
        meta, arrays, files = super()._to_artifact()
        files[_BOOSTER_FILE] = bytes(self._booster.save_raw("ubj"))
        return meta, arrays, files

    @classmethod
    def _from_artifact(
        cls, meta: dict, arrays: dict[str, np.ndarray], files: dict[str, bytes]
    ) -> Any:
        """Rebuild a fitted model from :meth:`_to_artifact` output."""
        import xgboost as xgb

        if _BOOSTER_FILE not in files:
            raise ArtifactError(f"The artifact has no {_BOOSTER_FILE}; it is not a booster.")
        model = super()._from_artifact(meta, arrays, files)
        # XGBoost's loader crashes the process on some malformed files: it only ever sees a
        # booster checked and re-encoded by checked_booster.
        checked = checked_booster(files[_BOOSTER_FILE], _BOOSTER_FILE)
        try:
            booster = xgb.Booster(model_file=bytearray(checked))
        except xgb.core.XGBoostError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
            raise ArtifactError(f"XGBoost cannot load {_BOOSTER_FILE}: {reason}") from None
        _check_fits(model, booster)
        model._booster = booster
        return model


def _check_fits(model: XGBoostClassifier, booster: Any) -> None:
    """Refuse a booster that does not fit the model's features, rounds and classes."""
    binary = len(model.classes_) == 2
    groups = int(json.loads(booster.save_config())["learner"]["learner_model_param"]["num_class"])
    found = (booster.num_features(), booster.num_boosted_rounds(), groups)
    expected = (model.n_features_in_, model.n_estimators_, 0 if binary else len(model.classes_))
    if found != expected:
        raise ArtifactError(
            f"{_BOOSTER_FILE} holds {found[0]} features, {found[1]} rounds and {found[2]} "
            f"classes (0 = binary) but the model has {expected[0]}, {expected[1]} and "
            f"{expected[2]}: the booster does not belong to this model."
        )


def _plain_params(params: dict) -> dict:
    """XGBoost parameters as JSON reads them back (an artifact's tuples are lists), without
    the cluster-only ones: what two boosters must share for one to continue the other."""
    kept = {k: v for k, v in params.items() if k not in _CLUSTER_ONLY}
    return json.loads(json.dumps(kept, sort_keys=True, default=str))


def _joined_history(before: dict, after: dict) -> dict:
    """Validation histories of a warm start: the fitted model's rounds, then the new ones."""
    joined = {name: {m: list(v) for m, v in metrics.items()} for name, metrics in before.items()}
    for name, metrics in after.items():
        for metric, values in metrics.items():
            joined.setdefault(name, {}).setdefault(metric, []).extend(values)
    return joined


@dataclass
class _WarmStart:
    """The fitted booster a warm start continues: UBJSON, its rounds, its validation history."""

    model: bytes
    rounds: int
    history: dict[str, dict[str, list[float]]]


@dataclass
class _BoostResult:
    """A finished training run, wherever it ran."""

    booster: Any
    history: dict[str, dict[str, list[float]]]
    stopping: dict[str, Any] | None
    restarts: int
    evaluate_seconds: float


class _Reporter:
    """Feeds the progress bar and the user's callback from either training loop."""

    def __init__(
        self, bar: StepProgress, callback: Callable | None, total: int, metric: str | None
    ) -> None:
        self.bar, self.callback, self.total, self.metric = bar, callback, total, metric

    def round(self, rounds: int, score: float | None) -> None:
        """One in-process round done (``score``: its validation score, None without)."""
        if not self.bar.enabled and self.callback is None:
            return  # nobody to tell (a search's trial): no text to format every round
        scores = {} if score is None or self.metric is None else {self.metric: score}
        self.checkpoint(rounds, scores, 0)

    def checkpoint(self, rounds: int, scores: dict[str, float], restarts: int) -> None:
        """``rounds`` done in all, the latest validation ``scores``."""
        info = "  ".join(f"valid {name} {value:.6g}" for name, value in scores.items())
        if restarts:
            info += f"  restarts {restarts}"
        self.bar.update(rounds, info=info.strip())
        if self.callback is not None:
            self.callback(BoostingProgress(rounds, self.total, scores, restarts))


class _BoostRun:
    """The driver's loop: sessions, chunks, checkpoints and restarts after lost workers."""

    def __init__(
        self, group: Any, coll: Any, params: dict, use_valid: bool, splits: tuple[str, ...]
    ) -> None:
        self.group, self.coll, self.params = group, coll, params
        self.use_valid, self.splits = use_valid, splits
        self.host = _tracker_host(group)
        self.model: bytes | None = None  # the checkpoint
        self.rounds = 0
        self.history: dict[str, dict[str, list[float]]] = {}
        self.stopping: dict[str, Any] | None = None
        self.restarts = 0
        self.session: str | None = None
        # In a warm scope, the id under which workers keep their matrices across fits.
        self.warm_session: str | None = None
        self.evaluate_seconds = 0.0

    def _failed(self, what: str, results: list[dict]) -> None:
        self.restarts += 1
        self.session = None
        if self.restarts > MAX_RESTARTS:
            errors = "; ".join(r.get("error", r["status"]) for r in results if r["status"] != "ok")
            raise WorkerLost(
                f"XGBoost {what} failed {self.restarts} times because workers were lost; giving "
                f"up after {MAX_RESTARTS} restarts. Last errors: {errors}"
            )

    def _ensure_session(self) -> str | None:
        """The session whose matrices every worker holds (built now if needed); None if
        building failed."""
        current = self.session or self.warm_session  # an earlier fit's may still be held
        if current is not None:
            probes = self.group.run(self.coll.ping_worker, current, self.splits)
            if all(p["has_session"] for p in probes):
                self.session = current
                return current
        session = self.warm_session or self.coll.new_session()
        built = self._collective(
            "setup", self.coll.build_worker, session, int(self.params["max_bin"]), self.use_valid
        )
        if built is None:
            return None
        self.session = session
        return session

    def _collective(self, what: str, fn: Callable, session: str, *args: Any) -> list[dict] | None:
        """``fn(state, session, worker_args, *args)`` on every worker under a new tracker.

        None when workers were lost (:meth:`_failed`). A worker lost during the run stops the
        tracker at once (the engine's ``on_worker_lost``): the others fail instead of waiting
        for it until the tracker's timeout, and its replacement is refused. The tracker is
        stopped too when the run fails or the driver gives up.
        """
        rendezvous = self.coll.Rendezvous(self.group.size, self.host)
        try:
            with self.group.on_worker_lost(lambda rank: rendezvous.abort()):
                results = self.group.run(fn, session, rendezvous.worker_args, *args)
        except BaseException:
            rendezvous.abort()
            raise
        if all(r["status"] == "ok" for r in results):
            rendezvous.close()
            return results
        rendezvous.abort()  # every worker has left it: nothing is waiting for it any more
        self._failed(what, results)
        return None

    def train(
        self,
        total: int,
        interval: int,
        stopping: dict | None,
        report: _Reporter,
    ) -> None:
        self.stopping = stopping
        while self.rounds < total:
            session = self._ensure_session()
            if session is None:
                continue
            chunk = min(interval, total - self.rounds)
            results = self._collective(
                "training",
                self.coll.boost_worker,
                session,
                self.params,
                self.rounds,
                chunk,
                self.model,
                self.stopping,
            )
            if results is None:
                continue
            if self._checkpoint(results[0], report):
                return

    def result(self) -> _BoostResult:
        """The trained booster (from the last checkpoint) and what came with it."""
        import xgboost as xgb

        booster = xgb.Booster(model_file=bytearray(self.model or b""))
        return _BoostResult(
            booster, self.history, self.stopping, self.restarts, self.evaluate_seconds
        )

    def _checkpoint(self, lead: dict, report: _Reporter) -> bool:
        """Keep rank 0's booster as the checkpoint; True when early stopping fired."""
        self.model = lead["model"]
        scores: dict[str, float] = {}
        for name, metrics in lead["history"].items():
            target = self.history.setdefault(name, {})
            for metric, values in metrics.items():
                target.setdefault(metric, []).extend(float(v) for v in values)
                scores[metric] = float(values[-1])
        self.rounds += lead["rounds"]
        self.stopping = lead["stopping"]
        self.evaluate_seconds += lead["evaluate_seconds"]
        report.checkpoint(self.rounds, scores, self.restarts)
        stop = self.stopping
        return bool(stop and stop["since_best"] >= stop["rounds"])
