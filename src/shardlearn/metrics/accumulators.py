"""Mergeable accumulators: everything the metrics need, filled shard by shard.

Evaluation runs where the shards live. Each worker predicts its shards batch by batch and folds
every batch into an :class:`EvaluationAccumulator`; the driver merges one accumulator per worker
and derives every metric from the merged state (:mod:`shardlearn.metrics.functions`). Only these
small fixed-size states cross the network, never predictions.

The parts, all weighted by the sample weights (1 when there are none):

- :class:`ConfusionMatrix` ``K x K`` (rows: true class, columns: predicted = argmax of the
  probabilities). Accuracy, precision/recall/F1, kappa and MCC come from it exactly.
- :class:`ScoreHistogram` per class, the weight of positives and negatives (one-vs-rest) per
  score bin: ROC and precision-recall curves and their areas.
- :class:`LossSums`: log-loss and Brier sums, total weight, sum of squared weights.
- :class:`CalibrationBins` per class, uniform probability bins (``calibration_curve``'s bins):
  weight, sum of predicted probability, sum of outcomes.

Score histogram and its error bound
-----------------------------------
While the number of distinct scores of every class stays at or below ``bins``, the histogram
keeps the distinct scores themselves (exact mode): curves and areas are then exactly those of
``sklearn.metrics``. Beyond that it collapses, for good, into ``bins`` fixed bins (2**16 by
default; fewer for many classes so that one accumulator stays under :data:`BIN_BUDGET` bins in
total). The bins are uniform in ``t(p) = (p + g(p)) / 2`` where ``g`` is the log-odds of ``p``
rescaled to [0, 1] over [1e-12, 1 - 1e-12]: a bin is never wider than ``2 / bins`` in
probability (3e-5 for 2**16 bins) and, in the tails where confident models put most of their
scores, never wider than about ``0.002 * p * (1 - p)``. ``t`` is monotone, so binning only
merges neighbouring scores, and all scores that are equal stay together.

A binned ROC-AUC treats a positive and a negative in the same bin as a tie (half a pair). Only
those pairs can be mis-ordered, so::

    |AUC_binned - AUC_exact| <= 1/2 * sum_b pos_b * neg_b / (P * N)

(``pos_b``, ``neg_b``: weights of positives and negatives in bin ``b``; ``P``, ``N``: totals).
For average precision, every precision inside bin ``b`` lies between
``lo_b = TP_above / (TP_above + FP_above + neg_b)`` and
``hi_b = (TP_above + pos_b) / (TP_above + pos_b + FP_above)``, so::

    |AP_binned - AP_exact| <= sum_b pos_b / P * (hi_b - lo_b)

Both bounds are computed from the data (:func:`shardlearn.metrics.functions.roc_auc` returns
it) and are 0 in exact mode. A bound is large only when many positives and negatives share
scores closer than a bin width; with all scores equal the AUC is exactly 0.5 in both modes.
"""

from __future__ import annotations

import copy
import math
from typing import Self

import numpy as np

from shardlearn.exceptions import DataError

__all__ = [
    "BIN_BUDGET",
    "DEFAULT_BINS",
    "DEFAULT_CALIBRATION_BINS",
    "CalibrationBins",
    "ConfusionMatrix",
    "EvaluationAccumulator",
    "LossSums",
    "ScoreHistogram",
    "default_bins",
    "score_bin",
]

DEFAULT_BINS = 2**16
# 2**20 bins of float64 for positives and as many for negatives: 16 MiB each per accumulator.
# Past 16 classes the per-class bin count shrinks (to a power of two) to stay under it.
BIN_BUDGET = 2**20
MIN_BINS = 2**10
DEFAULT_CALIBRATION_BINS = 10
# Log-odds are taken on [LOGIT_EPS, 1 - LOGIT_EPS]: below 1e-12 float64 scores are noise.
LOGIT_EPS = 1e-12
_LOGIT_RANGE = 2.0 * math.log((1.0 - LOGIT_EPS) / LOGIT_EPS)


def default_bins(n_classes: int) -> int:
    """Bins per class: 2**16, reduced for many classes to keep ``n_classes * bins`` in budget."""
    bins = DEFAULT_BINS
    while bins > MIN_BINS and n_classes * bins > BIN_BUDGET:
        bins //= 2
    return bins


