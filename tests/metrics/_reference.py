"""scikit-learn reference values for the metrics, computed on the same predictions."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve


def sklearn_summary(y: np.ndarray, proba: np.ndarray, w: np.ndarray | None = None) -> dict:
    """What shardlearn.metrics.summarize must return, computed by sklearn.metrics."""
    k = proba.shape[1]
    labels = list(range(k))
    pred = np.argmax(proba, axis=1)
    out: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["accuracy"] = skm.accuracy_score(y, pred, sample_weight=w)
        out["balanced_accuracy"] = skm.balanced_accuracy_score(y, pred, sample_weight=w)
        for average in ("micro", "macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(
                y, pred, labels=labels, average=average, sample_weight=w, zero_division=0.0
            )
            out[f"precision_{average}"], out[f"recall_{average}"], out[f"f1_{average}"] = p, r, f
        p, r, f, s = skm.precision_recall_fscore_support(
            y, pred, labels=labels, average=None, sample_weight=w, zero_division=0.0
        )
        out["per_class_precision"], out["per_class_recall"], out["per_class_f1"] = p, r, f
        out["log_loss"] = skm.log_loss(y, proba, labels=labels, sample_weight=w)
        out["brier"] = skm.brier_score_loss(y, proba, labels=labels, sample_weight=w)
        out["cohen_kappa"] = skm.cohen_kappa_score(y, pred, labels=labels, sample_weight=w)
        out["mcc"] = skm.matthews_corrcoef(y, pred, sample_weight=w)
        out["confusion_matrix"] = skm.confusion_matrix(y, pred, labels=labels, sample_weight=w)
    out["per_class_roc_auc"], out["per_class_pr_auc"] = per_class_areas(y, proba, w)
    return out


def per_class_areas(
    y: np.ndarray, proba: np.ndarray, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest ROC-AUC and average precision per class (NaN where undefined)."""
    roc, ap = [], []
    for k in range(proba.shape[1]):
        positive = y == k
        if positive.all() or not positive.any():
            roc.append(np.nan)
            ap.append(np.nan)
            continue
        roc.append(skm.roc_auc_score(positive, proba[:, k], sample_weight=w))
        ap.append(skm.average_precision_score(positive, proba[:, k], sample_weight=w))
    return np.array(roc), np.array(ap)


def sklearn_calibration(y: np.ndarray, proba: np.ndarray, k: int, bins: int) -> tuple:
    """calibration_curve of class k against the rest."""
    return calibration_curve((y == k).astype(int), proba[:, k], n_bins=bins)
