"""Progress bars (rich) on stderr: the task graph's, and the fits' (trees, epochs, iterations).

One decision for every bar of the library, :func:`show_progress`: never with ``verbose=0``
(or False), never in a worker process of the local engine (only the driver draws: a fit that
runs as a task would garble its display); otherwise when stderr is a terminal, so logs, pipes
and CI stay clean. The environment variable ``SHARDLEARN_PROGRESS`` overrides the terminal
test: ``always`` draws the bars as on a terminal (escape codes included) wherever stderr goes,
``never`` draws none, ``auto`` (or unset) tests the terminal. Estimators take the ``verbose``
parameter scikit-learn uses (:data:`VERBOSE_CONSTRAINTS`), default True.

Every bar draws on one shared console (:func:`progress_console`), so a bar started while
another is live (a model's epochs under a search's leaderboard) nests under it instead of
both fighting over the terminal. A :class:`StepProgress` refreshes on every step, so each
step (each epoch's loss, each round of trees) is drawn at least once, whatever the refresh
rate.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column

from shardlearn._validation import Interval, Type

__all__ = [
    "PROGRESS_ENV",
    "VERBOSE_CONSTRAINTS",
    "GraphProgress",
    "StepProgress",
    "progress_console",
    "show_progress",
]

#: Environment variable overriding the terminal test: "auto" (default), "always" or "never".
PROGRESS_ENV = "SHARDLEARN_PROGRESS"
_MODES = ("auto", "always", "never")
#: ``_parameter_constraints`` entry of an estimator's ``verbose``: a bool or an int >= 0.
VERBOSE_CONSTRAINTS: list = [Type(bool), Interval("int", 0, None)]
# One console per mode; "always" renders as a terminal wherever stderr goes.
_CONSOLES: dict[bool, Console] = {}


def _mode() -> str:
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(
            f"The environment variable {PROGRESS_ENV} must be one of {', '.join(_MODES)}. "
            f"Got {os.environ[PROGRESS_ENV]!r}."
        )
    return mode


def show_progress(verbose: bool | int = True) -> bool:
    """Whether to draw a progress bar: the one place every bar of the library asks.

    Parameters
    ----------
    verbose : bool or int, default=True
        An estimator's ``verbose``; 0 or False never shows a bar.

    Returns
    -------
    bool
        False when ``verbose`` is 0 or in an engine's worker process; else per
        ``SHARDLEARN_PROGRESS``, by default whether stderr is a terminal.
    """
    from shardlearn.engine import _worker

    # A fit inside a task (a search trial, a pipeline stage) runs in a worker process whose
    # stderr is the driver's terminal: its bar would garble the driver's display.
    if not verbose or _worker.IN_WORKER:
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


class StepProgress:
    """A bar over the steps of a fit (trees, epochs, iterations) with a line of figures.

    A context manager; does nothing when ``enabled`` is False (decide with
    :func:`show_progress`). The final state stays on screen as one line.

    Parameters
    ----------
    description : str
        What is counted, e.g. ``"RandomForestClassifier trees"``.
    total : int or None
        Steps expected (None: unknown).
    enabled : bool
        Draw the bar.

    Examples
    --------
    >>> with StepProgress("epochs", total=2, enabled=False) as bar:
    ...     bar.update(1, info="loss 0.5")
    """

    def __init__(self, description: str, total: int | None, *, enabled: bool) -> None:
        self.enabled = enabled
        self._description = description
        self._total = total
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> StepProgress:
        if self.enabled:
            # The bar takes the width left over: on a narrow terminal it shrinks, not the
            # counts and figures.
            self._progress = Progress(
                TextColumn("{task.description}", style="bold", markup=False),
                BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=5)),
                MofNCompleteColumn(table_column=Column(no_wrap=True)),
                TextColumn("{task.fields[info]}", markup=False, table_column=Column(no_wrap=True)),
                TimeElapsedColumn(table_column=Column(no_wrap=True)),
                console=progress_console(),
                expand=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self._total, info="")
        return self

    def update(self, completed: int, *, info: str = "", description: str | None = None) -> None:
        """Show ``completed`` steps done and ``info`` (the latest figures), drawn at once."""
        if self._progress is None:
            return
        fields: dict[str, Any] = {"info": info}
        if description is not None:
            fields["description"] = description
        self._progress.update(self._task, completed=completed, refresh=True, **fields)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()


class GraphProgress:
    """A context manager around a rich progress bar; does nothing when disabled."""

    def __init__(self, enabled: bool, description: str = "tasks") -> None:
        self.enabled = enabled
        self._description = description
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> GraphProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("running {task.fields[running]}"),
                TextColumn("cached {task.fields[cached]}"),
                TextColumn("[red]failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                console=progress_console(),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self._description, total=0, running=0, cached=0, failed=0
            )
        return self

    def update(self, *, total: int, done: int, running: int, cached: int, failed: int) -> None:
        """Show the current counts."""
        if self._progress is not None:
            self._progress.update(
                self._task, total=total, completed=done, running=running, cached=cached,
                failed=failed,
            )  # fmt: skip

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