def score_bin(scores: np.ndarray, bins: int) -> np.ndarray:
    """Bin index (int64) of each probability, uniform in the blended scale described above."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    q = np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
    log_odds = np.log(q / (1.0 - q))  # 1 - q is exact for q >= 0.5 (Sterbenz)
    t = 0.5 * (p + (log_odds + 0.5 * _LOGIT_RANGE) / _LOGIT_RANGE)
    return np.minimum((t * bins).astype(np.int64), bins - 1)


def _check_inputs(
    y_true: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate one batch; return int64 labels, the probabilities and float64 weights."""
    y = np.asarray(y_true)
    p = np.asarray(proba)
    if p.ndim != 2 or p.shape[1] != n_classes:
        raise DataError(
            f"Probabilities must have shape (n_rows, {n_classes}) (one column per class); "
            f"got shape {p.shape}. Pass predict_proba's output with a column for every class."
        )
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise DataError(
            f"y_true must be a 1-d array with one class index per row of the probabilities "
            f"({p.shape[0]} rows); got shape {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y_true must hold integer class indices; got dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(
            f"y_true holds class index {int(y.min() if y.min() < 0 else y.max())}, outside "
            f"0..{n_classes - 1}; class indices are positions in the list of classes."
        )
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.size and not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
        raise DataError(
            "Probabilities must be finite and within [0, 1]; the model's predict_proba "
            "returned NaN, infinity or values outside that range."
        )
    if sample_weight is None:
        w = np.ones(y.shape[0], dtype=np.float64)
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != y.shape:
            raise DataError(f"sample_weight must have shape {y.shape}; got {w.shape}.")
        if not np.all(np.isfinite(w)) or (w.size and w.min() < 0):
            raise DataError("sample_weight must be finite and >= 0.")
    return y.astype(np.int64, copy=False), p, w


class ConfusionMatrix:
    """Weighted confusion matrix: ``matrix[i, j]`` = weight of rows of class i predicted j.

    Merges build new arrays instead of adding in place: arrays that come back from Ray's
    object store are read-only.

    Parameters
    ----------
    n_classes : int
        Number of classes ``K``; class indices are ``0..K-1``.
    """

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.matrix = np.zeros((n_classes, n_classes), dtype=np.float64)

    def update(self, y_true: np.ndarray, y_pred: np.ndarray, weight: np.ndarray) -> Self:
        """Add a batch of true and predicted class indices with their weights."""
        k = self.n_classes
        flat = y_true * k + y_pred
        self.matrix = self.matrix + np.bincount(flat, weights=weight, minlength=k * k).reshape(k, k)
        return self

    def merge(self, other: ConfusionMatrix) -> Self:
        """Add ``other`` (same classes) into this matrix."""
        _check_same(self, other, "n_classes")
        self.matrix = self.matrix + other.matrix
        return self


class LossSums:
    """Weighted sums behind log loss, Brier score and effective sample size."""

    def __init__(self) -> None:
        self.log_loss = 0.0
        self.brier = 0.0
        self.weight = 0.0
        self.weight_squared = 0.0
        self.rows = 0

    def update(self, y_true: np.ndarray, proba: np.ndarray, weight: np.ndarray) -> Self:
        """Add a batch; probabilities are clipped to [eps, 1 - eps] of their dtype as sklearn."""
        eps = np.finfo(proba.dtype).eps
        p_true = np.take_along_axis(proba, y_true[:, None], axis=1)[:, 0].astype(np.float64)
        self.log_loss += float(np.dot(weight, -np.log(np.clip(p_true, eps, 1 - eps))))
        # sum_k (onehot_k - p_k)^2 = sum_k p_k^2 - 2 p_true + 1. The expansion loses ~1e-16
        # absolute per row when p_true is near 1, far below any score worth reporting, and
        # saves a copy of the probabilities.
        p = proba.astype(np.float64, copy=False)
        squares = np.einsum("ij,ij->i", p, p)
        self.brier += float(np.dot(weight, squares - 2.0 * p_true + 1.0))
        self.weight = self.weight + float(weight.sum())
        self.weight_squared += float(np.dot(weight, weight))
        self.rows += int(y_true.shape[0])
        return self

    def merge(self, other: LossSums) -> Self:
        """Add ``other``'s sums into these."""
        self.log_loss += other.log_loss
        self.brier += other.brier
        self.weight = self.weight + other.weight
        self.weight_squared += other.weight_squared
        self.rows += other.rows
        return self


