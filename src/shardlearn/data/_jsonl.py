"""JSON Lines through pyarrow's JSON reader, with the line numbers and rejects of a per-line read.

The reference is the per-line read (:func:`read_by_line`, the reader ingest used before): every
physical line (split at ``\\n``) is decoded and parsed with :func:`json.loads`; a line that is
not UTF-8, longer than the block size, not JSON (or nested too deeply) or not an object, and a
record holding a list or an object where a column takes one value, are rejects; every value is
delivered as text (numbers as Python writes them: ``1``, ``1.0``, ``1e-05``). The columns are
the keys of the first 1000 records of the first 20000 lines (or ``columns``).

:class:`JsonLinesReader` gives exactly the same rows, values, line numbers and rejects, parsing
blocks of about :data:`READ_BYTES` with ``pyarrow.json``, each block as one Arrow block on
one thread (ingest parses byte ranges on every core already: Arrow's threads cost about 10%
more CPU for nothing, and a refused row is named exactly only from the start of one Arrow
block); only the blocks of the first chunk (the lines that name the columns: ingest's schema
sample, read while nothing else runs) are parsed ``threads`` at a time. Each byte is copied
once into a block (a byte range in memory is read as views of it), and the checks below are
whole-block byte scans (numpy, memchr) that look at single lines only when a block holds what
they look for:

- Lines go to the reference instead when Arrow and Python could disagree on them: over-long,
  not UTF-8, a byte-order mark, ``NaN``/``Infinity``-like tokens (Arrow also takes ``-NaN`` and
  ``Inf``). A row of a parsed block whose line holds more than :data:`_MAX_BRACKETS` brackets
  goes there too (Python's recursion limit; Arrow reads any depth): only a block where Arrow
  found a list or an object can hold one, so a flat block's brackets are never counted.
- A block Arrow refuses (a bad line, a column changing type, two objects on one line: the row
  count differs from the non-blank lines) is cut at the row Arrow names (that line goes to the
  reference) or in half. Arrow stops at that row: the lines before it are parsed again, so a
  refused line costs about two parses of the lines before it. After :data:`_FAILURES`
  refusals and one per :data:`_FAILURE_LINES` lines, the rest of the block goes to the
  reference, which bounds the cost of a dirty block; the parts of a block are merged back into
  as few batches as their types allow.
- Parsed values become the reference's text: booleans ``true``/``false``, integers as they are,
  floats as Python's ``repr`` (Arrow's shortest digits from 1e-4 to 1e9, where both write fixed
  point, ``repr`` itself for the few others). A float column holds integers too (Arrow merges
  them): an integral value on a line with no float token (no digit followed by ``.``, ``e``,
  ``E``) was an integer; on another line the row goes to the reference. A list or an object in a
  column sends its row to the reference (a reject); a text column Arrow read as a timestamp is
  read again as text.
- Columns ingest types as numbers (``fast_types``) skip the round trip through text when Arrow
  parsed them as numbers (the same values as the reference's text cast; missing-value markers
  that read as numbers keep every column text, and a -0.0 on a line that may hold the integer
  ``-0``, which Python reads as 0, sends its row to the reference).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from shardlearn.data._line_guard import REFUSED_TEXT_CHARS

__all__ = ["JsonLinesReader", "column_names", "count_lines", "head_types", "read_by_line"]

READ_BYTES = 4 << 20  # bytes read (and parsed by Arrow) at a time
_COUNT_PIECE = 1 << 20  # bytes compared at once when counting newlines
CHUNK_LINES = 20000  # the reference's chunk: its first one names the columns
NAME_RECORDS = 1000  # records whose keys name the columns
_MAX_BRACKETS = 200  # more '[' and '{' on a line: the reference (Python's recursion limit)
# Arrow refusals per block before the rest of it goes to the reference: this many, and one
# per _FAILURE_LINES lines (a refusal costs about two calls of Arrow, or 20 lines of the
# reference, and the lines before the refused one are parsed twice)
_FAILURES = 16
_FAILURE_LINES = 32
_SMALL = 8  # lines: a refused piece this small goes to the reference whole
_SPLIT_ROWS = 16  # reference rows a typed block is cut around (more: all text)
_EXACT = 2.0**53  # integral floats from here on may be integers Arrow rounded
_FIXED = (1e-4, 1e9)  # magnitudes of fractions Arrow and repr both write in fixed point
_JSON_SPACE = b" \t\r\n"
_NON_FINITE_TOKEN = r"[:,\[]\s*-?(NaN|Inf)"
_FLOAT_TOKEN = r"[0-9][.eE]"
_INTEGER_ZERO = r"-0([^0-9.eE]|$)"
_ROW_HINT = re.compile(r"in row (\d+)")

Item = tuple[int, "bytes | str"]  # (line number, the line, or why it is refused unread)


# -- the reference: one line at a time -----------------------------------------------------------
def read_by_line(
    stream: io.BufferedIOBase, path: str, limit: int, columns: Sequence[str] | None
) -> Iterator[tuple[list[str], RawRows]]:
    """The per-line read, chunk by chunk: (column names, rows) — the reference the Arrow path
    equals (tests compare them)."""
    names: list[str] | None = list(columns) if columns else None
    chunk: list[Item] = []
    number = 0
    for line in _physical_lines(stream, limit):
        number += 1
        chunk.append((number, line))
        if len(chunk) >= CHUNK_LINES:
            names = names if names is not None else _names_of(chunk)
            yield names, reference_rows(chunk, names)
            chunk = []
    if chunk:
        names = names if names is not None else _names_of(chunk)
        yield names, reference_rows(chunk, names)


def _physical_lines(stream: io.BufferedIOBase, limit: int) -> Iterator[bytes | str]:
    """Every physical line as bytes; an over-long one as the reason it is refused (its rest is
    skipped unread into memory)."""
    while line := stream.readline(limit + 1):
        if len(line) <= limit:
            yield line
            continue
        length = len(line)
        while not line.endswith(b"\n") and (line := stream.readline(1 << 20)):
            length += len(line)
        yield _too_long(length, limit)


def _too_long(length: int, limit: int) -> str:
    return f"line of {length} bytes, longer than the {limit}-byte limit"


@dataclass
class RawRows:
    """Rows of text values in line order, their lines, and rejects (line, reason, text)."""

    batch: pa.RecordBatch
    lines: np.ndarray
    invalid: list[tuple[int, str, str]]


def _names_of(items: list[Item]) -> list[str]:
    names: dict[str, None] = {}
    seen = 0
    for _, line in items:
        record, _ = _json_record(line)
        if record is not None:
            names.update(dict.fromkeys(record))
            seen += 1
            if seen >= NAME_RECORDS:
                break
    return list(names)


def reference_rows(items: list[Item], names: Sequence[str]) -> RawRows:
    """Lines read one by one with :func:`json.loads`."""
    kept, reports = [], []
    for number, line in items:
        record, reason = _json_record(line)
        if reason is not None:
            reports.append((number, reason, _json_preview(line)))
        elif record is not None:
            reason = _nested_value(record, names)
            if reason is None:
                kept.append((record, number))
            else:
                reports.append((number, reason, json.dumps(record)[:REFUSED_TEXT_CHARS]))
    arrays = [pa.array([_json_text(r.get(n)) for r, _ in kept], pa.string()) for n in names]
    batch = pa.RecordBatch.from_arrays(arrays, names=list(names))
    return RawRows(batch, np.asarray([n for _, n in kept], dtype=np.int64), reports)


def _json_record(line: bytes | str) -> tuple[dict | None, str | None]:
    """(the record, None), (None, None) for a blank line, or (None, why it is refused)."""
    if isinstance(line, str):
        return None, line
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"not valid UTF-8 (byte 0x{line[error.start]:02x} at byte {error.start + 1})"
    if not text.strip():
        return None, None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return None, f"invalid JSON: {error.msg}"
    except RecursionError:
        return None, "invalid JSON: nested too deeply"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    return record, None


def _json_preview(line: bytes | str) -> str:
    if isinstance(line, str):
        return ""
    text = line[: 4 * REFUSED_TEXT_CHARS].decode("utf-8", "replace").rstrip("\n")
    return text[:REFUSED_TEXT_CHARS]


def _nested_value(record: dict, names: Sequence[str]) -> str | None:
    """Why ``record`` is refused: a list or an object where a column takes one value."""
    for name in names:
        value = record.get(name)
        if isinstance(value, list | dict):
            kind = "list" if isinstance(value, list) else "object"
            return f"column {name!r}: a JSON {kind} where a single value is expected"
    return None


def _json_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


# -- the Arrow path ------------------------------------------------------------------------------
@dataclass
class _Block:
    """Whole lines ``data`` starting at line ``first``; ``starts`` has one offset per line plus
    the end."""

    first: int
    data: bytes
    starts: np.ndarray

    @property
    def count(self) -> int:
        return len(self.starts) - 1

    def item(self, index: int, limit: int) -> Item:
        start, end = int(self.starts[index]), int(self.starts[index + 1])
        if end - start > limit:
            return self.first + index, _too_long(end - start, limit)
        return self.first + index, self.data[start:end]


class _Refused(Exception):
    """Arrow refused a piece; ``row`` is the row it named (from the start of the piece), if
    any."""

    def __init__(self, row: int | None) -> None:
        self.row = row


class JsonLinesReader:
    """Reads one JSON Lines stream as the reference does, with pyarrow's JSON parser.

    Parameters
    ----------
    path : str
        The source named in every batch.
    limit : int
        Longest line in bytes (the block size); longer lines are rejects.
    columns : sequence of str, optional
        Column names (else the keys of the first records).
    fast_types : dict
        Columns delivered typed when Arrow parsed them as numbers (ingest's numeric columns).
    na_values : sequence of str
        Missing-value markers: one that reads as a number keeps every column text.
    threads : int
        Blocks of the first chunk (the lines that name the columns) parsed at once, each on a
        thread of its own: a schema sample reads them while nothing else runs.
    """

    def __init__(
        self,
        path: str,
        limit: int,
        columns: Sequence[str] | None,
        fast_types: dict[str, pa.DataType],
        na_values: Sequence[str],
        threads: int = 1,
    ) -> None:
        self.path = path
        self.limit = limit
        self.threads = threads
        self.names: list[str] | None = list(columns) if columns else None
        self.fast_types = {} if _numeric_marker(na_values) else dict(fast_types)
        self._text_columns: set[str] = set()  # names Arrow took for timestamps: read as text
        self._head = 0  # lines of the first chunk read so far (to name the columns)
        self._records = 0  # records among them
        self._keys: dict[str, None] = {}  # their keys, in order
        self.lines = 0

    def batches(self, stream: pa.NativeFile) -> Iterator[RawRows]:
        """Every line of ``stream`` as rows or rejects, in line order."""
        head = CHUNK_LINES if self.names is None else 0
        segments: Iterator[_Block | Item] = self._segments(stream, head)
        if self.names is None:
            named: list[_Block | Item] = []
            for segment in segments:
                named.append(segment)
                if self._name_from(segment):
                    break
            else:
                self._name_from(None)
            segments = itertools.chain(named, segments)
            if self.threads > 1:
                yield from self._head_rows(segments)
        for piece in segments:
            yield from self._piece(piece)

    def _head_rows(self, segments: Iterator[_Block | Item]) -> Iterator[RawRows]:
        """The pieces of ``segments`` up to the first chunk's last line, parsed
        :attr:`threads` at a time (at most one more read ahead), in line order; the rest is
        left in ``segments``. The pieces share nothing a parse writes but the columns read as
        text, which a parse that finds one adds itself."""
        pending: deque[Future[list[RawRows]]] = deque()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="shardlearn-jsonl") as pool:
            try:
                last = 0  # the last line submitted
                while last < CHUNK_LINES and (piece := next(segments, None)) is not None:
                    pending.append(pool.submit(self._parsed, piece))
                    last = piece.first + piece.count - 1 if isinstance(piece, _Block) else piece[0]
                    if len(pending) > self.threads:
                        yield from pending.popleft().result()
                while pending:
                    yield from pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def _parsed(self, piece: _Block | Item) -> list[RawRows]:
        return list(self._piece(piece))

    def _name_from(self, piece: _Block | Item | None) -> bool:
        """Reads one more piece of the first chunk (None: the end); names the columns once
        the chunk's first :data:`NAME_RECORDS` records (or the chunk, or the file) are read."""
        if piece is not None:
            room = CHUNK_LINES - self._head
            if isinstance(piece, _Block):
                items: Iterable[Item] = (
                    piece.item(i, self.limit) for i in range(min(piece.count, room))
                )
            else:
                items = [piece][:room]
            for _, line in items:
                if self._records >= NAME_RECORDS:
                    break
                self._head += 1
                record, _ = _json_record(line)
                if record is not None:
                    self._keys.update(dict.fromkeys(record))
                    self._records += 1
        done = self._head >= CHUNK_LINES or self._records >= NAME_RECORDS
        if piece is None or done:
            self.names = list(self._keys)
            return True
        return False

    def _piece(self, piece: _Block | Item) -> Iterator[RawRows]:
        if self.names is None:  # a bug, not an input: pieces come only after the names
            raise RuntimeError("JSON Lines rows were read before their column names")
        if not isinstance(piece, _Block):
            yield reference_rows([piece], self.names)
        elif not self.names:  # no record in the first chunk: nothing Arrow could deliver
            yield reference_rows([piece.item(i, self.limit) for i in range(piece.count)], [])
        else:
            yield from _BlockParse(self, piece).rows()

    def _segments(self, stream: pa.NativeFile, head: int = 0) -> Iterator[_Block | Item]:
        """Blocks of whole lines, and over-long lines (skipped unread) as refusals; a block
        ends after line ``head`` if given (the lines that name the columns: a caller reading
        them, as ingest's schema sample of 20000 rows does, parses nothing after them)."""
        carry = b""
        while (chunk := stream.read_buffer(READ_BYTES)).size:
            newlines = _newlines(chunk)
            if len(newlines):
                cut = int(newlines[-1]) + 1
                # One copy of each byte (a buffer's read is a view of an in-memory range);
                # the carry is a line's start, or what follows an over-long line.
                data = b"".join((carry, memoryview(chunk)[:cut]))
                ends = np.concatenate([_newlines(carry), newlines + len(carry)])
                yield from self._head_split(data, ends, head)
                carry = chunk.slice(cut).to_pybytes()
            else:
                carry += chunk.to_pybytes()
            if len(carry) > self.limit:
                # What followed a skipped line may hold whole lines before the long one.
                ends = _newlines(carry)
                if len(ends):
                    cut = int(ends[-1]) + 1
                    yield from self._head_split(carry[:cut], ends, head)
                    carry = carry[cut:]
            if len(carry) > self.limit:
                length, carry = self._skip_line(stream, len(carry))
                yield self._refusal(length)
        if carry:
            yield self._block(carry)

    def _head_split(self, data: bytes, ends: np.ndarray, head: int) -> Iterator[_Block]:
        """The block of the whole lines ``data`` (newlines at ``ends``), cut after line
        ``head`` when that line falls inside it."""
        split = head - self.lines
        if 0 < split < len(ends):
            end = int(ends[split - 1]) + 1
            yield self._block(data[:end], ends[:split])
            data, ends = data[end:], ends[split:] - end
        yield self._block(data, ends)

    @staticmethod
    def _skip_line(stream: pa.NativeFile, length: int) -> tuple[int, bytes]:
        """Reads past the rest of an over-long line: (its length, the bytes after it)."""
        while chunk := stream.read(READ_BYTES):
            newline = chunk.find(b"\n")
            if newline >= 0:
                return length + newline + 1, chunk[newline + 1 :]
            length += len(chunk)
        return length, b""

    def _refusal(self, length: int) -> Item:
        self.lines += 1
        return self.lines, _too_long(length, self.limit)

    def _block(self, data: bytes, newlines: np.ndarray | None = None) -> _Block:
        """The lines of ``data`` (``newlines``: the offsets of its newlines, if known)."""
        if newlines is None:
            newlines = _newlines(data)
        ends = newlines + 1
        if not data.endswith(b"\n"):
            ends = np.append(ends, len(data))
        block = _Block(self.lines + 1, data, np.concatenate([[0], ends]).astype(np.int64))
        self.lines += block.count
        return block


def column_names(stream: pa.NativeFile, limit: int) -> list[str]:
    """The column names :class:`JsonLinesReader` gives ``stream`` (the keys of its first
    records): a byte range of the file after its start takes them from here."""
    return _named(stream, limit)[0].names or []


def head_types(
    stream: pa.NativeFile, limit: int
) -> tuple[list[str], dict[str, pa.DataType]] | None:
    """The column names :class:`JsonLinesReader` gives ``stream``, and the columns Arrow reads
    as ``int64`` or ``float64`` in the lines of its first block that name them: a guess of
    ingest's numeric columns, for parses started before its schema sample is read (the schema
    decides whether they stand; a guess only changes how values travel, typed or as text).
    None when Arrow refuses those lines or there are none."""
    reader, first = _named(stream, limit)
    if first is None or not reader.names:
        return None
    lines = min(first.count, reader._head)
    try:
        table = pajson.read_json(
            pa.BufferReader(memoryview(first.data)[: int(first.starts[lines])]),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(first.data) + 1),
            parse_options=pajson.ParseOptions(newlines_in_values=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    numeric = (pa.int64(), pa.float64())
    names = set(reader.names)
    types = {f.name: f.type for f in table.schema if f.name in names and f.type in numeric}
    return reader.names, types


def _named(stream: pa.NativeFile, limit: int) -> tuple[JsonLinesReader, _Block | None]:
    """A reader that has named the columns of ``stream``, and the first block it read."""
    reader = JsonLinesReader("", limit, None, {}, ())
    first = None
    for segment in reader._segments(stream):
        if first is None and isinstance(segment, _Block):
            first = segment
        if reader._name_from(segment):
            break
    else:
        reader._name_from(None)
    return reader, first


def count_lines(data: bytes) -> int:
    """The newlines in ``data``, for the first line of each byte range of a file: numpy
    (about twice as fast as ``bytes.count``) compares :data:`_COUNT_PIECE` bytes at a time into
    one reused buffer. ``data == 10`` made a range-sized temporary (16 MiB) whose fresh pages
    the kernel zeroes; the parser's next range was read into fresh pages too (the temporary
    had taken the pages just freed): 0.22-0.31 s of CPU to read and count 256 MB against
    0.08-0.09 s (one parser)."""
    values = np.frombuffer(data, dtype=np.uint8)
    found = np.empty(min(len(values), _COUNT_PIECE), dtype=bool)
    total = 0
    for start in range(0, len(values), _COUNT_PIECE):
        flags = found[: min(_COUNT_PIECE, len(values) - start)]
        np.equal(values[start : start + _COUNT_PIECE], 10, out=flags)
        total += int(np.count_nonzero(flags))
    return total


class _BlockParse:
    """One block through Arrow, with the lines that need it through the reference."""

    def __init__(self, reader: JsonLinesReader, block: _Block) -> None:
        self.reader = reader
        self.block = block
        self.names: list[str] = reader.names or []
        data = np.frombuffer(block.data, dtype=np.uint8)
        starts = block.starts
        self.lines = pa.Array.from_buffers(
            pa.binary(),
            block.count,
            [None, pa.py_buffer(starts.astype(np.int32)), pa.py_buffer(block.data)],
        )
        self.nonblank = self._nonblank(data)
        self.reference = self._lines_for_reference(data)
        self._float_token: np.ndarray | None = None
        self.failures = 0
        self.allowed = _FAILURES + block.count // _FAILURE_LINES

    def _nonblank(self, data: np.ndarray) -> np.ndarray:
        """Lines holding more than JSON whitespace (only lines starting with it are read)."""
        starts, raw = self.block.starts, self.block.data
        first = data[starts[:-1]]
        nonblank = (first != 32) & (first != 9) & (first != 13) & (first != 10)
        for index in np.flatnonzero(~nonblank).tolist():
            nonblank[index] = bool(raw[starts[index] : starts[index + 1]].strip(_JSON_SPACE))
        return nonblank

    def _lines_for_reference(self, data: np.ndarray) -> np.ndarray:
        """Lines Arrow and Python could disagree on (see the module docstring)."""
        starts, raw = self.block.starts, self.block.data
        refer = np.diff(starts) > self.reader.limit
        ascii = raw.isascii()
        # Single bytes first: memchr is much faster than a substring search.
        if not ascii and b"\xef\xbb\xbf" in raw:
            head = np.zeros(len(data) + 3, dtype=np.uint8)
            head[: len(data)] = data
            first = starts[:-1]
            refer |= (head[first] == 0xEF) & (head[first + 1] == 0xBB) & (head[first + 2] == 0xBF)
        if _holds(raw, b"N", b"NaN") or _holds(raw, b"I", b"Inf"):
            found = pc.match_substring_regex(self.lines, _NON_FINITE_TOKEN)
            refer |= found.to_numpy(zero_copy_only=False)
        if not ascii and not _is_utf8(raw):
            high = np.flatnonzero(_per_line(np.flatnonzero(data >= 128), starts))
            for index in high.tolist():
                try:
                    raw[starts[index] : starts[index + 1]].decode("utf-8")
                except UnicodeDecodeError:
                    refer[index] = True
        return refer

    def deep(self, table: pa.Table, rows: np.ndarray) -> np.ndarray:
        """Per row of ``table`` (the lines ``rows``): whether its line holds more than
        :data:`_MAX_BRACKETS` brackets, which Python's json may refuse as nested too deeply.
        Only a table with a list or an object can hold such a line."""
        if not any(pa.types.is_nested(field.type) for field in table.schema):
            return np.zeros(len(rows), dtype=bool)
        data = np.frombuffer(self.block.data, dtype=np.uint8)
        brackets = np.flatnonzero((data == 91) | (data == 123))
        return (_per_line(brackets, self.block.starts) > _MAX_BRACKETS)[rows]

    def float_token(self) -> np.ndarray:
        """Per line: whether it holds a digit followed by '.', 'e' or 'E' (a float token)."""
        if self._float_token is None:
            found = pc.match_substring_regex(self.lines, _FLOAT_TOKEN)
            self._float_token = found.to_numpy(zero_copy_only=False)
        return self._float_token

    def integer_zero(self, lines: np.ndarray) -> np.ndarray:
        """Per line of ``lines``: whether it may hold the integer ``-0`` (``-0`` not followed
        by a digit, '.', 'e' or 'E'): Arrow reads it as -0.0 in a float column, Python as 0."""
        found = pc.match_substring_regex(self.lines.take(pa.array(lines)), _INTEGER_ZERO)
        return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)

    def rows(self) -> Iterator[RawRows]:
        yield from _merged(self._part(0, self.block.count))

    def _part(self, start: int, stop: int) -> Iterator[RawRows]:
        """Lines ``[start, stop)``: Arrow, cut where it refuses (the lines after a refused
        line are a loop, not a recursion: a dirty block may be refused hundreds of times)."""
        while start < stop:
            if self.failures >= self.allowed or stop - start <= _SMALL and self.failures:
                yield self._reference(np.arange(start, stop))
                return
            span = np.arange(start, stop)
            parsed = span[~self.reference[start:stop]]
            rows = parsed[self.nonblank[parsed]]
            if len(rows) == 0:
                yield self._reference(span)
                return
            try:
                table = self._parse(parsed, len(rows))
            except _Refused as refused:
                self.failures += 1
                if refused.row is None or refused.row >= len(rows):
                    middle = (start + stop) // 2
                    yield from self._part(start, middle)
                    start = middle
                else:
                    # Arrow stopped at that line: the lines before it are parsed again, the
                    # line goes to the reference, the rest is parsed on from there.
                    bad = int(rows[refused.row])
                    yield from self._part(start, bad)
                    yield self._reference(np.array([bad]))
                    start = bad + 1
                continue
            yield from self._deliver(table, rows, span[self.reference[start:stop]])
            return

    def _parse(self, parsed: np.ndarray, expected: int) -> pa.Table:
        """Lines ``parsed`` through Arrow (``expected`` rows) as one Arrow block on this
        thread: a refusal names its row from the start of ``parsed``."""
        data = _join(self.block.data, self.block.starts, parsed)
        while True:
            text = self.reader._text_columns
            schema = pa.schema([(n, pa.string()) for n in self.names if n in text])
            try:
                table = pajson.read_json(
                    pa.BufferReader(data),
                    read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
                    parse_options=pajson.ParseOptions(
                        explicit_schema=schema if len(schema) else None,
                        newlines_in_values=False,
                        unexpected_field_behavior="infer",
                    ),
                )
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                hint = _ROW_HINT.search(str(error))
                row = int(hint.group(1)) if hint else None
                raise _Refused(row) from None
            if table.num_rows != expected:
                raise _Refused(None)
            names = set(self.names)
            retyped = [f.name for f in table.schema if f.name in names and _is_other(f.type)]
            if not retyped:
                return table
            text.update(retyped)

    def _deliver(
        self, table: pa.Table, rows: np.ndarray, referred: np.ndarray
    ) -> Iterator[RawRows]:
        """The parsed rows as the reference would give them, with ``referred`` lines (and the
        rows that turn out to need it) read by the reference."""
        count = table.num_rows
        refer = self.deep(table, rows)
        columns = {n: _column(table, n, count) for n in self.names}
        typed: dict[str, pa.Array] = {}
        for name, values in columns.items():
            target = self.reader.fast_types.get(name)
            if target is not None:
                cast = _typed(values, target)
                if cast is not None:
                    typed[name], odd, negative_zero = cast
                    refer |= odd
                    if negative_zero.any():
                        at = np.flatnonzero(negative_zero)
                        refer[at[self.integer_zero(rows[at])]] = True
                    continue
            refer |= _nested(values)
        if typed and refer.sum() + len(referred) > _SPLIT_ROWS:
            typed = {}
        arrays = []
        for name in self.names:
            if name in typed:
                arrays.append(typed[name])
                continue
            text, needs = self._text(columns[name], rows)
            arrays.append(text)
            refer |= needs
        batch = pa.RecordBatch.from_arrays(arrays, names=self.names)
        referred = np.sort(np.concatenate([referred, rows[refer]]))
        if refer.any():
            batch, rows = batch.filter(pa.array(~refer)), rows[~refer]
        if len(referred) == 0:
            yield RawRows(batch, self.block.first + rows, [])
        elif typed:
            yield from self._interleave(batch, rows, referred)
        else:
            yield _merge(RawRows(batch, self.block.first + rows, []), self._reference(referred))

    def _interleave(
        self, batch: pa.RecordBatch, rows: np.ndarray, referred: np.ndarray
    ) -> Iterator[RawRows]:
        """Typed rows cut around the few lines the reference reads (text rows of their own)."""
        done = 0
        for line in referred.tolist():
            upto = int(np.searchsorted(rows, line))
            if upto > done:
                yield RawRows(
                    batch.slice(done, upto - done), self.block.first + rows[done:upto], []
                )
            yield self._reference(np.array([line]))
            done = upto
        if done < len(rows) or not referred.size:
            yield RawRows(batch.slice(done), self.block.first + rows[done:], [])

    def _text(self, values: pa.Array, rows: np.ndarray) -> tuple[pa.Array, np.ndarray]:
        """The reference's text for parsed values, and the rows only the reference can give."""
        kind = values.type
        none = np.zeros(len(values), dtype=bool)
        if pa.types.is_null(kind):
            return pa.nulls(len(values), pa.string()), none
        if pa.types.is_string(kind):
            return values, none
        if pa.types.is_boolean(kind):
            return pc.if_else(values, "true", "false"), none
        if pa.types.is_integer(kind):
            return values.cast(pa.string()), none
        if pa.types.is_floating(kind):
            return _float_text(values, self.float_token()[rows])
        return pa.nulls(len(values), pa.string()), _nested(values)

    def _reference(self, indices: np.ndarray) -> RawRows:
        items = [self.block.item(int(i), self.reader.limit) for i in indices]
        return reference_rows(items, self.names)


def _newlines(data: bytes | pa.Buffer) -> np.ndarray:
    """The offsets of the newlines in ``data``."""
    return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)


