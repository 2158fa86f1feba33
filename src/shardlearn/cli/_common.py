"""Pieces every CLI command shares: the console, error handling, shared options, tables.

Text that comes from the user, the data or an exception (paths, model names, class labels,
error messages) is never parsed as rich markup: an error such as ``closing tag
'[/__w/pytorch/...]'`` would crash the printer. Styled output is built with :func:`labelled`
(a styled label then plain text) and tables are printed with :func:`print_table`, which renders
every cell, the title and the caption as plain text.

:func:`print_table` also never truncates a value. Into a pipe or a log (not a terminal) a table
is written at its natural width, however wide. In a terminal too narrow for it, the values wrap
at spaces without cutting a word (headers may fold); when even that does not fit, each row is
printed as a block of ``column  value`` lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import typer
from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

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
    "labelled",
    "print_table",
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


def labelled(label: str, style: str, message: object) -> Text:
    """``label`` in ``style``, a space, then ``message`` as plain text (never markup)."""
    return Text.assemble((label, style), " ", str(message))


def fail(message: str) -> typer.Exit:
    """Print a one-line user error and return the Exit(1) to raise."""
    err_console.print(labelled("error:", "bold red", message), highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


# Wide enough to measure any table at its natural width.
_UNBOUNDED = 1_000_000
#: The colour systems a rich Console reports (``Console.color_system``) and takes back.
_COLOR_SYSTEMS: tuple[Literal["standard", "256", "truecolor", "windows"], ...] = (
    "standard",
    "256",
    "truecolor",
    "windows",
)


def print_table(table: Table, target: Console | None = None) -> None:
    """Print ``table`` as plain text with every value whole (see the module notes).

    The table's columns may be resized in place: print it once.
    """
    target = target or console
    for name in ("title", "caption"):
        if isinstance(getattr(table, name), str):  # a title is parsed as markup otherwise
            setattr(table, name, Text(getattr(table, name)))
    options = target.options.update(width=_UNBOUNDED, markup=False)
    natural = Measurement.get(target, options, table).maximum
    if natural <= target.width:
        target.print(table, markup=False)
    elif not target.is_terminal:
        _wide_console(target, natural).print(table, markup=False)
    elif _fit_columns(table, target, options, natural):
        target.print(table, markup=False)
    else:
        _print_vertical(table, target)


def _wide_console(target: Console, width: int) -> Console:
    """A console writing to ``target``'s stream, ``width`` columns wide."""
    colors = target.color_system
    return Console(
        file=target.file, width=width, color_system=colors if colors in _COLOR_SYSTEMS else None,
        no_color=target.no_color, force_terminal=target.is_terminal, highlight=False,
    )  # fmt: skip


def _fit_columns(table: Table, target: Console, options: ConsoleOptions, natural: int) -> bool:
    """Give each column a fixed width so the table fits ``target`` and no value is cut;
    False (and the table unchanged) when no such widths exist.

    Every column gets ``clamp(T, its longest word, its longest line)`` for the largest ``T``
    that fits (rich's own shrinking can cut a word although a layout without cuts exists).
    """
    bounds = [_column_bounds(column, target, options) for column in table.columns]
    padding_and_borders = natural - sum(high for _, high in bounds)
    available = target.width - padding_and_borders
    if sum(low for low, _ in bounds) > available:
        return False

    def widths(limit: int) -> list[int]:
        return [max(low, min(high, limit)) for low, high in bounds]

    low_limit, high_limit = 0, max(high for _, high in bounds)
    while low_limit < high_limit:  # the largest limit whose widths fit
        middle = (low_limit + high_limit + 1) // 2
        if sum(widths(middle)) <= available:
            low_limit = middle
        else:
            high_limit = middle - 1
    for column, width in zip(table.columns, widths(low_limit), strict=True):
        column.width, column.overflow = width, "fold"
    return True


def _column_bounds(column: Column, target: Console, options: ConsoleOptions) -> tuple[int, int]:
    """(longest word of a cell, longest line of the header and cells), padding excluded.

    A header may fold ("balanced_" / "accuracy"); a value never does.
    """
    header = Measurement.get(target, options, column.header)
    cells = [Measurement.get(target, options, cell) for cell in column.cells]
    low = max((cell.minimum for cell in cells), default=1)
    return low, max(header.maximum, *(cell.maximum for cell in cells))


def _print_vertical(table: Table, target: Console) -> None:
    """Each row as a block of ``column  value`` lines (a terminal too narrow for the table).

    A value longer than the line is written whole (soft wrap): the terminal wraps it, so a
    copied value has no line break inside.
    """
    if table.title:
        target.print(table.title, markup=False, style="italic")
    headers = [_plain(column.header) for column in table.columns]
    indent = max(len(header) for header in headers)
    rows = zip(*(list(column.cells) for column in table.columns), strict=True)
    for index, cells in enumerate(rows):
        if index:
            target.print()
        for header, cell in zip(headers, cells, strict=True):
            line = Text.assemble((header.plain.ljust(indent), "bold"), "  ", _plain(cell))
            target.print(line, soft_wrap=True)
    if table.caption:
        target.print(table.caption, markup=False, style="dim")


def _plain(cell: Any) -> Text:
    """A table cell as Text; a string cell is plain text, not markup."""
    return cell if isinstance(cell, Text) else Text(str(cell))


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
