"""The input side of batch prediction: rows of raw files or dataset shards, as :class:`Chunk`\\ s.

Raw files are read by ingest's own reader (:class:`~shardlearn.data.readers.SourceReader`)
with ingest's options, so ``predict`` reads whatever ``ingest`` reads: the format from the
extension (``.data``/``.test``/``.txt`` are CSV) or given, a delimiter, files without a header
and their column names, missing-value markers, trimmed text, compressed files, globs, URIs and
Hive-partitioned Parquet folders (``key=value/part-*.parquet``, the keys read as columns; a
folder that holds a ``manifest.json`` is a dataset instead).
Lines the reader refuses travel in the chunk as ``invalid`` (line, reason, text) to become
rejects; blank lines of text files are dropped and counted, as ingest drops them. A chunk holds
at most ``batch_size`` rows, and each refused line travels with the chunk it falls in, so
rejects come out in line order.

Dataset shards are read as stored; their rows are keyed by the shard's path and the 0-based row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from shardlearn.data.readers import (
    ReaderOptions,
    SourceReader,
    blank_rows,
    clean_text,
    expand_sources,
    reader_options,
)
from shardlearn.exceptions import DataError, SchemaError

__all__ = [
    "DATASET_KEY",
    "FILE_KEY",
    "Chunk",
    "RawOptions",
    "file_chunks",
    "is_dataset",
    "raw_files",
    "raw_options",
    "refuse_file_options",
    "shard_chunks",
]

DATASET_KEY = ("shard", "row")
FILE_KEY = ("source", "line")
_TEXT_FORMATS = ("csv", "tsv")


@dataclass
class Chunk:
    """Rows of one source on their way to prediction.

    ``raw`` holds the rows as read (every column read, for the text of a reject); ``table``
    the columns prediction needs, cleaned as ingest cleans them; ``key`` the default row key
    columns; ``lines`` the 1-based line of every row; ``invalid`` the lines the reader refused
    (line, reason, text); ``delimiter`` joins a rejected row's fields back into a line (None:
    the row is written as a JSON object).
    """

    raw: pa.Table
    table: pa.Table
    key: dict[str, pa.Array]
    lines: np.ndarray
    invalid: list[tuple[int, str, str]] = field(default_factory=list)
    delimiter: str | None = None
    blank_lines: int = 0


@dataclass(frozen=True)
class RawOptions:
    """How raw files are read: ingest's reader options plus trimming."""

    reader: ReaderOptions
    trim: bool = True


def raw_options(
    *,
    format: str | None,
    delimiter: str | None,
    header: bool,
    columns: Sequence[str] | None,
    na_values: Sequence[str] | None,
    trim: bool,
) -> RawOptions:
    """:class:`RawOptions` from predict's arguments (ingest's defaults)."""
    if columns and header:
        # The reader would read the header line as a row: say what to do instead.
        raise SchemaError(
            "--columns names the columns of files without a header line; add --no-header "
            "(header=False), or drop --columns to take the names from the header line"
        )
    options = reader_options(
        format=format, delimiter=delimiter, header=header, columns=columns, na_values=na_values
    )
    return RawOptions(options, bool(trim))


def refuse_file_options(source: Any, given: dict[str, bool]) -> None:
    """A dataset is read as stored: options for reading raw files are refused, not ignored."""
    named = [name for name, set_ in given.items() if set_]
    if named:
        raise DataError(
            f"{', '.join(named)}: only for raw files, and {source} is a dataset (its shards "
            "are read as stored); drop those options"
        )


def _check_format_options(path: str, fmt: str, options: ReaderOptions) -> None:
    """Refuse text-file options on a format they do not apply to (never ignore them)."""
    given = []
    if options.delimiter is not None and fmt not in _TEXT_FORMATS:
        given.append("--delimiter")
    if fmt == "parquet" and (options.columns or not options.header):
        given.append("--no-header/--columns")
    if given:
        raise DataError(
            f"{' and '.join(given)} cannot be used with {path}, which is read as "
            f"{fmt.upper()} (a delimiter is for CSV/TSV files, --no-header/--columns for text "
            "files); drop it, or pass --format"
        )


