"""Shared type aliases and protocols."""

from __future__ import annotations

import os
from typing import Any, Protocol, TypeAlias, TypeGuard

import numpy as np
import scipy.sparse as sp

__all__ = ["ArrayLike", "Matrix", "PathLike", "Restorable", "is_restorable"]

PathLike: TypeAlias = str | os.PathLike[str]
Matrix: TypeAlias = np.ndarray | sp.csr_matrix
ArrayLike: TypeAlias = np.ndarray | list


class Restorable(Protocol):
    """A class that rebuilds a fitted object from its artifact parts (models, preprocessors)."""

    @classmethod
    def _from_artifact(
        cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]
    ) -> Any: ...


def is_restorable(cls: object) -> TypeGuard[type[Restorable]]:
    """Whether ``cls`` is a class with the ``_from_artifact`` hook (checked before loading)."""
    return isinstance(cls, type) and callable(getattr(cls, "_from_artifact", None))
