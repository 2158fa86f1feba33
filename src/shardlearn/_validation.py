"""Parameter validation with one message format for the whole library.

Each estimator declares ``_parameter_constraints``: a mapping of parameter name to a list of
constraints; the value is valid when any constraint accepts it. Messages look like::

    The 'C' parameter of LogisticRegression must be a float > 0. Got -1.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Interval",
    "Options",
    "Type",
    "closest_names",
    "validate_params",
    "unknown_name_message",
]


@dataclass(frozen=True)
class Interval:
    """A numeric range. ``kind`` is ``"int"``, ``"float"`` or ``"real"`` (int or float).

    ``closed`` is one of ``"both"``, ``"left"``, ``"right"``, ``"neither"``.
    """

    kind: str
    low: float | None
    high: float | None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind == "int" and not isinstance(value, numbers.Integral):
            return False
        if self.kind in ("float", "real") and not isinstance(value, numbers.Real):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        low_ok = self.low is None or (
            value >= self.low if self.closed in ("both", "left") else value > self.low
        )
        high_ok = self.high is None or (
            value <= self.high if self.closed in ("both", "right") else value < self.high
        )
        return low_ok and high_ok

    def describe(self) -> str:
        name = {"int": "an int", "float": "a float", "real": "a number"}[self.kind]
        parts = []
        if self.low is not None:
            parts.append(f"{'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}")
        return f"{name} {' and '.join(parts)}".strip()


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:
            return False

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Type:
    """An instance of the given type(s); ``None`` is expressed as ``Type(type(None))``."""

    types: type | tuple[type, ...]
    label: str = ""

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in _as_tuple(self.types):
            return False
        return isinstance(value, self.types)

    def describe(self) -> str:
        if self.label:
            return self.label
        names = [("None" if t is type(None) else t.__name__) for t in _as_tuple(self.types)]
        return "an instance of " + " or ".join(names)


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def validate_params(owner: str, params: Mapping[str, Any], constraints: Mapping[str, list]) -> None:
    """Raise ``ValueError`` naming the first parameter that no constraint accepts.

    Parameters
    ----------
    owner : str
        Class name used in the message.
    params : mapping
        Parameter values, e.g. ``estimator.get_params(deep=False)``.
    constraints : mapping
        Parameter name to a list of constraints (``Interval``, ``Options``, ``Type``).
    """
    for name, value in params.items():
        rules = constraints.get(name)
        if not rules or any(rule.accepts(value) for rule in rules):
            continue
        wanted = " or ".join(rule.describe() for rule in rules)
        raise ValueError(f"The {name!r} parameter of {owner} must be {wanted}. Got {value!r}.")


def closest_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Near-miss suggestions for ``name`` among ``candidates``."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)


def unknown_name_message(what: str, name: str, valid: Iterable[str]) -> str:
    """A message for an unknown name that lists the valid ones and suggests near misses.

    >>> unknown_name_message("parameter", "Cc", ["C", "tol"])
    "Unknown parameter 'Cc'. Did you mean 'C'? Valid: C, tol."
    """
    valid = sorted(valid)
    close = closest_names(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}."
