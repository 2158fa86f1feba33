"""Byte ranges parsed as Ray tasks spread over every node of a cluster (ingest on ``ray``).

On the ``ray`` engine, :class:`RayParsers` takes the place of the local thread pool for the
steps of :mod:`shardlearn.data._ranges` that read a file's bytes: the parse of each range and,
when a plan must read before the parse (an exact plan: after a wrong cut, or beside an input
that cannot be read twice), the plan's reads. Each is a Ray task scheduled with the ``SPREAD``
strategy (one CPU each), so every node parses, and each task reads its bytes itself: a local
path must be on a filesystem every node mounts at the same path (a shared filesystem). The
driver only finds the cut points (a few seeks), submits the range tasks in the thread pool's
order (:func:`~shardlearn.data._ranges.next_range`: ranges of about one size in input order, a
much larger one among the next few first)
and consumes the parsed batches in input order, exactly as it consumes the thread pool's; so
the rows, line numbers, rejects and shards are the local engine's, whichever node parsed what.

Speculative ranges (a plain CSV/TSV or JSON Lines file, local or in object storage, cut at
newlines, a multi-frame ``.zst`` at its chunks of frames, without reading it) are checked as
:func:`~shardlearn.data._ranges.parse_ranges` checks them: each task scans the bytes it parses
(read once) and returns the check with its batches; the driver, handing the ranges over in
input order, raises :class:`~shardlearn.data._ranges.Misspeculated` at the first range that
does not end between rows (the ingest then plans exactly and runs again) and otherwise sets
each range's first line from the lines of the ranges before it. So no pass over the input
runs before the nodes parse.

A file read as one stream (a large ``.gz``, a ``.zst`` of one frame, a file with a row longer
than the block size) is read by one Ray generator task (:meth:`RayParsers.streams`), up to one
per parser at once (:func:`~shardlearn.data._ranges.next_range`'s order), each a few batches
ahead of the driver;
the driver consumes them file by file in input order, as it consumes the local engine's
stream threads. Each batch comes with the bytes of the file its task has read, so the progress
bar moves while a file streams (:meth:`RayParsers.streamed_bytes`), as it does locally. Only a
pipe or stdin, which another process cannot open, is read on the driver.

A task whose worker process or node dies is retried by Ray on another worker (the engine's
``max_retries``); when the retries run out the ingest fails with a :class:`DataError` and
writes nothing. An error inside a task (a file that changed size) is raised as it is locally.
Each task also reports its node and the rows it read, which the manifest records per node.

Ray is imported only when a Ray engine is used (it is an optional extra).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import pyarrow as pa

from shardlearn.data import _ranges
from shardlearn.data.readers import RawBatch, ReaderOptions, SourceReader, blank_rows
from shardlearn.exceptions import DataError

__all__ = ["RayParsers", "is_ray_engine", "parse_on_node", "stream_on_node"]

STREAM_AHEAD = 2  # batches a stream task may read ahead of the driver (as STREAM_QUEUE locally)


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
    return sum(map(_rows, batches)), names, batches, check, error


def _rows(raw: RawBatch) -> int:
    """The rows of a batch as the ingest counts them (blank lines are not rows)."""
    return raw.batch.num_rows - int(blank_rows(raw.batch).sum()) + len(raw.invalid)


def stream_on_node(
    path: str, options: ReaderOptions, fast_types: dict[str, pa.DataType]
) -> Iterator[tuple[str, tuple[int, list[str], RawBatch, int]]]:
    """Runs in a Ray generator task: the batches of one file read as one stream, as the local
    engine reads it, each with its node (as :func:`_call` gives it), its rows, the file's
    column names and the bytes of the file read so far (the driver's progress bar)."""
    reader = SourceReader(path, options)
    reader.fast_types = fast_types
    node = _node_id()
    for raw in reader.batches():
        yield node, (_rows(raw), list(reader.column_names), raw, reader.position)


@functools.cache
def _remote_stream() -> Any:
    import ray

    return ray.remote(stream_on_node)


def _readable_by_nodes(path: str) -> bool:
    """Whether a task on another node can open ``path``: a URI (object storage) or a regular
    file (on a filesystem every node mounts, as for byte ranges); not a pipe or stdin."""
    return "://" in path or os.path.isfile(path)


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
        # Bytes the stream tasks whose batches are being consumed have read, by file index.
        self._streamed: dict[int, int] = {}

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
        ranges of about one size in input order, a much larger one in the look-ahead first), at
        most ``parsers + 1`` of them unconsumed: unlike the thread pool, a task starts only when
        the driver asks for the next range, and the bound counts ranges, not bytes."""
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

    def streams(
        self, readers: list[SourceReader]
    ) -> Iterator[tuple[SourceReader, Iterator[RawBatch]]]:
        """Files read as one stream each (``.gz``, large compressed files): each (``reader``,
        its batches) in input order, every file a Ray generator task (:func:`stream_on_node`,
        ``SPREAD``) that holds at most :data:`STREAM_AHEAD` batches the driver has not taken.
        Up to ``parsers`` tasks run at once, in :func:`~shardlearn.data._ranges.next_range`'s
        order (files of about one size in input order, a much larger one among the next few
        first, so large files start early on their own nodes). A pipe or stdin, which no other
        process can read, is read here (its rows count for the driver's node)."""
        sizes = [
            _ranges.ByteRange(r.path, i, 0, r.size if _readable_by_nodes(r.path) else 0)
            for i, r in enumerate(readers)
        ]
        started: dict[int, Any] = {}  # file index -> its generator, until consumed
        following = 0
        try:
            while following < len(readers):
                while len(started) < self.parsers:
                    index = _ranges.next_range(sizes, started, following, self.parsers - 1)
                    if index is None:
                        break
                    started[index] = self._stream(readers[index])
                reader = readers[following]
                yield reader, self._batches(reader, started.pop(following), following)
                following += 1
        finally:
            for generator in started.values():
                self._cancel(generator)

    def _stream(self, reader: SourceReader) -> Any:
        """The generator task reading ``reader``'s file, or None to read it here."""
        if not _readable_by_nodes(reader.path):
            return None
        options = {
            "num_cpus": 1,
            "scheduling_strategy": "SPREAD",
            "max_retries": self.max_retries,
            "retry_exceptions": False,
            "num_returns": "streaming",
            # The task pauses while this many of its batches wait for the driver (bounded
            # memory, as the local engine's queue of a stream).
            "_generator_backpressure_num_objects": STREAM_AHEAD,
        }
        return (
            _remote_stream()
            .options(**options)
            .remote(reader.path, reader.options, reader.fast_types)
        )

    def _batches(self, reader: SourceReader, generator: Any, index: int) -> Iterator[RawBatch]:
        """The batches of ``generator`` (None: of ``reader``, read here), the rows of each
        counted for its node, the file's column names set on ``reader`` and the bytes its
        task read kept for :meth:`streamed_bytes` until the file ends."""
        if generator is None:
            yield from reader.batches()
            return
        what = f"reading {reader.path!r} as one stream"
        try:
            for ref in generator:
                node, (rows, names, raw, position) = self._get(ref, what)
                self.node_rows[node] += rows
                self._streamed[index] = position
                reader.column_names = names
                yield raw
        finally:
            self._streamed.pop(index, None)
            self._cancel(generator)

    def streamed_bytes(self) -> int:
        """Bytes read so far by the tasks of the files being consumed (:meth:`streams`), as
        each reported with its last batch: progress while a file streams (a file's bytes
        count as done once it ends, as locally)."""
        return sum(self._streamed.values())

    @staticmethod
    def _cancel(task: Any) -> None:
        import ray

        if task is None:
            return
        try:
            ray.cancel(task)
        except Exception:  # already finished, or Ray is shutting down
            pass

    def rows_by_node(self, rows_read: int) -> dict[str, int]:
        """Rows read per node: the tasks' (byte ranges, Parquet row groups, small compressed
        files, files read as one stream), and the driver's node for a pipe or stdin it read."""
        rows = Counter(self.node_rows)
        rest = rows_read - sum(rows.values())
        if rest:
            rows[self.driver_node] += rest
        return dict(sorted(rows.items()))
