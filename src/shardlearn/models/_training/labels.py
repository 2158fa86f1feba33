"""Labels of array input as class indices: sorted classes and an int64 index per row.

:func:`encode_labels` finds the classes (``np.unique``; small non-negative integer labels are
counted instead of sorted), :func:`encode_with_classes` encodes against a model's known classes
(``partial_fit``, warm start on new data). Fewer than two classes, or a label the model does
not know, is a DataError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shardlearn.exceptions import DataError

__all__ = ["encode_labels", "encode_with_classes"]


def encode_labels(y: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted classes and int64 indices of ``y``; fewer than two classes is a DataError."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{owner}: y must be 1-D (one label per row); got shape {y.shape}.")
    codes = _small_int_codes(y)
    classes, indices = np.unique(y, return_inverse=True) if codes is None else codes
    if classes.size < 2:
        found = repr(classes[0].item()) if classes.size else "none"
        raise DataError(
            f"{owner} needs at least two classes in the label; found only {found}. "
            "Check the label column or the split you train on."
        )
    return classes, indices.astype(np.int64, copy=False)


def _small_int_codes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``np.unique(y, return_inverse=True)`` for small non-negative integer labels, by counting
    (linear, no sort); None for any other labels."""
    if not np.issubdtype(y.dtype, np.integer) or y.size == 0:
        return None
    low, high = int(y.min()), int(y.max())
    # The count array is at most about as long as y (or 64k entries): no huge allocations.
    if low < 0 or high >= max(y.size, 1 << 16):
        return None
    present = np.bincount(y.astype(np.intp, copy=False), minlength=high + 1) > 0
    classes = np.flatnonzero(present)
    if classes.size == high + 1:  # 0..high all present: the labels are their own indices
        return classes.astype(y.dtype), y.astype(np.int64, copy=False)
    lookup = np.cumsum(present, dtype=np.int64) - 1
    return classes.astype(y.dtype), lookup[y]


def encode_with_classes(y: Any, classes: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``y`` in the given ``classes``; a label outside them is a DataError."""
    classes = np.asarray(classes)
    y = np.asarray(y)
    order = np.argsort(classes, kind="stable")
    positions = np.searchsorted(classes[order], y)
    positions = np.clip(positions, 0, classes.size - 1)
    found = classes[order][positions] == y
    if not np.all(found):
        raise DataError(
            f"{owner}: labels {np.unique(y[~found]).tolist()} are not among the model's classes "
            f"{classes.tolist()}."
        )
    return classes, order[positions].astype(np.int64)
