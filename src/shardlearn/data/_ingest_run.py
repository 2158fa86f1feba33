"""One ingest, start to finish: sample → schema → (key sample) → stream, validate, write → commit.

The sample is the first :data:`SAMPLE_ROWS` rows, read from a bounded head of the input
(:func:`shardlearn.data._ranges.head`), not a stream that reads far ahead; the byte ranges are
planned once, though a range strategy reads the input twice. The first ranges of a plain local
CSV/TSV start parsing before the sample is read, with the numeric types pyarrow infers from the
file's head (:func:`shardlearn.data._ranges.head_types`); they stand if the schema types those
columns alike (the types only decide how the parser reads, not what it delivers), else they are
parsed again. The order matters for the
guarantees: the output is checked before any work, every row read is
counted exactly once as written or rejected, the reject rate is checked before anything is
moved into place, and the manifest is the last thing written (by the DatasetWriter).

Parallel parsing: a local CSV/TSV or JSON Lines file (uncompressed, or a ``.zst`` of several
frames) is cut into byte ranges, a Parquet file into runs of row groups, parsed on ``parsers``
threads (:mod:`shardlearn.data._ranges`) in input order, a much larger range among the next few
first, a free parser starting the next range at once (the last round of a plain file is cut
into small pieces, so the parsers finish together); with more than one parser a small file (a
small ``.gz`` too) is one range, so consecutive small files are parsed side by side; cuts never
fall inside a quoted value (they move to the next row end).
A plain CSV/TSV or JSON Lines file (on Ray also one in object storage) is cut speculatively
(nothing read before its parse, each cut checked as its range is handed over); a wrong cut (a
quoted value holding a newline across it; never in JSON Lines) discards the run's staged files
and runs the write again on exact plans, once. On
the ``ray`` engine the ranges (speculative too, checked the same way) and any scans a plan
needs are Ray tasks spread over every node instead (:mod:`shardlearn.data._ingest_ray`). Other
inputs (large compressed files, pipes, remote text files) are read as one stream, on this
process (on Ray: a task per file, but for pipes). Whatever the split, the output is the same:
ranges are consumed in input order, accepted rows reach the writer re-cut into batches of
exactly :data:`BATCH_ROWS` (the partitioners and the shard buffers see the same batches), and
rejects are written sorted by line within each file in row groups of
exactly :data:`REJECT_ROWS`, settled only where every earlier line of the file is known.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from queue import Empty, Full, Queue
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardlearn._terminal import progress_console, show_progress
from shardlearn._validation import unknown_name_message
from shardlearn.data import _ranges
from shardlearn.data._convert import convert_batch, infer_schema
from shardlearn.data._ingest_ray import RayParsers, is_ray_engine
from shardlearn.data._ranges import parse_ranges, plan_ranges
from shardlearn.data._writer import REJECTS_SCHEMA, DatasetWriter
from shardlearn.data.dataset import Dataset
from shardlearn.data.partition import _SAMPLE_SALT, make_partitioner, parse_strategy, row_hashes
from shardlearn.data.readers import (
    RawBatch,
    ReaderOptions,
    SourceReader,
    blank_rows,
    detect_format,
)
from shardlearn.data.schema import Schema, load_schema_file
from shardlearn.exceptions import DataError, SchemaError

__all__ = ["IngestRun", "warn_single_class"]

SAMPLE_ROWS = 20_000  # rows of the first file(s) used to infer types and kinds
RANGE_SAMPLE_ROWS = 50_000  # key values kept (bottom-k by hash) to place range boundaries
RELEASE_EVERY = 16  # batches between returning freed memory to the OS
BATCH_ROWS = 65536  # rows per batch handed to the writer, whatever the input's batches
REJECT_ROWS = 65536  # rows per row group of the rejects file
# Batches cast in parallel (Arrow compute releases the GIL); results are used in input order.
CONVERT_THREADS = 2
STREAM_QUEUE = 2  # batches a file read as a stream may parse ahead of the writer


def warn_single_class(classes: Sequence[Any], label: str) -> None:
    """Warn (but go on) when the label has fewer than two classes."""
    if len(classes) < 2:
        warnings.warn(
            f"The label column {label!r} has a single class ({classes[0]!r}); a classifier "
            "cannot be trained on it. The dataset is written anyway.",
            UserWarning,
            stacklevel=4,
        )


def pipelined_map(
    function: Callable[[Any], Any],
    items: Iterator[Any],
    workers: int = CONVERT_THREADS,
    depth: int = 2 * CONVERT_THREADS,
) -> Iterator[Any]:
    """``map(function, items)`` with ``items`` drawn on a reader thread and ``function`` run
    on ``workers`` threads; results come back in input order.

    Parsing, conversion and the caller's own work overlap (Arrow releases the GIL); at most
    ``depth`` items are in flight, which bounds memory. A result is handed over as soon as it
    is ready, even while the reader waits for more input. Errors are re-raised here.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    with ThreadPoolExecutor(workers, thread_name_prefix="shardlearn-convert") as pool:

        def produce() -> None:
            try:
                for item in items:
                    if not put((pool.submit(function, item), None)):
                        return
                put((done, None))
            except BaseException as error:  # handed to the consumer, which re-raises it
                put((done, error))

        thread = threading.Thread(target=produce, name="shardlearn-read", daemon=True)
        thread.start()
        try:
            while True:
                future, error = queue.get()
                if error is not None:
                    raise error
                if future is done:
                    return
                yield future.result()
        finally:
            stop.set()
            # A reader blocked on a pipe cannot be interrupted; it is a daemon, so stop waiting.
            deadline = time.monotonic() + 5.0
            while thread.is_alive() and time.monotonic() < deadline:
                try:
                    entry = queue.get_nowait()
                    if isinstance(entry[0], Future):
                        entry[0].cancel()
                except Empty:
                    thread.join(timeout=0.1)


