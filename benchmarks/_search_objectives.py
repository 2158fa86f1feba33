"""Synthetic trial work for benchmarks/search.py (importable by the engine's workers)."""

from __future__ import annotations

import time
from typing import Any


def sleep_objective(params: dict[str, Any], budget: Any) -> float:
    """Synthetic work: sleep for params['seconds'] and return x."""
    time.sleep(params["seconds"])
    return params["x"]
