"""The engine a caller chose without naming it, for the layers below ``engine`` (``data``).

Every entry point runs on (DESIGN §6, §10): its explicit ``engine=`` argument, else the engine
of the innermost ``with shardlearn.engine(...)`` block, else the one ``$SHARDLEARN_ENGINE``
names, else its default. ``data`` (ingest) sits below ``engine`` (DESIGN §11) and may not
import it, so the engine layer registers its lookup here when it is imported
(:func:`set_lookup`), and ingest asks :func:`chosen_engine`. A ``with engine(...)`` block can
only be open once the engine layer is imported; the environment variable may name an engine
before that, and only then is the engine layer imported here (by this constant name, never a
name read from input), to create that engine.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

__all__ = ["ENGINE_ENV", "chosen_engine", "set_lookup"]

#: Environment variable naming the default engine: ``local``, ``ray`` or ``ray:ADDRESS``.
ENGINE_ENV = "SHARDLEARN_ENGINE"

_ENGINE_PACKAGE = "shardlearn.engine"
_lookup: Callable[[], Any] | None = None


def set_lookup(lookup: Callable[[], Any]) -> None:
    """Register the engine layer's lookup: the current engine, ``$SHARDLEARN_ENGINE``'s, or
    None when neither chose one."""
    global _lookup
    _lookup = lookup


def chosen_engine() -> Any | None:
    """The engine of the innermost ``with engine(...)`` block, else the one named by
    ``$SHARDLEARN_ENGINE`` (shared, closed at exit, as ``get_engine`` makes it), else None:
    nothing chose an engine, and the caller uses its default."""
    if _lookup is None:
        if not os.environ.get(ENGINE_ENV, "").strip():
            return None  # the engine layer is not loaded, so no `with engine(...)` is open
        importlib.import_module(_ENGINE_PACKAGE)  # its import registers the lookup
    if _lookup is None:
        raise RuntimeError(f"{_ENGINE_PACKAGE} was imported but registered no engine lookup.")
    return _lookup()
