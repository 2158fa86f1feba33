"""Exceptions raised by shardlearn.

Every error a user can cause derives from :class:`ShardlearnError`, so callers can catch the
whole family at once, and the CLI turns any of them into a one-line message with exit code 1.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ConvergenceWarning",
    "DataError",
    "EngineError",
    "GraphCycleError",
    "NotFittedError",
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


class NotFittedError(ShardlearnError, AttributeError):
    """An estimator or transformer was used before ``fit``."""


class ConvergenceWarning(UserWarning):
    """An iterative trainer stopped at ``max_iter`` before meeting its tolerance."""
