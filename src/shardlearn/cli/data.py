"""Dataset commands: ``demo``, ``ingest``, ``describe``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the dataset commands to ``app``."""
