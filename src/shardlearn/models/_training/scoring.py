"""Confusion matrices and ROC-AUC of a fitted classifier on the workers' cached feature blocks.

Used right after training (``shardlearn train``): the blocks are still in the workers' caches,
so scoring the train and valid splits reads no shard again and moves only K x K counts and a
score histogram per class (:class:`~shardlearn.metrics.accumulators.ScoreHistogram`, exact up
to 2**16 distinct scores per class, binned with a stated error bound beyond).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shardlearn.metrics.accumulators import ScoreHistogram
from shardlearn.metrics.evaluate import scores_of
from shardlearn.metrics.functions import roc_auc
from shardlearn.models._training.fitting import TrainingContext, training_block

__all__ = ["accuracy_and_f1", "block_confusion", "block_scores", "score_split"]


def _confusion_worker(state: Any, estimator: Any, split: str, n_classes: int) -> np.ndarray:
    block = training_block(state, split)
    counts = np.zeros((n_classes, n_classes))
    if block.X.shape[0] == 0:
        return counts
    predicted = np.searchsorted(estimator.classes_, estimator.predict(block.X))
    np.add.at(counts, (np.asarray(block.y, dtype=np.int64), predicted), 1.0)
    return counts


def block_confusion(ctx: TrainingContext, estimator: Any, split: str) -> np.ndarray:
    """Rows = true class, columns = predicted class, summed over the workers."""
    return ctx.group.reduce(_confusion_worker, estimator, split, ctx.n_classes)


def _scores_worker(
    state: Any, estimator: Any, split: str, n_classes: int
) -> tuple[np.ndarray, ScoreHistogram]:
    block = training_block(state, split)
    counts = np.zeros((n_classes, n_classes))
    histogram = ScoreHistogram(n_classes)
    if block.X.shape[0] == 0:
        return counts, histogram
    # predict_proba, or a margin model's squashed decision_function (ranking kept).
    scores = scores_of(estimator, block.X)
    truth = np.asarray(block.y, dtype=np.int64)
    # Every shardlearn classifier predicts the arg-max of these scores (models._base).
    np.add.at(counts, (truth, np.argmax(scores, axis=1)), 1.0)
    histogram.update(truth, scores, np.ones(truth.shape[0]))
    return counts, histogram


def block_scores(ctx: TrainingContext, estimator: Any, split: str) -> tuple[Any, Any]:
    """The confusion matrix and the merged per-class score histogram of ``split``."""
    parts = ctx.group.run(_scores_worker, estimator, split, ctx.n_classes)
    counts, histogram = parts[0]
    for more_counts, more_histogram in parts[1:]:
        counts = counts + more_counts
        histogram = histogram.merge(more_histogram)
    return counts, histogram


def score_split(ctx: TrainingContext, estimator: Any, split: str) -> dict[str, float]:
    """Rows, accuracy, macro F1 and ROC-AUC (binary; macro one-vs-rest for more classes;
    NaN when the split holds a single class)."""
    counts, histogram = block_scores(ctx, estimator, split)
    # zero_division=nan: a class absent from the split makes its area NaN, without a warning.
    area = roc_auc(histogram, "binary" if ctx.n_classes == 2 else "macro", zero_division=np.nan)
    return {**accuracy_and_f1(counts), "roc_auc": float(area.value)}


def accuracy_and_f1(confusion: np.ndarray) -> dict[str, float]:
    """Rows, accuracy and macro-averaged F1 (classes absent from truth and prediction skipped)."""
    total = confusion.sum()
    true_positive = np.diag(confusion)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    denominator = support + predicted
    present = denominator > 0
    f1 = 2 * true_positive[present] / denominator[present]
    return {
        "rows": int(total),
        "accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "f1_macro": float(f1.mean()) if f1.size else float("nan"),
    }
