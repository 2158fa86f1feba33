"""Distributed PCA: per-shard centred statistics merged with Chan's formula, eigh on the driver.

Each worker returns, for its rows, the count ``n``, the mean ``m`` and the centred scatter
matrix ``M = sum (x - m)(x - m)^T``. Two such summaries merge exactly (Chan, Golub & LeVeque,
1979; :func:`shardlearn._moments.merge_moments`)::

    n = na + nb,  delta = mb - ma,  m = ma + delta * nb / n,
    M = Ma + Mb + outer(delta, delta) * na * nb / n

which, unlike summing raw ``x x^T`` and subtracting ``n m m^T``, does not lose precision when
the mean is large compared with the spread. The driver divides by ``n - 1`` and takes the
eigendecomposition of the ``p x p`` covariance (exact; meant for up to a few thousand
features). Component signs follow scikit-learn's ``svd_flip(u_based_decision=False)``: the
largest-magnitude entry of every component is positive.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np

from shardlearn._moments import merge_moments
from shardlearn._validation import Interval, Type
from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.exceptions import DataError
from shardlearn.models._registry import register_model
from shardlearn.models._training.fitting import TrainingContext
from shardlearn.models.cluster import UnsupervisedMixin, dense_blocks, prepare_unsupervised

__all__ = ["PCA"]


def _block_moments(X: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    mean = X.mean(0)
    centred = X - mean
    return X.shape[0], mean, centred.T @ centred


def _moments_worker(state: Any, n_features: int) -> tuple:
    """(rows, mean, centred scatter) of this worker's training rows."""
    total: tuple = (0, np.zeros(n_features), np.zeros((n_features, n_features)))
    for X, _w in dense_blocks(state):
        if X.shape[0]:
            total = merge_moments(total, _block_moments(X))
    return total


@register_model("pca")
class PCA(UnsupervisedMixin, BaseEstimator):
    """Principal component analysis from covariance statistics merged across shards.

    Parameters
    ----------
    n_components : int, float or None, default=None
        Components kept: an int; a float in (0, 1) keeps the fewest components explaining
        that fraction of the variance; None keeps ``min(n_samples, n_features)``.
    whiten : bool, default=False
        Scale the projections to unit variance.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
    explained_variance_, explained_variance_ratio_, singular_values_ : ndarray
    mean_ : ndarray of shape (n_features,)
    n_components_, n_samples_, n_features_in_, feature_names_in_

    Examples
    --------
    >>> import numpy as np
    >>> from shardlearn.models import PCA
    >>> X = np.random.default_rng(0).normal(size=(100, 5))
    >>> PCA(2).fit(X, engine="local").transform(X).shape
    (100, 2)
    """

    # What an artifact may restore (models._base.restore_fitted); saving refuses any other.
    _fitted_attributes: ClassVar[frozenset[str]] = frozenset(
        {
            "components_",
            "explained_variance_",
            "explained_variance_ratio_",
            "feature_names_in_",
            "mean_",
            "n_components_",
            "n_features_in_",
            "n_samples_",
            "singular_values_",
        }
    )

    # Preprocessing defaults (preprocess.profiles): dense float64 blocks and moments.
    _preprocess_profile: ClassVar[str] = "dense"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "n_components": [
            Interval("int", 1, None, closed="left"),
            Interval("float", 0, 1, closed="neither"),
            Type(type(None)),
        ],
        "whiten": [Type(bool)],
    }

    def __init__(self, n_components: int | float | None = None, whiten: bool = False) -> None:
        self.n_components = n_components
        self.whiten = whiten

    def fit(self, X: Any, y: Any = None, *, engine: Any = None) -> PCA:
        """Fit on a Dataset (distributed over the engine's workers) or an array.

        Parameters
        ----------
        X : Dataset, ndarray or csr_matrix of shape (n_samples, n_features)
        y : ignored
        engine : Engine or str, optional

        Returns
        -------
        self
        """
        self._validate_params()
        with prepare_unsupervised(self, X, engine=engine) as ctx:
            return self._fit_context(ctx)

    def _fit_context(self, ctx: TrainingContext, callback: Any = None) -> PCA:
        """Fit on a prepared :class:`TrainingContext`."""
        self._validate_params()
        p = int(ctx.n_features)
        n, mean, scatter = ctx.group.reduce(_moments_worker, p, combine=merge_moments)
        if n < 2:
            raise DataError(f"PCA needs at least 2 training rows; got {n} sample(s).")
        values, vectors = np.linalg.eigh(scatter / (n - 1))
        order = np.argsort(values)[::-1]
        values = np.maximum(values[order], 0.0)
        vectors = vectors[:, order].T
        signs = np.sign(vectors[np.arange(p), np.argmax(np.abs(vectors), axis=1)])
        vectors *= np.where(signs == 0, 1.0, signs)[:, None]
        k = self._resolve_components(values, n, p)
        total = values.sum()
        self.mean_ = mean
        self.components_ = vectors[:k].copy()
        self.explained_variance_ = values[:k].copy()
        self.explained_variance_ratio_ = values[:k] / total if total > 0 else np.zeros(k)
        self.singular_values_ = np.sqrt(values[:k] * (n - 1))
        self.n_components_ = int(k)
        self.n_samples_ = int(n)
        self.n_features_in_ = p
        self.feature_names_in_ = list(ctx.feature_names)
        return self

    def _resolve_components(self, values: np.ndarray, n: int, p: int) -> int:
        limit = min(n, p)
        chosen = self.n_components
        if chosen is None:
            return limit
        if isinstance(chosen, numbers.Integral):
            if chosen > limit:
                raise DataError(
                    f"PCA: n_components={chosen} but min(n_samples, n_features) = {limit}."
                )
            return int(chosen)
        ratio = np.cumsum(values) / values.sum()
        return min(int(np.searchsorted(ratio, chosen, side="right")) + 1, limit)

    def get_feature_names_out(self) -> list[str]:
        """Names of the :meth:`transform` columns: ``pca0`` ... (as scikit-learn)."""
        check_is_fitted(self, "n_components_")
        return [f"pca{i}" for i in range(self.n_components_)]

    def transform(self, X: Any) -> np.ndarray:
        """Project rows on the components (divided by their std when ``whiten``)."""
        projected = (self._check_input(X) - self.mean_) @ self.components_.T
        if self.whiten:
            projected /= np.sqrt(self.explained_variance_)
        return projected

    def fit_transform(self, X: Any, y: Any = None, *, engine: Any = None) -> np.ndarray:
        """Fit on array ``X``, then its projection."""
        return self.fit(X, engine=engine).transform(X)

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Rows in the original feature space from their projections."""
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.n_components_:
            raise DataError(
                f"PCA.inverse_transform expects {self.n_components_} columns; got shape {Z.shape}."
            )
        if self.whiten:
            Z = Z * np.sqrt(self.explained_variance_)
        return Z @ self.components_ + self.mean_
