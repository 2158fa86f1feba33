"""Classifiers trained across a WorkerGroup, and the Pipeline that pairs them with preprocessing.

One package or module per model family, as in scikit-learn:

* :mod:`.linear_model` -- LogisticRegression, LinearSVC, SGDClassifier;
* :mod:`.naive_bayes` -- GaussianNB, MultinomialNB;
* :mod:`.ensemble` -- RandomForestClassifier, ExtraTreesClassifier, XGBoostClassifier;
* :mod:`.neural_network` -- MLPClassifier, ConvNetClassifier (torch);
* :mod:`.cluster` -- KMeans; :mod:`.decomposition` -- PCA (on KMeans's unsupervised plumbing);
* :mod:`.semi_supervised` -- SelfTrainingClassifier (any catalogue classifier as its base);
* :mod:`.pipeline` -- Pipeline (preprocessing, transformers, a final estimator).

What they share is private to this package: ``_training`` (preparing a fit on the workers,
where it runs, class weights, scoring), ``_base`` (the classifier mixin and artifact hooks) and
``_registry`` (the catalogue that resolves a class by name: an artifact records a type name,
never a module path). A family imports only these and, where it builds on one, ``cluster``
(``decomposition`` and ``semi_supervised``); ``.importlinter`` enforces it.

Optional extras (torch) are imported only when their model is used.

Renamed classes keep their old name for one release as a deprecated alias (:data:`RENAMED`):
the module's ``__getattr__`` returns the new class with one ``FutureWarning`` per use, so
``from shardlearn.models import GradientBoostingClassifier`` still works and warns.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from shardlearn.models._registry import MODELS, model_class, model_class_by_type
from shardlearn.models._training.execution import recording, sharing_cores, timed
from shardlearn.models._training.scoring import score_split
from shardlearn.models.cluster import KMeans
from shardlearn.models.decomposition import PCA
from shardlearn.models.ensemble import (
    ExtraTreesClassifier,
    RandomForestClassifier,
    XGBoostClassifier,
)
from shardlearn.models.linear_model import LinearSVC, LogisticRegression, SGDClassifier
from shardlearn.models.naive_bayes import GaussianNB, MultinomialNB
from shardlearn.models.neural_network import ConvNetClassifier, MLPClassifier  # torch: lazily
from shardlearn.models.pipeline import Pipeline
from shardlearn.models.semi_supervised import SelfTrainingClassifier

__all__ = [
    "MODELS",
    "ConvNetClassifier",
    "ExtraTreesClassifier",
    "GaussianNB",
    "KMeans",
    "LinearSVC",
    "LogisticRegression",
    "MLPClassifier",
    "MultinomialNB",
    "PCA",
    "Pipeline",
    "RandomForestClassifier",
    "SGDClassifier",
    "SelfTrainingClassifier",
    "XGBoostClassifier",
    "model_class",
    "model_class_by_type",
    "recording",
    "score_split",
    "sharing_cores",
    "timed",
]

#: Deprecated public names: old name -> (new name, the release that removes the old one, why).
RENAMED: dict[str, tuple[str, str, str]] = {
    "GradientBoostingClassifier": (
        "XGBoostClassifier",
        "0.2.0",
        "it is XGBoost with XGBoost's defaults, not scikit-learn's GradientBoostingClassifier",
    ),
}


def renamed(name: str, stacklevel: int = 2) -> Any:
    """The class a deprecated name stands for, with a FutureWarning naming its replacement.

    Parameters
    ----------
    name : str
        The old name, a key of :data:`RENAMED`.
    stacklevel : int, default=2
        Which frame the warning points at, counted from the caller as :func:`warnings.warn`
        counts it: 2 is the caller's caller (the user's line, when the caller is a module's
        ``__getattr__``).

    Raises
    ------
    AttributeError
        ``name`` is not a renamed class.
    """
    if name not in RENAMED:
        raise AttributeError(f"module 'shardlearn.models' has no attribute {name!r}")
    new, removed_in, why = RENAMED[name]
    if _import_probe(sys._getframe(stacklevel)):
        return globals()[new]
    warnings.warn(
        f"{name} is renamed {new} ({why}); the old name is removed in shardlearn "
        f"{removed_in}. Use {new}.",
        FutureWarning,
        stacklevel=stacklevel + 1,
    )
    return globals()[new]


def _import_probe(frame: Any) -> bool:
    """Whether ``frame`` is importlib checking ``from package import name`` with ``hasattr``.

    That check runs before the import statement's own lookup, so warning on it too would
    warn twice for one ``from shardlearn import GradientBoostingClassifier``.
    """
    code = frame.f_code
    return code.co_name == "_handle_fromlist" and "importlib" in code.co_filename


def __getattr__(name: str) -> Any:
    return renamed(name, stacklevel=2)
