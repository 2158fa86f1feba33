"""What an artifact records about a model, and how a stored type name becomes a class again.

The descriptive part of ``model.json`` is gathered here from the model itself (its hook
metadata, ``classes_``, input schema, parameters) plus what the caller knows (metrics,
dataset manifest hash, engine, parent model). Optional attributes a trained model may carry
and that are recorded when present: ``training_info_`` (dict: ``engine``, ``workers``,
``dataset_manifest_sha256``, ...) and ``metrics_`` (dict).
"""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

import numpy as np

from shardlearn._json import json_default
from shardlearn._typing import Restorable, is_restorable
from shardlearn.exceptions import ArtifactError

__all__ = ["describe_model", "jsonable", "resolve_model_class"]

# Libraries whose version matters for reproducing a model; recorded when imported.
_LIBRARIES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pyarrow": "pyarrow",
    "sklearn": "scikit-learn",
    "xgboost": "xgboost",
    "torch": "torch",
    "safetensors": "safetensors",
    "ray": "ray",
}
_TRAINING_KEYS = ("engine", "workers")


def jsonable(value: Any) -> Any:
    """``json.dumps`` default: numpy scalars and arrays, tuples/sets, objects with to_dict."""
    if isinstance(value, np.generic | np.ndarray):
        return json_default(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, type):
        return value.__name__
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _to_json(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, default=jsonable))
    except (TypeError, ValueError) as error:
        raise ArtifactError(f"cannot store the {what} in model.json: {error}") from None


def library_versions() -> dict[str, str]:
    """Versions of Python, shardlearn and the imported numeric libraries."""
    import shardlearn

    versions = {"python": platform.python_version(), "shardlearn": shardlearn.__version__}
    for module, dist in _LIBRARIES.items():
        if module in sys.modules:
            versions[dist] = str(getattr(sys.modules[module], "__version__", "unknown"))
    return versions


def _estimator(model: Any) -> Any:
    for name in ("estimator_", "estimator"):
        inner = getattr(model, name, None)
        if inner is not None and not isinstance(inner, str):
            return inner
    return model


def _preprocessor(model: Any) -> Any:
    if hasattr(model, "input_schema") and not hasattr(model, "classes_"):
        return model  # a bare Preprocessor
    for name in ("preprocessor_", "preprocessor"):
        inner = getattr(model, name, None)
        if inner is not None and hasattr(inner, "input_schema"):
            return inner
    return None


def _categories(preprocessor: Any) -> dict[str, list]:
    """Known categories per column, from one-hot encoders (``columns`` + ``categories_``)."""
    found: dict[str, list] = {}
    for transformer in getattr(preprocessor, "transformers_", None) or []:
        columns = getattr(transformer, "columns", None)
        categories = getattr(transformer, "categories_", None)
        if isinstance(categories, list) and columns and len(columns) == len(categories):
            for name, values in zip(columns, categories, strict=True):
                found[str(name)] = [jsonable(v) if isinstance(v, np.generic) else v for v in values]
    return found


def _spec_columns(preprocessor: Any) -> list[dict[str, Any]]:
    """Input columns from the preprocessor's spec, when it has no recorded input schema."""
    spec = getattr(preprocessor, "columns", None) or {}
    columns = []
    for name in getattr(preprocessor, "input_columns", []):
        entry = spec.get(name, {})
        kind = entry if isinstance(entry, str) else entry.get("kind", "numeric")
        columns.append({"name": str(name), "kind": kind})
    return columns


def input_schema(model: Any) -> dict[str, Any] | None:
    """The raw input columns the model expects: name, kind, dtype and known categories."""
    preprocessor = _preprocessor(model)
    if preprocessor is not None:
        schema = getattr(preprocessor, "input_schema", None)
        if schema is not None:
            described = _to_json(schema, "input schema")
        else:
            described = {"columns": _spec_columns(preprocessor), "label": None}
        label = described.get("label") or getattr(preprocessor, "label_", None)
        described["columns"] = [c for c in described.get("columns", []) if c.get("name") != label]
        categories = _categories(preprocessor)
        for column in described["columns"]:
            if column.get("name") in categories:
                column["categories"] = categories[column["name"]]
        return described
    estimator = _estimator(model)
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is None:
            return None
        names = [f"x{i}" for i in range(int(n_features))]
    columns = [{"name": str(n), "kind": "numeric", "dtype": "float64"} for n in names]
    return {"columns": columns, "label": None}


def _params(model: Any) -> dict[str, Any]:
    if not hasattr(model, "get_params"):
        return {}
    params = model.get_params(deep=True)
    out: dict[str, Any] = {}
    for key, value in params.items():
        if hasattr(value, "get_params"):
            out[key] = type(value).__name__
            continue
        try:
            out[key] = json.loads(json.dumps(value, default=jsonable))
        except (TypeError, ValueError):
            out[key] = repr(value)
    return out


def describe_model(model: Any, hook_meta: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The descriptive part of ``model.json`` (everything but the format header and files)."""
    training = dict(getattr(_estimator(model), "training_info_", None) or {})
    training.update(getattr(model, "training_info_", None) or {})
    lineage = dict(info.get("lineage") or {})
    dataset_hash = lineage.pop("dataset_manifest_sha256", None) or training.pop(
        "dataset_manifest_sha256", None
    )
    for key in _TRAINING_KEYS:
        if key in lineage:
            training[key] = lineage.pop(key)
    classes = getattr(model, "classes_", None)
    metrics = info.get("metrics") or getattr(model, "metrics_", None)
    cls = type(model)
    described = {
        "model": {"type": cls.__name__, "module": cls.__module__, "meta": hook_meta},
        "classes": None if classes is None else list(np.asarray(classes).tolist()),
        "input_schema": input_schema(model),
        "metrics": metrics,
        "dataset_manifest_sha256": dataset_hash,
        "training": training,
        "lineage": {"params": _params(model), **lineage},
        "library_versions": library_versions(),
    }
    return _to_json(described, "model metadata")


def resolve_model_class(type_name: Any) -> type[Restorable]:
    """The class for a stored type name, looked up in the model catalogue only.

    ``Pipeline``, ``Preprocessor`` and every class in ``shardlearn.models.MODELS`` (by
    ``__name__``) can be named; nothing else. The ``module`` recorded at save time is only
    descriptive and never imported, so an artifact cannot make the loader import a module.
    """
    from shardlearn.models import MODELS, Pipeline, model_class_by_type
    from shardlearn.preprocess import Preprocessor

    special = {"Pipeline": Pipeline, "Preprocessor": Preprocessor}
    if not isinstance(type_name, str):
        raise ArtifactError(f"the artifact's model type {type_name!r} is not a class name")
    if type_name in special:
        return special[type_name]
    try:
        cls = model_class_by_type(type_name)
    except ValueError:
        known = sorted({*special, *(c.__name__ for c in MODELS.values())})
        raise ArtifactError(
            f"cannot load this artifact: unknown model type {type_name[:80]!r}; "
            f"known types: {', '.join(known)}"
        ) from None
    if not is_restorable(cls):
        raise ArtifactError(f"{type_name} cannot be loaded: it has no _from_artifact() hook")
    return cls
