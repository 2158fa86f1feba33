"""Confusion matrices of a fitted classifier on the workers' cached feature blocks.

Used right after training (``shardlearn train``): the blocks are still in the workers' caches,
so scoring the train and valid splits reads no shard again and moves only K x K counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shardlearn.models._fitting import TrainingContext, training_block

__all__ = ["accuracy_and_f1", "block_confusion"]


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
