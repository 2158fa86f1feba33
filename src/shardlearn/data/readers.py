"""Streaming readers for CSV/TSV, JSON Lines and Parquet, with source line numbers.

Every reader yields :class:`RawBatch` objects: a record batch of raw values (strings for text
formats, so that unparseable values become rejects instead of aborting the read), the 1-based
source line of every row, and the rows the parser itself refused (wrong number of fields,
broken quoting, invalid JSON) with their line numbers. Memory is bounded by the block size.

CSV line numbers: pyarrow's streaming reader runs single-threaded here so that its
``invalid_row_handler`` reports physical line numbers (ingest runs several readers at once, one
per byte range of a file, see :mod:`shardlearn.data._ranges`; ``_csv_names`` is where a range
after the first takes the file's header names without a header line of its own); blank lines
are kept as rows (and dropped later) so that every physical line is either a row or an
invalid-row report, which makes the line of every row computable: pyarrow numbers rows one
per row, so the newlines inside quoted values (of accepted rows and of refused ones) are added.
A quote left open swallows the following lines up to the next quote; the refused row's first
line is the reject and the swallowed lines are parsed again on their own, their rows placed
where their lines are, so rows keep the file's order.

CSV has two paths. The fast path hands the file straight to pyarrow, numeric columns typed by
the parser, and takes only clean data: the first value of another type, refused row, line
longer than a block or non-UTF-8 byte stops it (``_FastPathFailed``). The slow path then reads
on from the first line not yet delivered behind a
:class:`~shardlearn.data._line_guard.LineGuard` that empties over-long and undecodable lines
(each becomes a reject with its line number); refused rows are reported by the
``invalid_row_handler``; numeric columns stay typed by the parser until a value of another type
makes it read on (again from the first line not yet delivered) with every column as text.
Clean files never pay for the slow path.

Lines end where the parser ends them: ``\n``, ``\r\n`` or a lone ``\r`` (outside quoted
values). The header is the first line (an empty first line is an error: the parser would take
it as the header), and the restart counts lone carriage returns too; the one case it cannot
count without the parser, skipped bytes holding both a lone ``\r`` and a quote, is an error.

Batch prediction reads raw files exactly as ingest does: :func:`reader_options` builds the
options from the same arguments (default missing-value markers, ``columns`` for files without a
header), :func:`blank_rows` finds the blank lines both drop, :func:`clean_text` trims text and
turns missing-value markers into nulls as ingest's conversion does, and rejects share
:data:`REJECTS_SCHEMA` (source, line, reason, raw).

JSON Lines are parsed by pyarrow's JSON reader in blocks (:mod:`shardlearn.data._jsonl`) with
the rows, text values, line numbers and rejects of a per-line read: a line that is not UTF-8,
longer than the block size, not JSON (or nested too deeply) or not an object, and a record
holding a list or an object where a column takes one value, are rejects. A file that stops
early (a truncated or corrupt ``.gz``) is one :class:`DataError` naming the last good line.

A folder given as input is a (Hive-partitioned) Parquet dataset (:mod:`shardlearn.data._parquet`):
:func:`expand_sources` lists its files, each read as a Parquet source with its ``key=value``
folders appended as typed columns.
"""

from __future__ import annotations

import glob
import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shardlearn.data._convert import DEFAULT_NA_VALUES, _clean
from shardlearn.data._jsonl import JsonLinesReader
from shardlearn.data._line_guard import LineGuard
from shardlearn.data._parquet import PartitionedFile, partitioned_files
from shardlearn.data._writer import REJECTS_SCHEMA
from shardlearn.data.dataset import resolve_filesystem
from shardlearn.exceptions import DataError, SchemaError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "DEFAULT_NA_VALUES",
    "FORMATS",
    "REJECTS_SCHEMA",
    "RawBatch",
    "ReaderOptions",
    "SourceReader",
    "blank_rows",
    "clean_text",
    "detect_format",
    "expand_sources",
    "reader_options",
]

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".data": "csv",
    ".test": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