@dataclass(frozen=True)
class _Settle:
    """A marker in the batch stream: the rejects buffered so far are final (every earlier line
    of the file has been seen); ``force`` at the end of a file."""

    force: bool


_SETTLE, _SETTLE_ALL = _Settle(False), _Settle(True)


class _Rebatcher:
    """Hands accepted rows to the writer in batches of exactly :data:`BATCH_ROWS` rows, so the
    partitioners and shard buffers see the same batches however the input was parsed. A batch
    is a table of slices of the converted batches, not a copy: the writer's take copies the
    rows once, into one batch."""

    def __init__(self, writer: DatasetWriter) -> None:
        self.writer = writer
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.pending.append(batch)
        self.rows += batch.num_rows
        if self.rows >= BATCH_ROWS:
            self._emit(final=False)

    def close(self) -> None:
        self._emit(final=True)

    def _emit(self, final: bool) -> None:
        if not self.pending:
            return
        table = pa.Table.from_batches(self.pending)
        start = 0
        while table.num_rows - start >= BATCH_ROWS or (final and start < table.num_rows):
            piece = table.slice(start, BATCH_ROWS)
            self.writer.write(piece)
            start += piece.num_rows
        rest = table.slice(start)
        # Slices, not a copy: they keep at most a batch's worth of parsed batches alive.
        self.pending = rest.to_batches() if rest.num_rows else []
        self.rows = rest.num_rows


class _RejectBuffer:
    """Rejects sorted by line within each file, written in row groups of exactly
    :data:`REJECT_ROWS` rows (the last one shorter), whatever the split of the input."""

    def __init__(self, writer: DatasetWriter) -> None:
        self.writer = writer
        self.fresh: list[pa.Table] = []  # not yet known to be final
        self.fresh_rows = 0
        self.ready: pa.Table | None = None  # final and sorted, fewer than REJECT_ROWS rows

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.fresh.append(table)
            self.fresh_rows += table.num_rows

    def settle(self, marker: _Settle) -> None:
        if not self.fresh or (not marker.force and self.fresh_rows < REJECT_ROWS):
            return
        fresh = pa.concat_tables(self.fresh)
        fresh = fresh.take(pc.sort_indices(fresh, [("line", "ascending")]))
        self.fresh, self.fresh_rows = [], 0
        ready = pa.concat_tables([self.ready, fresh]) if self.ready is not None else fresh
        while ready.num_rows >= REJECT_ROWS:
            self.writer.reject(ready.slice(0, REJECT_ROWS).combine_chunks())
            ready = ready.slice(REJECT_ROWS)
        self.ready = ready.combine_chunks()

    def close(self) -> None:
        self.settle(_SETTLE_ALL)
        if self.ready is not None and self.ready.num_rows:
            self.writer.reject(self.ready)
        self.ready = None


@dataclass
class _Prepared:
    raw: RawBatch
    batch: pa.RecordBatch
    lines: np.ndarray
    converted: Any
    blank: int


