"""Naive Bayes from merged sufficient statistics: GaussianNB and MultinomialNB.

Each worker reduces its block to per-class statistics in one pass; the driver tree-merges them
(``WorkerGroup.reduce`` with an associative ``combine``) and derives the model exactly as
scikit-learn does from its own statistics:

* GaussianNB keeps, per class, the total weight, the mean and the sum of squared deviations
  (M2) of every feature, merged with Chan's parallel formula, so variances do not suffer the
  cancellation of sum-of-squares; plus the unweighted moments of all rows for scikit-learn's
  ``epsilon_ = var_smoothing * max(var(X))``.
* MultinomialNB keeps the weighted feature counts per class and the class weights; merging is
  addition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from shardlearn._moments import merge_moments
from shardlearn._validation import Interval, Type
from shardlearn.base import BaseEstimator
from shardlearn.exceptions import DataError
from shardlearn.models._base import ClassifierMixin
from shardlearn.models._registry import register_model
from shardlearn.models._training.chunks import chunk_rows_for
from shardlearn.models._training.fitting import (
    TrainingContext,
    iter_training_blocks,
    prepare_training,
)

__all__ = ["GaussianNB", "MultinomialNB", "merge_stacks"]


# ------------------------------------------------------------------ Gaussian statistics
def _chunk_moments(X: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """(3, p): [total weight, weighted mean, weighted M2] of the rows of ``X``."""
    p = X.shape[1]
    total = float(X.shape[0] if w is None else w.sum())
    if total == 0:
        return np.zeros((3, p))
    mean = np.average(X, axis=0, weights=w)
    centred = X - mean
    m2 = (centred * centred).sum(axis=0) if w is None else (w @ (centred * centred))
    return np.vstack((np.full(p, total), mean, m2))


def merge_stacks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chan's merge (:func:`shardlearn._moments.merge_moments`) of [weight, mean, M2] stacks."""
    return np.stack(merge_moments((a[0], a[1], a[2]), (b[0], b[1], b[2])))


def _merge_gaussian(a: dict, b: dict) -> dict:
    return {
        "classes": merge_stacks(a["classes"], b["classes"]),
        "all": merge_stacks(a["all"], b["all"]),
        "nonfinite": a["nonfinite"] + b["nonfinite"],
    }


def _gaussian_worker(state: Any, n_classes: int) -> dict | None:
    """Per-class weighted moments and unweighted overall moments of this worker's rows (None:
    it has none)."""
    stats: dict | None = None
    for block in iter_training_blocks(state, "train"):
        part = _gaussian_block(block, n_classes)
        stats = part if stats is None else _merge_gaussian(stats, part)
    return stats


def _gaussian_block(block: Any, n_classes: int) -> dict:
    X, y, w = block.X, np.asarray(block.y, dtype=np.int64), block.sample_weight
    p = X.shape[1]
    per_class = np.zeros((3, n_classes, p))
    overall = np.zeros((3, p))
    nonfinite = 0.0
    step = chunk_rows_for(p)
    for start in range(0, X.shape[0], step):
        chunk = X[start : start + step]
        chunk = chunk.toarray() if sp.issparse(chunk) else np.asarray(chunk, dtype=np.float64)
        nonfinite += float(chunk.size - np.count_nonzero(np.isfinite(chunk)))
        labels = y[start : start + step]
        weights = None if w is None else np.asarray(w[start : start + step], dtype=np.float64)
        overall = merge_stacks(overall, _chunk_moments(chunk, None))
        for k in np.unique(labels):
            rows = labels == k
            part = _chunk_moments(chunk[rows], None if weights is None else weights[rows])
            per_class[:, k] = merge_stacks(per_class[:, k], part)
    return {"classes": per_class, "all": overall, "nonfinite": nonfinite}


# ------------------------------------------------------------------ Multinomial statistics
def _multinomial_worker(state: Any, n_classes: int) -> np.ndarray | None:
    """[feature counts (K*p), class weights (K), non-finite values, negative values]; None
    when this worker has no rows."""
    total = None
    for block in iter_training_blocks(state, "train"):
        part = _multinomial_block(block, n_classes)
        total = part if total is None else total + part
    return total


def _multinomial_block(block: Any, n_classes: int) -> np.ndarray:
    X, y, w = block.X, np.asarray(block.y, dtype=np.int64), block.sample_weight
    p = X.shape[1]
    counts = np.zeros((n_classes, p))
    step = chunk_rows_for(p)
    values = X.data if sp.issparse(X) else X
    nonfinite = float(np.size(values) - np.count_nonzero(np.isfinite(values)))
    negative = float(np.count_nonzero(values < 0))
    onehot = np.zeros((len(y), n_classes))
    onehot[np.arange(len(y)), y] = 1.0 if w is None else np.asarray(w, dtype=np.float64)
    for start in range(0, X.shape[0], step):
        chunk = X[start : start + step]
        if chunk.dtype != np.float64:
            chunk = chunk.astype(np.float64)
        counts += np.asarray(chunk.T @ onehot[start : start + step]).T
    return np.concatenate((counts.ravel(), onehot.sum(axis=0), [nonfinite, negative]))