class CalibrationBins:
    """Uniform probability bins as ``sklearn.calibration.calibration_curve`` uses them.

    Row ``k < K`` is class k against the rest; the last row (index ``-1``) is top-label
    confidence: the highest probability of each row, a "positive" when that class is the true
    one (the reliability diagram and expected calibration error of multiclass models).
    ``weight[k, b]``, ``proba_sum[k, b]`` and ``positive[k, b]``: total weight, weighted sum of
    the probability and weight of positives in bin b.
    """

    def __init__(self, n_classes: int, bins: int = DEFAULT_CALIBRATION_BINS) -> None:
        if not isinstance(bins, int | np.integer) or bins < 1:
            raise ValueError(f"The number of calibration bins must be an int >= 1. Got {bins!r}.")
        self.n_classes = n_classes
        self.bins = int(bins)
        self.edges = np.linspace(0.0, 1.0, self.bins + 1)
        shape = (n_classes + 1, self.bins)
        self.weight = np.zeros(shape)
        self.proba_sum = np.zeros(shape)
        self.positive = np.zeros(shape)

    def update(self, y_true: np.ndarray, proba: np.ndarray, weight: np.ndarray) -> Self:
        """Add a batch of class indices, probabilities (n, K) and weights."""
        rows_, k, b = np.arange(y_true.shape[0]), self.n_classes + 1, self.bins
        predicted = np.argmax(proba, axis=1)
        p = np.column_stack([proba, proba[rows_, predicted]]).astype(np.float64)
        # searchsorted on the inner edges: a score equal to an edge goes to the lower bin,
        # exactly as calibration_curve(strategy="uniform") does.
        flat = np.searchsorted(self.edges[1:-1], p) + np.arange(k) * b
        w = np.broadcast_to(weight[:, None], p.shape)
        size = k * b
        weight_sum = np.bincount(flat.ravel(), w.ravel(), size)
        proba_sum = np.bincount(flat.ravel(), (w * p).ravel(), size)
        positive = np.bincount(flat[rows_, y_true], weight, size)
        positive += np.bincount(flat[:, -1], weight * (predicted == y_true), size)
        self.weight = self.weight + weight_sum.reshape(k, b)
        self.proba_sum = self.proba_sum + proba_sum.reshape(k, b)
        self.positive = self.positive + positive.reshape(k, b)
        return self

    def merge(self, other: CalibrationBins) -> Self:
        """Add ``other``'s bins (same classes and bins) into these."""
        _check_same(self, other, "n_classes", "bins")
        self.weight = self.weight + other.weight
        self.proba_sum = self.proba_sum + other.proba_sum
        self.positive = self.positive + other.positive
        return self


