"""The one YAML reader for user files: plain data, no anchors or aliases, bounded nesting.

YAML aliases let a few hundred bytes describe billions of values (``&a [x, x]``,
``&b [*a, *a]``, ... the "billion laughs"): a 343-byte pipeline spec with 7 alias levels took
seconds and hundreds of MB to parse and walk. Every YAML file a user hands shardlearn (pipeline
specs, ``--set`` values, search spaces, ``--schema`` files, preprocessing specs, ``--param``
values) is read here, so the size of what is parsed is bounded by the size of the text:

- anchors (``&name``) and aliases (``*name``), merge keys included, are refused at the
  composing stage, before anything is built, with the line they are on;
- nesting deeper than :data:`MAX_DEPTH` is refused (the composer recurses once per level);
- only the safe tags (``yaml.SafeLoader``): no Python objects.

Every failure is one line, raised as the caller's exception class (``SpecError``,
``SchemaError``, ...), so each caller keeps its own error type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "load_yaml", "read_yaml"]

# Far beyond any real spec (the deepest, a preprocessing spec, nests 4-5 levels) and far below
# Python's recursion limit (the composer uses ~3 frames per level).
MAX_DEPTH = 64


class _Refused(Exception):
    """Raised inside the loader; :func:`load_yaml` turns it into the caller's error class."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line


class _PlainLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses anchors, aliases and deep nesting while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                line,
                "YAML anchors and aliases (&name, *name, <<: *name) are not allowed; "
                "write the value out in full",
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str, source: str, error: type[Exception]) -> Any:
    """Parse YAML ``text`` as plain data (mappings, lists, scalars); ``None`` if it is empty.

    Parameters
    ----------
    text : str
        The YAML document.
    source : str
        What the text is, for messages: ``"pipeline spec 'run.yaml'"``, ``"--set rows"``.
    error : exception class
        Raised, with a one-line message naming ``source`` and the line, when the text is not
        valid YAML, uses anchors or aliases, or nests deeper than :data:`MAX_DEPTH`.

    Examples
    --------
    >>> from shardlearn.exceptions import SpecError
    >>> load_yaml("a: [1, 2]", "example", SpecError)
    {'a': [1, 2]}
    >>> load_yaml("a: &x [1]\\nb: *x", "example", SpecError)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    shardlearn.exceptions.SpecError: example, line 1: YAML anchors and aliases ...
    """
    loader = _PlainLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as refused:
        raise error(f"{source}, line {refused.line}: {refused}") from None
    except yaml.YAMLError as invalid:
        raise error(f"{source} is not valid YAML: {_one_line(invalid)}") from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike[str], source: str, error: type[Exception]) -> Any:
    """Read the file at ``path`` (UTF-8) and parse it with :func:`load_yaml`.

    A file that cannot be read or decoded raises ``error`` too, naming ``source``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as unreadable:
        raise error(f"Cannot read {source}: {unreadable}") from None
    return load_yaml(text, source, error)


def _one_line(invalid: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as ``problem (line L, column C)``."""
    problem = getattr(invalid, "problem", None)
    mark = getattr(invalid, "problem_mark", None)
    if problem is None:
        return " ".join(str(invalid).split())
    if mark is None:
        return str(problem)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
