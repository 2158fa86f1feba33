"""Ranges of one file parsed in parallel: CSV/TSV and JSON Lines byte ranges (plain or ``.zst``)
cut at row boundaries, and Parquet row groups.

:func:`plan_ranges` cuts a local file into even ranges of at most about ``range_bytes`` at
newlines, a multiple of the parsers when there are several
(:func:`~shardlearn.data._balance.range_count`: no parser idles in the last round; with several
parsers the last round of a plain file is cut into quarter pieces, :func:`cut_targets`, so that
parsers that started apart finish together; the search for a newline starts at each cut point;
the first range owns the header line), then scans
every range once on the parser threads, following pyarrow's CSV lexer with numpy
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
The lines of a range after its last quote character (all of them in most files) hold no
quoted value to follow: unless a lone carriage return is among them, they take a plain scan
(a newline count and a few searches, at memory speed) joined to the quoted lines' scan. A
range strategy reads the input twice; its ranges are planned and scanned once.

Speculative cuts (``plan_ranges(speculate=True)``, a plain local CSV/TSV or JSON Lines file of
several ranges): reading and scanning the whole file before its parse was a pass over every byte
ahead of the first row. Instead the plan only places the cuts, assuming each newline found ends
a row (it does unless it lies in a quoted value); each parser scans the bytes it parses (read
once) and :func:`parse_ranges`, which hands the ranges over in input order, checks every range
before anything of it goes on: starting between rows (the ranges before it were right), it must
end between rows and hold no row longer than the block size (:func:`_misspeculated`, which is
:func:`_has_long_row` for ranges between right cuts). Its first line then follows from the
lines of the ranges before it, and the ranges are exactly the exact plan's. A wrong cut raises
:class:`Misspeculated`: the ingest plans its files exactly (the scans above) and runs again.
A JSON Lines cut is never wrong (see below): its parser only counts the range's newlines.

:func:`head` gives a schema sample the rows a stream of the file starts with, from a head of
the file cut after its last row end the same way (a stream reads 32 blocks ahead);
:func:`head_types` guesses the parser's numeric types from the file's first bytes, so that the
first ranges can start parsing before that sample is read (:func:`parse_ranges` takes parses
already started).

JSON Lines has no quoting: a line ends at ``\n`` and nothing else (a raw newline in a JSON
string is invalid JSON: the line is a reject, as in one stream), so a cut after a newline is a
row boundary; each range's first line is one plus the newlines before it (counted by the
parsers of a speculative plan, else on the pool), and every range takes the column names the
whole file gets (the keys of its first records, read once by the plan), so its rows are
exactly those of one stream. Nothing else depends on where a range ends: a line longer than
the block size is a reject wherever it lies.

A multi-frame ``.zst`` (:mod:`shardlearn.data._zst`) is cut at chunks of whole frames (frames
decompress on their own): range ``k`` starts after the first newline at or after chunk ``k``'s
first data byte (a line that spans frames lies in one range), and offsets are offsets in the
decompressed data. The plan decompresses each chunk once on the pool, with the head of the
next one, to scan it (CSV) or count its lines (JSON Lines); from there the cuts are placed as
in a plain file, and a parser decompresses its range from the chunk that holds its start,
unless the range is one of the first :data:`KEPT_CHUNKS`, whose bytes the plan kept (a small
``.zst`` is decompressed once). A single frame, or a chunk of more than :data:`MERGED_RANGES`
ranges' bytes, is one stream. When every frame states its data size (``zstd``, ``pzstd`` and
one-shot writers do) and the plan may speculate, the data offsets come from the headers and
each range start from its chunk's head alone (:func:`_frame_cuts`): the ranges are those
above, speculative, and each chunk is decompressed once, by its parser, which checks its cut
as in a plain file. When they do not (streaming writers), a speculative range is named by its
chunk's stored bytes (:func:`_chunk_cuts`) and its parser decompresses the chunk and the next
one's head (:func:`~shardlearn.data._zst.chunk_lines`): the same ranges, a chunk without a
newline an empty one, each chunk decompressed once too.

A Parquet file is cut at row groups, into runs of consecutive groups as even as the groups
allow (as many as for a plain file of their bytes); a row's "line" is its row number. A row
group larger than :data:`MERGED_RANGES` ranges' bytes makes the file one stream (a range is
held in memory).

A compressed file that cannot be cut (``.gz``, ``.bz2``, a ``.zst`` of one frame) small enough
to hold is one range (``packed``, decompressed by its parser), so many small compressed files
are parsed side by side, largest first; a larger one is read as one stream.

:func:`parse_ranges` parses the ranges on a thread pool (pyarrow's parser and numpy release the
GIL) with each range's own :class:`~shardlearn.data.readers.SourceReader` (fast path, slow
path, rejects: the same code as a whole file), shifts its line numbers by the lines before the
range, and yields the batches in input order, so everything downstream sees the rows in the
same order whatever the split. The ranges in flight weigh at most ``parsers + 1`` of the largest
(bounded memory: ``parsers + 1`` ranges of an even plan, more of a plan's small last pieces);
among the next few ranges a much larger one starts first (longest processing time first),
ranges of about one size in input order (:func:`next_range`), and a parser that finishes starts
the next range at once, on its own thread, not when the consumer next asks for a range (it
holds the generator while it writes the rows of the last one).
"""

from __future__ import annotations

import bisect
import codecs
import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Container, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shardlearn.data._balance import even_bounds, range_count
from shardlearn.data._jsonl import column_names, count_lines
from shardlearn.data._jsonl import head_types as json_head_types
from shardlearn.data._zst import (
    FrameIndex,
    check_unchanged,
    chunk_lines,
    frame_index,
    line_starts,
    read_chunk,
    read_plain,
)
from shardlearn.data.dataset import resolve_filesystem
from shardlearn.data.readers import (
    RawBatch,
    ReaderOptions,
    SourceReader,
    _split_extension,
    blank_rows,
)
from shardlearn.exceptions import DataError

__all__ = [
    "RANGE_BYTES",
    "ByteRange",
    "Misspeculated",
    "cut_targets",
    "default_parsers",
    "head",
    "head_types",
    "next_range",
    "parse_ranges",
    "plan_ranges",
]

