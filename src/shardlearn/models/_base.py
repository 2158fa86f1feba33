"""What every shardlearn classifier shares: local prediction and the artifact hooks.

A classifier fitted anywhere (any engine, any number of workers) predicts locally with numpy:
``predict`` takes the arg-max of ``predict_proba`` (or of ``decision_function`` for margin
models) and maps it to ``classes_``. Input may be a dense array, a CSR matrix, or a table
(pyarrow Table/RecordBatch, pandas DataFrame, dict of columns) holding ``feature_names_in_``.

The default artifact hooks store every fitted numpy attribute (names ending in ``_``) as an
array and every other fitted attribute plus the parameters as JSON. Nothing is pickled.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shardlearn.base import check_is_fitted
from shardlearn.exceptions import ArtifactError, SchemaError

__all__ = ["ClassifierMixin"]

ARTIFACT_FORMAT = 1


class ClassifierMixin:
    """Mixin for classifiers: ``predict``, input checks and the artifact hooks."""

    _estimator_type: ClassVar[str] = "classifier"

    # ---------------------------------------------------------------- prediction
    def _check_predict_input(self, X: Any) -> Any:
        """A float matrix with ``n_features_in_`` columns from any supported input."""
        check_is_fitted(self)
        name = type(self).__name__
        if not (sp.issparse(X) or isinstance(X, np.ndarray | list)):
            from shardlearn.models._fitting import table_to_matrix

            X = table_to_matrix(X, list(self.feature_names_in_))
        if sp.issparse(X):
            X = sp.csr_matrix(X)
        else:
            X = np.asarray(X, dtype=np.float64) if not _is_float(X) else np.asarray(X)
            if X.ndim == 1:
                X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise SchemaError(
                f"{name} was fitted on {self.n_features_in_} features but the input has "
                f"{X.shape[-1] if X.ndim else 0}."
            )
        return X

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels (values of ``classes_``) for each row of ``X``."""
        if hasattr(self, "predict_proba") and getattr(self, "_predict_from_proba", True):
            scores = self.predict_proba(X)
        else:
            scores = self.decision_function(X)
            if scores.ndim == 1:
                return self.classes_[(scores > 0).astype(np.intp)]
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy of ``predict(X)`` against ``y``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # ---------------------------------------------------------------- artifact hooks
    def _to_artifact(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        """(JSON metadata with params and fitted scalars, fitted arrays, no extra files)."""
        check_is_fitted(self)
        arrays: dict[str, np.ndarray] = {}
        attributes: dict[str, Any] = {}
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if key in ("classes_", "feature_names_in_"):
                attributes[key] = _to_json(value)
            elif isinstance(value, np.ndarray):
                if value.dtype == object:
                    raise ArtifactError(f"{type(self).__name__}.{key} has dtype object.")
                arrays[key] = value
            else:
                attributes[key] = _to_json(value)
        meta = {
            "type": type(self).__name__,
            "format": ARTIFACT_FORMAT,
            "params": {k: _to_json(v) for k, v in self.get_params(deep=False).items()},
            "attributes": attributes,
        }
        return meta, arrays, {}

    @classmethod
    def _from_artifact(
        cls, meta: dict, arrays: dict[str, np.ndarray], files: dict[str, bytes]
    ) -> Any:
        """Rebuild a fitted model from :meth:`_to_artifact` output."""
        if meta.get("type") != cls.__name__:
            raise ArtifactError(
                f"Artifact holds a {meta.get('type')!r}, not a {cls.__name__}; load it with "
                "the matching class."
            )
        model = cls(**meta.get("params", {}))
        for key, value in meta.get("attributes", {}).items():
            if key in ("classes_", "feature_names_in_"):
                value = np.asarray(value) if key == "classes_" else list(value)
            setattr(model, key, value)
        for key, value in arrays.items():
            setattr(model, key, np.asarray(value))
        return model


def _is_float(X: Any) -> bool:
    return isinstance(X, np.ndarray) and np.issubdtype(X.dtype, np.floating)


def _to_json(value: Any) -> Any:
    """Plain JSON types for params and small fitted values."""
    if isinstance(value, np.ndarray):
        return [_to_json(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if value is None or isinstance(value, str | bool | numbers.Number):
        return value
    raise ArtifactError(f"Cannot store a value of type {type(value).__name__} as JSON.")
