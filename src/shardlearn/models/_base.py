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
import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import sklearn.base

from shardlearn.base import check_is_fitted
from shardlearn.exceptions import ArtifactError, DataError, SchemaError
from shardlearn.models._fitting import (
    as_feature_matrix,
    dataframe_feature_names,
    table_to_matrix,
)

__all__ = ["ClassifierMixin", "check_prediction_input"]

ARTIFACT_FORMAT = 1


class ClassifierMixin(sklearn.base.ClassifierMixin):
    """Mixin for classifiers: ``predict``, input checks and the artifact hooks.

    scikit-learn's ClassifierMixin supplies the classifier tags and ``score`` (accuracy, with
    ``sample_weight``).
    """

    _estimator_type: ClassVar[str] = "classifier"

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # every trainer takes CSR arrays (shared input layer)
        return tags

    # ---------------------------------------------------------------- prediction
    def _check_predict_input(self, X: Any) -> Any:
        """A float matrix with ``n_features_in_`` columns from any supported input."""
        check_is_fitted(self)
        return check_prediction_input(self, X)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels (values of ``classes_``) for each row of ``X``."""
        if hasattr(self, "predict_proba") and getattr(self, "_predict_from_proba", True):
            scores = self.predict_proba(X)
        else:
            scores = self.decision_function(X)
            if scores.ndim == 1:
                return self.classes_[(scores > 0).astype(np.intp)]
        return self.classes_[np.argmax(scores, axis=1)]

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


def check_prediction_input(estimator: Any, X: Any) -> Any:
    """``X`` as a finite float matrix (dense or CSR) with the fitted number of columns.

    Arrays are checked like the training arrays (2-D, numeric, see
    :func:`~shardlearn.models._fitting.as_feature_matrix`), then for NaN and infinity. A table
    (pyarrow Table/RecordBatch, pandas DataFrame, dict of columns) gives the columns named in
    ``feature_names_in_``; a DataFrame given to a model fitted on a plain array is read by
    position with a warning, as scikit-learn does.
    """
    name = type(estimator).__name__
    if _is_table(X):
        X = _table_features(estimator, X)
    X = as_feature_matrix(name, X)
    if X.shape[1] != estimator.n_features_in_:
        raise SchemaError(
            f"X has {X.shape[1]} features, but {name} is expecting {estimator.n_features_in_} "
            "features as input."
        )
    values = X.data if sp.issparse(X) else X
    if not np.isfinite(values).all():
        raise DataError(
            f"{name}: Input X contains NaN or infinity; impute or drop those values first."
        )
    return X


def _is_table(X: Any) -> bool:
    if sp.issparse(X):  # scipy's dok matrices are dicts
        return False
    return isinstance(X, dict) or hasattr(X, "column_names") or hasattr(X, "iloc")


def _table_features(estimator: Any, table: Any) -> Any:
    names = list(estimator.feature_names_in_)
    fitted_without_names = names == [f"x{j}" for j in range(len(names))]
    if hasattr(table, "iloc") and fitted_without_names and not set(names) <= set(table.columns):
        if dataframe_feature_names(table) is not None:
            warnings.warn(
                f"X has feature names, but {type(estimator).__name__} was fitted without "
                "feature names; its columns are read by position.",
                UserWarning,
                stacklevel=4,
            )
        return table.to_numpy()
    return table_to_matrix(table, names)


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
