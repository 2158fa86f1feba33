"""Parallel mini-batch SGD with parameter averaging: SGDClassifier (log loss, hinge).

One epoch = the current weights sent to every worker, each worker runs SGD over its rows in a
seeded random order, and the driver replaces the weights with the row-weighted average of the
workers' results (parameter averaging, as in Zinkevich et al. 2010). A step applies the summed
gradient of ``batch_size`` rows and the L2 shrinkage of as many per-row steps, with the learning
rate of scikit-learn's per-row schedule (``t`` counts rows), so ``batch_size=1`` is plain SGD.
With ``average=True`` (default) a worker returns the mean of its iterates over the epoch
(Polyak-Ruppert averaging), which removes most of SGD's noise at no extra pass. Multi-class
problems are one-vs-rest, like scikit-learn's ``SGDClassifier``, with its class weighting:
output k multiplies the loss of its positive rows (class k) by ``class_weight[k]`` and leaves the
other rows at their sample weight (two classes: every row by its class's weight). The step
counter ``t_`` persists, so ``partial_fit`` and ``warm_start`` continue the learning-rate
schedule where the previous call stopped.

Which rows a worker trains on: not its own shards, but a random share of all the rows. Parameter
averaging assumes every worker's rows are a sample of the same distribution; on label-sorted
arrays or ``hash:label``/``range:label`` shards a worker's own rows hold one or two classes, and
its SGD drifts towards them (measured before this design, 2 workers on sorted rows: test
accuracy 2-14 points below shuffled rows, up to 6 below scikit-learn). So at the start of a fit
every worker reads the rows of *all* shards in shard-index order
(:func:`~shardlearn.models._training.fitting.dealt_training_block`) and keeps those that a seeded
deal of their global positions gives its rank
(:func:`~shardlearn.models._training.fitting.deal_rows`: each run of W consecutive rows is dealt one
row per worker in a random order). It caches them for the epochs (about ``n / W`` rows, as before);
reading costs W passes over the data once per fit. A replacement worker after a WorkerLost reads and
deals again and gets the same rows. The alternative, averaging more often on the workers' own rows,
does not recover (measured: 1,000 label-sorted rows, 4 classes, 2 workers, 30 epochs, mean test
accuracy over 3 data sets: 1, 4 and 16 averages per epoch -- the last about one per mini-batch, one
reduce per step -- gave 0.561, 0.535 and 0.487; the deal 0.624; one worker 0.615). ``partial_fit``
deals the rows of each call the same way, from their order in that call. The rows are held in
memory: a worker's share is not streamed shard by shard when it exceeds the block budget (streaming
shards in order is exactly what makes SGD follow the layout).

What is guaranteed, for a given ``random_state``:

* The same rows in the same global order (arrays: their row order; a Dataset: its train shards
  by index, the order of ``dataset.read("train")``) give the same model for a given worker
  count, whichever worker reads which shard, after a killed worker too; a Dataset's model equals
  the model of arrays holding its rows in that order. One worker trains on all rows in order.
* Another layout or worker count is another random order of the rows, so a different model of
  the same quality: test accuracy on label-sorted arrays, ``hash:label``, ``range:label`` and
  stratified shards with 1, 2 and 4 workers stays within 0.04 of a shuffled fit (the spread of
  our fits over random row orders, measured 0.024-0.04) and is not below scikit-learn's
  ``SGDClassifier`` by more than 0.01 (tests/models/test_sgd.py).

Stopping follows scikit-learn: after ``n_iter_no_change`` epochs whose mean training loss did
not improve by ``tol`` on the best one, or after ``max_iter`` epochs (``n_iter_``, a hard
budget), with a ConvergenceWarning when ``tol`` is set (``max_iter=1`` included). ``tol=None``
runs exactly ``max_iter`` epochs without a warning; ``partial_fit`` runs one epoch and never
warns.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit
from sklearn.utils.metaestimators import available_if

from shardlearn._validation import Interval, Options, Type
from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.exceptions import ConvergenceWarning, DataError
from shardlearn.models._base import ClassifierMixin
from shardlearn.models._registry import register_model
from shardlearn.models._training.class_weight import resolve_class_weight
from shardlearn.models._training.fitting import (
    TrainingContext,
    dealt_training_block,
    prepare_training,
)
from shardlearn.models.linear_model._lbfgs import IterationInfo
from shardlearn.models.linear_model._linear import row_weights
from shardlearn.models.linear_model._losses import decision_scores

__all__ = ["SGDClassifier"]

_PROBLEM_KEY = "shardlearn.sgd.problem"
# Context key of the deal of one fit: {"token", "shards" (all of the group's), "seed"}.
_DEAL_KEY = "shardlearn.sgd.deal"
# Cache keys of a worker's dealt rows and of their targets and weights.
_DEALT_KEY = "shardlearn.sgd.dealt"
_PREPARED_KEY = "shardlearn.sgd.prepared"


def _loss_and_derivative(loss: str, Z: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output loss and dloss/dz for targets T in {-1, +1}."""
    margin = T * Z
    if loss == "hinge":
        return np.maximum(0.0, 1.0 - margin), np.where(margin < 1.0, -T, 0.0)
    return np.logaddexp(0.0, -margin), -T * expit(-margin)