T = TypeVar("T")

RANGE_BYTES = 16 << 20  # bytes per range: large enough to amortise a parse, small in memory
_SEARCH_CHUNK = 1 << 16
# A range grown past this many ranges' bytes (a quoted value that never closes) is not
# parsed in memory: its file is read as one stream.
MERGED_RANGES = 4
PACKED_RATIO = 4  # assumed bytes of text per compressed byte, for a whole compressed file
LOOKAHEAD = 2  # parse_ranges looks this many times parsers + 1 ranges ahead for large ones
# The last round of ranges of a plain file (one range per parser) is cut into this many pieces
# per parser, of at least TAIL_PIECE_BYTES each (a parse has a fixed cost): see cut_targets.
TAIL_PIECES = 4
TAIL_PIECE_BYTES = 1 << 20
# Chunks of a .zst whose data the plan keeps for the parsers (at most about range_bytes each:
# 128 MiB by default), so that a small .zst is decompressed once; later chunks are decompressed
# again.
KEPT_CHUNKS = 8
HEAD_BYTES = 256 << 10  # the first read of a file's head (a sample), grown as its rows require
_COUNT_PIECE = 1 << 20  # bytes compared at once when counting a range's newlines


def default_parsers() -> int:
    """Parser threads by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of ``path``; ``first_line`` is the physical line at ``start``;
    ``last``: the file's last range.

    A multi-frame ``.zst`` (``frames``): ``start`` and ``end`` are offsets in its decompressed
    data, or the stored bytes of a chunk when its frames do not state their sizes
    (``frames.plain`` empty). Parquet (``row_groups``, the row groups ``[a, b)``): ``start``
    and ``end`` are row numbers (0-based) and lines are row numbers (1-based). JSON Lines:
    ``names`` are the file's column names (named from its first records, which a range may
    not hold). ``stored``: the bytes of the file the range stands for (progress and
    scheduling; None: ``end - start``). ``packed``: the whole of a small compressed file that
    cannot be cut (``.gz``, ``.bz2``, a ``.zst`` of one frame), decompressed by its parser.
    ``speculative``: a CSV/TSV or JSON Lines range (plain, or a multi-frame ``.zst``) cut at a
    newline assumed to end a row; :func:`parse_ranges` checks it from the range's own scan and
    raises :class:`Misspeculated` if it does not (``first_line`` is known only then).
    ``decompressed``: a ``.zst`` range's data as the plan decompressed it (the first
    :data:`KEPT_CHUNKS` chunks of a local file), so its parser does not decompress it again;
    emptied by the first parse.
    """

    path: str
    index: int
    start: int
    end: int
    first_line: int = 1
    last: bool = False
    stored: int | None = None
    frames: FrameIndex | None = None
    row_groups: tuple[int, int] | None = None
    names: tuple[str, ...] | None = None
    packed: bool = False
    # Cut at a newline assumed to end a row (nothing was read to check it): parse_ranges
    # verifies the cut from the range's own scan and sets first_line then.
    speculative: bool = False
    # A .zst range's data, decompressed by the plan, taken (emptied) by its first parse.
    decompressed: list[bytes] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def weight(self) -> int:
        """Bytes of the file this range stands for."""
        return self.stored if self.stored is not None else self.end - self.start


