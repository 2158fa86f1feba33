"""Byte-range parsing of one uncompressed CSV/TSV file: cut at row boundaries, parsed in parallel.

:func:`plan_ranges` cuts a local file into ranges of about ``range_bytes`` at newlines (the
search for a newline starts at each cut point; the first range owns the header line), then
scans every range once on the parser threads, following pyarrow's CSV lexer with numpy
(:func:`_scan`): for both possible states at the range start (between rows, or inside a quoted
value) it finds whether the range ends inside a quoted value, its physical lines, and its
first newline that ends a row. Chaining the ranges from the start of the file gives the true
state at every cut; a cut inside a quoted value (a value holding a newline, or a stray quote
that the parser reads as opening one) moves to the first newline after it that ends a row,
and each range's first physical line follows from the lines before it. So the rows, their
line numbers and the rejects are exactly those of one stream, for any input. The scan sees
the bytes as the reader's slow path does: a line its LineGuard empties (over-long, not UTF-8)
holds no quote. Should a quoted value never close, so that moving cuts out of it leaves one
range of more than :data:`MERGED_RANGES` ranges' bytes, the file is read as one stream
(bounded memory, same result); so is a file with a row longer than the block size (pyarrow
takes such a row at the end of a stream, so a range end would decide whether it is a reject).

:func:`parse_ranges` parses the ranges on a thread pool (pyarrow's parser and numpy release the
GIL) with each range's own :class:`~shardlearn.data.readers.SourceReader` (fast path, slow
path, rejects: the same code as a whole file), shifts its line numbers by the lines before the
range, and yields the batches in input order, so everything downstream sees the rows in the
same order whatever the split. At most ``parsers + 1`` ranges are in flight (bounded memory).
"""

from __future__ import annotations

import codecs
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from shardlearn.data.readers import RawBatch, ReaderOptions, SourceReader, _split_extension
from shardlearn.exceptions import DataError

__all__ = ["RANGE_BYTES", "ByteRange", "default_parsers", "parse_ranges", "plan_ranges"]

RANGE_BYTES = 16 << 20  # bytes per range: large enough to amortise a parse, small in memory
_SEARCH_CHUNK = 1 << 16
# A range grown past this many ranges' bytes (a quoted value that never closes) is not
# parsed in memory: its file is read as one stream.
MERGED_RANGES = 4


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


def _read(byte_range: ByteRange) -> bytes:
    """The bytes of ``byte_range``; a file that changed size since the ranges were planned
    is an error (its rows would silently be lost, cut or read twice)."""
    with open(byte_range.path, "rb") as handle:
        handle.seek(byte_range.start)
        data = handle.read(byte_range.end - byte_range.start)
        grown = byte_range.last and handle.read(1)
    if len(data) != byte_range.end - byte_range.start or grown:
        raise DataError(
            f"{byte_range.path!r} changed size while it was being ingested (bytes "
            f"{byte_range.start}-{byte_range.end} were planned); nothing was written. Ingest "
            "it again once nothing writes to it."
        )
    return data


@dataclass(frozen=True)
class _Scan:
    """What one range's bytes say, for each state at its start (index 0: between rows,
    1: inside a quoted value): whether it ends inside a quoted value, its physical lines, the
    offset just after its first newline that ends a row (-1: none) and the lines up to there."""

    ends_inside: tuple[bool, bool]
    lines: tuple[int, int]
    first_row_end: tuple[int, int]
    lines_to_first: tuple[int, int]
    long_row: tuple[bool, bool]  # a row (all its lines) longer than the block size
    tail: tuple[int, int]  # bytes after the last newline that ends a row


