"""numpy to JSON: the one conversion of numpy scalars and arrays to plain JSON types.

Model artifacts (models/_base.py), the registry's metadata (registry/_meta.py), dataset
manifests (data/_writer.py), evaluation reports (metrics/report.py) and search summaries
all go through :func:`to_json` (a recursive conversion) or :func:`json_default` (the
``default=`` hook of ``json.dumps``); each adds only its own policy for other values. It sits
in the bottom layer (DESIGN §11) so that every layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["json_default", "to_json"]


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any, default: Callable[[Any], Any] = _refuse, *, finite: bool = False) -> Any:
    """``value`` in plain JSON types, recursively.

    numpy scalars become Python scalars, arrays nested lists, tuples lists and mapping keys
    strings; ``None``, ``bool``, ``int``, ``float`` and ``str`` are kept.

    Parameters
    ----------
    value : any
        What to convert.
    default : callable, optional
        Called with any other value; its result is used as is. By default a TypeError.
    finite : bool, default False
        NaN and infinities become None (strict JSON has neither).

    Examples
    --------
    >>> import numpy as np
    >>> to_json({"classes": np.array([0, 1]), 1: (np.float32(0.5), None)})
    {'classes': [0, 1], '1': [0.5, None]}
    >>> to_json([np.nan, 2.0], finite=True)
    [None, 2.0]
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Mapping):
        return {str(k): to_json(v, default, finite=finite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, default, finite=finite) for v in value]
    if isinstance(value, float):
        return None if finite and not math.isfinite(value) else value
    if value is None or isinstance(value, str | int):  # bool is an int
        return value
    return default(value)


def json_default(value: Any) -> Any:
    """The ``default=`` of ``json.dumps`` for numpy: scalars as Python scalars, arrays as
    lists; a TypeError for anything else.

    >>> import json
    >>> json.dumps({"n": np.int64(3), "w": np.zeros(2)}, default=json_default)
    '{"n": 3, "w": [0.0, 0.0]}'
    """
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return _refuse(value)