DEFAULT_BLOCK_SIZE = 4 << 20
_LINE_END = re.compile(rb"\r\n|\r|\n")  # what ends a line for pyarrow's CSV parser


@dataclass(frozen=True)
class ReaderOptions:
    """How to read the input files (shared by every file of one ingest)."""

    format: str | None = None
    delimiter: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    na_values: tuple[str, ...] = ()
    block_size: int = DEFAULT_BLOCK_SIZE


def reader_options(
    *,
    format: str | None = None,
    delimiter: str | None = None,
    header: bool = True,
    columns: Sequence[str] | None = None,
    na_values: Sequence[str] | None = None,
    block_size: int | None = None,
) -> ReaderOptions:
    """:class:`ReaderOptions` from the arguments ingest and predict take (``na_values=None``:
    the default missing-value markers); files without a header need ``columns``."""
    if not header and not columns:
        raise SchemaError("Files without a header need column names: pass --columns a,b,...")
    return ReaderOptions(
        format=format,
        delimiter=delimiter,
        header=header,
        columns=tuple(columns) if columns else None,
        na_values=tuple(DEFAULT_NA_VALUES if na_values is None else na_values),
        **({"block_size": int(block_size)} if block_size else {}),
    )


def blank_rows(batch: pa.RecordBatch) -> np.ndarray:
    """Rows whose every field is missing (blank lines): dropped, not counted as rows."""
    if batch.num_rows == 0 or batch.num_columns == 0:
        return np.zeros(batch.num_rows, dtype=bool)
    blank = batch.column(0).is_null().to_numpy(zero_copy_only=False)
    if not blank.any():
        return blank
    for column in batch.columns[1:]:
        blank &= column.is_null().to_numpy(zero_copy_only=False)
    return blank


def clean_text(values: pa.Array, na_values: Sequence[str], trim: bool = True) -> pa.Array:
    """Text values as ingest reads them: whitespace trimmed (with ``trim``) and missing-value
    markers made null. Values that are not text are returned unchanged."""
    return _clean(values, pa.array(list(na_values), pa.string()), trim)


@dataclass
class RawBatch:
    """Raw rows of one source with their line numbers, plus the rows the parser refused."""

    source: str
    batch: pa.RecordBatch
    lines: np.ndarray
    invalid: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, text)


