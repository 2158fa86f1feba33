"""The live leaderboard of a search (rich), for Python and the CLI alike.

While the search runs, one line of counts (trials done, running, loaded from the cache, failed,
the best score) and the top rows are redrawn after every finished trial. The live view is
transient: when the search ends it is erased and the final leaderboard is printed once, so a
terminal shows it exactly once, whatever its height. Nothing is drawn when ``verbose`` is 0 or
stderr is not a terminal (:func:`shardlearn.engine.show_progress`); the one stderr console
all progress shares (:func:`shardlearn.engine.progress_console`) lets a fit's own bar nest
under it.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["SHOWN_ROWS", "SearchProgress", "leaderboard_table"]

#: Leaderboard rows drawn (the files under ``out`` hold them all).
SHOWN_ROWS = 10


def _short(params: dict[str, Any]) -> str:
    items = params.items()
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)


def leaderboard_table(rows: list[dict[str, Any]], metric: str, title: str = "") -> Table:
    """The top :data:`SHOWN_ROWS` rows of a leaderboard as a rich table.

    Numbers are never cut: their columns do not wrap, and the parameters column folds instead.
    """
    table = Table(title=title or f"search leaderboard ({metric})", title_justify="left")
    for column in ("#", "trial", "model", "rung", metric, "± std", "seconds"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    table.add_column("params", overflow="fold")
    for row in rows[:SHOWN_ROWS]:
        score = "failed" if row["status"] != "ok" else f"{row['score']:.4f}"
        std = "" if row["score_std"] is None else f"{row['score_std']:.4f}"
        params = row["error"] if row["status"] != "ok" else _short(row["params"])
        table.add_row(str(row["rank"]), row["trial"], row["model"], str(row["rung"]), score, std,
                      f"{row['seconds']:.1f}", Text(str(params)))  # fmt: skip
    return table


class SearchProgress:
    """A context manager drawing a search's live leaderboard; does nothing when disabled.

    Parameters
    ----------
    metric : str
    total : int or None
        Trials the search will run, when known up front (not for halving/ASHA).
    enabled : bool
    console : rich Console, optional
        Where to draw; default the shared progress console on stderr.
    """

    def __init__(
        self, metric: str, total: int | None, *, enabled: bool, console: Console | None = None
    ) -> None:
        self.metric, self.total, self.enabled = metric, total, enabled
        self._console = console
        self._live: Live | None = None

    def __enter__(self) -> SearchProgress:
        if self.enabled:
            if self._console is None:
                from shardlearn.engine import progress_console

                self._console = progress_console()
            self._live = Live(console=self._console, auto_refresh=False, transient=True)
            self._live.start()
        return self

    def update(self, board: list[dict[str, Any]], running: int, cached: int) -> None:
        """Redraw after a finished trial: the counts and the top rows of ``board``."""
        if self._live is None:
            return
        self._live.update(Group(self._counts(board, running, cached),
                                leaderboard_table(board, self.metric)), refresh=True)  # fmt: skip

    def _counts(self, board: list[dict[str, Any]], running: int, cached: int) -> Text:
        done = sum(1 for _ in board)
        failed = sum(1 for row in board if row["status"] != "ok")
        of = f"/{self.total}" if self.total else ""
        best = next((row["score"] for row in board if row["status"] == "ok"), None)
        line = f"configurations {done}{of}  running {running}  cached {cached}  failed {failed}"
        if best is not None:
            line += f"  best {self.metric} {best:.4f}"
        return Text(line, style="bold")

    def finish(self, board: list[dict[str, Any]]) -> None:
        """Erase the live view and print the final leaderboard once."""
        if self._live is None:
            return
        self._live.stop()
        self._live = None
        if board and self._console is not None:
            self._console.print(leaderboard_table(board, self.metric))

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()
