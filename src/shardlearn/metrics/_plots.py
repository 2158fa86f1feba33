"""The report's figures, drawn with matplotlib's object API (no pyplot global state).

Each function returns PNG bytes; the report embeds them as base64 ``data:`` URIs so the HTML
file stands alone. Figures only read plain lists and arrays (the report's curves), so they
can be redrawn from a saved report dict. matplotlib is imported on first use.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "calibration_png",
    "comparison_png",
    "confusion_png",
    "pr_png",
    "roc_png",
]

FIGURE_SIZE = (5.6, 4.6)
DPI = 100
# More curves than this on one axis is unreadable; the report picks the largest classes.
MAX_CURVES = 10
# Cell annotations stop being legible past this many classes.
MAX_ANNOTATED_CLASSES = 12
MAX_TICK_LABELS = 30


def _figure(size: tuple[float, float] = FIGURE_SIZE) -> Figure:
    # Imported here: trainers import shardlearn.metrics for score_summary and never plot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _short(name: Any, width: int = 18) -> str:
    text = str(name)
    return text if len(text) <= width else text[: width - 1] + "…"


def confusion_png(matrix: Sequence[Sequence[float]], classes: Sequence[Any]) -> bytes:
    """Heatmap of the confusion matrix, colour = row-normalised (recall), text = weight."""
    counts = np.asarray(matrix, dtype=float)
    k = counts.shape[0]
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure = _figure()
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
    if k <= MAX_TICK_LABELS:
        labels = [_short(c) for c in classes]
        axes.set_xticks(
            range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center"
        )
        axes.set_yticks(range(k), labels)
    if k <= MAX_ANNOTATED_CLASSES:
        for i in range(k):
            for j in range(k):
                colour = "white" if share[i, j] > 0.55 else "#1f2933"
                axes.text(
                    j,
                    i,
                    f"{counts[i, j]:.6g}",
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=9 if k <= 6 else 7,
                )
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix")
    return _png(figure)


def _curve_axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    figure = _figure()
    axes = figure.add_subplot()
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.02)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    return figure, axes


def roc_png(curves: Mapping[str, Mapping[str, Any]]) -> bytes:
    """ROC curves, one per class name: ``{"fpr": [...], "tpr": [...], "auc": float}``."""
    figure, axes = _curve_axes(
        "ROC curve (one-vs-rest)", "false positive rate", "true positive rate"
    )
    axes.plot([0, 1], [0, 1], linestyle="--", color="#9aa5b1", linewidth=1, label="chance")
    for name, curve in list(curves.items())[:MAX_CURVES]:
        axes.plot(
            curve["fpr"],
            curve["tpr"],
            linewidth=1.8,
            label=f"{_short(name)} (AUC {curve['auc']:.3f})",
        )
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def pr_png(curves: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Precision-recall curves: ``{"recall": [...], "precision": [...], "ap": float}``."""
    figure, axes = _curve_axes("Precision-recall curve", "recall", "precision")
    for name, curve in list(curves.items())[:MAX_CURVES]:
        axes.step(
            curve["recall"],
            curve["precision"],
            where="post",
            linewidth=1.8,
            label=f"{_short(name)} (AP {curve['ap']:.3f})",
        )
    axes.legend(loc="best", fontsize=8)
    return _png(figure)


def calibration_png(curves: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Reliability diagram: ``{"predicted": [...], "observed": [...]}`` per curve."""
    figure, axes = _curve_axes("Calibration", "mean predicted probability", "observed frequency")
    axes.plot(
        [0, 1], [0, 1], linestyle="--", color="#9aa5b1", linewidth=1, label="perfectly calibrated"
    )
    for name, curve in list(curves.items())[:MAX_CURVES]:
        axes.plot(
            curve["predicted"],
            curve["observed"],
            marker="o",
            markersize=4,
            linewidth=1.6,
            label=_short(name),
        )
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)


def comparison_png(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> bytes:
    """Grouped horizontal bars: one group per metric, one bar per model."""
    n_models = max(1, len(rows))
    height = max(3.5, 0.9 + 0.28 * n_models * len(metrics))
    figure = _figure((8.0, height))
    axes = figure.add_subplot()
    positions = np.arange(len(metrics))
    bar = 0.8 / n_models
    for i, row in enumerate(rows):
        values = [np.nan if row.get(m) is None else float(row[m]) for m in metrics]
        axes.barh(positions + i * bar, values, height=bar, label=_short(row["model"], 30))
    axes.set_yticks(positions + bar * (n_models - 1) / 2, list(metrics))
    axes.invert_yaxis()
    axes.set_xlabel("score (log loss and Brier: lower is better)")
    axes.set_title("Model comparison")
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)