def _check_nonfinite(owner: str, count: float) -> None:
    if count > 0:
        raise DataError(
            f"{owner}: {int(count)} feature values are NaN or infinite. Impute or drop them "
            "first, e.g. with Pipeline(Preprocessor.auto(dataset.schema), model)."
        )


def _check_two_classes(owner: str, class_count: np.ndarray, classes: np.ndarray) -> None:
    present = np.flatnonzero(class_count > 0)
    if present.size < 2:
        found = repr(classes[present[0]].item()) if present.size else "none"
        raise DataError(
            f"{owner} needs at least two classes in the training rows; found only {found}."
        )


class _NaiveBayes(ClassifierMixin, BaseEstimator):
    """Shared fit/predict plumbing; subclasses give the statistics and the likelihood."""

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        engine: Any = None,
        sample_weight: Any = None,
        callback: Callable | None = None,
    ) -> Any:
        """Fit on a Dataset (one distributed pass) or on arrays; returns self."""
        self._validate_params()
        with prepare_training(self, X, y, engine=engine, sample_weight=sample_weight) as ctx:
            return self._fit_context(ctx, callback=callback)

    def _set_common(self, ctx: TrainingContext) -> None:
        self.classes_ = np.asarray(ctx.classes)
        self.n_features_in_ = ctx.n_features
        self.feature_names_in_ = list(ctx.feature_names)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior class probabilities, columns in the order of ``classes_``."""
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log posterior probabilities (normalised joint log-likelihood)."""
        jll = self._joint_log_likelihood(self._check_predict_input(X))
        return jll - logsumexp(jll, axis=1, keepdims=True)


@register_model("gaussian_nb")
class GaussianNB(_NaiveBayes):
    """Gaussian naive Bayes from merged per-class means and variances.

    Equal to scikit-learn's ``GaussianNB`` fitted on all rows at once (to 1e-10).

    Parameters
    ----------
    priors : list of float or None, default=None
        Class priors; by default the class frequencies (weighted).
    var_smoothing : float, default=1e-9
        Fraction of the largest feature variance added to every variance.

    Attributes
    ----------
    classes_, class_count_, class_prior_, theta_ (means), var_, epsilon_,
    n_features_in_, feature_names_in_
    """

    # What an artifact may restore (models._base.restore_fitted); saving refuses any other.
    _fitted_attributes: ClassVar[frozenset[str]] = frozenset(
        {
            "class_count_",
            "class_prior_",
            "classes_",
            "epsilon_",
            "feature_names_in_",
            "n_features_in_",
            "theta_",
            "var_",
        }
    )

    # Preprocessing defaults (preprocess.profiles): a Gaussian per column, dense per chunk.
    _preprocess_profile: ClassVar[str] = "compact"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "priors": [Type((list, tuple, np.ndarray)), Type(type(None))],
        "var_smoothing": [Interval("real", 0, None, closed="left")],
    }

    def __init__(self, priors: Any = None, var_smoothing: float = 1e-9) -> None:
        self.priors = priors
        self.var_smoothing = var_smoothing

    def _fit_context(self, ctx: TrainingContext, callback: Callable | None = None) -> Any:
        self._validate_params()
        owner = type(self).__name__
        stats = ctx.group.reduce(_gaussian_worker, ctx.n_classes, combine=_merge_gaussian)
        _check_nonfinite(owner, stats["nonfinite"])
        weights, means, m2 = stats["classes"]
        class_count = weights[:, 0] if weights.size else np.zeros(ctx.n_classes)
        _check_two_classes(owner, class_count, np.asarray(ctx.classes))
        overall = stats["all"]
        overall_var = overall[2] / np.where(overall[0] > 0, overall[0], 1.0)
        self.epsilon_ = float(self.var_smoothing * overall_var.max())
        with np.errstate(invalid="ignore", divide="ignore"):
            var = m2 / weights
        self.theta_ = means
        self.var_ = np.where(weights > 0, var, 0.0) + self.epsilon_
        self.class_count_ = class_count
        self.class_prior_ = self._class_prior(class_count)
        self._set_common(ctx)
        return self

    def _class_prior(self, class_count: np.ndarray) -> np.ndarray:
        if self.priors is None:
            return class_count / class_count.sum()
        priors = np.asarray(self.priors, dtype=np.float64)
        if priors.shape != class_count.shape:
            raise ValueError(
                f"GaussianNB: priors has {priors.size} values but there are "
                f"{class_count.size} classes."
            )
        if not np.isclose(priors.sum(), 1.0) or (priors < 0).any():
            raise ValueError("GaussianNB: priors must be non-negative and sum to 1.")
        return priors

    def _joint_log_likelihood(self, X: Any) -> np.ndarray:
        X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
        with np.errstate(divide="ignore"):
            log_prior = np.log(self.class_prior_)
        out = np.empty((X.shape[0], len(self.classes_)))
        for k in range(len(self.classes_)):
            normaliser = -0.5 * np.sum(np.log(2.0 * np.pi * self.var_[k]))
            diff = X - self.theta_[k]
            out[:, k] = log_prior[k] + normaliser - 0.5 * np.sum(diff * diff / self.var_[k], 1)
        return out