def expand_sources(sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """Expand globs; every pattern must match and every named file must exist."""
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    if not sources:
        raise DataError("No input given; pass at least one file or glob.")
    paths: list[str] = []
    for source in [os.fspath(s) for s in sources]:
        if "://" in source:
            filesystem, path = resolve_filesystem(source)
            kind = filesystem.get_file_info(path).type
            if kind == pafs.FileType.Directory:
                paths.extend(partitioned_files(source))
            elif kind != pafs.FileType.File:
                raise DataError(f"Input file {source!r} does not exist.")
            else:
                paths.append(source)
        elif glob.has_magic(source):
            matched = sorted(p for p in glob.glob(source, recursive=True) if not os.path.isdir(p))
            if not matched:
                raise DataError(f"The pattern {source!r} matches no file.")
            paths.extend(matched)
        elif os.path.isdir(source):
            paths.extend(partitioned_files(source))
        elif not os.path.exists(source):  # not isfile: named pipes are fine inputs
            raise DataError(f"Input file {source!r} does not exist.")
        else:
            paths.append(source)
    return paths


def _split_extension(path: str) -> tuple[str, str | None]:
    base = path.lower()
    compression = None
    for suffix, name in _COMPRESSIONS.items():
        if base.endswith(suffix):
            compression, base = name, base[: -len(suffix)]
            break
    return os.path.splitext(base)[1], compression


def detect_format(path: str, explicit: str | None) -> str:
    """The format of ``path``: ``explicit`` if given, else from its extension (a partitioned
    folder's files are Parquet)."""
    if isinstance(path, PartitionedFile):
        if explicit not in (None, "parquet"):
            raise SchemaError(
                f"{path!r} is a file of a partitioned folder, read as Parquet; --format "
                f"{explicit} does not apply to a folder: give the files by name or as a glob."
            )
        return "parquet"
    if explicit is not None:
        if explicit not in FORMATS:
            raise SchemaError(f"Unknown format {explicit!r}; use one of {', '.join(FORMATS)}.")
        return explicit
    extension, _ = _split_extension(path)
    if extension in _EXTENSIONS:
        return _EXTENSIONS[extension]
    raise SchemaError(
        f"Cannot tell the format of {path!r} from its extension; pass --format "
        f"({', '.join(FORMATS)})."
    )


class SourceReader:
    """Streams one input file as :class:`RawBatch` objects.

    Parameters
    ----------
    path : str
        Local path or pyarrow.fs URI; ``.gz``/``.zst``/``.bz2`` are decompressed on the fly.
    options : ReaderOptions
        Format, delimiter, header and missing-value markers.
    """

    def __init__(self, path: str, options: ReaderOptions) -> None:
        self.path = path
        self.options = options
        self.format = detect_format(path, options.format)
        self.filesystem, self._fs_path = resolve_filesystem(path)
        self.size = self.filesystem.get_file_info(self._fs_path).size or 0
        self._raw: pa.NativeFile | None = None
        # Columns the CSV parser may type directly (numeric ones): much faster than text plus a
        # cast; the first unparseable value switches the rest of the file to text.
        self.fast_types: dict[str, pa.DataType] = {}
        # Whether the input may hold a carriage return (a quoted \r\n needs _NoTrailingReturn).
        self.may_hold_returns = True
        # A part of the file (:mod:`shardlearn.data._ranges`): JSON Lines column names named
        # from the file's first records, the Parquet row groups to read (None: all).
        self.json_names: Sequence[str] | None = None
        self.row_groups: list[int] | None = None
        # Threads that parse a JSON Lines file's first chunk at once (a schema sample's).
        self.head_threads = 1

    @property
    def position(self) -> int:
        """Bytes of the file consumed so far (for progress)."""
        try:
            return int(self._raw.tell()) if self._raw is not None else 0
        except (OSError, ValueError):
            return 0

    def _open_stream(self) -> pa.NativeFile:
        if isinstance(self.filesystem, pafs.LocalFileSystem) and not os.path.isfile(self._fs_path):
            # A named pipe cannot seek, which pyarrow's own file streams insist on.
            self._raw = pa.PythonFile(open(self._fs_path, "rb"), mode="r")  # noqa: SIM115
        elif isinstance(self.filesystem, pafs.LocalFileSystem):
            # A file, not a stream: a stream's tell() fails, and position (progress) with it.
            self._raw = self.filesystem.open_input_file(self._fs_path)
        else:
            self._raw = self.filesystem.open_input_stream(self._fs_path, compression=None)
        _, compression = _split_extension(self.path)
        if compression is None:
            return self._raw
        return pa.CompressedInputStream(self._raw, compression)

    def batches(self) -> Iterator[RawBatch]:
        """Every row of the file, batch by batch.

        A file that cannot be read to its end (a truncated or corrupt ``.gz``, a read error)
        raises one :class:`DataError` naming the last complete line it holds.
        """
        reader = {"csv": self._csv, "tsv": self._csv, "jsonl": self._jsonl}.get(
            self.format, self._parquet
        )
        last_line = 0
        try:
            for raw in reader():
                yield raw
                last_line = max(last_line, _last_line(raw))
        except OSError as error:
            _, compression = _split_extension(self.path)
            what = (
                f"its {compression} data is corrupt or truncated" if compression else "read error"
            )
            # pyarrow reads ahead, so the error may come before the good lines are delivered.
            last_line = max(last_line, self._complete_lines())
            where = f"the last good line is {last_line}" if last_line else "no line could be read"
            raise DataError(
                f"Cannot read {self.path!r}: {what} ({error}); {where}. Nothing was written."
            ) from None

    def _complete_lines(self) -> int:
        """Lines the file holds up to a read error (0 for a pipe, which cannot be read again)."""
        if isinstance(self.filesystem, pafs.LocalFileSystem) and not os.path.isfile(self._fs_path):
            return 0
        lines = 0
        try:
            stream = self._open_stream()
            # Small reads: a failing read loses what it decompressed.
            while chunk := stream.read(1 << 12):
                lines += chunk.count(b"\n")
        except OSError:
            pass
        return lines

    # -- CSV -------------------------------------------------------------------------------
    def _csv(self) -> Iterator[RawBatch]:
        options = self.options
        self._delimiter = options.delimiter or ("\t" if self.format == "tsv" else ",")
        # TSV has no quoting (IANA text/tab-separated-values): a '"' is data. Parsing it as a
        # quote would silently join the lines up to the next '"' into one row.
        self._quote: str | bool = False if self.format == "tsv" else '"'
        self._raw_names, self.column_names, header_line = self._csv_names()
        _check_unique(self.column_names, self.path)
        typed = {
            raw: self.fast_types[name]
            for raw, name in zip(self._raw_names, self.column_names, strict=True)
            if name in self.fast_types
        }
        self._refused: dict[int, tuple[str, str]] = {}
        first_line = 2 if header_line else 1
        progress = {"done": first_line - 1}
        try:
            invalid: list[tuple[int, str]] = []
            reader = self._open_csv(
                self._open_stream(), invalid, header_line, typed, strict=True, guarded=False
            )
            yield from self._csv_batches(reader, invalid, first_line, 0, progress, strict=True)
            return
        except _FastPathFailed:
            pass
        # The slow path, from the first line not yet delivered: behind a LineGuard, numeric
        # columns still typed by the parser until a value of another type makes all text.
        for slow_typed in [typed, {}] if typed else [{}]:
            restart = progress["done"] + 1
            quote = self._quote.encode() if isinstance(self._quote, str) else b""
            guard = LineGuard(
                _SkipLines(self._open_stream(), restart - 1, self.path, quote),
                self.options.block_size,
                restart,
                self.path,
                quote,
            )
            self._refused = guard.refused
            invalid = []
            strict = bool(slow_typed)
            stream = pa.PythonFile(guard, mode="r")
            try:
                reader = self._open_csv(stream, invalid, False, slow_typed, strict=strict)
                yield from self._csv_batches(reader, invalid, 1, restart - 1, progress, strict)
                return
            except _FastPathFailed:
                continue

    def _csv_names(self) -> tuple[list[str], list[str], bool]:
        """(raw header names, column names, whether the stream starts with a header line)."""
        if self.options.columns:
            names = list(self.options.columns)
            return names, names, False
        raw = self._csv_header(self._delimiter)
        return raw, [n.strip() for n in raw], True

    def _open_csv(
        self,
        stream: pa.NativeFile,
        invalid: list[tuple[int, str]],
        header: bool,
        typed: dict[str, pa.DataType],
        strict: bool = False,
        guarded: bool = True,
    ) -> pacsv.CSVStreamingReader:
        """A streaming reader (it parses the first block now).

        With ``strict`` an error a slower path can handle raises _FastPathFailed; every other
        one is a DataError. Without ``guarded`` (the fast path: no LineGuard in front) a
        refused row is an error, not a report: pyarrow decodes a refused row's text before
        calling any handler, and a non-UTF-8 one would escape as an "Exception ignored"
        traceback.
        """

        def on_invalid(row: pacsv.InvalidRow) -> str:
            invalid.append((int(row.number or 0), row.text))
            return "skip"

        try:
            if self._quote and self.may_hold_returns:
                stream = pa.PythonFile(_NoTrailingReturn(stream), mode="r")
            return self._open_csv_reader(stream, on_invalid if guarded else None, header, typed)
        except pa.ArrowInvalid as error:
            if strict and _slow_path_can_read(error):
                raise _FastPathFailed() from None
            raise DataError(
                f"Cannot read {self.path!r} as {self.format.upper()}: {error}"
            ) from None

    def _open_csv_reader(
        self,
        stream: pa.NativeFile,
        on_invalid: Callable[[pacsv.InvalidRow], str] | None,
        header: bool,
        typed: dict[str, pa.DataType],
    ) -> pacsv.CSVStreamingReader:
        return pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                use_threads=False,
                block_size=self.options.block_size,
                column_names=None if header else self._raw_names,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=self._delimiter,
                quote_char=self._quote,
                invalid_row_handler=on_invalid,
                ignore_empty_lines=False,
                # Blocks end at row ends, not at a newline inside a quoted value (which stopped
                # the read); it costs nothing measurable on the benchmark CSV.
                newlines_in_values=True,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=_all_strings(self._raw_names) | typed,
                null_values=list(self.options.na_values),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )

    def _csv_header(self, delimiter: str) -> list[str]:
        """The raw header names, parsed from the first line alone (so that a bad line further
        down cannot make the header unreadable)."""
        stream = self._open_stream()
        first = b""
        while not _LINE_END.search(first) and len(first) <= self.options.block_size:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            first += chunk
        if not first.strip():
            raise DataError(f"Input file {self.path!r} is empty.")
        # The line ends where the parser ends it (\n, \r\n or a lone \r). An empty first line
        # would be the parser's header; read as "no line" it would shift every row's line.
        line = _LINE_END.split(first, 1)[0]
        if not line:
            raise DataError(
                f"The first line of {self.path!r} is empty; the header must be on line 1: "
                "remove the blank lines before it."
            )
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"The header line of {self.path!r} is not valid UTF-8 (byte "
                f"0x{line[error.start]:02x} at byte {error.start + 1}); save the file as UTF-8."
            ) from None
        if len(line) > self.options.block_size:
            raise DataError(
                f"The header line of {self.path!r} is longer than {self.options.block_size} "
                "bytes; is this a CSV file?"
            )
        try:
            names = pacsv.read_csv(
                pa.BufferReader(line + b"\n"),
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=self._quote),
            ).column_names
        except pa.ArrowInvalid as error:
            raise DataError(
                f"Cannot read the header line of {self.path!r} as {self.format.upper()}: {error}"
            ) from None
        return list(names)

    def _csv_batches(
        self,
        reader: pacsv.CSVStreamingReader,
        invalid: list[tuple[int, str]],
        first_line: int,
        offset: int,
        progress: dict[str, int],
        strict: bool = False,
    ) -> Iterator[RawBatch]:
        """Batches with physical line numbers (``offset`` is added: re-parsed fragments).

        pyarrow numbers rows (and refused rows) lexically, one per row whatever newlines its
        quoted values hold; the physical line of a row adds the newlines inside every row
        before it (inside the values of accepted rows, inside the text of refused ones).
        A refused row is reported with the first batch whose rows come after it (or at the
        end), so ``progress["done"]`` — the last line delivered in full — never passes a line
        whose fate is unknown. With ``strict`` an error the slow path can handle raises
        _FastPathFailed. Rows on lines the LineGuard refused (blank to the parser) are reports.
        """
        names = self.column_names
        rows_before = reported = 0
        spans = _Spans(first_line)
        valid_newlines = 0  # newlines inside the values of the accepted rows before this batch
        known = 0
        progress["done"] = offset + first_line - 1
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                batch = None
            except pa.ArrowInvalid as error:
                reader.close()
                if strict and _slow_path_can_read(error):
                    raise _FastPathFailed() from None
                raise DataError(f"Cannot parse {self.path!r}: {error}") from None
            spans.extend(invalid[known:])
            known = len(invalid)
            end_of_file = batch is None
            if batch is None:
                batch = pa.RecordBatch.from_arrays(
                    [pa.array([], pa.string()) for _ in names], names=names
                )
            inside = _newlines_per_row(batch)
            # Newlines inside the accepted rows before each row of the batch (and after it).
            before = valid_newlines + np.concatenate([[0], np.cumsum(inside)])
            g = np.arange(rows_before, rows_before + batch.num_rows, dtype=np.int64)
            skipped = np.searchsorted(spans.valid_before, g, side="right")
            lines = offset + first_line + g + skipped + before[:-1] + spans.newlines_before(skipped)
            last = int(lines[-1]) if len(lines) else None
            # Due: the refused rows before this batch's last row (all at the end of the file);
            # a batch without rows settles those before it (the parser may be a block ahead).
            last_valid = rows_before + batch.num_rows - 1 if batch.num_rows else rows_before
            due = len(spans.valid_before) - reported
            if not end_of_file:
                due = int(np.searchsorted(spans.valid_before, last_valid, side="right")) - reported
            reports: list[tuple[int, str, str]] = []
            recovered: list[RawBatch] = []
            for j in range(reported, reported + due):
                number, text = invalid[j]
                line = int(
                    offset + number + before[spans.valid_before[j] - rows_before]
                    + spans.newlines_before(j)
                )  # fmt: skip
                reports.extend(_explain_invalid(line, text, len(names)))
                progress["done"] = max(progress["done"], line + text.count("\n"))
                if "\n" in text:
                    recovered.extend(self._reparse(text.split("\n", 1)[1], line + 1))
            reported += due
            rows_before += batch.num_rows
            valid_newlines = int(before[-1])
            if last is not None:
                progress["done"] = max(progress["done"], last + int(inside[-1]))
            renamed = pa.RecordBatch.from_arrays(batch.columns, names=names)
            if self._refused and len(lines):
                renamed, lines = self._take_refused(renamed, lines, reports)
            yield from _in_line_order(RawBatch(self.path, renamed, lines, reports), recovered)
            if end_of_file:
                break
        reader.close()

    def _take_refused(
        self, batch: pa.RecordBatch, lines: np.ndarray, reports: list[tuple[int, str, str]]
    ) -> tuple[pa.RecordBatch, np.ndarray]:
        """Move the rows on refused lines from ``batch`` to ``reports``."""
        refused = np.isin(lines, np.fromiter(self._refused, dtype=np.int64))
        if not refused.any():
            return batch, lines
        for line in lines[refused].tolist():
            reason, text = self._refused.pop(line)
            reports.append((line, reason, text))
        return batch.filter(pa.array(~refused)), lines[~refused]

    def _reparse(self, text: str, first_line: int) -> list[RawBatch]:
        """Rows after an unclosed quote: parse them again on their own (they may be fine)."""
        invalid: list[tuple[int, str]] = []
        reader = self._open_csv(pa.BufferReader(text.encode()), invalid, False, {})
        return list(self._csv_batches(reader, invalid, 1, first_line - 1, {}))

    # -- JSON Lines ----------------------------------------------------------------------------
    def _jsonl(self) -> Iterator[RawBatch]:
        reader = JsonLinesReader(
            self.path,
            self.options.block_size,
            self.options.columns,
            self.fast_types,
            self.options.na_values,
            self.head_threads,
        )
        if self.json_names is not None:
            reader.names = list(self.json_names)
        for rows in reader.batches(self._open_stream()):
            self.column_names = reader.names or []
            yield RawBatch(self.path, rows.batch, rows.lines, rows.invalid)
        if reader.lines == 0:
            raise DataError(f"Input file {self.path!r} is empty.")

    # -- Parquet -------------------------------------------------------------------------------
    def _parquet(self) -> Iterator[RawBatch]:
        try:
            parquet = pq.ParquetFile(self.filesystem.open_input_file(self._fs_path))
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(f"Cannot read {self.path!r} as Parquet: {error}") from None
        keys = self.path.columns if isinstance(self.path, PartitionedFile) else None
        self.column_names = list(parquet.schema_arrow.names)
        if keys is not None:
            added = [name for name, _ in keys(0)]
            clash = [name for name in added if name in self.column_names]
            if clash:
                raise SchemaError(
                    f"{self.path!r} has a column {clash[0]!r} and lies in a {clash[0]}=... "
                    "partition folder; rename the column or the folder."
                )
            self.column_names += added
        row = 1
        with parquet:
            for batch in parquet.iter_batches(batch_size=65536, row_groups=self.row_groups):
                if keys is not None:
                    extra = keys(batch.num_rows)
                    batch = pa.RecordBatch.from_arrays(
                        [*batch.columns, *(values for _, values in extra)], names=self.column_names
                    )
                lines = np.arange(row, row + batch.num_rows, dtype=np.int64)
                row += batch.num_rows
                yield RawBatch(self.path, batch, lines, [])