class Misspeculated(Exception):
    """Internal: a speculative cut of ``path`` fell inside a quoted value or beside a row
    longer than the block size; the ingest plans the file exactly and runs again."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def splittable(path: str, options: ReaderOptions, remote: bool = False) -> bool:
    """Whether ``path`` may be parsed in ranges: a local, regular CSV/TSV/JSON Lines file
    (cut if uncompressed or a ``.zst`` of several frames, else one range if small), or a
    Parquet file."""
    reader = SourceReader(path, options)
    if reader.format == "parquet":
        return True
    if remote and not isinstance(reader.filesystem, pafs.LocalFileSystem):
        # On Ray each task reads its own range of an s3:// file (not a .zst's frames).
        return _split_extension(path)[1] is None
    return isinstance(reader.filesystem, pafs.LocalFileSystem) and os.path.isfile(path)


def _open(path: str) -> Any:
    """``path`` opened for random access: a local file, or a URI (``s3://``, on Ray)."""
    if "://" not in path:
        return open(path, "rb")
    filesystem, fs_path = resolve_filesystem(path)
    return filesystem.open_input_file(fs_path)


def cut_targets(size: int, count: int, parsers: int = 1) -> list[int]:
    """Where a plain file of ``size`` bytes planned as ``count`` ranges is cut (before each cut
    moves to the next newline), from the second range on: ``count`` even ranges, except that
    with several parsers the last round (the last ``parsers`` ranges' bytes) is cut into
    :data:`TAIL_PIECES` pieces per parser, unless a piece would hold less than
    :data:`TAIL_PIECE_BYTES`.

    Why: parsers do not start together (one parses the first range while the schema is
    inferred) and do not parse at one speed, so with even ranges the last range ran alone for
    up to a whole range's parse (0.43-0.83 s of 3.4 s on the 500k-row benchmark file, shared
    machine), and the consumer then converted and wrote all of it alone. Small pieces at the
    end let the parser that arrives first take more of them: the parsers finish within about
    a piece of each other, and the last range handed over is a piece."""
    even = [k * size // count for k in range(1, count)]
    if parsers < 2 or size // (count * TAIL_PIECES) < TAIL_PIECE_BYTES:
        return even
    body = max(count - parsers, 0)
    start, pieces = body * size // count, parsers * TAIL_PIECES
    tail = [start + k * (size - start) // pieces for k in range(1 if body == 0 else 0, pieces)]
    return even[: max(body - 1, 0)] + tail


def _cut_points(path: str, size: int, count: int, parsers: int = 1) -> list[int]:
    """Range starts: the byte after the first newline at or after each cut of
    :func:`cut_targets`."""
    bounds = [0]
    with _open(path) as handle:
        for cut in cut_targets(size, count, parsers):
            target = max(cut, bounds[-1] + 1)
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
    if byte_range.decompressed and byte_range.frames is not None:
        check_unchanged(byte_range.frames, byte_range.start, byte_range.end)
        return byte_range.decompressed.pop()
    if byte_range.frames is not None and not byte_range.frames.plain:
        # Frames without stated sizes: the range is a chunk, at its stored bytes.
        chunk = bisect.bisect_left(byte_range.frames.stored, byte_range.start)
        data = chunk_lines(byte_range.frames, chunk, MERGED_RANGES * byte_range.frames.target)
        if data is None:  # too long or corrupt: the exact plan decides (a stream reports it)
            raise Misspeculated(byte_range.path)
        return data
    if byte_range.frames is not None:
        return read_plain(byte_range.frames, byte_range.start, byte_range.end)
    with _open(byte_range.path) as handle:
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


def _refused_lines(raw: bytes | memoryview, newlines: np.ndarray, limit: int) -> np.ndarray:
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


def _scan(raw: bytes, quote: int | None, delimiter: int, limit: int) -> _Scan:
    """The scan of one range: the lines from the first one after its last quote character on
    (all of a range without quotes: most files, or all but their header) through
    :func:`_scan_plain`, a few passes at memory speed, the lines before through
    :func:`_scan_quoted`; a lone carriage return among the plain lines makes it all quoted."""
    split = 0
    if quote is not None and (last := raw.rfind(bytes([quote]))) >= 0:
        split = raw.find(b"\n", last) + 1
        if split == 0:
            return _scan_quoted(raw, quote, delimiter, limit)
    data = np.frombuffer(raw, dtype=np.uint8, offset=split)
    if raw.find(b"\r", split) >= 0:
        returns = np.flatnonzero(data == 13)
        if returns[-1] == len(data) - 1 or not (data[returns + 1] == 10).all():
            return _scan_quoted(raw, quote, delimiter, limit)
    plain = _scan_plain(raw, split, data, limit)
    if not split:
        return plain
    return _joined(_scan_quoted(memoryview(raw)[:split], quote, delimiter, limit), plain, limit)


def _joined(head: _Scan, rest: _Scan, limit: int) -> _Scan:
    """The scan of two consecutive pieces of a range (``head`` ends with a newline), for each
    state at the start of ``head``: ``rest`` starts in the state ``head`` ends in."""
    values: list[list[Any]] = [[], [], [], [], [], []]
    for start in (0, 1):
        middle = int(head.ends_inside[start])
        head_end, rest_end = head.first_row_end[start], rest.first_row_end[middle]
        spans = rest_end >= 0 and (head_end >= 0 or start == 0)  # a row across the pieces
        for field, value in enumerate(
            (
                rest.ends_inside[middle],
                head.lines[start] + rest.lines[middle],
                head_end if head_end >= 0 else head.tail[start] + rest_end if rest_end >= 0 else -1,
                head.lines_to_first[start]
                if head_end >= 0
                else head.lines[start] + rest.lines_to_first[middle]
                if rest_end >= 0
                else 0,
                head.long_row[start]
                or rest.long_row[middle]
                or spans
                and head.tail[start] + rest_end > limit,
                rest.tail[middle] if rest_end >= 0 else head.tail[start] + rest.tail[middle],
            )
        ):
            values[field].append(value)
    return _Scan(*(tuple(v) for v in values))


def _scan_plain(raw: bytes, start: int, data: np.ndarray, limit: int) -> _Scan:
    """:func:`_scan_quoted`'s result for ``raw`` from ``start`` on (``data``), which holds no
    quote and no lone carriage return: every newline ends a row when it starts between rows,
    none when it starts inside a quoted value."""
    lines = _count_newlines(data)
    first, last = raw.find(b"\n", start), raw.rfind(b"\n", start)
    first, last = (first - start, last - start) if first >= 0 else (-1, -1)
    return _Scan(
        ends_inside=(False, True),
        lines=(lines, lines),
        first_row_end=(first + 1 if first >= 0 else -1, -1),
        lines_to_first=(1 if first >= 0 else 0, 0),
        long_row=(_line_longer_than(raw, start, last, limit), False),
        tail=(len(data) - last - 1, len(data)),
    )


def _count_newlines(data: np.ndarray) -> int:
    """The newlines (bytes 10) in ``data``, compared a piece of :data:`_COUNT_PIECE` bytes at a
    time into one reused buffer. ``data == 10`` made a range-sized temporary (16 MiB) for every
    range, which numpy backs with fresh huge pages that the kernel zeroes on each fault: about
    5% of the CPU of a CSV ingest (perf), against a count that takes a few milliseconds."""
    found = np.empty(min(len(data), _COUNT_PIECE), dtype=bool)
    total = 0
    for start in range(0, len(data), _COUNT_PIECE):
        piece = data[start : start + _COUNT_PIECE]
        flags = found[: len(piece)]
        np.equal(piece, 10, out=flags)
        total += int(np.count_nonzero(flags))
    return total


def _line_longer_than(raw: bytes, start: int, last: int, limit: int) -> bool:
    """Whether a line of ``raw`` from ``start`` to its last newline (``last`` bytes on) is
    longer than ``limit`` with its newline: from each newline, the last one within ``limit``
    bytes (a few searches of ``limit`` bytes each, not one per line)."""
    previous, last = start - 1, start + last
    while previous < last:
        previous = raw.rfind(b"\n", previous + 1, previous + 1 + limit)
        if previous < 0:
            return True
    return False


def _scan_quoted(raw: bytes | memoryview, quote: int | None, delimiter: int, limit: int) -> _Scan:
    """Follow pyarrow's CSV lexer over one range, vectorised, for both starting states.

    Only runs of quote characters change the state: a run of even length changes nothing (a
    quoted value stays open on doubled quotes; ``""`` at a field start is an empty value); a
    run of odd length at the start of a field (after a delimiter, a line end or the range
    start) toggles it (opens a value; closes one, every other quote doubled); a run of odd
    length inside a field closes an open value (what follows is literal) and is literal text
    otherwise. Lines the reader's LineGuard empties do not count. A lone carriage return ends
    a row, and counts as a line, only outside a quoted value (as in the single-stream read).
    """
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
    ends: list[bool] = []
    lines: list[int] = []
    row_ends: list[int] = []
    lines_to: list[int] = []
    long_rows: list[bool] = []
    tails: list[int] = []
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
    # One entry per start state: two in each list.
    return _Scan(
        _pair(ends), _pair(lines), _pair(row_ends), _pair(lines_to), _pair(long_rows), _pair(tails)
    )


def _pair(values: list[T]) -> tuple[T, T]:
    return values[0], values[1]


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
    # A range that kept its decompressed bytes keeps them if its bounds did not move.
    kept = {(r.start, r.end): r.decompressed for r in ranges}
    return [
        replace(
            ranges[0],
            index=i,
            start=start,
            end=end,
            first_line=first,
            last=end == size,
            decompressed=kept.get((start, end)),
        )  # fmt: skip
        for i, ((start, first), end) in enumerate(zip(starts, ends, strict=True))
    ]


def plan_ranges(
    path: str,
    options: ReaderOptions,
    range_bytes: int,
    pool: ThreadPoolExecutor,
    whole: bool,
    remote: bool = False,
    parsers: int = 1,
    speculate: bool = False,
) -> list[ByteRange] | None:
    """The ranges of ``path``, or None when it is read as one stream: not splittable, one
    range and not ``whole`` (with ``whole`` a small file is one range, parsed in memory on the
    pool beside other files' ranges), a ``.zst`` of one frame, or a quoted value (a line) so
    long that moving the boundaries out of it leaves a range of more than
    :data:`MERGED_RANGES` ranges' bytes (the stream reads it in bounded memory, with the same
    result). ``pool`` runs the reads of the plan (anything with a ``map`` method); ``remote``:
    on every node of a Ray cluster, so an ``s3://`` CSV/TSV is cut too. A file of more than
    one range is cut into even ranges (as even as its frames or row groups allow), a multiple
    of ``parsers`` (the parses running at once: :func:`~shardlearn.data._balance.range_count`);
    a plain file's last round of them into smaller pieces (:func:`cut_targets`).
    With ``speculate`` a plain CSV/TSV or JSON Lines file of several ranges is cut at newlines
    without reading it (``speculative`` ranges, checked by :func:`parse_ranges`; a JSON Lines
    file's column names are still read from its head)."""
    if not splittable(path, options, remote):
        return None
    reader = SourceReader(path, options)
    limit = MERGED_RANGES * max(range_bytes, 1)
    if reader.format == "parquet":
        return _row_group_ranges(reader, range_bytes, limit, whole, parsers)
    compression = _split_extension(path)[1]
    cut = _frame_cuts(reader, range_bytes, limit, pool, parsers) if speculate else None
    if cut is not None:
        ranges, scans, size = cut, None, cut[-1].end
        if reader.format != "jsonl":
            return ranges
    elif compression == "zstd":
        units = _frame_ranges(reader, range_bytes, limit, pool, not remote, parsers)
        if units is None:
            return _packed(reader, range_bytes, whole)
        ranges, scans = units
        size = ranges[-1].end
    elif compression is not None:
        return _packed(reader, range_bytes, whole)
    else:
        size = reader.size
        count = range_count(size, range_bytes, parsers)
        bounds = _cut_points(path, size, count, parsers) if count >= 2 else [0]
        if len(bounds) < 2:
            return [ByteRange(path, 0, 0, size, last=True)] if whole else None
        # A cut after a newline is a row boundary unless it lies in a quoted value: assumed,
        # and checked as each range is parsed (no read of the whole file before the parse).
        ranges = [
            ByteRange(path, i, start, end, last=end == size, speculative=speculate)
            for i, (start, end) in enumerate(zip(bounds, [*bounds[1:], size], strict=True))
        ]
        if speculate and reader.format != "jsonl":
            return ranges
        scans = None
    if reader.format == "jsonl":
        # Speculative: the cuts are the exact plan's, the first lines counted by the parsers.
        exact = _line_ranges(reader, ranges, scans, pool)
    else:
        if scans is None:
            scanner = _scanner(reader)
            scans = list(pool.map(lambda r: scanner(_read(r)), ranges))
        if _has_long_row(ranges, scans, options.block_size):
            # pyarrow takes a row longer than a block at the end of a stream and refuses it
            # elsewhere: where a range ends would decide its fate.
            return None
        exact = _exact_ranges(ranges, scans, size)
    if max(r.end - r.start for r in exact) > limit or len(exact) < 2 and not whole:
        return None
    if exact[0].frames is not None:
        stored = exact[0].frames.size
        exact = [replace(r, stored=stored * (r.end - r.start) // max(size, 1)) for r in exact]
    return exact


def _packed(reader: SourceReader, range_bytes: int, whole: bool) -> list[ByteRange] | None:
    """A compressed file that cannot be cut, as one range when ``whole`` and small enough to
    hold (about :data:`PACKED_RATIO` times its size decompressed, within ``range_bytes``):
    so small ``.gz`` files are parsed side by side and in size order like small plain files.
    A larger one is read as one stream (bounded memory)."""
    if not whole or reader.size * PACKED_RATIO > range_bytes:
        return None
    return [ByteRange(reader.path, 0, 0, reader.size, last=True, packed=True)]


def _scanner(reader: SourceReader) -> Callable[[bytes], _Scan]:
    """The scan of a range's bytes for ``reader``'s format and options."""
    options = reader.options
    quote = ord('"') if reader.format == "csv" else None
    delimiter = ord(options.delimiter or ("\t" if reader.format == "tsv" else ","))
    return functools.partial(_scan, quote=quote, delimiter=delimiter, limit=options.block_size)


def _line_ranges(
    reader: SourceReader,
    ranges: list[ByteRange],
    counts: list[Any] | None,
    pool: ThreadPoolExecutor,
) -> list[ByteRange]:
    """JSON Lines ranges (lines end at ``\n`` only, nothing is quoted across lines): each
    range's first line from the newlines before it (speculative ranges: counted by their
    parsers), and the file's column names."""
    options = reader.options
    names = None
    if not options.columns:
        stream = reader._open_stream()
        try:
            names = tuple(column_names(stream, options.block_size))
        finally:
            stream.close()
    if ranges[0].speculative:
        return [replace(r, names=names) for r in ranges]
    if counts is None:
        counts = list(pool.map(lambda r: count_lines(_read(r)), ranges))
    firsts = np.concatenate([[1], 1 + np.cumsum(counts[:-1])]).tolist()
    return [
        replace(r, first_line=int(first), names=names)
        for r, first in zip(ranges, firsts, strict=True)
    ]


def _frame_ranges(
    reader: SourceReader,
    range_bytes: int,
    limit: int,
    pool: ThreadPoolExecutor,
    keep: bool,
    parsers: int,
) -> tuple[list[ByteRange], list[Any]] | None:
    """A multi-frame ``.zst`` cut into ranges of whole lines at its chunks of frames (one
    decompression of each chunk, on the pool), with each range's scan (CSV/TSV) or newline
    count (JSON Lines); None for one frame, or a chunk of more than ``limit`` bytes.

    Range ``k`` starts after the first newline at or after chunk ``k``'s first data byte (so
    a line that spans frames lies in one range) and ends where range ``k + 1`` starts: its
    chunk's data from there on, and the next chunks' data up to their first newline. With
    ``keep`` (the plan runs on this machine) the first :data:`KEPT_CHUNKS` ranges keep those
    bytes for their parsers.
    """
    chunks = frame_index(reader.path, range_bytes, parsers)
    if chunks is None:
        return None
    measure: Callable[[bytes], Any]
    if reader.format == "jsonl":
        measure = count_lines
    else:
        measure = _scanner(reader)
    found = list(
        pool.map(
            lambda k: _frame_unit(chunks, k, limit, measure, keep and k < KEPT_CHUNKS),
            range(chunks.chunks),
        )
    )
    units = [unit for unit in found if unit is not None]
    if len(units) < len(found):
        return None
    plain = np.concatenate([[0], np.cumsum([unit[0] for unit in units])]).tolist()
    index = replace(chunks, plain=tuple(int(p) for p in plain))
    size = int(plain[-1])
    starts = [
        (plain[k] + unit[1], unit[2], unit[3])
        for k, unit in enumerate(units)
        if unit[1] >= 0 and plain[k] + unit[1] < size
    ]
    ends = [start for start, _, _ in starts[1:]] + [size]
    ranges = [
        ByteRange(
            reader.path,
            i,
            start,
            end,
            last=end == size,
            frames=index,
            decompressed=[data] if data is not None and len(data) == end - start else None,
        )  # fmt: skip
        for i, ((start, _, data), end) in enumerate(zip(starts, ends, strict=True))
    ]
    return ranges, [measured for _, measured, _ in starts]


def _frame_cuts(
    reader: SourceReader, range_bytes: int, limit: int, pool: ThreadPoolExecutor, parsers: int
) -> list[ByteRange] | None:
    """A multi-frame ``.zst`` cut speculatively, each chunk decompressed once, by the parser
    that checks its cut. Frames that state their data sizes: its ranges start where
    :func:`_frame_ranges` starts them, found from each chunk's head alone
    (:func:`~shardlearn.data._zst.line_starts`, on the pool); others: :func:`_chunk_cuts`.
    None: not such a file, or one range, or a range of more than ``limit`` bytes (the exact
    plan decides)."""
    if _split_extension(reader.path)[1] != "zstd":
        return None
    index = frame_index(reader.path, range_bytes, parsers)
    if index is not None and not index.plain and index.chunks > 1:
        return _chunk_cuts(reader.path, index)
    starts = None if index is None or not index.plain else line_starts(index, limit, pool.map)
    if index is None or starts is None or len(starts) < 2:
        return None
    size = index.plain[-1]
    bounds = list(zip(starts, [*starts[1:], size], strict=True))
    if max(end - start for start, end in bounds) > limit:
        return None
    return [
        ByteRange(
            reader.path,
            i,
            start,
            end,
            last=end == size,
            frames=index,
            speculative=True,
            stored=index.size * (end - start) // max(size, 1),
        )  # fmt: skip
        for i, (start, end) in enumerate(bounds)
    ]


def _chunk_cuts(path: str, index: FrameIndex) -> list[ByteRange]:
    """A multi-frame ``.zst`` whose frames do not state their data sizes, cut speculatively
    at its chunks without reading it: range ``k`` is chunk ``k`` (``start`` and ``end``: its
    stored bytes), the lines that start in it (:func:`~shardlearn.data._zst.chunk_lines`),
    decompressed once, by its parser, which checks its cut as in a plain file (a chunk of
    more than :data:`MERGED_RANGES` ranges' bytes makes the file planned exactly)."""
    bounds = list(zip(index.stored, index.stored[1:], strict=False))
    return [
        ByteRange(
            path,
            i,
            start,
            end,
            last=i == index.chunks - 1,
            frames=index,
            speculative=True,
            stored=end - start,
        )  # fmt: skip
        for i, (start, end) in enumerate(bounds)
    ]


def _frame_unit(
    index: FrameIndex, chunk: int, limit: int, measure: Callable[[bytes], Any], keep: bool
) -> tuple[int, int, Any, bytes | None] | None:
    """Runs on the pool: (chunk ``chunk``'s data bytes, where its range starts in them (-1:
    no newline, no range of its own), ``measure`` of the range's bytes, those bytes if
    ``keep``); None: too long."""
    read = read_chunk(index, chunk, limit)
    if read is None:
        return None
    data, head = read
    start = 0 if chunk == 0 else data.find(b"\n") + 1
    if chunk and not start:
        return len(data), -1, None, None
    piece = data[start:] + head
    return len(data), start, measure(piece), piece if keep else None


def _row_group_ranges(
    reader: SourceReader, range_bytes: int, limit: int, whole: bool, parsers: int
) -> list[ByteRange] | None:
    """Runs of consecutive row groups of a Parquet file, as even as the groups allow, as many
    as :func:`~shardlearn.data._balance.range_count` says; None when it holds one group (and
    not ``whole``), a group of more than ``limit`` bytes, or cannot be read (the stream reports
    it)."""
    try:
        with reader.filesystem.open_input_file(reader._fs_path) as handle:
            metadata = pq.read_metadata(handle)
    except (pa.ArrowInvalid, OSError):
        return None
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    sizes = [g.total_byte_size for g in groups]
    if not groups or max(sizes) > limit:
        return None
    bounds = even_bounds(sizes, range_count(sum(sizes), range_bytes, parsers))
    if len(bounds) < 3 and not whole:
        return None
    rows = np.concatenate([[0], np.cumsum([g.num_rows for g in groups])]).tolist()
    stored = [sum(g.column(c).total_compressed_size for c in range(g.num_columns)) for g in groups]
    return [
        ByteRange(
            reader.path,
            i,
            rows[a],
            rows[b],
            first_line=rows[a] + 1,
            last=b == len(groups),
            stored=sum(stored[a:b]),
            row_groups=(a, b),
        )  # fmt: skip
        for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))
    ]


def head(
    path: str, options: ReaderOptions, rows: int, parsers: int = 1
) -> tuple[SourceReader, Iterator[RawBatch]]:
    """A reader of ``path`` and its first batches, holding at least ``rows`` non-blank rows or
    the whole file: the rows a stream of the whole file starts with (a schema sample). A JSON
    Lines head is parsed by up to ``parsers`` threads at once.

    A CSV/TSV file is read as its first :data:`HEAD_BYTES`, cut after its last row end (found
    by :func:`_scan`, as range cuts are) and parsed in memory, grown (as the rows per byte read
    so far require) until it holds ``rows`` rows; a stream would read ahead 32 blocks (128 MiB)
    whatever the rows needed. Read as a stream instead (the same rows): other formats, a pipe
    (it cannot be read twice), a read error (the stream reports it), a row longer than the
    block size, or a head grown past :data:`MERGED_RANGES` ranges' bytes.
    """
    reader = SourceReader(path, options)
    reader.head_threads = parsers
    local = isinstance(reader.filesystem, pafs.LocalFileSystem)
    if reader.format not in ("csv", "tsv") or local and not os.path.isfile(path):
        return reader, reader.batches()
    scanner, limit, want, data = _scanner(reader), MERGED_RANGES * RANGE_BYTES, HEAD_BYTES, b""
    try:
        stream = reader._open_stream()
        try:
            while True:
                data += _read_up_to(stream, want - len(data))
                whole = len(data) < want
                scan = None if whole else scanner(data)
                if scan is not None and scan.long_row[0]:
                    break
                cut = len(data) - (scan.tail[0] if scan is not None else 0)
                held = 0
                if cut or whole:
                    part = _HeadReader(path, options, data[:cut])
                    batches, held = _head_batches(part, rows)
                    if whole or held >= rows:
                        return part, iter(batches)
                if want >= limit:
                    break
                # The bytes per row so far, with a margin; at least twice the bytes.
                need = cut * rows // held * 5 // 4 if held else 0
                want = min(limit, max(2 * want, need))
        finally:
            stream.close()
    except OSError:
        pass
    return reader, reader.batches()


def _read_up_to(stream: pa.NativeFile, size: int) -> bytes:
    """``size`` bytes of ``stream``, fewer at its end."""
    parts = []
    while size > 0 and (chunk := stream.read(size)):
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def head_types(
    path: str, options: ReaderOptions
) -> tuple[list[str], dict[str, pa.DataType]] | None:
    """The column names of a local CSV/TSV file with a header, and the columns pyarrow's own
    type inference reads as ``int64`` or ``float64`` in its first :data:`HEAD_BYTES` (whole
    lines): a guess of the parser's numeric types, made before the schema sample is read, for
    the parses that start beside it (the schema then decides whether they stand). None when
    the head cannot be read that way (no whole line, a value holding a newline, ...). A JSON
    Lines file: its column names and the numeric columns of the lines that name them
    (:func:`shardlearn.data._jsonl.head_types`)."""
    reader = SourceReader(path, options)
    if reader.format == "jsonl" and not options.columns:
        try:
            stream = reader._open_stream()
            try:
                return json_head_types(stream, options.block_size)
            finally:
                stream.close()
        except OSError:
            return None
    if reader.format not in ("csv", "tsv") or options.columns or not options.header:
        return None
    if _split_extension(path)[1] is not None:
        return None  # compressed (a .zst cut in frames): its first bytes are not the text
    try:
        with open(path, "rb") as handle:
            data = handle.read(HEAD_BYTES)
    except OSError:
        return None
    cut = data.rfind(b"\n") + 1
    delimiter = options.delimiter or ("\t" if reader.format == "tsv" else ",")
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data[:cut]),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char=False if reader.format == "tsv" else '"'
            ),
            convert_options=pacsv.ConvertOptions(
                null_values=list(options.na_values), strings_can_be_null=True
            ),
        )
        names = [name.strip() for name in table.column_names]
    except (pa.ArrowException, ValueError):  # UnicodeDecodeError too: a header not UTF-8
        return None
    if table.num_rows == 0 or len(set(names)) < len(names):
        return None
    numeric = (pa.int64(), pa.float64())
    types = {n: f.type for n, f in zip(names, table.schema, strict=True) if f.type in numeric}
    return names, types


