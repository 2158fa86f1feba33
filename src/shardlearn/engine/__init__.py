"""Engines run shardlearn's parallel work: ``local`` worker processes or a Ray cluster.

>>> from shardlearn.engine import engine
>>> with engine("local", workers=1) as eng:
...     eng.submit(pow, 2, 10).result()
1024

See :mod:`shardlearn.engine.base` for the interface and :mod:`shardlearn.engine.graph` for the
task-graph scheduler. Ray is imported only when a Ray engine is created.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from shardlearn.engine._progress import (
    PROGRESS_ENV,
    VERBOSE_CONSTRAINTS,
    StepProgress,
    progress_console,
    show_progress,
)
from shardlearn.engine._threads import limit_blas
from shardlearn.engine.base import (
    DEFAULT_MAX_RETRIES,
    ENGINE_ENV,
    Engine,
    Resources,
    WorkerGroup,
    WorkerState,
    assign_by_bytes,
    create_engine,
    engine,
    engine_from_cli,
    get_engine,
    tree_combine,
)
from shardlearn.engine.graph import RunReport, Task, TaskGraph, TaskRef

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "ENGINE_ENV",
    "PROGRESS_ENV",
    "VERBOSE_CONSTRAINTS",
    "Engine",
    "Resources",
    "RunReport",
    "StepProgress",
    "Task",
    "TaskGraph",
    "TaskRef",
    "WorkerGroup",
    "WorkerState",
    "assign_by_bytes",
    "create_engine",
    "engine",
    "engine_from_cli",
    "get_engine",
    "limit_blas",
    "progress_console",
    "show_progress",
    "tree_combine",
]


class _CallableModule(types.ModuleType):
    """This package, callable as :func:`engine`.

    Importing ``shardlearn.engine`` binds the package to ``shardlearn.engine``, hiding the
    top-level ``shardlearn.engine(...)`` function; calling the package does the same thing, so
    ``sl.engine("local", workers=2)`` works whatever was imported first.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return engine(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