class _FastPathFailed(Exception):
    """Internal: the fast CSV read hit a value of another type, a row it refused, a line
    longer than a block or bytes that are not UTF-8; the slow path reads on from the first
    line not yet delivered (never escapes this module)."""


def _last_line(raw: RawBatch) -> int:
    """The last source line ``raw`` accounts for (a row or a refused row)."""
    return max([*raw.lines[-1:].tolist(), *(line for line, _, _ in raw.invalid), 0])


def _slow_path_can_read(error: pa.ArrowInvalid) -> bool:
    """Whether the slow path (behind a LineGuard, every column text if need be) gets past
    ``error``: a value of another type, a refused row, a line longer than a block."""
    message = str(error)
    return any(sign in message for sign in ("CSV conversion error", "CSV parse error", "straddl"))


class _NoTrailingReturn(io.RawIOBase):
    """``raw``, in reads that never end on a carriage return (it is held for the next read).

    pyarrow's CSV reader makes a block of each read; when a block ends between the ``\r`` and
    the ``\n`` of a quoted value, the ``\n`` is lost (pyarrow 26). One Python call per block.
    """

    def __init__(self, raw: pa.NativeFile | io.RawIOBase) -> None:
        self.raw = raw
        self.held = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: WriteableBuffer) -> int:
        buffer = memoryview(target).cast("B")
        data, self.held = self.held, b""
        while True:
            chunk = self.raw.read(max(len(buffer) - len(data), 1))
            data += chunk
            if not chunk or not data.endswith(b"\r"):
                break
            if len(data) > 1:
                data, self.held = data[:-1], b"\r"
                break
        buffer[: len(data)] = data
        return len(data)