def _refused_lines(raw: bytes, newlines: np.ndarray, limit: int) -> np.ndarray:
    """Indexes of the lines the reader's LineGuard empties: longer than ``limit`` bytes with
    their newline, or not UTF-8 (an invalid sequence never spans a newline)."""
    ends = np.append(newlines, len(raw))
    lengths = np.diff(np.concatenate([[-1], ends]))
    lengths[-1] += 1  # the last line is read with a newline added
    bad = set(np.flatnonzero(lengths > limit).tolist())
    view, position = memoryview(raw), 0
    while position < len(raw):
        try:
            codecs.decode(view[position:], "utf-8")
            break
        except UnicodeDecodeError as error:
            line = int(np.searchsorted(newlines, position + error.start))
            bad.add(line)
            position = int(ends[line]) + 1
    return np.asarray(sorted(bad), dtype=np.int64)


def _scan(byte_range: ByteRange, quote: int | None, delimiter: int, limit: int) -> _Scan:
    """Follow pyarrow's CSV lexer over one range, vectorised, for both starting states.

    Only runs of quote characters change the state: a run of even length changes nothing (a
    quoted value stays open on doubled quotes; ``""`` at a field start is an empty value); a
    run of odd length at the start of a field (after a delimiter, a line end or the range
    start) toggles it (opens a value; closes one, every other quote doubled); a run of odd
    length inside a field closes an open value (what follows is literal) and is literal text
    otherwise. Lines the reader's LineGuard empties do not count. A lone carriage return ends
    a row, and counts as a line, only outside a quoted value (as in the single-stream read).
    """
    raw = _read(byte_range)
    data = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    # A carriage return not followed by a newline (a range ends after a newline, or at EOF).
    lone = np.flatnonzero(data == 13)
    lone = lone[data[np.minimum(lone + 1, len(data) - 1)] != 10] if len(lone) else lone
    lone = lone if not len(lone) or data[-1] == 13 or lone[-1] < len(data) - 1 else lone[:-1]
    quotes = np.flatnonzero(data == quote) if quote is not None else np.zeros(0, np.int64)
    if len(quotes) or len(lone):
        refused = _refused_lines(raw, newlines, limit)
        if len(refused):
            quotes = quotes[~np.isin(np.searchsorted(newlines, quotes), refused)]
            lone = lone[~np.isin(np.searchsorted(newlines, lone), refused)]
    first = np.ones(len(quotes), dtype=bool)
    first[1:] = quotes[1:] != quotes[:-1] + 1
    run_starts = quotes[first]
    run_lengths = np.diff(np.append(np.flatnonzero(first), len(quotes)))
    previous = data[np.maximum(run_starts - 1, 0)]
    ends_field = np.zeros(256, dtype=bool)
    ends_field[[delimiter, 10, 13] if delimiter < 256 else [10, 13]] = True
    at_field_start = (run_starts == 0) | ends_field[previous]
    odd = (run_lengths & 1).astype(bool)
    toggles = np.cumsum(odd & at_field_start)
    resets = np.maximum.accumulate(np.where(odd & ~at_field_start, np.arange(len(odd)), -1))
    since_reset = toggles - np.where(resets >= 0, toggles[np.maximum(resets, 0)], 0)

    # The last quote run before each newline / lone carriage return / the range end (-1: none).
    run_of = [np.searchsorted(run_starts, p) - 1 for p in (newlines, lone, [len(data)])]
    ends, lines, row_ends, lines_to, long_rows, tails = [], [], [], [], [], []
    for start in (0, 1):
        after = np.where(resets >= 0, since_reset & 1, (toggles + start) & 1).astype(bool)
        if not len(after):
            after = np.zeros(1, dtype=bool)  # never indexed by a valid run (there is none)
        at_newline, at_lone, at_end = (
            np.where(run >= 0, after[np.maximum(run, 0)], bool(start)) for run in run_of
        )
        ends.append(bool(at_end[0]))
        outside_lone = lone[~at_lone]
        lines.append(len(newlines) + len(outside_lone))
        clean = np.flatnonzero(~at_newline)
        # Row lengths with their newline (a range starting between rows starts a row).
        row_bounds = np.concatenate([[-1] if start == 0 else [], newlines[clean]])
        long_rows.append(bool(len(row_bounds) > 1 and np.diff(row_bounds).max() > limit))
        tails.append(len(data) - int(row_bounds[-1]) - 1 if len(row_bounds) else len(data))
        if len(clean):
            end = int(newlines[clean[0]])
            row_ends.append(end + 1)
            lines_to.append(int(clean[0]) + 1 + int(np.count_nonzero(outside_lone < end)))
        else:
            row_ends.append(-1)
            lines_to.append(0)
    # One entry per start state, two in each list (the types cannot say it).
    per_state = (ends, lines, row_ends, lines_to, long_rows, tails)
    return _Scan(*(tuple(values) for values in per_state))  # type: ignore[arg-type]


