"""Progress bars (rich) on stderr: the task graph's, and the fits' (trees, epochs, iterations).

Whether to draw one is decided in one place for the whole library,
:func:`shardlearn._terminal.show_progress` (re-exported here and by :mod:`shardlearn.engine`):
never with ``verbose=0``, never in a worker process, else when stderr is a terminal or
``SHARDLEARN_PROGRESS`` says so. Every bar draws on the shared stderr console
(:func:`~shardlearn._terminal.progress_console`), so bars nest. A :class:`StepProgress`
refreshes on every step, so each step (each epoch's loss, each round of trees) is drawn at
least once, whatever the refresh rate.
"""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column

from shardlearn._terminal import (
    PROGRESS_ENV,
    VERBOSE_CONSTRAINTS,
    progress_console,
    show_progress,
)

__all__ = [
    "PROGRESS_ENV",
    "VERBOSE_CONSTRAINTS",
    "GraphProgress",
    "StepProgress",
    "progress_console",
    "show_progress",
]


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