class _SkipLines(io.RawIOBase):
    """A stream that starts after the first ``count`` physical lines of ``raw``.

    Lines end as the parser ends them: ``\n``, ``\r\n`` or a lone ``\r`` (a file may end its
    lines with a bare carriage return). Inside a quoted value a lone ``\r`` ends no line, and
    only the parser knows where quoted values are: skipped bytes holding both a quote and a
    lone ``\r`` raise :class:`DataError` rather than risk starting on the wrong line.
    """

    _CHUNK = 1 << 20

    def __init__(self, raw: pa.NativeFile, count: int, path: str, quote: bytes = b"") -> None:
        self.raw = raw
        self.pending = b""
        held = b""  # a \r ending the last chunk: a line end of its own or the start of \r\n
        lone = quoted = False
        while count > 0:
            chunk = raw.read(self._CHUNK)
            data, held = held + chunk, b""
            if not data:
                break
            if chunk and data.endswith(b"\r"):
                data, held = data[:-1], b"\r"
            crlf = data.count(b"\r\n")
            ends = data.count(b"\n") + data.count(b"\r") - crlf
            if ends < count:
                count -= ends
                lone |= data.count(b"\r") > crlf
                quoted |= bool(quote) and quote in data
                continue
            for _, match in zip(range(count), _LINE_END.finditer(data), strict=False):
                position = match.end()
            skipped = data[:position]
            lone |= skipped.count(b"\r") > skipped.count(b"\r\n")
            quoted |= bool(quote) and quote in skipped
            self.pending, count = data[position:] + held, 0
        if lone and quoted:
            raise DataError(
                f"Cannot read {path!r} past a value of another type or a bad line: it ends "
                "lines with a lone carriage return and holds quoted values, so its lines "
                "cannot be counted without the parser; save it with \\n or \\r\\n line ends."
            )

    def readable(self) -> bool:
        return True

    def readinto(self, target: WriteableBuffer) -> int:
        buffer = memoryview(target).cast("B")
        if not self.pending:
            self.pending = self.raw.read(max(len(buffer), self._CHUNK))
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def _all_strings(names: Sequence[str]) -> dict[str, pa.DataType]:
    return {name: pa.string() for name in names}