@dataclass
class IngestRun:
    """State of one ingest; :meth:`execute` runs it."""

    paths: list[str]
    options: ReaderOptions
    label: str | None
    out: str
    partitions: int
    strategy: str
    fractions: tuple[float, float, float]
    seed: int
    overwrite: bool
    schema: Schema | str | os.PathLike[str] | None
    kinds: dict[str, str]
    label_strip: str | None
    max_reject_rate: float
    trim: bool
    progress: bool
    allow_unlabeled: bool = False
    allow_non_finite: bool = False
    parsers: int = 1
    range_bytes: int | None = None  # None: _ranges.RANGE_BYTES
    engine: Any = None  # a shardlearn Engine; on "ray" the byte ranges are Ray tasks
    rows_read: int = 0
    blank_lines: int = 0
    parsers_used: int = 1
    ranges_parsed: int = 0
    _progress_state: dict[str, Any] = field(default_factory=dict)
    _plans: dict[str, list[_ranges.ByteRange] | None] = field(default_factory=dict)
    _pool: ThreadPoolExecutor | None = None
    _ray: RayParsers | None = None
    _planner: ThreadPoolExecutor | None = None
    _planning: Future | None = None  # the byte ranges of every file, planned beside the schema
    # Parses of the first file's first ranges started beside the schema sample (by range index),
    # with the numeric types they guessed: kept only if the schema types those columns alike.
    _early: dict[int, tuple[_ranges.ByteRange, Future]] = field(default_factory=dict)
    _early_types: dict[str, pa.DataType] = field(default_factory=dict)
    # Plain CSV/TSV and JSON Lines files (local, or in object storage on Ray) are cut at
    # newlines without reading them first (checked as they are parsed, on threads or Ray
    # tasks); off for an input that cannot be read twice, and after a wrong cut.
    _speculate: bool = False

    # -- schema ---------------------------------------------------------------------------------
    def _sample(self) -> tuple[pa.Table, list[str]]:
        batches: list[pa.RecordBatch] = []
        names: list[str] = []
        rows = 0
        for path in self.paths:
            # The head of the file, not a stream: it would read 32 blocks ahead.
            reader, head = _ranges.head(path, self.options, SAMPLE_ROWS - rows, self.parsers)
            for raw in head:
                names = names or reader.column_names
                keep = ~blank_rows(raw.batch)
                batches.append(raw.batch.filter(pa.array(keep)))
                rows += int(keep.sum())
                if rows >= SAMPLE_ROWS:
                    break
            names = names or getattr(reader, "column_names", [])
            if rows >= SAMPLE_ROWS:
                break
        if rows == 0:
            raise DataError(
                f"No data rows in {', '.join(map(repr, self.paths[:3]))}: the input holds only "
                "a header (or blank lines)."
            )
        return pa.Table.from_batches(batches).slice(0, SAMPLE_ROWS), names

    def _resolve_schema(self) -> Schema:
        if self.schema is not None and self.options.columns:
            # Nothing to learn from a sample: the input is read exactly once (pipes work too).
            names, sample = list(self.options.columns), None
        else:
            if self.schema is None:
                self._start_early()
            sample, names = self._sample()
        if self.label is not None and self.label not in names:
            raise SchemaError(unknown_name_message("label column", self.label, names))
        if sample is not None and self.schema is None:
            _, key = parse_strategy(self.strategy)
            if key is not None and key not in names:
                raise SchemaError(unknown_name_message("partitioning column", key, names))
            # A wrong label or key is reported before the plan starts: once started, a plan
            # reads its files to the end (an error would wait for it). Kinds were checked.
            self._start_planning()
            # The parser threads are busy with the early parses: infer on this thread then.
            mapper = self._pool.map if self._pool is not None and not self._early else map
            schema = infer_schema(
                sample, self.label, self.options.na_values, self.trim, self.kinds, mapper
            )
        elif isinstance(self.schema, Schema):
            schema = self.schema.with_label(self.label)
        else:
            schema = load_schema_file(str(self.schema), names).with_label(self.label)
        _, key = parse_strategy(self.strategy)
        if key is not None and key not in schema:
            raise SchemaError(unknown_name_message("partitioning column", key, schema.names))
        return schema

    def _start_early(self) -> None:
        """Start parsing the first ranges of the first file before its schema sample is read,
        on the parser threads, with the numeric types pyarrow infers from the file's head
        (:func:`~shardlearn.data._ranges.head_types`): the sample and the inference (about
        0.2 s, on one thread for the sample) no longer hold every parser back.

        The types only decide how the parser reads (a column typed by the parser or read as
        text and cast gives the same rows and rejects; see :mod:`~shardlearn.data.readers`), so
        the parses stand when the schema types every guessed column alike
        (:meth:`_early_parses`); otherwise they are dropped and the ranges parsed again. Only
        for a plain local CSV/TSV or JSON Lines file cut speculatively (its plan reads nothing)
        with its label and key among the head's columns, on this process's threads, with several
        parsers."""
        if self._pool is None or self._ray is not None or not self._speculate or self.parsers < 2:
            return
        path = self.paths[0]
        guess = _ranges.head_types(path, self.options)
        if guess is None:
            return
        names, types = guess
        _, key = parse_strategy(self.strategy)
        if any(n is not None and n not in names for n in (self.label, key)):
            return  # the schema step reports it, before anything starts
        plan = self._planned(path)
        if not plan or not plan[0].speculative:
            return
        self._early_types = types
        self._early = {
            i: (plan[i], self._pool.submit(_ranges._parse_range, plan[i], self.options, types))
            # One parser fewer than the threads: the sample and the inference keep a core of
            # their own (the parse waits for them; on 2 cores all three slowed it down).
            for i in range(min(self.parsers - 1, len(plan)))
        }

    def _early_parses(
        self, ranges: Sequence[_ranges.ByteRange], fast_types: dict[str, pa.DataType]
    ) -> dict[int, Future]:
        """The early parses (:meth:`_start_early`) that stand for ``ranges`` (the next ones to
        parse), once: none unless ``ranges`` start with their ranges and the schema types every
        guessed column as guessed; the others are cancelled (a running one is let finish)."""
        early, self._early = self._early, {}
        usable = all(fast_types.get(name) == kind for name, kind in self._early_types.items())
        if usable and all(
            i < len(ranges) and ranges[i] == byte_range for i, (byte_range, _) in early.items()
        ):
            return {i: future for i, (_, future) in early.items()}
        for _, future in early.values():
            future.cancel()
        return {}

    # -- reading ---------------------------------------------------------------------------------
    def _raw_batches(self, schema: Schema) -> Iterator[RawBatch | _Settle]:
        fast_types = {
            c.name: c.arrow_type
            for c in schema.columns
            if pa.types.is_integer(c.arrow_type) or pa.types.is_floating(c.arrow_type)
        }
        state = self._progress_state
        state["readers"] = {}
        if self._ray is not None:
            self._ray.node_rows.clear()  # a range strategy reads the input twice
        self._start_planning()
        if self._planning is not None:
            self._planning.result()  # the plans made while the schema was inferred (or errors)
        plans = [(path, self._planned(path)) for path in self.paths]
        while plans:
            path, ranges = plans.pop(0)
            if ranges is None:
                # Consecutive files read as streams (.gz, pipes, ...): one per parser at once.
                streams = [path]
                while plans and plans[0][1] is None:
                    streams.append(plans.pop(0)[0])
                yield from self._streams(streams, schema, fast_types)
                continue
            # Consecutive files that are parsed in ranges share the pool: small files in parallel.
            while plans and plans[0][1] is not None:
                ranges = ranges + (plans.pop(0)[1] or [])
            self.parsers_used = max(self.parsers_used, min(self.parsers, len(ranges)))
            if self._ray is not None:
                parsed = self._ray.parse(ranges, self.options, fast_types)
            elif self._pool is not None:  # always: _plan gives ranges only with a pool
                early = self._early_parses(ranges, fast_types)
                parsed = parse_ranges(
                    ranges, self.options, fast_types, self._pool, self.parsers, early
                )
            else:
                raise RuntimeError("byte ranges were planned without a parser pool")
            checked: list[_ranges.ByteRange] = []
            for byte_range, names, batches in parsed:
                self._check_columns(byte_range.path, names, schema)
                checked.append(byte_range)
                if byte_range.last:
                    self._keep_checked(checked)
                    checked = []
                yield from batches
                # Every line before the next range is known: its rejects may be written.
                yield _SETTLE_ALL if byte_range.last else _SETTLE
                self.ranges_parsed += 1
                state["done_bytes"] = state.get("done_bytes", 0) + byte_range.weight

    def _keep_checked(self, ranges: list[_ranges.ByteRange]) -> None:
        """A file's speculative plan, every cut checked: the ranges as parse_ranges handed
        them over are its exact plan (a range strategy's second pass scans nothing again)."""
        plan = self._plans.get(ranges[0].path)
        if plan and plan[0].speculative and len(plan) == len(ranges):
            self._plans[ranges[0].path] = ranges

    def _start_planning(self) -> None:
        """Plan every file's ranges on the planner thread, once the schema sample is read and
        the label and key are known to be columns (before the parse, with a given schema):
        planning reads and scans every byte of a text file (on the parser pool), beside the
        schema's inference, which does not need it (the files are still read in the same order:
        sample, plan, parse). Its own thread: a plan waits for its scans, which need a free
        parser. On Ray the plan runs when the parse starts."""
        if self._planning is None and self._planner is not None and self._ray is None:
            self._planning = self._planner.submit(lambda: [self._planned(p) for p in self.paths])

    def _planned(self, path: str) -> list[_ranges.ByteRange] | None:
        """:meth:`_plan` once per file: a range strategy reads the input twice, scanned once."""
        if path not in self._plans:
            self._plans[path] = self._plan(path)
        return self._plans[path]

    def _plan(self, path: str) -> list[_ranges.ByteRange] | None:
        """The byte ranges of ``path``, or None to read it as one stream."""
        if self._pool is None:
            return None
        range_bytes = self.range_bytes or _ranges.RANGE_BYTES
        scans: Any = self._ray or self._pool  # on Ray the scans are tasks too
        whole, remote = self.parsers > 1, self._ray is not None
        return plan_ranges(
            path,
            self.options,
            range_bytes,
            scans,
            whole=whole,
            remote=remote,
            parsers=self.parsers,
            speculate=self._speculate,
        )

    def _streams(
        self, paths: list[str], schema: Schema, fast_types: dict[str, pa.DataType]
    ) -> Iterator[RawBatch | _Settle]:
        """Files read as one stream each, up to ``parsers`` at once on the pool (on Ray: in
        tasks, :meth:`~shardlearn.data._ingest_ray.RayParsers.streams`), each into a
        bounded queue (bounded memory); their batches are yielded file by file, in input
        order, so the output (and which error is raised first) does not depend on timing."""
        readers = []
        for path in paths:
            reader = SourceReader(path, self.options)
            reader.fast_types = fast_types
            readers.append(reader)
        if self._ray is not None:  # each file read by a task on a node, largest first
            self.parsers_used = max(self.parsers_used, min(self.parsers, len(paths)))
            for reader, batches in self._ray.streams(readers):
                yield from self._stream_batches(reader, batches, schema)
            return
        if self._pool is None or self.parsers == 1 or len(paths) == 1:
            for reader in readers:
                yield from self._stream_batches(reader, reader.batches(), schema)
            return
        self.parsers_used = max(self.parsers_used, min(self.parsers, len(paths)))
        stop = threading.Event()
        pending: deque[tuple[SourceReader, Queue]] = deque()
        upcoming = iter(readers)
        try:
            while True:
                while len(pending) < self.parsers and (started := next(upcoming, None)):
                    queue: Queue = Queue(maxsize=STREAM_QUEUE)
                    self._pool.submit(_drain, started, queue, stop)
                    pending.append((started, queue))
                if not pending:
                    return
                reader, queue = pending.popleft()
                yield from self._stream_batches(reader, _queued(queue), schema)
        finally:
            stop.set()

    def _stream_batches(
        self, reader: SourceReader, batches: Iterator[RawBatch], schema: Schema
    ) -> Iterator[RawBatch | _Settle]:
        """The batches of one file read as one stream (one parser)."""
        readers = self._progress_state["readers"]
        readers[id(reader)] = reader
        checked = False
        for raw in batches:
            if not checked:
                self._check_columns(reader.path, reader.column_names, schema)
                checked = True
            yield raw
            yield _SETTLE
        self.ranges_parsed += 1
        # Its position leaves the bar before its size joins the bytes done (the bar is drawn
        # on another thread; it shows the larger figure it saw, never a count twice).
        readers.pop(id(reader), None)
        self._progress_state["done_bytes"] = self._progress_state.get("done_bytes", 0) + reader.size
        yield _SETTLE_ALL

    def _check_columns(self, path: str, names: Sequence[str], schema: Schema) -> None:
        missing = [n for n in schema.names if n not in names]
        if missing:
            raise SchemaError(
                f"{path!r} lacks column(s) {', '.join(map(repr, missing))} that "
                f"the schema (from {self.paths[0]!r}) has."
            )

    def _range_sample(self, schema: Schema, column: str) -> pa.Array:
        """A uniform sample of the key (bottom-k by row hash), one extra pass over the input."""
        keep_values: pa.Array | None = None
        keep_hashes = np.zeros(0, dtype=np.uint64)
        seen = 0
        single = Schema((schema[column],), None)
        for raw in self._raw_batches(schema):
            if not isinstance(raw, RawBatch):
                continue
            values = convert_batch(
                raw.batch.select([column]), single, self.options.na_values, self.trim
            ).batch.column(0)
            hashes = row_hashes(self.seed, _SAMPLE_SALT, seen, len(values))
            seen += len(values)
            merged = pa.concat_arrays([keep_values, values]) if keep_values is not None else values
            all_hashes = np.concatenate([keep_hashes, hashes])
            order = np.argsort(all_hashes, kind="stable")[:RANGE_SAMPLE_ROWS]
            keep_values, keep_hashes = merged.take(pa.array(order)), all_hashes[order]
        return keep_values if keep_values is not None else pa.array([], schema[column].arrow_type)

    # -- the run ---------------------------------------------------------------------------------
    def execute(self) -> Dataset:
        with (
            _allocator(),
            _no_huge_pages(),
            ThreadPoolExecutor(self.parsers, thread_name_prefix="shardlearn-parse") as pool,
            ThreadPoolExecutor(1, thread_name_prefix="shardlearn-plan") as planner,
        ):
            self._pool, self._planner = pool, planner
            if is_ray_engine(self.engine):
                self._ray = RayParsers(self.parsers, int(self.engine.max_retries))
            # A wrong speculative cut makes the ingest run again: every input is read twice
            # (an object in storage can be; on Ray its ranges are cut, each read by its task).
            on_ray = self._ray is not None
            self._speculate = all(
                _regular_local_file(p) or (on_ray and "://" in p) for p in self.paths
            )
            try:
                return self._execute()
            finally:
                if self._planning is not None:
                    self._planning.cancel()
                for _, future in self._early.values():
                    future.cancel()
                self._early = {}
                self._pool = self._ray = self._planning = self._planner = None

    def _execute(self) -> Dataset:
        schema = self._resolve_schema()
        while True:
            try:
                return self._write(schema)
            except _ranges.Misspeculated:
                # A cut fell inside a quoted value (or beside a row longer than a block); the
                # writer's staged files are gone. Every file is planned exactly, reading its
                # bytes first as the plan did before speculation, and the write runs again;
                # an input that holds such values likely holds more, so once is enough.
                self._speculate = False
                self._plans = {
                    path: plan
                    for path, plan in self._plans.items()
                    if not (plan and plan[0].speculative)
                }
                self._planning = None
                self.rows_read = self.blank_lines = self.ranges_parsed = 0
                self.parsers_used = 1
                self._progress_state.clear()

    def _write(self, schema: Schema) -> Dataset:
        """Read, validate, partition and write every row, then commit (one pass; two with a
        range strategy, which samples its key first)."""
        name, key = parse_strategy(self.strategy)
        range_sample = self._range_sample(schema, key) if name == "range" and key else None
        partitioner = make_partitioner(
            self.strategy,
            label=self.label,
            partitions=self.partitions,
            split=self.fractions,
            seed=self.seed,
            column_names=schema.names,
            range_sample=range_sample,
        )
        writer = DatasetWriter(
            self.out,
            schema,
            partitioner,
            overwrite=self.overwrite,
            allow_unlabeled=self.allow_unlabeled,
        )
        rows, rejects = _Rebatcher(writer), _RejectBuffer(writer)
        try:
            with self._progress_bar() as advance:
                convert = functools.partial(self._convert, schema=schema)
                pool = pa.default_memory_pool()
                for count, prepared in enumerate(
                    pipelined_map(convert, self._raw_batches(schema)), start=1
                ):
                    if isinstance(prepared, _Settle):
                        rejects.settle(prepared)
                        continue
                    self._process(prepared, schema, rows, rejects)
                    advance()
                    if count % RELEASE_EVERY == 0:
                        # Batches are allocated on one thread and freed on another; without
                        # this the allocator keeps the freed pages and RSS creeps up.
                        pool.release_unused()
            rows.close()
            rejects.close()
            self._check_result(writer)
            if self.label is not None:
                warn_single_class(writer.classes(), self.label)
            return writer.commit(self._extra())
        except BaseException:
            writer.abort()
            raise

    def _convert(self, raw: RawBatch | _Settle, schema: Schema) -> _Prepared | _Settle:
        """Validation and casting of one batch; runs on the conversion threads."""
        if isinstance(raw, _Settle):
            return raw
        blank = blank_rows(raw.batch)
        batch, lines = raw.batch, raw.lines
        if blank.any():
            batch, lines = batch.filter(pa.array(~blank)), lines[~blank]
        converted = convert_batch(
            batch.select(schema.names),
            schema,
            self.options.na_values,
            self.trim,
            self.label_strip,
            allow_unlabeled=self.allow_unlabeled,
            allow_non_finite=self.allow_non_finite,
            # The CSV reader makes every missing-value marker null (readers._open_csv_reader).
            markers_nulled=detect_format(raw.source, self.options.format) in ("csv", "tsv"),
        )
        return _Prepared(raw, batch, lines, converted, int(blank.sum()))

    def _process(
        self, prepared: _Prepared, schema: Schema, writer: _Rebatcher, rejects: _RejectBuffer
    ) -> None:
        """Rejects and partitioning of one converted batch, in input order (calling thread)."""
        raw, batch, lines, converted = (
            prepared.raw, prepared.batch, prepared.lines, prepared.converted
        )  # fmt: skip
        self.blank_lines += prepared.blank
        self.rows_read += batch.num_rows + len(raw.invalid)
        bad = converted.bad
        if raw.invalid:
            line, reason, text = zip(*raw.invalid, strict=True)
            rejects.add(_rejects_table(raw.source, line, reason, text))
        if bad.any():
            delimiter = self.options.delimiter or ("\t" if raw.source.endswith("tsv") else ",")
            rejects.add(_bad_rows_table(raw.source, batch, schema, lines, converted, delimiter))
            writer.write(converted.batch.filter(pa.array(~bad)))
        else:
            writer.write(converted.batch)

    def _check_result(self, writer: DatasetWriter) -> None:
        if writer.rows_written == 0:
            raise DataError(
                f"No valid rows: all {self.rows_read} rows were rejected "
                f"({_top_reasons(writer)}). Nothing was written."
            )
        if writer.rows_written == writer.rows_unlabeled:
            raise DataError(
                f"No labelled rows: all {writer.rows_unlabeled} rows kept by --allow-unlabeled "
                f"have no {self.label!r} label, so there is nothing to train on. Check the "
                "label column. Nothing was written."
            )
        rate = writer.rows_rejected / max(self.rows_read, 1)
        if rate > self.max_reject_rate:
            raise DataError(
                f"{writer.rows_rejected} of {self.rows_read} rows ({rate:.2%}) were rejected, "
                f"more than the allowed {self.max_reject_rate:.2%} (--max-reject-rate); "
                f"top reasons: {_top_reasons(writer)}. Nothing was written."
            )

    def _extra(self) -> dict[str, Any]:
        nodes = {} if self._ray is None else {"nodes": self._ray.rows_by_node(self.rows_read)}
        return {
            **nodes,
            "rows_read": self.rows_read,
            "blank_lines": self.blank_lines,
            "sources": list(self.paths),
            "parsers": self.parsers_used,
            "ranges": self.ranges_parsed,
            "read_options": {
                "format": self.options.format,
                "delimiter": self.options.delimiter,
                "header": self.options.header,
                "na_values": list(self.options.na_values),
                "label_strip": self.label_strip,
                "trim": self.trim,
                "allow_non_finite": self.allow_non_finite,
            },
        }

    @contextmanager
    def _progress_bar(self) -> Iterator[Any]:
        if not show_progress(self.progress):
            yield lambda: None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        total = sum(SourceReader(p, self.options).size for p in self.paths)
        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=progress_console(),
            transient=True,
        )
        state = self._progress_state
        started = time.monotonic()
        shown = [0]  # bytes drawn so far: the bar never goes back
        with bar:
            task = bar.add_task("ingest", total=total or None)

            def advance() -> None:
                readers = list(state.get("readers", {}).values())
                position = sum(reader.position for reader in readers)
                if self._ray is not None:  # the driver's readers of streams on nodes read nothing
                    position += self._ray.streamed_bytes()
                shown[0] = max(shown[0], state.get("done_bytes", 0) + position)
                bar.update(
                    task,
                    completed=shown[0],
                    description=_progress_text(
                        self.rows_read, time.monotonic() - started, self.parsers_used
                    ),
                )

            yield advance
            # The last batch is drawn before the reader thread counts its range's bytes as
            # done (that happens after the batch is handed over): draw the final figures.
            advance()
        state["seconds"] = time.monotonic() - started


