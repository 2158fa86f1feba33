"""Byte ranges parsed as Ray tasks spread over every node of a cluster (ingest on ``ray``).

On the ``ray`` engine, :class:`RayParsers` takes the place of the local thread pool for the
steps of :mod:`shardlearn.data._ranges` that read a file's bytes: the parse of each range and,
when a plan must read before the parse (an exact plan after a wrong cut, a remote file, a
``.zst`` whose frames do not state their size), the plan's reads. Each is a Ray task scheduled
with the ``SPREAD`` strategy (one CPU each), so every node parses, and each task reads its
bytes itself: a local path must be on a filesystem every node mounts at the same path (a
shared filesystem). The driver only finds the cut points (a few seeks), submits the range tasks
in the thread pool's order (the largest of the next few ranges first,
:func:`~shardlearn.data._ranges.next_range`) and consumes the parsed batches in input order,
exactly as it consumes the thread pool's; so the rows, line numbers, rejects and shards are the
local engine's, whichever node parsed what.

Speculative ranges (a plain local CSV/TSV or JSON Lines file, cut at newlines without reading
it) are checked as :func:`~shardlearn.data._ranges.parse_ranges` checks them: each task scans
the bytes it parses (read once) and returns the check with its batches; the driver, handing
the ranges over in input order, raises :class:`~shardlearn.data._ranges.Misspeculated` at the
first range that does not end between rows (the ingest then plans exactly and runs again) and
otherwise sets each range's first line from the lines of the ranges before it. So no pass over
the input runs before the nodes parse.

A task whose worker process or node dies is retried by Ray on another worker (the engine's
``max_retries``); when the retries run out the ingest fails with a :class:`DataError` and
writes nothing. An error inside a task (a file that changed size) is raised as it is locally.
Each task also reports its node and the rows it read, which the manifest records per node.

Ray is imported only when a Ray engine is used (it is an optional extra).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import pyarrow as pa

from shardlearn.data import _ranges
from shardlearn.data.readers import RawBatch, ReaderOptions, blank_rows
from shardlearn.exceptions import DataError

__all__ = ["RayParsers", "is_ray_engine", "parse_on_node"]


def is_ray_engine(engine: Any) -> bool:
    """Whether ``engine`` (a :class:`shardlearn.engine.Engine` or None) is the Ray engine."""
    return engine is not None and getattr(engine, "name", None) == "ray"


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _call(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """Runs in a Ray task: ``fn(*args)`` and the node it ran on."""
    return _node_id(), fn(*args)


@functools.cache
def _remote() -> Any:
    import ray

    return ray.remote(_call)


def parse_on_node(
    byte_range: _ranges.ByteRange, options: ReaderOptions, fast_types: dict[str, pa.DataType]
) -> tuple[int, list[str], list[RawBatch], Any, BaseException | None]:
    """Runs in a Ray task: one range parsed as the local engine parses it
    (:func:`~shardlearn.data._ranges._parse_range`: for a speculative range also its check, and
    its parse's error as a value), with the rows it read counted as the ingest counts them
    (blank lines are not rows)."""
    names, batches, check, error = _ranges._parse_range(byte_range, options, fast_types)
    rows = sum(
        raw.batch.num_rows - int(blank_rows(raw.batch).sum()) + len(raw.invalid) for raw in batches
    )
    return rows, names, batches, check, error


class RayParsers:
    """Ray tasks standing in for the ingest's thread pool; see the module docstring.

    Parameters
    ----------
    parsers : int
        Tasks in flight at once (at most ``parsers + 1`` parsed ranges are held, as locally).
    max_retries : int
        Retries of a task whose worker process or node died.
    """

    def __init__(self, parsers: int, max_retries: int) -> None:
        self.parsers = parsers
        self.max_retries = max_retries
        self.driver_node = _node_id()
        self.node_rows: Counter[str] = Counter()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        options = {
            "num_cpus": 1,
            "scheduling_strategy": "SPREAD",
            "max_retries": self.max_retries,
            "retry_exceptions": False,
        }
        return _remote().options(**options).remote(fn, *args)

    def _get(self, ref: Any, what: str) -> tuple[str, Any]:
        import ray
        import ray.exceptions

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None  # the error the local engine raises
            raise DataError(f"Ingest on Ray: {what} failed: {error}") from None
        except ray.exceptions.RayError as error:
            raise DataError(
                f"Ingest on Ray: {what} failed {self.max_retries + 1} time(s): its worker process "
                f"or node died ({type(error).__name__}); nothing was written. Run the ingest "
                "again, or give the engine more retries: engine('ray', max_retries=N)."
            ) from None

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``map(fn, items)`` as Ray tasks; results in input order (the range scans)."""
        refs = [self._submit(fn, item) for item in items]
        return iter([self._get(ref, "scanning a byte range")[1] for ref in refs])

    def parse(
        self,
        ranges: list[_ranges.ByteRange],
        options: ReaderOptions,
        fast_types: dict[str, pa.DataType],
    ) -> Iterator[tuple[_ranges.ByteRange, list[str], list[RawBatch]]]:
        """Parse ``ranges`` as Ray tasks; yield (range, column names, batches) in input order,
        as :func:`~shardlearn.data._ranges.parse_ranges` does, checking speculative ranges as
        it does (:class:`~shardlearn.data._ranges.Misspeculated` at a wrong cut); count the
        rows of each node.

        Tasks are submitted in the local order (:func:`~shardlearn.data._ranges.next_range`:
        the next range to consume, else the largest in the look-ahead), at most
        ``parsers + 1`` of them unconsumed."""
        import ray

        started: dict[int, Any] = {}  # range index -> its task's ref, until consumed
        following = 0  # the next range to hand over
        line = 1  # the first line of the next speculative range
        try:
            while following < len(ranges):
                while len(started) < self.parsers + 1:
                    index = _ranges.next_range(ranges, started, following, self.parsers)
                    if index is None:
                        break
                    started[index] = self._submit(parse_on_node, ranges[index], options, fast_types)
                byte_range = ranges[following]
                what = f"parsing bytes {byte_range.start}-{byte_range.end} of {byte_range.path!r}"
                node, parsed = self._get(started.pop(following), what)
                rows, names, batches, check, error = parsed
                if check is not None:
                    # As parse_ranges checks it: a range starting between rows must end
                    # between rows; its lines follow those of the ranges before it.
                    lines, wrong = check
                    line = 1 if byte_range.index == 0 else line
                    if wrong:
                        raise _ranges.Misspeculated(byte_range.path)
                    batches = _ranges._shifted(batches, line - 1)
                    byte_range = replace(byte_range, first_line=line, speculative=False)
                    line += lines
                if error is not None:
                    raise error
                self.node_rows[node] += rows
                yield byte_range, names, batches
                following += 1
        finally:
            for ref in started.values():
                try:
                    ray.cancel(ref)
                except Exception:  # already finished, or Ray is shutting down
                    pass

    def rows_by_node(self, rows_read: int) -> dict[str, int]:
        """Rows read per node: the ranges' tasks (CSV/TSV and JSON Lines byte ranges, Parquet
        row groups, small compressed files), and the driver's node for the files it read as
        one stream (a large compressed file, a pipe, a CSV whose quote never closes)."""
        rows = Counter(self.node_rows)
        rest = rows_read - sum(rows.values())
        if rest:
            rows[self.driver_node] += rest
        return dict(sorted(rows.items()))