def _head_batches(reader: SourceReader, rows: int) -> tuple[list[RawBatch], int]:
    """The batches of ``reader`` up to the one that makes ``rows`` non-blank rows, and the
    non-blank rows they hold (the batches a stream's sample stops after)."""
    batches, held = [], 0
    for raw in reader.batches():
        batches.append(raw)
        held += int(np.count_nonzero(~blank_rows(raw.batch)))
        if held >= rows:
            break
    return batches, held


class _HeadReader(SourceReader):
    """A :class:`SourceReader` over the first bytes of a file, cut at a row end (:func:`head`)."""

    def __init__(self, path: str, options: ReaderOptions, data: bytes) -> None:
        super().__init__(path, options)
        self.may_hold_returns = b"\r" in data
        self._data = pa.py_buffer(data)

    def _open_stream(self) -> pa.NativeFile:
        self._raw = pa.BufferReader(self._data)
        return self._raw


class _RangeReader(SourceReader):
    """A :class:`SourceReader` over one byte range: the range's bytes are its whole input,
    except that a range after the first takes its column names from the file's header (CSV)
    or the plan (JSON Lines); a Parquet range reads its row groups."""

    def __init__(
        self, byte_range: ByteRange, options: ReaderOptions, data: bytes | None = None
    ) -> None:
        super().__init__(byte_range.path, options)
        self.byte_range = byte_range
        self._whole_file = False
        self.json_names = byte_range.names
        if byte_range.packed:
            self._whole_file = True  # decompressed from the file itself, as a stream is
            return
        if byte_range.row_groups is not None:
            _check_row_groups(self, byte_range)
            self.row_groups = list(range(*byte_range.row_groups))
            return
        raw = _read(byte_range) if data is None else data
        self.may_hold_returns = b"\r" in raw
        self._data = pa.py_buffer(raw)

    def _open_stream(self) -> pa.NativeFile:
        if self._whole_file:
            return super()._open_stream()
        self._raw = pa.BufferReader(self._data)
        return self._raw

    def batches(self) -> Iterator[RawBatch]:
        """The range's rows; none, with the file's column names, when it holds no bytes (a
        ``.zst`` chunk without a newline: its data lies in the range before)."""
        if self._whole_file or self.row_groups is not None or self._data.size:
            yield from super().batches()
        elif self.format == "jsonl":
            self.column_names = list(self.json_names or self.options.columns or ())
        else:
            self._delimiter = self.options.delimiter or ("\t" if self.format == "tsv" else ",")
            self._quote = False if self.format == "tsv" else '"'  # as SourceReader._csv sets
            self.column_names = self._csv_names()[1]

    def _csv_names(self) -> tuple[list[str], list[str], bool]:
        if self.byte_range.index == 0 or self.options.columns or not self.options.header:
            return super()._csv_names()
        self._whole_file = True  # the header line is in the first range only
        try:
            raw = self._csv_header(self._delimiter)
        finally:
            self._whole_file = False
        return raw, [n.strip() for n in raw], False


