"""Byte-range parsing of one uncompressed CSV/TSV file: cut at line boundaries, parsed in parallel.

:func:`plan_ranges` cuts a local file into ranges of about ``range_bytes`` that start and end
at line boundaries (the search for a newline starts at each cut point; the first range owns the
header line), then scans every range once on the parser threads: its newline count gives the
physical line number of the next range's first line, and its per-line quote parity tells
whether a quoted value holds a newline. Such a file is not split (the cut could fall inside
the value): it is read by the single-stream reader, exactly as before. The scan is
conservative: a line with an odd number of quote characters (an unclosed or stray quote) also
keeps its file on the single-stream reader, which only costs speed.

:func:`parse_ranges` parses the ranges on a thread pool (pyarrow's parser and numpy release the
GIL) with each range's own :class:`~shardlearn.data.readers.SourceReader` (fast path, slow
path, rejects: the same code as a whole file), shifts its line numbers by the lines before the
range, and yields the batches in input order, so everything downstream sees the rows in the
same order whatever the split. At most ``parsers + 1`` ranges are in flight (bounded memory).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from shardlearn.data.readers import RawBatch, ReaderOptions, SourceReader, _split_extension

__all__ = ["RANGE_BYTES", "ByteRange", "default_parsers", "parse_ranges", "plan_ranges"]

RANGE_BYTES = 16 << 20  # bytes per range: large enough to amortise a parse, small in memory
_SEARCH_CHUNK = 1 << 16


def default_parsers() -> int:
    """Parser threads by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of ``path``; ``first_line`` is the physical line at ``start``;
    ``last``: the file's last range."""

    path: str
    index: int
    start: int
    end: int
    first_line: int = 1
    last: bool = False


def splittable(path: str, options: ReaderOptions) -> bool:
    """Whether ``path`` can be cut into byte ranges: an uncompressed, local, regular CSV/TSV."""
    reader = SourceReader(path, options)
    if reader.format not in ("csv", "tsv") or _split_extension(path)[1] is not None:
        return False
    return isinstance(reader.filesystem, pafs.LocalFileSystem) and os.path.isfile(path)


def _cut_points(path: str, size: int, count: int) -> list[int]:
    """Range starts: the byte after the first newline at or after each of ``count`` cuts."""
    bounds = [0]
    with open(path, "rb") as handle:
        for k in range(1, count):
            target = max(k * size // count, bounds[-1] + 1)
            handle.seek(target - 1)  # a newline just before the cut makes the cut a boundary
            position = target - 1
            while chunk := handle.read(_SEARCH_CHUNK):
                found = chunk.find(b"\n")
                if found >= 0:
                    position += found + 1
                    break
                position += len(chunk)
            else:
                position = size
            if position >= size:
                break
            bounds.append(position)
    return bounds


def _scan(byte_range: ByteRange, quote: int | None) -> tuple[int, bool]:
    """(newlines in the range, whether some line holds an odd number of quote characters)."""
    with open(byte_range.path, "rb") as handle:
        handle.seek(byte_range.start)
        data = np.frombuffer(handle.read(byte_range.end - byte_range.start), dtype=np.uint8)
    newline = data == 10
    newlines = int(np.count_nonzero(newline))
    if quote is None:
        return newlines, False
    quotes = np.flatnonzero(data == quote)
    if len(quotes) == 0:
        return newlines, False
    line_of_quote = np.searchsorted(np.flatnonzero(newline), quotes)
    return newlines, bool((np.bincount(line_of_quote) & 1).any())


def plan_ranges(
    path: str, options: ReaderOptions, range_bytes: int, pool: ThreadPoolExecutor, whole: bool
) -> list[ByteRange] | None:
    """The ranges of ``path``, or None when it is read as one stream: not splittable, a quoted
    value may hold a newline, or it is one range and not ``whole`` (with ``whole`` a small file
    is one range, parsed in memory on the pool beside other files' ranges)."""
    if not splittable(path, options):
        return None
    size = os.path.getsize(path)
    count = -(-size // max(range_bytes, 1))
    bounds = _cut_points(path, size, count) if count >= 2 else [0]
    if len(bounds) < 2:
        return [ByteRange(path, 0, 0, size, last=True)] if whole else None
    ranges = [
        ByteRange(path, i, start, end, last=end == size)
        for i, (start, end) in enumerate(zip(bounds, [*bounds[1:], size], strict=True))
    ]
    csv = SourceReader(path, options).format == "csv"
    scans = list(pool.map(lambda r: _scan(r, ord('"') if csv else None), ranges))
    if any(odd for _, odd in scans):
        return None
    first_lines = 1 + np.concatenate([[0], np.cumsum([n for n, _ in scans])[:-1]])
    return [replace(r, first_line=int(f)) for r, f in zip(ranges, first_lines, strict=True)]


class _RangeReader(SourceReader):
    """A :class:`SourceReader` over one byte range: the range's bytes are its whole input,
    except that a range after the first takes its column names from the file's header."""

    def __init__(self, byte_range: ByteRange, options: ReaderOptions) -> None:
        super().__init__(byte_range.path, options)
        self.byte_range = byte_range
        with open(byte_range.path, "rb") as handle:
            handle.seek(byte_range.start)
            self._data = pa.py_buffer(handle.read(byte_range.end - byte_range.start))
        self._whole_file = False

    def _open_stream(self) -> pa.NativeFile:
        if self._whole_file:
            return super()._open_stream()
        self._raw = pa.BufferReader(self._data)
        return self._raw

    def _csv_names(self) -> tuple[list[str], list[str], bool]:
        if self.byte_range.index == 0 or self.options.columns or not self.options.header:
            return super()._csv_names()
        self._whole_file = True  # the header line is in the first range only
        try:
            raw = self._csv_header(self._delimiter)
        finally:
            self._whole_file = False
        return raw, [n.strip() for n in raw], False


def _parse(
    byte_range: ByteRange, options: ReaderOptions, fast_types: dict[str, pa.DataType]
) -> tuple[list[str], list[RawBatch]]:
    """Every batch of one range, with physical line numbers of the whole file."""
    reader = _RangeReader(byte_range, options)
    reader.fast_types = fast_types
    shift = byte_range.first_line - 1
    batches = []
    for raw in reader.batches():
        if shift:
            raw.lines = raw.lines + shift
            raw.invalid = [(line + shift, reason, text) for line, reason, text in raw.invalid]
        batches.append(raw)
    return list(getattr(reader, "column_names", [])), batches


def parse_ranges(
    ranges: list[ByteRange],
    options: ReaderOptions,
    fast_types: dict[str, pa.DataType],
    pool: ThreadPoolExecutor,
    parsers: int,
) -> Iterator[tuple[ByteRange, list[str], list[RawBatch]]]:
    """Parse ``ranges`` on ``pool``; yield (range, column names, batches) in input order."""
    pending: deque[tuple[ByteRange, Future]] = deque()
    upcoming = iter(ranges)
    try:
        while True:
            while len(pending) < parsers + 1:
                byte_range = next(upcoming, None)
                if byte_range is None:
                    break
                pending.append((byte_range, pool.submit(_parse, byte_range, options, fast_types)))
            if not pending:
                return
            byte_range, future = pending.popleft()
            names, batches = future.result()
            yield byte_range, names, batches
    finally:
        for _, future in pending:
            future.cancel()
