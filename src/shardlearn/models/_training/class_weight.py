"""Per-class weights from a ``class_weight`` parameter, as scikit-learn computes them.

Shared by the linear models, SGD and the forests (scikit-learn's
``sklearn.utils.class_weight`` plays the same part there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shardlearn.exceptions import DataError

__all__ = ["resolve_class_weight"]


def resolve_class_weight(class_weight: Any, classes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-class multipliers: None -> ones, "balanced" -> S / (K * S_k), dict -> by label."""
    k = len(classes)
    if class_weight is None:
        return np.ones(k)
    if class_weight == "balanced":
        with np.errstate(divide="ignore"):
            balanced = weights.sum() / (k * weights)
        return np.where(weights > 0, balanced, 1.0)
    out = np.ones(k)
    by_text = {str(key): value for key, value in class_weight.items()}
    for i, label in enumerate(classes.tolist()):
        if label in class_weight:
            out[i] = float(class_weight[label])
        elif str(label) in by_text:
            out[i] = float(by_text[str(label)])
    unknown = set(by_text) - {str(c) for c in classes.tolist()}
    if unknown:
        raise DataError(
            f"class_weight names classes {sorted(unknown)} that are not in the label; "
            f"classes: {classes.tolist()}."
        )
    return out
