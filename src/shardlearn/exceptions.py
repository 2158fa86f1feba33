"""Exceptions raised by shardlearn.

Every error a user can cause derives from :class:`ShardlearnError`, so callers can catch the
whole family at once, and the CLI turns any of them into a one-line message with exit code 1.

:class:`NotFittedError` and :class:`ConvergenceWarning` also subclass scikit-learn's classes of
the same name, so code written for scikit-learn (``except NotFittedError``, warning filters on
``sklearn.exceptions.ConvergenceWarning``, scikit-learn's estimator checks) handles ours too.
They are defined in :mod:`shardlearn._sklearn_errors` and looked up from here on first use:
importing scikit-learn takes a second or more, which the engine, data and CLI modules (which
import this module but never those two names) should not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the type checker sees the two classes __getattr__ hands out
    from shardlearn._sklearn_errors import ConvergenceWarning, NotFittedError

__all__ = [
    "ArtifactError",
    "ConvergenceWarning",  # defined on first use, see __getattr__
    "DataError",
    "EngineError",
    "GraphCycleError",
    "NotFittedError",  # defined on first use, see __getattr__
    "ResourceError",
    "SchemaError",
    "ShardlearnError",
    "SpecError",
    "TaskFailed",
    "WorkerLost",
]


class ShardlearnError(Exception):
    """Base class of every error shardlearn raises on purpose."""


class SchemaError(ShardlearnError, ValueError):
    """Input columns or types do not match what was expected (missing column, bad kind)."""


class DataError(ShardlearnError, ValueError):
    """Input data cannot be used: empty file, too many rejected rows, a single class, NaN."""


class EngineError(ShardlearnError, RuntimeError):
    """An engine could not be started, reached or used."""


class ResourceError(EngineError):
    """A task asks for more resources (cpus, gpus, memory) than the engine can ever offer."""


class WorkerLost(EngineError):
    """A worker process or actor died; the engine may reassign its shards and retry."""


class TaskFailed(ShardlearnError, RuntimeError):
    """An exception was raised inside a task. Carries the remote traceback as text.

    Parameters
    ----------
    message : str
        What failed, usually ``"<task>: <ExceptionType>: <message>"``.
    remote_traceback : str, optional
        The formatted traceback from the process where the task ran.
    """

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        base = super().__str__()
        if self.remote_traceback:
            return f"{base}\n\nRemote traceback:\n{self.remote_traceback}"
        return base


class GraphCycleError(ShardlearnError, ValueError):
    """A task graph or pipeline spec has a dependency cycle; the message shows its path."""


class SpecError(ShardlearnError, ValueError):
    """A pipeline or search spec is invalid; the message names the stage and the key."""


class ArtifactError(ShardlearnError):
    """A model artifact is missing, unsigned, tampered with, or cannot be decrypted."""


_SKLEARN_BASED = ("ConvergenceWarning", "NotFittedError")


def __getattr__(name: str) -> type:
    if name in _SKLEARN_BASED:
        from shardlearn import _sklearn_errors

        return getattr(_sklearn_errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
