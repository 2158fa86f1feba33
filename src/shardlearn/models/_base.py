"""What every shardlearn classifier shares: local prediction and the artifact hooks.

A classifier fitted anywhere (any engine, any number of workers) predicts locally with numpy:
``predict`` takes the arg-max of ``predict_proba`` (or of ``decision_function`` for margin
models) and maps it to ``classes_``. Input may be a dense array, a CSR matrix, or a table
(pyarrow Table/RecordBatch, pandas DataFrame, dict of columns) holding ``feature_names_in_``.

The default artifact hooks store every fitted numpy attribute (names ending in ``_``) as an
array and every other fitted attribute plus the parameters as JSON. Nothing is pickled.

An artifact is untrusted input, so restoring one is driven by allow-lists, never by the names
it holds: each estimator class declares its fitted attributes in ``_fitted_attributes`` (saving
refuses an undeclared one, so the list cannot fall behind ``fit``), loading refuses any other
name (an artifact cannot set ``predict_proba`` or ``_booster``), and parameters must be
``__init__`` parameters of the class (:func:`artifact_params`, :func:`restore_fitted`).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import sklearn.base

from shardlearn._json import to_json
from shardlearn.base import BaseEstimator, check_is_fitted
from shardlearn.exceptions import ArtifactError, DataError, SchemaError
from shardlearn.models._registry import type_names
from shardlearn.models._training.fitting import (
    as_feature_matrix,
    dataframe_feature_names,
    table_to_matrix,
)

__all__ = [
    "ClassifierMixin",
    "artifact_params",
    "check_prediction_input",
    "declared_fitted",
    "fitted_items",
    "restore_fitted",
]

ARTIFACT_FORMAT = 1
# Fitted attributes any estimator may carry and the artifact records (see registry._meta).
OPTIONAL_FITTED = frozenset({"training_info_", "metrics_"})


class ClassifierMixin(sklearn.base.ClassifierMixin):
    """Mixin for classifiers: ``predict``, input checks and the artifact hooks.

    scikit-learn's ClassifierMixin supplies the classifier tags and ``score`` (accuracy, with
    ``sample_weight``).
    """

    _estimator_type: ClassVar[str] = "classifier"
    # The fitted attributes an artifact may restore; every concrete estimator declares its own.
    _fitted_attributes: ClassVar[frozenset[str]]

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
        for key, value in fitted_items(self):
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
        stored = meta.get("type")
        if not isinstance(stored, str) or stored not in type_names(cls):
            raise ArtifactError(
                f"Artifact holds a {meta.get('type')!r}, not a {cls.__name__}; load it with "
                "the matching class."
            )
        model = cls(**artifact_params(cls, meta))
        attributes = dict(_mapping(meta.get("attributes", {}), f"{cls.__name__} attributes"))
        if "classes_" in attributes:
            attributes["classes_"] = np.asarray(attributes["classes_"])
        if "feature_names_in_" in attributes:
            attributes["feature_names_in_"] = list(attributes["feature_names_in_"])
        return restore_fitted(model, attributes, arrays)


def declared_fitted(cls: type) -> frozenset[str]:
    """The fitted attribute names an artifact of ``cls`` may hold (its declared list)."""
    declared = getattr(cls, "_fitted_attributes", None)
    if declared is None:
        raise ArtifactError(
            f"{cls.__name__} declares no _fitted_attributes, so its artifacts cannot be "
            "saved or loaded safely."
        )
    return frozenset(declared) | OPTIONAL_FITTED


def fitted_items(model: Any) -> list[tuple[str, Any]]:
    """The model's fitted attributes (public, ending in ``_``); an undeclared one is refused."""
    allowed = declared_fitted(type(model))
    items = [(k, v) for k, v in vars(model).items() if k.endswith("_") and not k.startswith("_")]
    undeclared = sorted(k for k, _ in items if k not in allowed)
    if undeclared:
        raise ArtifactError(
            f"{type(model).__name__}.{undeclared[0]} is not in "
            f"{type(model).__name__}._fitted_attributes; declare it so artifacts restore it."
        )
    return items


def artifact_params(cls: type[BaseEstimator], meta: dict) -> dict[str, Any]:
    """The ``params`` of artifact metadata, refused unless all are ``__init__`` parameters."""
    params = _mapping(meta.get("params", {}), f"{cls.__name__} params")
    valid = set(cls._get_param_names())
    unknown = sorted(str(k) for k in params if k not in valid)
    if unknown:
        raise ArtifactError(
            f"The artifact gives {cls.__name__} the unknown parameter {unknown[0][:80]!r}."
        )
    return dict(params)


def restore_fitted(model: Any, attributes: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """Set the fitted ``attributes`` and ``arrays`` on ``model``; any undeclared name is refused.

    Without this check an artifact could set any attribute, e.g. shadow ``predict_proba``.
    """
    allowed = declared_fitted(type(model))
    for key in (*attributes, *arrays):
        if key not in allowed:
            raise ArtifactError(
                f"The artifact sets {str(key)[:80]!r} on {type(model).__name__}, which is not "
                f"one of its fitted attributes ({', '.join(sorted(allowed))})."
            )
    for key, value in attributes.items():
        setattr(model, key, value)
    for key, value in arrays.items():
        setattr(model, key, np.asarray(value))
    return model


def _mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise ArtifactError(f"The artifact's {what} must be a JSON object, not {value!r:.80}.")
    return value


def check_prediction_input(estimator: Any, X: Any) -> Any:
    """``X`` as a finite float matrix (dense or CSR) with the fitted number of columns.

    Arrays are checked like the training arrays (2-D, numeric, see
    :func:`~shardlearn.models._training.fitting.as_feature_matrix`), then for NaN and infinity. A
    table (pyarrow Table/RecordBatch, pandas DataFrame, dict of columns) gives the columns named in
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
    """Plain JSON types for params and small fitted values (:func:`shardlearn._json.to_json`)."""
    return to_json(value, _other_number)


def _other_number(value: Any) -> Any:
    """Other numbers (a Fraction, a complex) as they are; anything else is refused."""
    if isinstance(value, numbers.Number):
        return value
    raise ArtifactError(f"Cannot store a value of type {type(value).__name__} as JSON.")