def _holds(data: bytes, byte: bytes, text: bytes) -> bool:
    """Whether ``data`` holds ``text`` (whose first byte is ``byte``)."""
    return data.find(byte) >= 0 and text in data


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 (Python's decoder: faster than Arrow's cast here)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _per_line(positions: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """How many of the byte ``positions`` each line holds."""
    lines = np.searchsorted(starts, positions, side="right") - 1
    return np.bincount(lines, minlength=len(starts) - 1)


def _join(data: bytes, starts: np.ndarray, lines: np.ndarray) -> bytes | memoryview:
    """The bytes of ``lines`` (sorted indices), one slice per run of consecutive lines (a view
    of ``data`` if they are one run)."""
    if len(lines) == len(starts) - 1:
        return data
    breaks = np.flatnonzero(np.diff(lines) != 1) + 1
    firsts = lines[np.concatenate([[0], breaks])].tolist()
    lasts = lines[np.concatenate([breaks - 1, [len(lines) - 1]])].tolist()
    view = memoryview(data)
    if len(firsts) == 1:
        return view[starts[firsts[0]] : starts[lasts[0] + 1]]
    return b"".join(view[starts[a] : starts[b + 1]] for a, b in zip(firsts, lasts, strict=True))


def _is_other(kind: pa.DataType) -> bool:
    """A type Arrow infers from text (timestamps): the column is read again as text."""
    plain = (pa.types.is_null, pa.types.is_string, pa.types.is_boolean, pa.types.is_integer,
             pa.types.is_floating, pa.types.is_nested)  # fmt: skip
    return not any(test(kind) for test in plain)


def _column(table: pa.Table, name: str, count: int) -> pa.Array:
    index = table.schema.get_field_index(name)
    if index < 0:
        return pa.nulls(count)
    column = table.column(index)
    # One chunk (one Arrow block) is handed on as it is: combining would copy it.
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _nested(values: pa.Array) -> np.ndarray:
    """Rows holding a list or an object (rejects, with the reference's reason)."""
    if not pa.types.is_nested(values.type):
        return np.zeros(len(values), dtype=bool)
    return values.is_valid().to_numpy(zero_copy_only=False)


def _typed(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray, np.ndarray] | None:
    """``values`` as ``target`` with the reference's values, the rows whose value only the
    reference knows (not finite), and the rows holding -0.0 (the reference's too if their line
    holds the integer ``-0``, which is 0); None: deliver text."""
    kind = values.type
    none = np.zeros(len(values), dtype=bool)
    if pa.types.is_null(kind):
        return pa.nulls(len(values), target), none, none
    if pa.types.is_integer(kind) and (target == kind or pa.types.is_floating(target)):
        return values.cast(target, safe=False), none, none
    if pa.types.is_floating(kind) and target == pa.float64():
        numbers = values.to_numpy(zero_copy_only=False)
        odd = ~np.isfinite(numbers)  # nulls are NaN here
        if values.null_count and odd.any():
            odd &= values.is_valid().to_numpy(zero_copy_only=False)
        return values, odd, (numbers == 0) & np.signbit(numbers)
    return None


def _float_text(values: pa.Array, float_line: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Python's ``repr`` of parsed floats; integral ones were integers unless their line holds
    a float token (those rows go to the reference, as do ones Arrow may have rounded)."""
    numbers = values.to_numpy(zero_copy_only=False)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(numbers) & valid
        integral = finite & (numbers == np.trunc(numbers))
    exact = integral & (np.abs(numbers) < _EXACT)
    refer = valid & ~finite | integral & ~exact | exact & float_line
    text = values.cast(pa.string())
    fraction = finite & ~integral
    # Arrow writes a fraction with the shortest digits, as repr does, in fixed point from 1e-6
    # to 1e10 and with an exponent beyond; repr in fixed point from 1e-4 to 1e16.
    with np.errstate(invalid="ignore"):
        plain = (np.abs(numbers) >= _FIXED[0]) & (np.abs(numbers) < _FIXED[1])
    own = fraction & ~plain
    whole = exact & ~float_line
    if whole.any():
        integers = pc.cast(values, pa.int64(), safe=False).cast(pa.string())
        text = pc.if_else(pa.array(whole), integers, text)
    if own.any():
        reprs = [repr(float(v)) for v in numbers[own].tolist()]
        text = pc.replace_with_mask(text, pa.array(own), pa.array(reprs, pa.string()))
    return text, refer


def _merged(parts: Iterable[RawRows]) -> Iterator[RawRows]:
    """Consecutive parts of a block as few as they allow (a dirty block is cut at each line
    Arrow refuses; each part would be a batch for ingest to convert): the rows of parts with
    the same columns and types are concatenated in line order, rejects join the rows beside
    them."""
    group: list[RawRows] = []
    schema: pa.Schema | None = None  # of the group's rows
    for part in parts:
        if part.batch.num_rows:
            if schema is not None and not part.batch.schema.equals(schema):
                yield _concatenated(group)
                group = []
            schema = part.batch.schema
        group.append(part)
    if group:
        yield _concatenated(group)


def _concatenated(parts: list[RawRows]) -> RawRows:
    if len(parts) == 1:
        return parts[0]
    batches = [p.batch for p in parts if p.batch.num_rows]
    if len(batches) > 1:
        batch = pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
    else:
        batch = batches[0] if batches else parts[0].batch
    lines = np.concatenate([p.lines for p in parts])
    return RawRows(batch, lines, [r for p in parts for r in p.invalid])


def _merge(first: RawRows, second: RawRows) -> RawRows:
    """Two sets of rows of the same columns, in line order."""
    lines = np.concatenate([first.lines, second.lines])
    order = np.argsort(lines, kind="stable")
    table = pa.Table.from_batches([first.batch, second.batch]).take(pa.array(order))
    batch = table.combine_chunks().to_batches()
    merged = batch[0] if batch else first.batch.slice(0, 0)
    return RawRows(merged, lines[order], first.invalid + second.invalid)


def _numeric_marker(na_values: Sequence[str]) -> bool:
    """Whether a missing-value marker reads as a finite number (then the text decides)."""
    for marker in na_values:
        try:
            if math.isfinite(float(marker)):
                return True
        except ValueError:
            continue
    return False