def _learning_rate(problem: dict, t: float) -> float:
    schedule = problem["learning_rate"]
    if schedule == "optimal":
        return 1.0 / (problem["alpha"] * (problem["t0"] + t))
    if schedule == "invscaling":
        return problem["eta0"] / (t + 1.0) ** problem["power_t"]
    return problem["eta0"]


def _prepare_block(problem: dict, block: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets in {-1, +1} and (sample x class) weights per row and output, shape (n, K)."""
    y = np.asarray(block.y, dtype=np.int64)
    k = problem["n_outputs"]
    if k == 1:
        T = np.where(y == 1, 1.0, -1.0)[:, None]
    else:
        T = np.full((y.size, k), -1.0)
        T[np.arange(y.size), y] = 1.0
    # scikit-learn's one-vs-rest: output k weights only its positive rows by class_weight[k].
    weights = row_weights(y, block.sample_weight, problem["class_weight"], k, one_vs_rest=True)
    if weights is not None:
        weights = weights.T if weights.ndim == 2 else weights[:, None]
    return T, weights


def _dealt_rows(state: Any) -> Any:
    """This worker's dealt rows of the current fit, read from all shards once and cached."""
    deal = state.context[_DEAL_KEY]
    cached = state.cache.get(_DEALT_KEY)
    if cached is None or cached[0] != deal["token"]:
        state.cache.pop(_PREPARED_KEY, None)
        state.cache[_DEALT_KEY] = None  # free the last fit's rows before reading these
        block = dealt_training_block(state, deal["shards"], deal["seed"])
        state.cache[_DEALT_KEY] = cached = (deal["token"], block)
    return cached[1]


def _prepared_rows(state: Any) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """The dealt rows with their targets and weights, prepared once per problem."""
    block = _dealt_rows(state)
    problem = state.context[_PROBLEM_KEY]
    cached = state.cache.get(_PREPARED_KEY)
    if cached is None or cached[0] != problem["token"]:
        cached = state.cache[_PREPARED_KEY] = (problem["token"], _prepare_block(problem, block))
    return (block, *cached[1])


def _statistics_worker(state: Any, n_classes: int) -> np.ndarray:
    """[rows per class, weight per class, NaN/inf feature values] of the dealt rows."""
    block = _dealt_rows(state)
    y = np.asarray(block.y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights: np.ndarray = counts
    if block.sample_weight is not None:
        weights = np.bincount(y, weights=block.sample_weight, minlength=n_classes)
    values = np.asarray(block.X.data if hasattr(block.X, "tocsr") else block.X)
    # A finite sum proves there is no NaN/inf without a boolean copy of the rows.
    finite = bool(np.isfinite(values.sum(dtype=np.float64)))
    non_finite = 0.0 if finite else float(np.count_nonzero(~np.isfinite(values)))
    return np.concatenate((counts, weights, [non_finite]))


class _EpochState:
    """Weights, step count and running sums of one worker's epoch (across its blocks)."""

    def __init__(self, x: np.ndarray, k: int, p: int, t: float) -> None:
        self.W = x[: k * p].reshape(k, p).copy()
        self.b = x[k * p :].copy()
        self.t = t
        self.rows = 0
        self.loss_sum = 0.0
        self.W_sum, self.b_sum, self.n_avg = np.zeros_like(self.W), np.zeros_like(self.b), 0


def _sgd_block(problem: dict, s: _EpochState, X: Any, T: np.ndarray, weights: Any, rng) -> None:
    """SGD steps over one block in a random order, updating ``s`` in place."""
    order = rng.permutation(X.shape[0])
    size = problem["batch_size"]
    for start in range(0, X.shape[0], size):
        rows = np.sort(order[start : start + size])
        Xb = X[rows]
        Xb = Xb.astype(np.float64) if Xb.dtype != np.float64 else Xb
        Z = np.asarray(Xb @ s.W.T) + s.b
        value, R = _loss_and_derivative(problem["loss"], Z, T[rows])
        if weights is not None:
            value, R = value * weights[rows], R * weights[rows]
        s.loss_sum += float(value.sum())
        eta = _learning_rate(problem, s.t)
        s.W *= (1.0 - eta * problem["alpha"]) ** rows.size
        s.W -= eta * np.asarray(Xb.T @ R).T
        if problem["fit_intercept"]:
            s.b -= eta * R.sum(axis=0)
        s.t += rows.size
        if problem["average"]:
            s.W_sum += s.W
            s.b_sum += s.b
            s.n_avg += 1
    s.rows += X.shape[0]


def _sgd_epoch_worker(state: Any, x: np.ndarray, t: float, epoch: int) -> np.ndarray:
    """One SGD epoch over this worker's rows from ``x``; returns row-weighted sums."""
    problem = state.context[_PROBLEM_KEY]
    k, p = problem["n_outputs"], problem["n_features"]
    s = _EpochState(x, k, p, t)
    block, T, weights = _prepared_rows(state)
    rng = np.random.default_rng([problem["seed"], epoch, state.rank])
    _sgd_block(problem, s, block.X, T, weights, rng)
    W, b = (s.W_sum / s.n_avg, s.b_sum / s.n_avg) if s.n_avg else (s.W, s.b)
    n, steps = s.rows, s.t - t
    return np.concatenate((n * W.ravel(), n * b, [n, n * steps, s.loss_sum]))


def _has_log_loss(model: SGDClassifier) -> bool:
    """Whether ``model`` has ``predict_proba``: ``hasattr`` is False for other losses."""
    if model.loss != "log_loss":
        raise AttributeError(
            f"predict_proba is available for loss='log_loss' only (this model uses "
            f"loss={model.loss!r}); use decision_function."
        )
    return True


@register_model("sgd")
class SGDClassifier(ClassifierMixin, BaseEstimator):
    """Linear classifier trained by parallel mini-batch SGD with parameter averaging.

    Parameters
    ----------
    loss : {"hinge", "log_loss"}, default="hinge"
        Linear SVM or logistic regression.
    alpha : float, default=1e-4
        L2 regularisation strength (also sets the "optimal" learning rate).
    max_iter : int, default=1000
        Maximum epochs (passes over the data), >= 1; running all of them with ``tol`` set
        raises a ConvergenceWarning.
    tol : float or None, default=1e-3
        Stop when the epoch loss has not improved by ``tol`` for ``n_iter_no_change`` epochs.
    n_iter_no_change : int, default=5
    learning_rate : {"optimal", "invscaling", "constant"}, default="optimal"
        ``1 / (alpha (t0 + t))``, ``eta0 / (t + 1)^power_t`` or ``eta0``; t counts rows seen.
    eta0 : float, default=0.01
    power_t : float, default=0.5
    batch_size : int, default=32
        Rows per SGD step on each worker.
    fit_intercept : bool, default=True
    class_weight : dict, "balanced" or None, default=None
    warm_start : bool, default=False
        Continue from the previous weights and step counter when ``fit`` is called again.
    random_state : int, default=0
        Seed of the per-epoch shuffles.
    average : bool, default=True
        Return the average of each epoch's iterates (ASGD) instead of the last iterate.

    Attributes
    ----------
    classes_, coef_, intercept_, n_iter_ (epochs of the last fit), t_ (rows seen so far),
    loss_ (last epoch's mean loss), n_features_in_, feature_names_in_
    """

    # What an artifact may restore (models._base.restore_fitted); saving refuses any other.
    _fitted_attributes: ClassVar[frozenset[str]] = frozenset(
        {
            "classes_",
            "coef_",
            "epochs_",
            "feature_names_in_",
            "intercept_",
            "loss_",
            "n_features_in_",
            "n_iter_",
            "t_",
        }
    )

    # Preprocessing defaults (preprocess.profiles): cost follows non-zeros, not columns.
    _preprocess_profile: ClassVar[str] = "wide_sparse"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "loss": [Options(("hinge", "log_loss"))],
        "alpha": [Interval("real", 0, None, closed="neither")],
        "max_iter": [Interval("int", 1, None)],
        "tol": [Interval("real", 0, None), Type(type(None))],
        "n_iter_no_change": [Interval("int", 1, None)],
        "learning_rate": [Options(("optimal", "invscaling", "constant"))],
        "eta0": [Interval("real", 0, None, closed="neither")],
        "power_t": [Interval("real", 0, None)],
        "batch_size": [Interval("int", 1, None)],
        "fit_intercept": [Type(bool)],
        "class_weight": [Options(("balanced",)), Type(dict), Type(type(None))],
        "warm_start": [Type(bool)],
        "random_state": [Interval("int", 0, None)],
        "average": [Type(bool)],
    }
    _predict_from_proba: ClassVar[bool] = False
    # Fitted state (declared for the type checker; fit sets it, absent before).
    coef_: np.ndarray
    intercept_: np.ndarray
    t_: float
    # scikit-learn checks this class fails, and why (BaseEstimator._expected_failed_checks).
    _sklearn_expected_failures: ClassVar[dict[str, str]] = dict.fromkeys(
        (
            "check_sample_weight_equivalence_on_dense_data",
            "check_sample_weight_equivalence_on_sparse_data",
        ),
        "SGD updates row by row in a seeded order: a row given twice is two steps at different "
        "points of the path, a weight of 2 one larger step -- equal in expectation only",
    )

    def __init__(
        self,
        loss: str = "hinge",
        alpha: float = 1e-4,
        max_iter: int = 1000,
        tol: float | None = 1e-3,
        n_iter_no_change: int = 5,
        learning_rate: str = "optimal",
        eta0: float = 0.01,
        power_t: float = 0.5,
        batch_size: int = 32,
        fit_intercept: bool = True,
        class_weight: dict | str | None = None,
        warm_start: bool = False,
        random_state: int = 0,
        average: bool = True,
    ) -> None:
        self.loss = loss
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.batch_size = batch_size
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.random_state = random_state
        self.average = average

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        engine: Any = None,
        sample_weight: Any = None,
        callback: Callable[[IterationInfo], None] | None = None,
    ) -> SGDClassifier:
        """Train for up to ``max_iter`` epochs (from the previous weights with warm_start)."""
        self._validate_params()
        classes = self.classes_ if self._continuing() else None
        with prepare_training(
            self, X, y, engine=engine, sample_weight=sample_weight, classes=classes
        ) as ctx:
            return self._fit_context(ctx, callback=callback)

    def partial_fit(
        self,
        X: Any,
        y: Any = None,
        classes: Any = None,
        *,
        engine: Any = None,
        sample_weight: Any = None,
    ) -> SGDClassifier:
        """One epoch over new data, continuing from the current weights.

        The first call on arrays needs ``classes`` (every label the model will ever see).
        """
        self._validate_params()
        if hasattr(self, "classes_"):
            classes = self.classes_
        elif classes is None and y is not None:
            raise DataError(
                "SGDClassifier.partial_fit: pass classes=[...] (all labels the model will see) "
                "on the first call."
            )
        with prepare_training(
            self, X, y, engine=engine, sample_weight=sample_weight, classes=classes
        ) as ctx:
            return self._run(ctx, 1, not hasattr(self, "coef_"), tol=None)

    def _continuing(self) -> bool:
        return bool(self.warm_start) and hasattr(self, "coef_")

    def _fit_context(
        self, ctx: TrainingContext, callback: Callable[[IterationInfo], None] | None = None
    ) -> SGDClassifier:
        self._validate_params()
        return self._run(ctx, self.max_iter, not self._continuing(), self.tol, callback)

    def _run(
        self,
        ctx: TrainingContext,
        epochs: int,
        start_fresh: bool,
        tol: float | None,
        callback: Callable[[IterationInfo], None] | None = None,
    ) -> SGDClassifier:
        """Up to ``epochs`` epochs; with a ``tol`` (None: no early stopping), the ``tol`` test
        and a ConvergenceWarning when all of them ran (as scikit-learn's ``fit``)."""
        shards = [shard for part in ctx.group.shards for shard in part]
        deal = {"token": uuid.uuid4().hex, "shards": shards, "seed": int(self.random_state)}
        ctx.group.put(_DEAL_KEY, deal)
        weights = self._class_weights(ctx, start_fresh)
        class_weight = resolve_class_weight(self.class_weight, ctx.classes, weights)
        k = 1 if ctx.n_classes == 2 else ctx.n_classes
        p = ctx.n_features
        if not start_fresh and self.coef_.shape != (k, p):
            raise DataError(
                f"SGDClassifier: X has {p} features, but SGDClassifier is expecting "
                f"{self.coef_.shape[1]} features as input; continue training only on data with "
                "the same preprocessing."
            )
        x = (
            np.zeros(k * p + k)
            if start_fresh
            else np.concatenate((self.coef_.ravel(), self.intercept_))
        )
        t = 0.0 if start_fresh else float(self.t_)
        first_epoch = 0 if start_fresh else int(getattr(self, "epochs_", 0))
        ctx.group.put(_PROBLEM_KEY, self._problem(k, p, class_weight))
        best, stale, done = np.inf, 0, 0
        for epoch in range(epochs):
            sums = ctx.group.reduce(_sgd_epoch_worker, x, t, first_epoch + epoch)
            rows, steps, loss_sum = sums[-3], sums[-2], sums[-1]
            x = sums[: k * p + k] / rows
            t += steps / rows
            done += 1
            mean_loss = loss_sum / rows
            if callback is not None:
                callback(IterationInfo(done, float(mean_loss), float("nan")))
            if tol is not None:
                stale = stale + 1 if mean_loss > best - tol else 0
                best = min(best, mean_loss)
                if stale >= self.n_iter_no_change:
                    break
        else:
            if tol is not None:
                warnings.warn(
                    f"SGDClassifier reached max_iter={epochs} epochs before the loss stopped "
                    "improving; increase max_iter.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        self.classes_ = np.asarray(ctx.classes)
        self.coef_ = x[: k * p].reshape(k, p).copy()
        self.intercept_ = x[k * p :].copy()
        self.t_ = t
        self.epochs_ = first_epoch + done
        self.n_iter_ = done
        self.loss_ = float(mean_loss)
        self.n_features_in_ = p
        self.feature_names_in_ = list(ctx.feature_names)
        return self

    @staticmethod
    def _class_weights(ctx: TrainingContext, start_fresh: bool) -> np.ndarray:
        """Total weight per class; deals the rows (the workers read and cache their share) and
        checks them: DataError on NaN/inf, or a fresh fit on fewer than two classes."""
        k = ctx.n_classes
        stats = ctx.group.reduce(_statistics_worker, k)
        if stats[2 * k] > 0:
            raise DataError(
                f"SGDClassifier: {int(stats[2 * k])} feature values are NaN or infinite. Impute "
                "or drop them first, e.g. with Pipeline(Preprocessor.auto(dataset.schema), model)."
            )
        present = np.flatnonzero(stats[:k])
        if start_fresh and present.size < 2:
            found = repr(ctx.classes[present[0]].item()) if present.size else "none"
            raise DataError(
                f"SGDClassifier needs at least two classes in the training rows; found only "
                f"{found}."
            )
        return stats[k : 2 * k] if start_fresh else np.ones(k)

    def _problem(self, k: int, p: int, class_weight: np.ndarray) -> dict:
        # scikit-learn's "optimal" schedule starts at t0 chosen so that the first step has the
        # size of a typical weight (Bottou's heuristic, sklearn/linear_model/_sgd_fast).
        typical_w = np.sqrt(1.0 / np.sqrt(self.alpha))
        return {
            "token": uuid.uuid4().hex,
            "loss": self.loss,
            "n_outputs": k,
            "n_features": p,
            "alpha": float(self.alpha),
            "learning_rate": self.learning_rate,
            "eta0": float(self.eta0),
            "power_t": float(self.power_t),
            "t0": 1.0 / (self.alpha * typical_w),
            "batch_size": int(self.batch_size),
            "fit_intercept": bool(self.fit_intercept),
            "class_weight": class_weight.tolist(),
            "seed": int(self.random_state),
            "average": bool(self.average),
        }

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores ``X coef_^T + intercept_``: shape (n,) for two classes, else (n, K)."""
        check_is_fitted(self, "coef_")
        X = self._check_predict_input(X)
        scores = decision_scores(X, self.coef_, self.intercept_)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    @available_if(_has_log_loss)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities (``loss="log_loss"`` only); one-vs-rest scores normalised per row."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = expit(scores)
            return np.column_stack((1.0 - positive, positive))
        prob = expit(scores)
        return prob / prob.sum(axis=1, keepdims=True)
