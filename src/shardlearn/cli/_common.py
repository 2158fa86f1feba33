"""Pieces every CLI command shares: the console, error handling, shared options."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import typer
from rich.console import Console

from shardlearn.exceptions import ShardlearnError

__all__ = ["DEBUG_ENV", "console", "err_console", "fail", "run_app"]

console = Console()
err_console = Console(stderr=True)

DEBUG_ENV = "SHARDLEARN_DEBUG"


def fail(message: str) -> typer.Exit:
    """Print a one-line user error and return the Exit(1) to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def run_app(app: typer.Typer, argv: Sequence[str] | None = None) -> None:
    """Run ``app``; a :class:`ShardlearnError` becomes one line and exit code 1.

    ``--debug`` anywhere on the command line (or ``SHARDLEARN_DEBUG=1``) shows the traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV) == "1"
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="shardlearn", standalone_mode=True)
    except ShardlearnError as error:
        if debug:
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise SystemExit(fail(first_line).exit_code) from None
    except (FileNotFoundError, PermissionError) as error:
        if debug:
            raise
        raise SystemExit(fail(str(error)).exit_code) from None
