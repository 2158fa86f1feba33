"""Model classes by CLI name (``logistic``) and by type name (``LogisticRegression``).

The registry lets the CLI, the artifact loader and the search look a model up without
importing every model module by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from shardlearn._validation import unknown_name_message

__all__ = ["MODELS", "model_class", "model_class_by_type", "register_model"]

T = TypeVar("T", bound=type)

MODELS: dict[str, type] = {}


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator registering a model class under the CLI name ``name``."""

    def decorate(cls: T) -> T:
        MODELS[name] = cls
        return cls

    return decorate


def model_class(name: str) -> type:
    """The model class registered as ``name``; an unknown name lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(unknown_name_message("model", name, MODELS)) from None


def model_class_by_type(type_name: str) -> type:
    """The registered class whose ``__name__`` is ``type_name``."""
    for cls in MODELS.values():
        if cls.__name__ == type_name:
            return cls
    raise ValueError(
        unknown_name_message("model type", type_name, (c.__name__ for c in MODELS.values()))
    )