def _check_row_groups(reader: SourceReader, byte_range: ByteRange) -> None:
    """A Parquet file whose row groups are no longer the planned ones (rewritten during the
    ingest) is an error, as a text file that changed size is."""
    first, stop = byte_range.row_groups or (0, 0)
    try:
        with reader.filesystem.open_input_file(reader._fs_path) as handle:
            metadata = pq.read_metadata(handle)
        groups = metadata.num_row_groups
        rows = sum(metadata.row_group(i).num_rows for i in range(first, min(stop, groups)))
    except (pa.ArrowInvalid, OSError):
        groups = rows = -1
    if (
        rows != byte_range.end - byte_range.start
        or groups < stop
        or (byte_range.last and groups != stop)
    ):
        raise DataError(
            f"{byte_range.path!r} changed while it was being ingested (rows "
            f"{byte_range.start + 1}-{byte_range.end} were planned); nothing was written. Ingest "
            "it again once nothing writes to it."
        )


def _parse(
    byte_range: ByteRange,
    options: ReaderOptions,
    fast_types: dict[str, pa.DataType],
    data: bytes | None = None,
) -> tuple[list[str], list[RawBatch]]:
    """Every batch of one range (of ``data``, its bytes, if given), with physical line
    numbers of the whole file."""
    reader = _RangeReader(byte_range, options, data)
    reader.fast_types = fast_types
    batches = _shifted(list(reader.batches()), byte_range.first_line - 1)
    return list(getattr(reader, "column_names", [])), batches