@contextmanager
def _allocator() -> Iterator[None]:
    """Arrow allocates from jemalloc while an ingest runs, where pyarrow has it and the user
    did not choose an allocator (``ARROW_DEFAULT_MEMORY_POOL``); then the previous default.

    pyarrow's default, mimalloc, hands freed pages back to the OS 10 ms after they are freed,
    and an ingest frees and allocates a batch's worth of memory every few milliseconds on
    several threads: each hand-back is an ``madvise`` whose TLB shoot-downs stall every core.
    At 500k rows of the benchmark CSV (on a shared 2-core VM) that was 1.2-2.7 s of system time
    against 0.4-0.7 s with jemalloc (which keeps freed pages for a second), for about 1.8 s of
    user time. Memory stays bounded the same way: ``release_unused`` every
    :data:`RELEASE_EVERY` batches.
    """
    previous = pa.default_memory_pool()
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL") or previous.backend_name == "jemalloc":
        yield
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc (Windows wheels)
        yield
        return
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
        pool.release_unused()  # what the ingest freed goes back to the OS now


# prctl(2) options: transparent huge pages off (or back on) for this process.
_PR_SET_THP_DISABLE, _PR_GET_THP_DISABLE = 41, 42
_huge_pages_lock = threading.Lock()
_huge_pages_off = 0  # ingests running in this process that turned huge pages off