def _check_unique(names: Sequence[str], path: str) -> None:
    seen = set()
    for name in names:
        if not name:
            raise SchemaError(f"{path!r} has an empty column name in its header.")
        if name in seen:
            raise SchemaError(f"{path!r} has the column {name!r} twice in its header.")
        seen.add(name)


class _Spans:
    """The rows the CSV parser refused so far, for the lexical-to-physical line mapping."""

    def __init__(self, first_line: int) -> None:
        self.first_line = first_line
        self.valid_before = np.zeros(0, dtype=np.int64)  # per refused row: accepted rows before
        self._newlines = np.zeros(1, dtype=np.int64)  # newlines inside refused rows before each

    def extend(self, fresh: list[tuple[int, str]]) -> None:
        if not fresh:
            return
        count = len(self.valid_before)
        numbers = np.fromiter((number for number, _ in fresh), dtype=np.int64, count=len(fresh))
        # Accepted rows before a refused row: the rows before it that are not refused.
        before = numbers - self.first_line - np.arange(count, count + len(fresh))
        inside = np.fromiter((text.count("\n") for _, text in fresh), dtype=np.int64)
        self.valid_before = np.concatenate([self.valid_before, before])
        self._newlines = np.concatenate([self._newlines, self._newlines[-1] + np.cumsum(inside)])

    def newlines_before(self, index: np.ndarray | int) -> np.ndarray | int:
        """Newlines inside the first ``index`` refused rows."""
        return self._newlines[index]