def _shifted(batches: list[RawBatch], shift: int) -> list[RawBatch]:
    """``batches`` with every line number (rows and rejects) moved ``shift`` lines on."""
    if shift:
        for raw in batches:
            raw.lines = raw.lines + shift
            raw.invalid = [(line + shift, reason, text) for line, reason, text in raw.invalid]
    return batches


# A speculative range's check: its physical lines, and whether its cut is wrong.
_Check = tuple[int, bool]
_Parsed = tuple[list[str], list[RawBatch], _Check | None, BaseException | None]


def _parse_range(
    byte_range: ByteRange, options: ReaderOptions, fast_types: dict[str, pa.DataType]
) -> _Parsed:
    """Runs on the pool: :func:`_parse`; for a speculative range also its check, from the
    same bytes (read once): its scan (CSV/TSV) or its newlines (JSON Lines, whose cuts are
    never wrong), and its parse's error as a value, raised only once the cut is known to be
    right (a parse of a wrong cut may fail where the right one does not)."""
    if not byte_range.speculative:
        return (*_parse(byte_range, options, fast_types), None, None)
    data = _read(byte_range)
    reader = SourceReader(byte_range.path, options)
    if reader.format == "jsonl":
        check = count_lines(data), False
    else:
        scan = _scanner(reader)(data)
        check = scan.lines[0], _misspeculated(byte_range, scan, options.block_size)
    try:
        names, batches = _parse(byte_range, options, fast_types, data)
    except Exception as error:  # noqa: BLE001 - raised by parse_ranges if the cut is right
        return [], [], check, error
    return names, batches, check, None