@contextmanager
def _no_huge_pages() -> Iterator[None]:
    """Transparent huge pages off for this process while an ingest runs (Linux), then as they
    were.

    The Parquet encoders allocate from Arrow's C++ default pool (mimalloc unless
    ``ARROW_DEFAULT_MEMORY_POOL`` chose another before pyarrow was imported: ``set_memory_pool``
    does not reach them), whose arenas are advised as huge pages; each page it frees and takes
    again is a fresh 2 MiB page that the kernel zeroes. At 500k rows of the benchmark CSV that
    was 0.37-0.57 s of system time against 0.27-0.33 s with huge pages off (same user time;
    pyarrow's ``read_csv`` is not affected). The flag is the process's: it is set by the first
    of concurrent ingests and cleared by the last, and left alone where it was already set.
    """
    global _huge_pages_off
    prctl = _prctl()
    with _huge_pages_lock:
        first = _huge_pages_off == 0
        if prctl is None or (first and prctl(_PR_GET_THP_DISABLE, 0, 0, 0, 0) != 0):
            prctl = None  # unsupported, or off already (by the user): nothing to undo
        elif first and prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
            prctl = None
        else:
            _huge_pages_off += 1
    try:
        yield
    finally:
        if prctl is not None:
            with _huge_pages_lock:
                _huge_pages_off -= 1
                if _huge_pages_off == 0:
                    prctl(_PR_SET_THP_DISABLE, 0, 0, 0, 0)


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None
    return function


