"""Objectives for the concurrency tests (workers import them by reference).

:func:`gated` blocks the configuration ``x == params["slow"]`` until the test writes to the
FIFO named by ``params["gate"]``: an event across processes, no sleeping.
"""

from __future__ import annotations

from typing import Any


def gated(params: dict[str, Any], budget: Any) -> float:
    """Score ``x`` (times the budget); the slow configuration waits for the gate first."""
    if params["x"] == params["slow"]:
        with open(params["gate"]) as gate:  # blocks until the test opens it for writing
            gate.read()
    return params["x"] * (1.0 if budget is None else budget)
