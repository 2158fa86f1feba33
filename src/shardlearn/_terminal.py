"""Whether to draw a progress bar, and the stderr console every bar draws on.

The one decision for every bar of the library (ingest's, the task graph's, the fits'), kept
at the bottom layer so that ``data`` (ingest) asks the same function as ``engine`` and
``models``: never with ``verbose=0`` (or False), never in a worker process of the local engine
(only the driver draws: a fit or an ingest that runs as a task shares the driver's terminal and
would garble its display); otherwise when stderr is a terminal, so logs, pipes and CI stay
clean. The environment variable ``SHARDLEARN_PROGRESS`` overrides the terminal test:
``always`` draws the bars as on a terminal (escape codes included) wherever stderr goes,
``never`` draws none, ``auto`` (or unset) tests the terminal.

Every bar draws on one shared console (:func:`progress_console`), so a bar started while
another is live (a model's epochs under a search's leaderboard) nests under it instead of both
fighting over the terminal. The bars themselves are in :mod:`shardlearn.engine._progress`.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

from shardlearn._validation import Interval, Type

__all__ = ["PROGRESS_ENV", "VERBOSE_CONSTRAINTS", "progress_console", "show_progress"]

#: Environment variable overriding the terminal test: "auto" (default), "always" or "never".
PROGRESS_ENV = "SHARDLEARN_PROGRESS"
_MODES = ("auto", "always", "never")
#: ``_parameter_constraints`` entry of an estimator's ``verbose``: a bool or an int >= 0.
VERBOSE_CONSTRAINTS: list = [Type(bool), Interval("int", 0, None)]
# One console per mode; "always" renders as a terminal wherever stderr goes.
_CONSOLES: dict[bool, Console] = {}
# The local engine's worker loop; set in its worker processes.
_WORKER_MODULE = "shardlearn.engine._worker"


def _mode() -> str:
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(
            f"The environment variable {PROGRESS_ENV} must be one of {', '.join(_MODES)}. "
            f"Got {os.environ[PROGRESS_ENV]!r}."
        )
    return mode


def _in_worker_process() -> bool:
    # Read from sys.modules, not imported: the engine is a layer above this module, and a
    # process that never loaded the worker loop is not a worker.
    worker = sys.modules.get(_WORKER_MODULE)
    return bool(getattr(worker, "IN_WORKER", False))


def show_progress(verbose: bool | int = True) -> bool:
    """Whether to draw a progress bar: the one place every bar of the library asks.

    Parameters
    ----------
    verbose : bool or int, default=True
        An estimator's ``verbose`` (or ingest's ``progress``); 0 or False never shows a bar.

    Returns
    -------
    bool
        False when ``verbose`` is 0 or in an engine's worker process; else per
        ``SHARDLEARN_PROGRESS``, by default whether stderr is a terminal.
    """
    if not verbose or _in_worker_process():
        return False
    mode = _mode()
    if mode != "auto":
        return mode == "always"
    stream = sys.stderr
    return stream is not None and stream.isatty()


def progress_console() -> Console:
    """The stderr console every bar draws on (a terminal one under ``always``)."""
    forced = _mode() == "always"
    if forced not in _CONSOLES:
        # stderr=True follows sys.stderr as it is at each write (a redirect, pytest's capture).
        _CONSOLES[forced] = Console(stderr=True, force_terminal=True if forced else None)
    return _CONSOLES[forced]