@register_model("multinomial_nb")
class MultinomialNB(_NaiveBayes):
    """Multinomial naive Bayes (counts, e.g. token counts) from merged per-class counts.

    Equal to scikit-learn's ``MultinomialNB`` (to 1e-10). Features must be non-negative.

    Parameters
    ----------
    alpha : float, default=1.0
        Additive (Laplace/Lidstone) smoothing.
    fit_prior : bool, default=True
        Learn class priors from the data; otherwise uniform.
    class_prior : list of float or None, default=None
        Fixed class priors.

    Attributes
    ----------
    classes_, class_count_, feature_count_, class_log_prior_, feature_log_prob_,
    n_features_in_, feature_names_in_
    """

    # What an artifact may restore (models._base.restore_fitted); saving refuses any other.
    _fitted_attributes: ClassVar[frozenset[str]] = frozenset(
        {
            "class_count_",
            "class_log_prior_",
            "classes_",
            "feature_count_",
            "feature_log_prob_",
            "feature_names_in_",
            "n_features_in_",
        }
    )

    # Preprocessing defaults (preprocess.profiles): term counts, sparse.
    _preprocess_profile: ClassVar[str] = "wide_sparse"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "alpha": [Interval("real", 0, None, closed="left")],
        "fit_prior": [Type(bool)],
        "class_prior": [Type((list, tuple, np.ndarray)), Type(type(None))],
    }

    def __init__(self, alpha: float = 1.0, fit_prior: bool = True, class_prior: Any = None):
        self.alpha = alpha
        self.fit_prior = fit_prior
        self.class_prior = class_prior

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True  # counts or frequencies: negative values are refused
        # As scikit-learn's MultinomialNB: a multinomial model of shifted Gaussian blobs (the
        # checks' data) is a poor fit, below their accuracy bar.
        tags.classifier_tags.poor_score = True
        return tags

    def _fit_context(self, ctx: TrainingContext, callback: Callable | None = None) -> Any:
        self._validate_params()
        owner = type(self).__name__
        k, p = ctx.n_classes, ctx.n_features
        stats = ctx.group.reduce(_multinomial_worker, k)
        _check_nonfinite(owner, stats[-2])
        if stats[-1] > 0:
            raise DataError(
                f"Negative values in data passed to {owner} ({int(stats[-1])} values); it needs "
                "non-negative features (counts or frequencies). Use count or TF-IDF features "
                "and scale numeric columns without centring (scale 'minmax'), or use GaussianNB."
            )
        self.feature_count_ = stats[: k * p].reshape(k, p)
        self.class_count_ = stats[k * p : k * p + k]
        _check_two_classes(owner, self.class_count_, np.asarray(ctx.classes))
        smoothed = self.feature_count_ + self.alpha
        self.feature_log_prob_ = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        self.class_log_prior_ = self._class_log_prior(k)
        self._set_common(ctx)
        return self

    def _class_log_prior(self, k: int) -> np.ndarray:
        if self.class_prior is not None:
            prior = np.asarray(self.class_prior, dtype=np.float64)
            if prior.shape != (k,):
                raise ValueError(f"MultinomialNB: class_prior needs {k} values, one per class.")
            return np.log(prior)
        if self.fit_prior:
            with np.errstate(divide="ignore"):
                return np.log(self.class_count_) - np.log(self.class_count_.sum())
        return np.full(k, -np.log(k))

    def _joint_log_likelihood(self, X: Any) -> np.ndarray:
        if sp.issparse(X):
            scores = np.asarray(X @ self.feature_log_prob_.T)
        else:
            scores = np.asarray(X, dtype=np.float64) @ self.feature_log_prob_.T
        return scores + self.class_log_prior_