def _regular_local_file(path: str) -> bool:
    """Whether ``path`` is a regular file on this machine (it can be read again)."""
    return "://" not in path and os.path.isfile(path)


def _drain(reader: SourceReader, queue: Queue, stop: threading.Event) -> None:
    """Runs on a parser thread: every batch of ``reader`` into ``queue``, then a None (or the
    error that stopped it), until ``stop`` is set (the ingest ended early)."""
    try:
        for raw in reader.batches():
            if not _put(queue, raw, stop):
                return
        _put(queue, None, stop)
    except BaseException as error:  # re-raised by the consumer, in input order
        _put(queue, error, stop)


def _put(queue: Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            queue.put(item, timeout=0.1)
            return True
        except Full:
            continue
    return False


def _queued(queue: Queue) -> Iterator[RawBatch]:
    """The batches :func:`_drain` puts into ``queue``; its error is raised here."""
    while (item := queue.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def _progress_text(rows: int, seconds: float, parsers: int) -> str:
    """The bar's description: rows so far, rows per second and the parsers running."""
    rate = rows / seconds if seconds > 0 else 0.0
    plural = "s" if parsers != 1 else ""
    return f"ingest {rows:,} rows, {rate:,.0f} rows/s, {parsers} parser{plural}"


def _rejects_table(
    source: str, lines: Sequence[int], reasons: Sequence[str], texts: Sequence[str]
) -> pa.Table:
    return pa.table(
        {
            "source": pa.array([source] * len(lines), pa.string()),
            "line": pa.array(lines, pa.int64()),
            "reason": pa.array(reasons, pa.string()),
            "raw": pa.array(texts, pa.string()),
        },
        schema=REJECTS_SCHEMA,
    )


def _bad_rows_table(
    source: str,
    batch: pa.RecordBatch,
    schema: Schema,
    lines: np.ndarray,
    converted: Any,
    delimiter: str,
) -> pa.Table:
    mask = pa.array(converted.bad)
    raw = batch.select(schema.names).filter(mask)
    values = converted.batch.filter(mask)
    strings = []
    for column, name in zip(raw.columns, schema.names, strict=True):
        kind = schema[name].arrow_type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            # A number as its value reads (``7`` for ``7.0``): the parser may have typed it
            # or not, depending on where its byte range starts; the reject must not change.
            parsed = values.column(name)
            column = pc.if_else(
                parsed.is_valid(), parsed.cast(pa.string()), column.cast(pa.string())
            )
        strings.append(pc.fill_null(column.cast(pa.string()), ""))
    text = pc.binary_join_element_wise(*strings, delimiter) if strings else pa.array([""] * 0)
    return _rejects_table(
        source,
        lines[converted.bad].tolist(),
        converted.reasons[converted.bad].tolist(),
        text.to_pylist(),
    )


def _top_reasons(writer: DatasetWriter, count: int = 3) -> str:
    return "; ".join(f"{reason} ({n})" for reason, n in writer.reject_reasons.most_common(count))