def _has_long_row(ranges: list[ByteRange], scans: list[_Scan], limit: int) -> bool:
    """Whether a row of the file (with every line of its quoted values) is longer than
    ``limit``, following the state at each range start as :func:`_exact_ranges` does."""
    inside, carry = 0, 0  # carry: bytes of the row still open at the range start
    for byte_range, scan in zip(ranges, scans, strict=True):
        if scan.first_row_end[inside] < 0:
            carry += byte_range.end - byte_range.start
        else:
            if inside and carry + scan.first_row_end[inside] > limit or scan.long_row[inside]:
                return True
            carry = scan.tail[inside]
        inside = int(scan.ends_inside[inside])
    return carry + 1 > limit  # the last line is read with a newline added


def _exact_ranges(ranges: list[ByteRange], scans: list[_Scan], size: int) -> list[ByteRange]:
    """The ranges with every boundary moved to the first newline that ends a row (the state
    at each range start follows from the scans of the ranges before it), line numbers set."""
    inside, line = 0, 1
    starts: list[tuple[int, int]] = []
    for byte_range, scan in zip(ranges, scans, strict=True):
        if byte_range.index == 0 or not inside:
            starts.append((byte_range.start, line))
        elif 0 <= scan.first_row_end[inside] < byte_range.end - byte_range.start:
            starts.append(
                (byte_range.start + scan.first_row_end[inside], line + scan.lines_to_first[inside])
            )
        line += scan.lines[inside]
        inside = int(scan.ends_inside[inside])
    ends = [start for start, _ in starts[1:]] + [size]
    path = ranges[0].path
    return [
        ByteRange(path, i, start, end, first_line, last=end == size)
        for i, ((start, first_line), end) in enumerate(zip(starts, ends, strict=True))
    ]


def plan_ranges(
    path: str, options: ReaderOptions, range_bytes: int, pool: ThreadPoolExecutor, whole: bool
) -> list[ByteRange] | None:
    """The ranges of ``path``, or None when it is read as one stream: not splittable, one
    range and not ``whole`` (with ``whole`` a small file is one range, parsed in memory on the
    pool beside other files' ranges), or a quoted value so long that moving the boundaries
    out of it leaves a range of more than :data:`MERGED_RANGES` ranges' bytes (the stream
    reads it in bounded memory, with the same result)."""
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
    reader = SourceReader(path, options)
    quote = ord('"') if reader.format == "csv" else None
    delimiter = ord(options.delimiter or ("\t" if reader.format == "tsv" else ","))
    limit = options.block_size
    scans = list(pool.map(lambda r: _scan(r, quote, delimiter, limit), ranges))
    if _has_long_row(ranges, scans, limit):
        # pyarrow takes a row longer than a block at the end of a stream and refuses it
        # elsewhere: where a range ends would decide its fate.
        return None
    exact = _exact_ranges(ranges, scans, size)
    if max(r.end - r.start for r in exact) > MERGED_RANGES * max(range_bytes, 1):
        return None
    if len(exact) < 2 and not whole:
        return None
    return exact


class _RangeReader(SourceReader):
    """A :class:`SourceReader` over one byte range: the range's bytes are its whole input,
    except that a range after the first takes its column names from the file's header."""

    def __init__(self, byte_range: ByteRange, options: ReaderOptions) -> None:
        super().__init__(byte_range.path, options)
        self.byte_range = byte_range
        raw = _read(byte_range)
        self.may_hold_returns = b"\r" in raw
        self._data = pa.py_buffer(raw)
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
