"""Tiny real models for evaluate() tests: scikit-learn estimators that read pyarrow Tables.

They stand in for shardlearn's own Pipeline (same duck type: ``classes_`` and
``predict_proba(table)`` on raw input columns). Module-level so workers can unpickle them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sklearn.linear_model import LogisticRegression


class TableLogisticRegression:
    """scikit-learn's LogisticRegression on the numeric columns ``features`` of a Table."""

    def __init__(self, features: list[str], C: float = 1.0) -> None:
        self.features = features
        self.C = C

    def _matrix(self, table: pa.Table) -> np.ndarray:
        return np.column_stack([table.column(f).to_numpy() for f in self.features])

    def fit(self, table: pa.Table, label: str) -> TableLogisticRegression:
        self.model_ = LogisticRegression(C=self.C, max_iter=500)
        self.model_.fit(self._matrix(table), table.column(label).to_numpy(zero_copy_only=False))
        self.classes_ = self.model_.classes_
        return self

    def get_params(self, deep: bool = False) -> dict:
        return {"features": self.features, "C": self.C}

    def predict_proba(self, table: pa.Table) -> np.ndarray:
        return self.model_.predict_proba(self._matrix(table))


class ScoreColumnModel:
    """Returns the probabilities stored in columns ``p0..p{K-1}`` of the batch itself.

    Lets a test (and the benchmark) evaluate known predictions through the whole distributed
    path and compare with sklearn.metrics on exactly the same numbers.
    """

    def __init__(self, classes: list, columns: int | None = None) -> None:
        self.classes_ = np.array(classes)
        self.columns = len(classes) if columns is None else columns

    def predict_proba(self, table: pa.Table) -> np.ndarray:
        return np.column_stack([table.column(f"p{k}").to_numpy() for k in range(self.columns)])