def _misspeculated(byte_range: ByteRange, scan: _Scan, limit: int) -> bool:
    """Whether a speculative range that starts between rows (the ranges before it were
    right) is not what an exact plan would parse: it ends inside a quoted value (its cut
    falls in one), or a row of it is longer than ``limit`` (where a range ends would decide
    that row's fate: the exact plan reads such a file as one stream). Between right cuts no
    row spans two ranges, so this is :func:`_has_long_row` range by range."""
    if byte_range.last:
        return scan.long_row[0] or scan.tail[0] + 1 > limit
    return scan.ends_inside[0] or scan.long_row[0]


def next_range(
    ranges: Sequence[ByteRange], started: Container[int], following: int, parsers: int
) -> int | None:
    """The index of the range a free parser starts next (None: every range in the look-ahead
    has started): ``following``, the next to be consumed, if it has not started, else the
    first range not started among the :data:`LOOKAHEAD` times ``parsers + 1`` from it that
    weighs at least half as much as the largest of them.

    Ranges of about the same size start in input order: the one consumed next finishes first
    and frees its place among the ranges held. Taking the largest by exact bytes started the
    even ranges of one file in an order set by a few bytes (0, 2, 3, 1, 5, 7, 4, 6 on the
    500k-row benchmark file), so that the ranges held, done but behind an unfinished earlier
    one, filled the bound while a parser waited, and the last range ran alone."""
    if following < len(ranges) and following not in started:
        return following
    window = range(following, min(following + LOOKAHEAD * (parsers + 1), len(ranges)))
    waiting = [i for i in window if i not in started]
    largest = max((ranges[i].weight for i in waiting), default=0)
    return next((i for i in waiting if 2 * ranges[i].weight >= largest), None)


