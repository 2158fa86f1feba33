"""Module-level objectives (workers import them by reference)."""

from __future__ import annotations

import math
from typing import Any


def linear_in_x(params: dict[str, Any], budget: Any) -> float:
    """Better with larger x, and with more budget: halving must keep the largest x."""
    return params["x"] * (1.0 if budget is None else budget)


def negative_branin(params: dict[str, Any], budget: Any) -> float:
    """Minus the Branin function (maximum -0.397887 at three points)."""
    x, y = params["x"], params["y"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return -((y - b * x**2 + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10)


def fails_when_x_is_large(params: dict[str, Any], budget: Any) -> float:
    """Raises for x > 0.5, to check that failed trials are recorded and the search goes on."""
    if params["x"] > 0.5:
        raise RuntimeError(f"x={params['x']:.3f} is too large")
    return params["x"]
