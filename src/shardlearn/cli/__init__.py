"""The ``shardlearn`` command.

Each sub-module registers its commands on :data:`app` through a ``register(app)`` function;
this module only assembles them and turns library errors into one-line messages (exit 1).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

from shardlearn.cli import data, evaluate, models, run, search, serve, train
from shardlearn.cli._common import run_app

app = typer.Typer(
    name="shardlearn",
    help=(
        "Distributed machine learning for large classification datasets.\n\n"
        "Example: shardlearn demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _installed_version() -> str:
    """The installed distribution's version; the source tree's when run uninstalled."""
    try:
        return version("shardlearn")
    except PackageNotFoundError:
        from shardlearn import __version__

        return __version__


def _print_version(requested: bool) -> None:
    if requested:
        typer.echo(f"shardlearn {_installed_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    _version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:  # fmt: skip
    """Distributed machine learning for large classification datasets."""


# One module per command family; each exposes register(app). Imported by name, not looked up,
# so the import contracts see them; the order is the order of --help.
for _commands in (data, serve, models, run, evaluate, train, search):
    _commands.register(app)


def main() -> None:
    """Entry point of the ``shardlearn`` console script."""
    run_app(app)