class ScoreHistogram:
    """Per class (one-vs-rest), the weight of positives and negatives per score.

    Exact (distinct scores kept) while every class has at most ``bins`` distinct scores, then
    ``bins`` fixed bins per class; see the module docstring for the bins and the error bound.

    Parameters
    ----------
    n_classes : int
        Number of classes ``K``.
    bins : int, optional
        Bins per class; default :func:`default_bins` (2**16 for up to 16 classes).
    exact_limit : int, optional
        Most distinct scores per class kept exactly (default ``bins``); 0 bins from the start.

    Attributes
    ----------
    exact : bool
        True while the distinct scores are kept.
    positive, negative : list of ndarray
        Per class, weight of rows of that class (positives) and of other classes (negatives)
        per distinct score (exact mode) or per bin (binned mode, arrays of length ``bins``).
    values : list of ndarray or None
        Per class, the sorted distinct scores in exact mode; None once binned.
    """

    def __init__(
        self, n_classes: int, bins: int | None = None, exact_limit: int | None = None
    ) -> None:
        self.n_classes = n_classes
        self.bins = default_bins(n_classes) if bins is None else int(bins)
        if self.bins < 1:
            raise ValueError(f"The number of score bins must be >= 1. Got {bins}.")
        self.exact_limit = self.bins if exact_limit is None else int(exact_limit)
        if self.exact_limit < 0:
            raise ValueError(f"exact_limit must be >= 0. Got {exact_limit}.")
        self.exact = True
        empty = np.zeros(0)
        self.values: list[np.ndarray] | None = [empty] * n_classes
        self.positive: list[np.ndarray] = [empty] * n_classes
        self.negative: list[np.ndarray] = [empty] * n_classes
        if self.exact_limit == 0:
            self._collapse()

    def update(self, y_true: np.ndarray, proba: np.ndarray, weight: np.ndarray) -> Self:
        """Add a batch of class indices, probabilities (n, K) and weights."""
        if not self.exact:
            return self._update_binned(y_true, proba, weight)
        batch = ScoreHistogram(self.n_classes, self.bins, self.exact_limit)
        batch.values = []
        for k in range(self.n_classes):
            is_positive = y_true == k
            scores = proba[:, k].astype(np.float64)
            values, inverse = np.unique(scores, return_inverse=True)
            batch.values.append(values)
            batch.positive[k] = np.bincount(inverse, weight * is_positive, values.size)
            batch.negative[k] = np.bincount(inverse, weight * ~is_positive, values.size)
        return self.merge(batch)

    def merge(self, other: ScoreHistogram) -> Self:
        """Add ``other`` (same classes and bins); collapses to bins once exact mode overflows."""
        _check_same(self, other, "n_classes", "bins", "exact_limit")
        if self.exact and other.exact:
            if self._merge_exact(other) > self.exact_limit:
                self._collapse()
            return self
        if self.exact:
            self._collapse()
        if other.exact:
            other = copy.deepcopy(other)._collapse()
        for k in range(self.n_classes):
            self.positive[k] = self.positive[k] + other.positive[k]
            self.negative[k] = self.negative[k] + other.negative[k]
        return self

    def _update_binned(self, y_true: np.ndarray, proba: np.ndarray, weight: np.ndarray) -> Self:
        k, bins = self.n_classes, self.bins
        flat = score_bin(proba, bins) + np.arange(k) * bins
        rows = np.arange(y_true.shape[0])
        positive = np.bincount(flat[rows, y_true], weight, k * bins).reshape(k, bins)
        negative_weight = np.repeat(weight[:, None], k, axis=1)
        negative_weight[rows, y_true] = 0.0
        negative = np.bincount(flat.ravel(), negative_weight.ravel(), k * bins)
        negative = negative.reshape(k, bins)
        for c in range(k):
            self.positive[c] = self.positive[c] + positive[c]
            self.negative[c] = self.negative[c] + negative[c]
        return self

    def _merge_exact(self, other: ScoreHistogram) -> int:
        """Merge two exact histograms; returns the most distinct scores a class now holds."""
        mine, theirs = self.values, other.values
        if mine is None or theirs is None:
            raise RuntimeError("an exact merge of a binned score histogram")
        for k in range(self.n_classes):
            merged, inverse = np.unique(np.concatenate([mine[k], theirs[k]]), return_inverse=True)
            mine[k] = merged
            positive = np.concatenate([self.positive[k], other.positive[k]])
            negative = np.concatenate([self.negative[k], other.negative[k]])
            self.positive[k] = np.bincount(inverse, positive, merged.size)
            self.negative[k] = np.bincount(inverse, negative, merged.size)
        return max((v.size for v in mine), default=0)

    def _collapse(self) -> Self:
        """Switch to binned mode for good: add each distinct score's weights to its bin."""
        if self.values is None:  # binned already (exact is False)
            return self
        for k in range(self.n_classes):
            index = score_bin(self.values[k], self.bins)
            self.positive[k] = np.bincount(index, self.positive[k], self.bins)
            self.negative[k] = np.bincount(index, self.negative[k], self.bins)
        self.values = None
        self.exact = False
        return self

    def counts(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative weights of class ``k`` per score, highest score first.

        Scores (or bins) holding no weight are dropped, as sklearn drops zero-weight rows.
        """
        positive, negative = self.positive[k][::-1], self.negative[k][::-1]
        keep = (positive > 0) | (negative > 0)
        return positive[keep], negative[keep]

    def thresholds(self, k: int) -> np.ndarray:
        """The score at each entry of :meth:`counts` (in binned mode, each bin's lowest score)."""
        positive, negative = self.positive[k][::-1], self.negative[k][::-1]
        keep = (positive > 0) | (negative > 0)
        if self.values is not None:  # exact mode
            return self.values[k][::-1][keep]
        lows = _bin_lower_edges(self.bins)
        return lows[::-1][keep]


def _bin_lower_edges(bins: int) -> np.ndarray:
    """Lowest probability of each bin, found by bisection on the monotone map (plots only)."""
    low, high = np.zeros(bins), np.ones(bins)
    for _ in range(60):
        middle = 0.5 * (low + high)
        above = score_bin(middle, bins) >= np.arange(bins)
        high = np.where(above, middle, high)
        low = np.where(above, low, middle)
    high[0] = 0.0
    return high


class EvaluationAccumulator:
    """Everything evaluation needs, in one mergeable object.

    Parameters
    ----------
    n_classes : int
        Number of classes ``K``.
    bins : int, optional
        Score-histogram bins per class (default :func:`default_bins`).
    calibration_bins : int, default 10
        Uniform probability bins of the calibration curves.
    exact_limit : int, optional
        Distinct scores per class kept exactly before binning (default ``bins``; see
        :class:`ScoreHistogram`).

    Examples
    --------
    >>> import numpy as np
    >>> acc = EvaluationAccumulator(2)
    >>> _ = acc.update(np.array([0, 1, 1]), np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    >>> acc.confusion.matrix.tolist()
    [[1.0, 0.0], [1.0, 1.0]]
    """

    def __init__(
        self,
        n_classes: int,
        bins: int | None = None,
        calibration_bins: int = DEFAULT_CALIBRATION_BINS,
        exact_limit: int | None = None,
    ) -> None:
        if not isinstance(n_classes, int | np.integer) or n_classes < 1:
            raise ValueError(f"The number of classes must be an int >= 1. Got {n_classes!r}.")
        self.n_classes = int(n_classes)
        self.confusion = ConfusionMatrix(self.n_classes)
        self.scores = ScoreHistogram(self.n_classes, bins, exact_limit)
        self.losses = LossSums()
        self.calibration = CalibrationBins(self.n_classes, calibration_bins)

    def update(
        self,
        y_true: np.ndarray,
        proba: np.ndarray,
        sample_weight: np.ndarray | None = None,
    ) -> Self:
        """Add a batch: class indices ``y_true`` (n,), probabilities (n, K), optional weights.

        The predicted class is the argmax of the probabilities (the first on ties).
        """
        y, p, w = _check_inputs(y_true, proba, sample_weight, self.n_classes)
        if y.size == 0:
            return self
        self.confusion.update(y, np.argmax(p, axis=1), w)
        self.scores.update(y, p, w)
        self.losses.update(y, p, w)
        self.calibration.update(y, p, w)
        return self

    def merge(self, other: EvaluationAccumulator) -> Self:
        """Add ``other``'s state into this one (associative; equals one pass over both)."""
        if not isinstance(other, EvaluationAccumulator):
            raise TypeError(f"Cannot merge an EvaluationAccumulator with {type(other).__name__}.")
        self.confusion.merge(other.confusion)
        self.scores.merge(other.scores)
        self.losses.merge(other.losses)
        self.calibration.merge(other.calibration)
        return self

    def __add__(self, other: EvaluationAccumulator) -> EvaluationAccumulator:
        return copy.deepcopy(self).merge(other)


def _check_same(a: object, b: object, *names: str) -> None:
    if type(a) is not type(b):
        raise TypeError(f"Cannot merge {type(a).__name__} with {type(b).__name__}.")
    for name in names:
        if getattr(a, name) != getattr(b, name):
            raise ValueError(
                f"Cannot merge {type(a).__name__} objects with different {name}: "
                f"{getattr(a, name)} and {getattr(b, name)}."
            )
