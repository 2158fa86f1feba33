"""shardlearn: distributed machine learning for large classification datasets.

The public names below are imported lazily, so ``import shardlearn`` stays fast and never
starts an engine or imports an optional extra (Ray, torch) by itself. A renamed class's old
name (``GradientBoostingClassifier``) still works for one release, with a ``FutureWarning``
on every use (:data:`shardlearn.models.RENAMED`).

>>> import shardlearn as sl
>>> sl.__version__
'0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Dataset": "shardlearn.data",
    "ingest": "shardlearn.data",
    "engine": "shardlearn.engine",
    "TaskGraph": "shardlearn.engine",
    "Preprocessor": "shardlearn.preprocess",
    "Pipeline": "shardlearn.models",
    "LogisticRegression": "shardlearn.models",
    "LinearSVC": "shardlearn.models",
    "GaussianNB": "shardlearn.models",
    "MultinomialNB": "shardlearn.models",
    "SGDClassifier": "shardlearn.models",
    "RandomForestClassifier": "shardlearn.models",
    "ExtraTreesClassifier": "shardlearn.models",
    "MLPClassifier": "shardlearn.models",
    "ConvNetClassifier": "shardlearn.models",
    "SelfTrainingClassifier": "shardlearn.models",
    "XGBoostClassifier": "shardlearn.models",
    "KMeans": "shardlearn.models",
    "PCA": "shardlearn.models",
    "evaluate": "shardlearn.metrics",
    "Report": "shardlearn.metrics",
    "Registry": "shardlearn.registry",
    "save": "shardlearn.registry",
    "load": "shardlearn.registry",
}

# Deprecated aliases: never cached in globals(), so every use warns.
_RENAMED = {"GradientBoostingClassifier"}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        return importlib.import_module("shardlearn.models").renamed(name, stacklevel=2)
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'shardlearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
