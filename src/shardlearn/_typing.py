"""Shared type aliases."""

from __future__ import annotations

import os
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp

__all__ = ["ArrayLike", "Matrix", "PathLike"]

PathLike: TypeAlias = str | os.PathLike[str]
Matrix: TypeAlias = np.ndarray | sp.csr_matrix
ArrayLike: TypeAlias = np.ndarray | list
