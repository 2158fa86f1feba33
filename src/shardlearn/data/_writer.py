"""Writing a dataset: one Parquet writer per shard, staged, then committed with the manifest.

Layout while writing (``OUT`` is the dataset directory)::

    OUT/.staging-<token>/train/part-00000.parquet   one ParquetWriter per (split, shard)
    OUT/.staging-<token>/_rejects/rejects-00000.parquet

Each batch is put in shard order by one take, and every shard buffers a slice of it; a shard
holding :data:`COMPACT_PIECES` slices copies them into one batch of its own rows (a slice keeps
its whole batch alive; rows already copied are never copied again, so a slowly filling shard
costs one copy of its rows, not one per compaction) unless its next slice will flush it. A
shard is flushed as a row group, encoded from its slices, once its buffer holds
``flush_bytes``; and after every batch the fullest shards are flushed while all the buffers
together hold more than ``buffer_bytes`` or an eighth of the rows so far (:data:`TAIL_SHARE`),
never in row groups below ``flush_bytes`` x :data:`FLUSH_FLOOR`. So the rows are encoded while
the parse goes on, a few row groups per batch, and what is left when the input ends (encoded
after the parse, on the critical path) is at most an eighth of the rows (with few shards; at
most ``shards × flush_bytes × FLUSH_FLOOR`` with many): the shards' final flush used to be half
of all encoding at 500k rows. Small inputs get small row groups, large
ones row groups up to ``flush_bytes``. Every flush depends only on the batches, so the row
groups are the same however the input was parsed. Peak memory is about
``(COMPACT_PIECES + 1) × batch + 2 × buffer_bytes`` (buffered, and flushed but waiting for a
writer thread) whatever the input size, or ``shards × flush_bytes × FLUSH_FLOOR`` with very
many shards. The sort that puts a
batch in shard order has 16-bit keys when every shard fits (numpy sorts them by radix), and the
take skips its bounds check (the order is a permutation). Row groups are encoded on
:data:`WRITE_THREADS` background threads, each shard's in order; float columns get no min/max
statistics (over rows assigned at random they span the whole range, so no reader skips a row
group by them; they were 15% of the encoding) unless they are a hash or range key. A shard's
sha256 and size are taken from the bytes as they are written (no second read of the shards at
the end, which at 20M rows was seconds of hashing after the last row), and the last row groups
and the closing of the shards run on those threads too (one task per shard, largest first, so
both threads encode).
:meth:`DatasetWriter.commit` moves the staged directories into place and writes
``manifest.json`` last; a crash at any earlier point leaves no manifest, so nothing that looks
like a complete dataset.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shardlearn import __version__
from shardlearn._json import json_default
from shardlearn.data.dataset import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    Dataset,
    join_uri,
    resolve_filesystem,
)
from shardlearn.data.partition import (
    SPLITS,
    UNLABELED_SPLIT,
    Partitioner,
    Rows,
    parse_strategy,
)
from shardlearn.data.schema import Schema
from shardlearn.exceptions import DataError

__all__ = ["DatasetWriter", "REJECTS_SCHEMA", "prepare_output"]

STAGING_PREFIX = ".staging-"
# A shard's buffered rows are written as one row group once they reach this size (the largest
# row group), whatever the other shards hold.
DEFAULT_FLUSH_BYTES = 8 << 20
# All shards together buffer at most this much after a batch, and at most 1/TAIL_SHARE of the
# bytes written so far (beyond it the fullest shards are flushed, down to row groups of
# FLUSH_FLOOR x flush_bytes); at most this much of flushed tables waits for the writer threads.
# Whatever is buffered when the input ends is encoded after the parse, on the critical path:
# the fixed flush_bytes alone left about 60 MB (half of all encoding at 500k rows, 8 partitions
# per split) to the end, and flushed every train shard at the same batch (the thread handing
# batches to the writer waited there for the writer threads: 0.7 s of a 500k-row ingest on a
# busy machine, 0.01 s now). Small inputs get small row groups; 4 MB ones cost no more to
# encode than 8 MB ones (1 MB ones about 20% more).
DEFAULT_BUFFER_BYTES = 64 << 20
TAIL_SHARE = 8
# The smallest row group a flush to the budget writes, as a fraction of flush_bytes: with many
# shards the budget gives way to this (memory is then about shards x flush_bytes x FLUSH_FLOOR).
FLUSH_FLOOR = 1 / 8
# Threads that encode row groups: two, so the final flush of every shard at the end of an ingest
# and the closing of the shards run side by side.
WRITE_THREADS = 2
# Slices of batches a shard buffer holds before it copies them into one batch of its own rows
# (one more if that one flushes it): at most COMPACT_PIECES batches are kept alive by slices.
COMPACT_PIECES = 4
# Bytes a shard's stream gathers before they are hashed and written (one Python call each;
# one such buffer per shard).
_SINK_BUFFER = 256 << 10
REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("line", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
    ]
)
# Split directories by index: the partitioner's 0..2, then the unlabeled rows' own split.
_SPLIT_DIRS = (*SPLITS, UNLABELED_SPLIT)
_UNLABELED_INDEX = len(SPLITS)
_DATA_ENTRIES = {*_SPLIT_DIRS, "_rejects", MANIFEST_NAME}


def prepare_output(out: str, overwrite: bool) -> tuple[pafs.FileSystem, str]:
    """Check that ``out`` may be written; remove staging leftovers of crashed runs.

    An existing dataset is replaced only with ``overwrite``; the replacement happens at commit,
    so the old dataset stays intact if the new ingest fails. A folder that holds other things
    and no dataset is refused even with ``overwrite``: the commit would delete its ``train``,
    ``test`` ... folders.
    """
    filesystem, path = resolve_filesystem(out)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise DataError(f"Output {out!r} is a file; give a directory for the dataset.")
    if info.type == pafs.FileType.Directory:
        entries = filesystem.get_file_info(pafs.FileSelector(path))
        names = {e.base_name for e in entries}
        if MANIFEST_NAME in names and not overwrite:
            raise DataError(
                f"A dataset already exists at {out!r}; pass --overwrite (overwrite=True) to "
                "replace it."
            )
        foreign = {n for n in names if not n.startswith(STAGING_PREFIX)} - _DATA_ENTRIES
        if foreign and (not overwrite or MANIFEST_NAME not in names):
            raise DataError(
                f"Output directory {out!r} is not empty and is not a dataset (it holds "
                f"{', '.join(sorted(foreign)[:3])}); choose another --out"
                + ("." if overwrite else " or pass --overwrite.")
            )
        for entry in entries:
            if entry.base_name.startswith(STAGING_PREFIX):
                filesystem.delete_dir(entry.path)
    return filesystem, path


class _HashingSink:
    """A file object that hashes (sha256) and counts the bytes it passes on to ``stream``."""

    def __init__(self, stream: pa.NativeFile) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)  # releases the GIL for large buffers, as the write does
        self.size += len(data)
        self.stream.write(data)
        return len(data)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.close()


@dataclass
class _ShardBuffer:
    split: int
    index: int
    path: str
    writer: pq.ParquetWriter | None = None
    sink: _HashingSink | None = None
    stream: pa.NativeFile | None = None  # the buffered stream the ParquetWriter writes to
    last: Future | None = None  # the shard's latest write: its next one waits for it
    # The buffered rows in order: batches of the shard's own rows (compacted), then ``loose``
    # slices of taken batches.
    pending: list[pa.RecordBatch] = field(default_factory=list)
    loose: int = 0
    pending_bytes: int = 0
    rows: int = 0
    class_counts: Counter = field(default_factory=Counter)


class DatasetWriter:
    """Stages shards and rejects for one dataset, then commits them with the manifest.

    Parameters
    ----------
    out : str
        Dataset directory (local path or pyarrow.fs URI).
    schema : Schema
        Columns of the shards.
    partitioner : Partitioner
        Decides the split and shard of every row.
    overwrite : bool
        Replace an existing dataset at ``out``.
    flush_bytes : int, optional
        A shard's buffered rows are written as one row group once they reach this many bytes
        (default :data:`DEFAULT_FLUSH_BYTES`).
    allow_unlabeled : bool
        Rows whose label is null go to the ``unlabeled`` split (instead of being an error);
        they count in ``rows_written`` and ``rows_unlabeled``, never in a class.
    buffer_bytes : int, optional
        After each batch, the fullest shards are flushed while all shards together buffer more
        than this, or than 1/:data:`TAIL_SHARE` of the bytes so far (never a row group below
        ``flush_bytes`` x :data:`FLUSH_FLOOR`); also the bytes of flushed tables that may wait
        for the writer threads (default :data:`DEFAULT_BUFFER_BYTES`).
    """

    def __init__(
        self,
        out: str,
        schema: Schema,
        partitioner: Partitioner,
        overwrite: bool = False,
        flush_bytes: int | None = None,
        allow_unlabeled: bool = False,
        buffer_bytes: int | None = None,
    ) -> None:
        self.out = out
        self.schema = schema
        self.arrow_schema = schema.to_arrow()
        self.partitioner = partitioner
        self.flush_bytes = DEFAULT_FLUSH_BYTES if flush_bytes is None else flush_bytes
        self.buffer_bytes = DEFAULT_BUFFER_BYTES if buffer_bytes is None else buffer_bytes
        self._floor = self.flush_bytes * FLUSH_FLOOR
        self._buffered = 0  # pending_bytes over all shards
        self._added = 0  # bytes of every row so far
        self.filesystem, self.root = prepare_output(out, overwrite)
        # A directory this writer creates is removed again by abort: nothing is left behind.
        self._created_root = self.filesystem.get_file_info(self.root).type == pafs.FileType.NotFound
        self.staging = join_uri(self.root, STAGING_PREFIX + secrets.token_hex(6))
        self.filesystem.create_dir(self.staging, recursive=True)
        self._buffers: dict[tuple[int, int], _ShardBuffer] = {}
        self._rejects: pq.ParquetWriter | None = None
        self._io = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="shardlearn-write")
        self._pending: deque[tuple[Future, int]] = deque()  # each flush and its bytes
        self._pending_bytes = 0
        # A row's cell (split x partitions + shard) as int16 when every cell fits: numpy sorts
        # 16-bit keys by radix, 5x faster than int64 keys (the stable sort of every batch).
        cells = len(_SPLIT_DIRS) * self.partitioner.partitions
        self._cell_type: type[np.signedinteger] = (
            np.int16 if cells <= np.iinfo(np.int16).max else np.int64
        )
        # Dictionary-encode only where values repeat by nature (strings, ints, booleans): trying
        # it on float columns costs about 3x the encoding time for little gain.
        self._dictionary_columns = [
            f.name
            for f in self.arrow_schema
            if not (pa.types.is_floating(f.type) or pa.types.is_temporal(f.type))
        ]
        # Min and max of a float column over rows assigned at random span nearly its whole
        # range, so no reader skips a row group by them; they cost about 15% of the encoding.
        # Other columns, and the key of a hash or range strategy, keep their statistics.
        key = parse_strategy(partitioner.strategy)[1]
        self._statistics_columns = [
            f.name for f in self.arrow_schema if f.name == key or not pa.types.is_floating(f.type)
        ]
        # Snappy barely shrinks float64 noise but costs time; compress everything else.
        self._compression = {
            f.name: "none" if pa.types.is_floating(f.type) else "snappy" for f in self.arrow_schema
        }
        self.allow_unlabeled = bool(allow_unlabeled and schema.label is not None)
        self.rows_written = 0  # labelled + unlabeled rows
        self.rows_unlabeled = 0
        self.rows_rejected = 0
        self.reject_reasons: Counter = Counter()
        self.class_totals: Counter = Counter()
        self._class_values: dict[str, Any] = {}

    # -- rows ------------------------------------------------------------------------------
    def write(self, batch: Rows) -> None:
        """Partition ``batch`` (already validated, in schema order; a record batch, or a table
        whose chunks are slices of other batches) into the shard buffers.

        With ``allow_unlabeled``, rows without a label are partitioned apart (their own row
        numbering), so the labelled rows land exactly where they would if the unlabeled ones
        had been rejected; the unlabeled rows keep the partitioner's shard and go to the
        ``unlabeled`` split.
        """
        if batch.num_rows == 0:
            return
        label = self.schema.label
        if label is not None and batch.column(label).null_count:
            if not self.allow_unlabeled:
                raise DataError(
                    f"{batch.column(label).null_count} rows have no {label!r} label; reject "
                    "them, or keep them with allow_unlabeled=True (--allow-unlabeled)."
                )
            missing = batch.column(label).is_null()
            self._write_rows(batch.filter(pc.invert(missing)), unlabeled=False)
            self._write_rows(batch.filter(missing), unlabeled=True)
        else:
            self._write_rows(batch, unlabeled=False)
        self._flush_to_budget()

    def _flush_to_budget(self) -> None:
        """Flush the fullest shards (the first created among equals) while the buffers hold
        more than ``buffer_bytes`` or 1/:data:`TAIL_SHARE` of the rows so far: the rows are
        encoded while the parse goes on, a few row groups per batch, instead of every shard's
        at the same batch and the rest after the parse. The choice depends only on the
        batches, so the row groups are the same however the input was parsed."""
        budget = min(self.buffer_bytes, self._added // TAIL_SHARE)
        while self._buffered > budget:
            fullest = max(self._buffers.values(), key=lambda b: b.pending_bytes)
            if fullest.pending_bytes < self._floor:
                return
            self._flush(fullest)

    def _write_rows(self, batch: Rows, unlabeled: bool) -> None:
        if batch.num_rows == 0:
            return
        labelled_so_far = self.rows_written - self.rows_unlabeled
        start = self.rows_unlabeled if unlabeled else labelled_so_far
        split, shard = self.partitioner.assign(batch, start)
        if unlabeled:
            split = np.full(batch.num_rows, _UNLABELED_INDEX, dtype=np.int64)
        cells = split.astype(self._cell_type)
        cells *= self.partitioner.partitions
        cells += shard.astype(self._cell_type)
        order = np.argsort(cells, kind="stable")
        sorted_cells = cells[order]
        starts = np.flatnonzero(np.r_[True, sorted_cells[1:] != sorted_cells[:-1]])
        ends = np.r_[starts[1:], len(sorted_cells)]
        if unlabeled:
            counts: list[dict[str, int]] = [{} for _ in starts]
        else:
            counts = self._class_counts_by_cell(batch, order, sorted_cells, starts)
        # One take puts the rows in cell order (one pass over the batch instead of one take
        # per cell) and is the rows' first copy (a table's chunks are gathered by it); each
        # cell gets a slice of it, compacted by _add so memory stays bounded. ``order`` is a
        # permutation of the rows, so the take need not check its indices (a pass per column).
        in_cells = _one_batch(pc.take(batch, pa.array(order), boundscheck=False))
        sizes = _slice_bytes(in_cells, starts, ends).tolist()
        for position, (begin, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            cell = divmod(int(sorted_cells[begin]), self.partitioner.partitions)
            rows = in_cells.slice(begin, end - begin)
            self._add(cell, rows, sizes[position], counts[position])
        self.rows_written += batch.num_rows
        if unlabeled:
            self.rows_unlabeled += batch.num_rows

    def _class_counts_by_cell(
        self, batch: Rows, order: np.ndarray, sorted_cells: np.ndarray, starts: np.ndarray
    ) -> list[dict[str, int]]:
        """Per run of equal cells: {str(class): rows}, with one dictionary encode per batch."""
        if self.schema.label is None:
            return [{} for _ in starts]
        labels = batch.column(self.schema.label)
        if isinstance(labels, pa.ChunkedArray):
            labels = labels.combine_chunks()  # one dictionary for the whole batch
        encoded = pc.dictionary_encode(labels)
        values = encoded.dictionary.to_pylist()
        keys = [str(v) for v in values]
        for key, value in zip(keys, values, strict=True):
            self._class_values.setdefault(key, value)
        codes: np.ndarray = encoded.indices.to_numpy(zero_copy_only=False)[order]
        # Each row's (run, class) as one number for one bincount, built in place and 32 bits
        # wide when it fits (every batch-sized int64 temporary is a fresh, faulted-in
        # allocation: this took twice as long).
        width, runs = len(keys), len(starts)
        kind = np.int32 if runs * width <= np.iinfo(np.int32).max else np.int64
        combined: np.ndarray = np.repeat(
            np.arange(0, runs * width, width, dtype=kind), np.diff(np.r_[starts, len(sorted_cells)])
        )
        combined += codes
        table = np.bincount(combined, minlength=runs * width).reshape(runs, width)
        return [{keys[k]: int(n) for k, n in enumerate(row.tolist()) if n} for row in table]

    def _add(
        self, cell: tuple[int, int], rows: pa.RecordBatch, size: int, counts: dict[str, int]
    ) -> None:
        buffer = self._buffers.get(cell)
        if buffer is None:
            split, index = cell
            path = f"{_SPLIT_DIRS[split]}/part-{index:05d}.parquet"
            buffer = self._buffers[cell] = _ShardBuffer(split, index, path)
        buffer.pending.append(rows)
        buffer.loose += 1
        buffer.pending_bytes += size
        self._buffered += size
        self._added += size
        if self._compacts(buffer, size):
            # Slices keep their whole batch alive: a shard that fills slowly would hold every
            # batch of the input. Copied into one batch, they hold only the shard's rows; the
            # rows compacted before stay where they are (copying them again at every
            # compaction made a slow shard's rows copied tens of times before their flush).
            buffer.pending[-buffer.loose :] = [pa.concat_batches(buffer.pending[-buffer.loose :])]
            buffer.loose = 0
        buffer.rows += rows.num_rows
        buffer.class_counts.update(counts)
        self.class_totals.update(counts)
        if buffer.pending_bytes >= self.flush_bytes:
            self._flush(buffer)

    def _compacts(self, buffer: _ShardBuffer, size: int) -> bool:
        """Whether the shard's loose slices are copied into one batch now: at
        :data:`COMPACT_PIECES` of them, unless the shard flushes now or (by the size of its
        latest slice) with its next slice. A flush copies nothing (its row group is encoded from
        the slices), so a shard that fills in a few batches, as most rows' shards do, is never
        compacted: one copy of ~80% of the rows less at 8 partitions. Memory stays bounded: one
        slice more at most, then it is compacted."""
        if buffer.loose < COMPACT_PIECES or buffer.pending_bytes >= self.flush_bytes:
            return False
        return buffer.loose > COMPACT_PIECES or buffer.pending_bytes + size < self.flush_bytes

    def _flush(self, buffer: _ShardBuffer, task: Callable[..., None] | None = None) -> None:
        """Hand the shard's buffered rows to a writer thread as one row group (``task``: the
        shard's last, which closes it)."""
        if not buffer.pending:
            return
        table = pa.Table.from_batches(buffer.pending, self.arrow_schema)
        size = buffer.pending_bytes
        self._buffered -= size
        buffer.pending, buffer.loose, buffer.pending_bytes = [], 0, 0
        self._submit(buffer, task or self._write_row_group, table, size=size)

    def _submit(
        self, buffer: _ShardBuffer, task: Callable[..., None], *args: Any, size: int = 0
    ) -> None:
        """Run ``task(buffer, *args)`` on a writer thread after the shard's earlier tasks, once
        the flushes waiting for the threads hold ``buffer_bytes`` or less (``size``: this
        one's bytes)."""
        while self._pending and self._pending_bytes + size > self.buffer_bytes:
            self._pending_bytes -= self._pending[0][1]
            self._pending.popleft()[0].result()
        buffer.last = self._io.submit(self._in_order, buffer.last, task, buffer, *args)
        self._pending.append((buffer.last, size))
        self._pending_bytes += size

    @staticmethod
    def _in_order(previous: Future | None, task: Callable[..., None], *args: Any) -> None:
        # Tasks start in submission order, so ``previous`` is running or done: no deadlock.
        if previous is not None:
            previous.result()
        task(*args)

    def _write_row_group(self, buffer: _ShardBuffer, table: pa.Table) -> None:
        """Runs on a writer thread: the only place ParquetWriters are opened and written."""
        if buffer.writer is None:
            target = join_uri(self.staging, buffer.path)
            self.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
            buffer.sink = _HashingSink(self.filesystem.open_output_stream(target))
            buffer.stream = pa.output_stream(
                pa.PythonFile(buffer.sink, mode="w"), buffer_size=_SINK_BUFFER
            )
            buffer.writer = pq.ParquetWriter(
                buffer.stream,
                self.arrow_schema,
                compression=self._compression,
                use_dictionary=self._dictionary_columns,
                write_statistics=self._statistics_columns,
            )
        buffer.writer.write_table(table)

    def _write_last(self, buffer: _ShardBuffer, table: pa.Table) -> None:
        """Runs on a writer thread: a shard's last row group, then its files closed."""
        self._write_row_group(buffer, table)
        _close_files(buffer)

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft()[0].result()
        self._pending_bytes = 0

    def reject(self, rejects: pa.Table) -> None:
        """Append rejected rows (columns of :data:`REJECTS_SCHEMA`)."""
        if rejects.num_rows == 0:
            return
        if self._rejects is None:
            target = join_uri(self.staging, "_rejects/rejects-00000.parquet")
            self.filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
            self._rejects = pq.ParquetWriter(target, REJECTS_SCHEMA, filesystem=self.filesystem)
        self._rejects.write_table(rejects.cast(REJECTS_SCHEMA))
        self.rows_rejected += rejects.num_rows
        for item in pc.value_counts(rejects.column("reason")).to_pylist():
            self.reject_reasons[item["values"]] += item["counts"]

    # -- finishing ---------------------------------------------------------------------------
    def abort(self) -> None:
        """Close everything and delete the staged files (no dataset is left behind)."""
        for future, _ in self._pending:
            future.cancel()
        self._io.shutdown(wait=True)
        self._pending.clear()
        self._pending_bytes = 0
        for buffer in self._buffers.values():
            try:
                _close_files(buffer)
            except (OSError, pa.ArrowException):
                pass  # the staged files are deleted next
        if self._rejects is not None:
            self._rejects.close()
        try:
            self.filesystem.delete_dir(self.staging)
            if self._created_root and not self.filesystem.get_file_info(
                pafs.FileSelector(self.root)
            ):
                self.filesystem.delete_dir(self.root)
        except (FileNotFoundError, OSError):
            pass
        self._buffers.clear()

    def _close_shards(self) -> list[dict[str, Any]]:
        entries = []
        # Each shard's last row group and its closing are one task, largest first: as two
        # tasks, a thread took a shard's close and waited for its write, so the final flushes
        # ran one at a time.
        for buffer in sorted(self._buffers.values(), key=lambda b: -b.pending_bytes):
            if buffer.pending:
                self._flush(buffer, self._write_last)
            elif buffer.last is not None:
                self._submit(buffer, _close_files)
        self._drain()
        self._io.shutdown(wait=True)
        for cell in sorted(self._buffers):
            buffer = self._buffers[cell]
            if buffer.sink is None:
                continue
            entries.append(
                {
                    "split": _SPLIT_DIRS[buffer.split],
                    "index": buffer.index,
                    "path": buffer.path,
                    "rows": buffer.rows,
                    "bytes": buffer.sink.size,
                    "sha256": buffer.sink.digest.hexdigest(),
                    "class_counts": dict(sorted(buffer.class_counts.items())),
                }
            )
        return entries

    def classes(self) -> list[Any]:
        """The label's distinct non-null values, sorted, as native Python values."""
        values = [v for k, v in self._class_values.items() if v is not None]
        try:
            return sorted(values)
        except TypeError:
            return sorted(values, key=str)

    def commit(self, extra: dict[str, Any] | None = None) -> Dataset:
        """Close the shards, move them into place and write the manifest last."""
        shards = self._close_shards()
        if self._rejects is not None:
            self._rejects.close()
            self._rejects = None
        manifest = self._manifest(shards, extra or {})
        fs, root = self.filesystem, self.root
        old_manifest = join_uri(root, MANIFEST_NAME)
        if fs.get_file_info(old_manifest).type != pafs.FileType.NotFound:
            fs.delete_file(old_manifest)  # the old dataset stops looking complete first
        for name in (*_SPLIT_DIRS, "_rejects"):
            target = join_uri(root, name)
            if fs.get_file_info(target).type != pafs.FileType.NotFound:
                fs.delete_dir(target)
            staged = join_uri(self.staging, name)
            if fs.get_file_info(staged).type == pafs.FileType.Directory:
                _move_dir(fs, staged, target)
        fs.delete_dir(self.staging)
        temporary = join_uri(root, f".{MANIFEST_NAME}.tmp")
        with fs.open_output_stream(temporary) as stream:
            stream.write(json.dumps(manifest, indent=2, default=_json_default).encode())
        fs.move(temporary, old_manifest)
        return Dataset.open(self.out)

    def _manifest(self, shards: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
        fractions = dict(zip(SPLITS, self.partitioner.fractions, strict=True))
        rows_read = extra.pop("rows_read", self.rows_written + self.rows_rejected)
        reasons = [{"reason": r, "count": n} for r, n in self.reject_reasons.most_common()]
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created_by": f"shardlearn {__version__}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "schema": self.schema.to_dict(),
            "label": self.schema.label,
            "classes": self.classes(),
            "class_counts": {str(c): self.class_totals[str(c)] for c in self.classes()},
            "strategy": self.partitioner.strategy,
            "seed": self.partitioner.seed,
            "partitions": self.partitioner.partitions,
            "split_fractions": fractions,
            "splits": [s for s in SPLITS if any(e["split"] == s for e in shards)],
            "rows_read": int(rows_read),
            "rows_written": self.rows_written,
            "rows_rejected": self.rows_rejected,
            # Part of rows_written (rows_read == rows_written + rows_rejected still holds).
            "rows_unlabeled": self.rows_unlabeled,
            "rejects": {
                "path": "_rejects/rejects-00000.parquet" if self.rows_rejected else None,
                "reasons": reasons,
            },
            **extra,
            "shards": shards,
        }