def _in_line_order(raw: RawBatch, recovered: list[RawBatch]) -> Iterator[RawBatch]:
    """``raw`` with the rows read again from the lines refused rows swallowed put where their
    lines are, so that rows keep the file's order whatever the blocks or byte ranges."""
    start, reports = 0, raw.invalid
    for piece in recovered:
        numbers = [*piece.lines[:1].tolist(), *(line for line, _, _ in piece.invalid)]
        if not numbers:
            continue
        cut = int(np.searchsorted(raw.lines, min(numbers)))
        if cut > start or reports:
            yield RawBatch(
                raw.source, raw.batch.slice(start, cut - start), raw.lines[start:cut], reports
            )
            start, reports = cut, []
        yield piece
    if raw.batch.num_rows > start or reports:
        yield RawBatch(raw.source, raw.batch.slice(start), raw.lines[start:], reports)


def _newlines_per_row(batch: pa.RecordBatch) -> np.ndarray:
    """Newlines inside each row's values (quoted values may hold them; numbers cannot).

    Read from the string buffers with numpy: one byte scan per column (pyarrow's
    ``count_substring`` costs about 15 times more), a per-row count only where one is found.
    """
    counts = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        large = pa.types.is_large_string(column.type)
        if not (large or pa.types.is_string(column.type)) or column.buffers()[2] is None:
            continue
        _, offsets, data = column.buffers()
        offsets = np.frombuffer(offsets, np.int64 if large else np.int32)
        offsets = offsets[column.offset : column.offset + len(column) + 1]
        found = np.flatnonzero(np.frombuffer(data, np.uint8)[offsets[0] : offsets[-1]] == 10)
        if len(found):
            row = np.searchsorted(offsets, found + offsets[0], side="right") - 1
            inside = np.bincount(row, minlength=len(column))[: len(column)]
            counts += np.where(column.is_valid().to_numpy(zero_copy_only=False), inside, 0)
    return counts


def _explain_invalid(line: int, text: str, expected: int) -> list[tuple[int, str, str]]:
    """The reject for a row the CSV parser refused (its first physical line only: the lines an
    unclosed quote swallowed are parsed again on their own)."""
    first = text.split("\n", 1)[0]
    if "\n" in text or first.count('"') % 2:
        return [(line, "broken quoting: a quote is not closed on this line", first)]
    return [(line, f"wrong number of fields (expected {expected})", text)]
