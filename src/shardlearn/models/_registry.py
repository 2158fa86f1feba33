"""Model classes by CLI name (``logistic``) and by type name (``LogisticRegression``).

The registry lets the CLI, the artifact loader and the search look a model up without
importing every model module by hand. A renamed class keeps its former type names here
(``register_model("xgboost", formerly=("GradientBoostingClassifier",))``), so artifacts that
recorded the old name still resolve -- through the catalogue name, never a module path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from shardlearn._validation import unknown_name_message
from shardlearn.base import BaseEstimator

__all__ = ["MODELS", "model_class", "model_class_by_type", "register_model", "type_names"]

T = TypeVar("T", bound=type[BaseEstimator])

MODELS: dict[str, type[BaseEstimator]] = {}
# Type names a registered class had before a rename -> its catalogue name (artifacts keep them).
_FORMER_TYPES: dict[str, str] = {}


def register_model(name: str, *, formerly: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Class decorator registering a model class under the CLI name ``name``.

    ``formerly`` lists the class's earlier type names, which :func:`model_class_by_type`
    still resolves (to read artifacts saved before the rename).
    """

    def decorate(cls: T) -> T:
        MODELS[name] = cls
        _FORMER_TYPES.update(dict.fromkeys(formerly, name))
        return cls

    return decorate


def model_class(name: str) -> type[BaseEstimator]:
    """The model class registered as ``name``; an unknown name lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(unknown_name_message("model", name, MODELS)) from None


def type_names(cls: type) -> frozenset[str]:
    """The names an artifact may record for ``cls``: its ``__name__`` and any former one."""
    former = (old for old, name in _FORMER_TYPES.items() if MODELS.get(name) is cls)
    return frozenset({cls.__name__, *former})


def model_class_by_type(type_name: str) -> type[BaseEstimator]:
    """The registered class whose ``__name__`` (or a former type name) is ``type_name``."""
    for cls in MODELS.values():
        if cls.__name__ == type_name:
            return cls
    if type_name in _FORMER_TYPES:
        return MODELS[_FORMER_TYPES[type_name]]
    raise ValueError(
        unknown_name_message("model type", type_name, (c.__name__ for c in MODELS.values()))
    )
