"""Distributed evaluation: mergeable accumulators, metric functions and reports.

``evaluate(model, dataset)`` predicts every shard of a split where it lives, folds the
predictions into an :class:`EvaluationAccumulator` per worker, merges them on the driver and
returns a :class:`Report` (``to_dict``, ``to_json``, ``to_html``). The metric functions take
accumulators, so one code path serves evaluation and the metrics trainers record
(:func:`score_summary`). Clustering models: :func:`evaluate_clustering` (inertia, sampled
silhouette, ARI/NMI against the labels).
"""

from __future__ import annotations

from shardlearn.metrics.accumulators import (
    CalibrationBins,
    ConfusionMatrix,
    EvaluationAccumulator,
    LossSums,
    ScoreHistogram,
)
from shardlearn.metrics.clustering import ClusteringReport, evaluate_clustering
from shardlearn.metrics.evaluate import evaluate
from shardlearn.metrics.functions import (
    Area,
    UndefinedMetricWarning,
    accuracy,
    accuracy_interval,
    average_precision,
    balanced_accuracy,
    brier_score,
    calibration_curve,
    cohen_kappa,
    expected_calibration_error,
    log_loss,
    matthews_corrcoef,
    pr_curve,
    precision_recall_fscore,
    roc_auc,
    roc_curve,
    score_summary,
    summarize,
    support,
    wilson_interval,
)
from shardlearn.metrics.report import Comparison, Report, compare

__all__ = [
    "Area",
    "CalibrationBins",
    "ClusteringReport",
    "Comparison",
    "ConfusionMatrix",
    "EvaluationAccumulator",
    "LossSums",
    "Report",
    "ScoreHistogram",
    "UndefinedMetricWarning",
    "accuracy",
    "accuracy_interval",
    "average_precision",
    "balanced_accuracy",
    "brier_score",
    "calibration_curve",
    "compare",
    "cohen_kappa",
    "evaluate",
    "evaluate_clustering",
    "expected_calibration_error",
    "log_loss",
    "matthews_corrcoef",
    "pr_curve",
    "precision_recall_fscore",
    "roc_auc",
    "roc_curve",
    "score_summary",
    "summarize",
    "support",
    "wilson_interval",
]