def parse_ranges(
    ranges: list[ByteRange],
    options: ReaderOptions,
    fast_types: dict[str, pa.DataType],
    pool: ThreadPoolExecutor,
    parsers: int,
    started: dict[int, Future] | None = None,
) -> Iterator[tuple[ByteRange, list[str], list[RawBatch]]]:
    """Parse ``ranges`` on ``pool``; yield (range, column names, batches) in input order.
    ``started``: the parses of some of the first ranges (by index), already submitted to
    ``pool`` as :func:`_parse_range` of those ranges (at most ``parsers`` of them).

    Largest first (longest processing time first) within a look-ahead of
    :data:`LOOKAHEAD` times ``parsers + 1`` ranges (:func:`next_range`), so a large file's
    ranges (or a large row group) behind small files start early instead of running alone at
    the end. At most ``parsers`` ranges run, and the ranges held (started, not handed over)
    weigh at most ``parsers + 1`` times the largest range (bounded memory: ``parsers + 1``
    ranges of an even plan; more of the small pieces that end a plan, :func:`cut_targets`,
    whose parses are short and would otherwise wait for the consumer), but for the next range
    to hand over, which may always start; the order of the output does not change. A parse is
    started whenever a parser is free and the bounds allow it: as a parse ends (on its thread)
    and as a range is handed over, not only when the consumer asks for the next range (the
    consumer holds this generator while it converts and writes a range's batches: a parser
    that finished then waited for it).

    A speculative range (its file's ranges are consecutive, the first with index 0) is
    checked before anything of it is handed over, rows or error: from its own scan, starting
    between rows as the range before it ended, it must end between rows with no row longer
    than the block size (else :class:`Misspeculated`; a JSON Lines range always passes); its
    first line follows from the lines of the ranges before it. The ranges handed over are
    then those an exact plan makes (and are handed over as such: no longer speculative).
    """
    schedule = _Schedule(ranges, options, fast_types, pool, parsers, started or {})
    line = 1  # the first line of the next speculative range
    try:
        for byte_range, parsed in schedule.parsed():
            names, batches, check, error = parsed
            if check is not None:
                # A speculative cut: right if this range, starting between rows, ends between
                # rows; its lines follow the lines of the ranges before it.
                lines, wrong = check
                line = 1 if byte_range.index == 0 else line
                if wrong:
                    raise Misspeculated(byte_range.path)
                batches = _shifted(batches, line - 1)
                byte_range = replace(byte_range, first_line=line, speculative=False)
                line += lines
            if error is not None:
                raise error
            yield byte_range, names, batches
    finally:
        schedule.close()


class _Schedule:
    """The parses of :func:`parse_ranges`: ``started`` holds every parse started and not yet
    handed over (by range index; weighing at most ``budget``, bar the next to hand over),
    ``running`` those not finished (at most ``parsers``), ``following`` the next range to hand
    over. :meth:`_fill` starts parses while both bounds allow; it runs under ``_lock`` when a
    parse finishes (a callback, on the parser's thread) and when a range is handed over, so a
    free parser never waits for the consumer. A parse that finishes wakes the consumer waiting
    for its range."""

    def __init__(
        self,
        ranges: list[ByteRange],
        options: ReaderOptions,
        fast_types: dict[str, pa.DataType],
        pool: ThreadPoolExecutor,
        parsers: int,
        started: dict[int, Future],
    ) -> None:
        self.ranges, self.options, self.fast_types = ranges, options, fast_types
        self.pool, self.parsers = pool, parsers
        # Reentrant: a parse that has finished when its callback is added runs the callback
        # at once, on the thread that holds the lock.
        self._lock = threading.Condition(threading.RLock())
        self.started = dict(started)
        self.budget = (parsers + 1) * max((r.weight for r in ranges), default=0)
        self.running = {i for i, future in self.started.items() if not future.done()}
        self.following = 0
        self.closed = False
        with self._lock:
            for index, future in list(self.started.items()):
                future.add_done_callback(functools.partial(self._finished, index))
            self._fill()

    def parsed(self) -> Iterator[tuple[ByteRange, _Parsed]]:
        """Each range with its parse's result, in input order."""
        while self.following < len(self.ranges):
            with self._lock:
                while not self._ready():
                    self._lock.wait()
                future = self.started.pop(self.following)
                self.following += 1
                self._fill()
            yield self.ranges[self.following - 1], future.result()

    def close(self) -> None:
        """Start nothing more; cancel the parses not running."""
        with self._lock:
            self.closed = True
            for future in self.started.values():
                future.cancel()

    def _ready(self) -> bool:
        future = self.started.get(self.following)
        return future is not None and future.done()

    def _fill(self) -> None:
        while not self.closed and len(self.running) < self.parsers:
            index = next_range(self.ranges, self.started, self.following, self.parsers)
            if index is None:
                return
            held = sum(self.ranges[i].weight for i in self.started)
            if index != self.following and held + self.ranges[index].weight > self.budget:
                return
            try:
                future = self.pool.submit(
                    _parse_range, self.ranges[index], self.options, self.fast_types
                )
            except RuntimeError:
                # The pool is shut down: the ingest is over (its consumer stopped early); the
                # parses of this schedule will never be handed over.
                self.closed = True
                return
            self.started[index] = future
            self.running.add(index)
            future.add_done_callback(functools.partial(self._finished, index))

    def _finished(self, index: int, _: Future) -> None:
        with self._lock:
            self.running.discard(index)
            self._fill()
            self._lock.notify_all()