def file_chunks(
    path: str,
    needed: Sequence[str],
    check: Callable[[Sequence[str], str], None],
    options: RawOptions,
    batch_size: int,
) -> Iterator[Chunk]:
    """Chunks of one raw file, read as ingest reads it; ``check(names, path)`` is called with
    the file's column names before any row is used."""
    reader = SourceReader(path, options.reader)
    _check_format_options(path, reader.format, options.reader)
    text = reader.format in _TEXT_FORMATS
    delimiter = options.reader.delimiter or ("\t" if reader.format == "tsv" else ",")
    checked = False
    for raw in reader.batches():
        if not checked:
            check(reader.column_names, path)
            checked = True
        batch, lines = raw.batch, raw.lines
        blank = blank_rows(batch) if text else np.zeros(batch.num_rows, dtype=bool)
        if blank.any():
            batch, lines = batch.filter(pa.array(~blank)), lines[~blank]
        table = pa.Table.from_batches([batch])
        columns = {
            name: clean_text(
                table.column(name).combine_chunks(), options.reader.na_values, options.trim
            )
            for name in needed
        }
        chunk = Chunk(
            raw=table,
            table=pa.table(columns) if columns else table.select([]),
            key={
                "source": pa.repeat(pa.scalar(path, pa.string()), len(lines)),
                "line": pa.array(lines, pa.int64()),
            },
            lines=lines,
            invalid=raw.invalid,
            delimiter=delimiter if text else None,
            blank_lines=int(blank.sum()),
        )
        yield from _split(chunk, batch_size)
    if not checked and hasattr(reader, "column_names"):  # a header and no rows
        check(reader.column_names, path)


def _split(chunk: Chunk, batch_size: int) -> Iterator[Chunk]:
    """``chunk`` in pieces of at most ``batch_size`` rows; each refused line goes with the
    piece it falls in (so rejects stay in line order), the last ones with the last piece."""
    rows = chunk.table.num_rows
    if rows <= batch_size:
        yield chunk
        return
    invalid = sorted(chunk.invalid)
    for start in range(0, rows, batch_size):
        stop = min(start + batch_size, rows)
        bound = int(chunk.lines[stop - 1])
        mine = invalid if stop == rows else [item for item in invalid if item[0] < bound]
        invalid = invalid[len(mine) :]
        yield Chunk(
            raw=chunk.raw.slice(start, stop - start),
            table=chunk.table.slice(start, stop - start),
            key={name: values.slice(start, stop - start) for name, values in chunk.key.items()},
            lines=chunk.lines[start:stop],
            invalid=mine,
            delimiter=chunk.delimiter,
            blank_lines=chunk.blank_lines if start == 0 else 0,
        )


def shard_chunks(shard: Any, needed: Sequence[str], batch_size: int) -> Iterator[Chunk]:
    """Chunks of one dataset shard, keyed by the shard's path and the 0-based row."""
    first = 0
    for batch in shard.iter_batches(batch_size=batch_size, columns=list(needed)):
        table = pa.Table.from_batches([batch])
        rows = np.arange(first, first + table.num_rows, dtype=np.int64)
        first += table.num_rows
        yield Chunk(
            raw=table,
            table=table,
            key={
                "shard": pa.repeat(pa.scalar(shard.path, pa.string()), len(rows)),
                "row": pa.array(rows),
            },
            lines=rows + 1,
        )


def raw_files(source: Any) -> list[str]:
    """Files, globs, URIs and (Hive-partitioned) Parquet folders, expanded as ingest expands
    them (:func:`~shardlearn.data.readers.expand_sources`: same symlink rules, same refusals);
    a folder that is not a Parquet dataset is one error naming both kinds of folder."""
    items = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not items:
        raise DataError("No input given; pass at least one file, glob or dataset.")
    paths: list[str] = []
    for item in [os.fspath(i) for i in items]:
        try:
            paths.extend(expand_sources(item))
        except DataError as error:
            if "://" in item or not os.path.isdir(item):
                raise
            raise DataError(
                f"{str(error).rstrip('.')}; and {item} holds no manifest.json, so it is not a "
                "shardlearn dataset either"
            ) from None
    return paths


def is_dataset(source: Any) -> bool:
    """Whether ``source`` (one path or URI) is a dataset: it holds a ``manifest.json``."""
    if not isinstance(source, str | os.PathLike):
        return False
    if "://" in os.fspath(source):  # a dataset on object storage (s3://...): ask its filesystem
        import pyarrow.fs as pafs

        from shardlearn.data.dataset import join_uri, resolve_filesystem

        filesystem, path = resolve_filesystem(source)
        info = filesystem.get_file_info(join_uri(path, "manifest.json"))
        return info.type == pafs.FileType.File
    return (Path(source) / "manifest.json").is_file()
