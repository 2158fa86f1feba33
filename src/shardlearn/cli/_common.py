"""Pieces every CLI command shares: the console, error handling, shared options."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console

from shardlearn.exceptions import ShardlearnError

__all__ = [
    "DEBUG_ENV",
    "AllowUnencryptedOption",
    "AllowUnsignedOption",
    "EngineOption",
    "WorkersOption",
    "console",
    "engine_context",
    "err_console",
    "fail",
    "run_app",
]

console = Console()
err_console = Console(stderr=True)

DEBUG_ENV = "SHARDLEARN_DEBUG"

# Shared --engine / --workers options (engine owner). Use them as parameter annotations:
#     def train(..., engine: EngineOption = None, workers: WorkersOption = None):
#         with engine_context(engine, workers) as eng: ...
EngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="Where to compute: local, ray or ray:ADDRESS (default: $SHARDLEARN_ENGINE or local).",
        show_default=False,
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Number of workers (default: the number of CPUs; 1 runs in this process).",
        show_default=False,
    ),
]

# Shared by every command that loads a model (predict, evaluate, compare, serve): the signing
# and encryption policy of shardlearn.load(..., allow_unsigned=, allow_unencrypted=).
AllowUnsignedOption = Annotated[
    bool,
    typer.Option(
        "--allow-unsigned",
        help="Load an unsigned model although a signing or public key is configured.",
    ),
]
AllowUnencryptedOption = Annotated[
    bool,
    typer.Option(
        "--allow-unencrypted",
        help="Load a plaintext model although an encryption key is configured.",
    ),
]


@contextlib.contextmanager
def engine_context(spec: str | None, workers: int | None) -> Iterator[Any]:
    """The engine chosen by ``--engine``/``--workers``, current for the block, closed after."""
    from shardlearn.engine import engine, engine_from_cli

    with engine_from_cli(spec, workers) as eng, engine(eng):
        yield eng


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
