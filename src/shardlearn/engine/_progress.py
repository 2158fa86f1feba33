"""The task-graph progress bar: tasks done/total, running, cached, failed (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["GraphProgress"]


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
                console=Console(stderr=True),
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