def _one_batch(rows: Rows) -> pa.RecordBatch:
    """``rows`` as one record batch (a table's chunks combined: none after a take)."""
    if isinstance(rows, pa.RecordBatch):
        return rows
    return rows.combine_chunks().to_batches()[0]


_OFFSETS = {pa.string(): np.int32, pa.binary(): np.int32, pa.large_binary(): np.int64}


def _slice_bytes(batch: pa.RecordBatch, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``batch.slice(start, end - start).nbytes`` for every (start, end), from each column's
    offsets and widths at once (``nbytes`` walks every column of a slice: 60 us a slice of 33
    columns, a shard's slice per batch)."""
    if not all(f.type in _OFFSETS or _fixed_width(f.type) for f in batch.schema):
        return np.array([batch.slice(s, e - s).nbytes for s, e in zip(starts, ends, strict=True)])
    rows = ends - starts
    sizes = np.zeros(len(rows), dtype=np.int64)
    for column in batch.columns:
        buffers = column.buffers()
        first, last = starts + column.offset, ends + column.offset
        bitmap = (last + 7) // 8 - first // 8  # the bytes a bit range touches
        if buffers[0] is not None:
            sizes += bitmap
        kind = column.type
        if kind in _OFFSETS:
            offsets = np.frombuffer(buffers[1], dtype=_OFFSETS[kind])
            sizes += rows * offsets.itemsize + (offsets[last] - offsets[first])
        elif kind.bit_width == 1:
            sizes += bitmap
        else:
            sizes += rows * (kind.bit_width // 8)
    return sizes


def _fixed_width(kind: pa.DataType) -> bool:
    return pa.types.is_primitive(kind) and not pa.types.is_null(kind)


def _close_files(buffer: _ShardBuffer) -> None:
    """Close a shard's ParquetWriter (its footer), its buffered stream (the last bytes go
    through the hash) and its file, each once."""
    if buffer.writer is not None:
        writer, buffer.writer = buffer.writer, None
        writer.close()
    if buffer.stream is not None:
        stream, buffer.stream = buffer.stream, None
        stream.close()
    if buffer.sink is not None:
        buffer.sink.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return json_default(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"Cannot store {type(value).__name__} in the manifest.")


def _move_dir(fs: pafs.FileSystem, source: str, target: str) -> None:
    """Move a directory; object stores (S3, GCS) cannot rename one, so move file by file."""
    if isinstance(fs, pafs.LocalFileSystem):
        fs.move(source, target)
        return
    for info in fs.get_file_info(pafs.FileSelector(source, recursive=True)):
        if info.type == pafs.FileType.File:
            destination = target + info.path[len(source.rstrip("/")) :]
            fs.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            fs.move(info.path, destination)
