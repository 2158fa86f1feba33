"""Turning data into datasets: :func:`write_dataset` (in memory) and :func:`ingest` (files).

Both partition rows with the same partitioners and write through the same staged
:class:`~shardlearn.data._writer.DatasetWriter`, so datasets from either are identical in format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from shardlearn._engine_choice import chosen_engine
from shardlearn._options import check_call
from shardlearn._validation import unknown_name_message
from shardlearn.data._ingest_run import IngestRun, warn_single_class
from shardlearn.data._ranges import default_parsers
from shardlearn.data._writer import DatasetWriter
from shardlearn.data.dataset import Dataset
from shardlearn.data.options import CALL_ONLY, IngestOptions
from shardlearn.data.partition import (
    STRATIFIED_NEEDS_LABEL,
    make_partitioner,
    parse_split,
    parse_strategy,
)
from shardlearn.data.readers import expand_sources, reader_options
from shardlearn.data.schema import (
    Column,
    Kind,
    Schema,
    as_kind,
    infer_kind,
    kind_of_type,
    type_name,
)
from shardlearn.exceptions import DataError, SchemaError

__all__ = ["ingest", "write_dataset"]

BATCH_ROWS = 65536


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    try:
        return pa.table(data)
    except (TypeError, ValueError, pa.ArrowException) as error:
        raise DataError(
            f"write_dataset needs a pyarrow Table (or a dict of columns / pandas DataFrame); "
            f"got {type(data).__name__}: {error}"
        ) from None


def schema_for_table(
    table: pa.Table, label: str | None, kinds: Mapping[str, str] | None = None
) -> Schema:
    """A :class:`Schema` for an in-memory table; the label is stored as ``categorical``."""
    kinds = dict(kinds or {})
    columns = []
    for field in table.schema:
        dtype = field.type
        if pa.types.is_dictionary(dtype):
            dtype = dtype.value_type
        if pa.types.is_nested(dtype) or pa.types.is_binary(dtype):
            raise SchemaError(
                f"Column {field.name!r} has type {dtype}; datasets store flat numeric, string, "
                "boolean and timestamp columns."
            )
        kind: Kind
        if field.name == label:
            kind = "categorical"
        elif field.name in kinds:
            kind = as_kind(field.name, kinds[field.name])
        elif pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            kind = infer_kind(table.column(field.name).cast(pa.string()))
        else:
            kind = kind_of_type(dtype)
        columns.append(Column(field.name, kind, type_name(dtype)))
    return Schema(tuple(columns), label)


def _check_label_options(strategy: str, label: str | None, allow_unlabeled: bool) -> None:
    """Fail before any row is read when an option needs the label column and there is none."""
    name, _ = parse_strategy(strategy)
    if label is not None:
        return
    if name == "stratified":
        raise SchemaError(STRATIFIED_NEEDS_LABEL)
    if allow_unlabeled:
        raise SchemaError(
            "allow_unlabeled (--allow-unlabeled) keeps rows whose label is missing, so it needs "
            "a label column: pass --label COLUMN, or drop --allow-unlabeled to ingest a dataset "
            "without a label (for clustering or PCA)."
        )


def write_dataset(
    table: Any,
    out: str | os.PathLike[str],
    label: str | None,
    partitions: int = 8,
    split: Sequence[float] | str = (1.0, 0.0, 0.0),
    strategy: str = "random",
    seed: int = 0,
    overwrite: bool = False,
    *,
    kinds: Mapping[str, str] | None = None,
    allow_unlabeled: bool = False,
    allow_non_finite: bool = False,
) -> Dataset:
    """Write an in-memory table as a sharded dataset.

    Parameters
    ----------
    table : pyarrow.Table
        The rows (a dict of columns or a pandas DataFrame is converted).
    out : str or path
        Dataset directory: local path or ``pyarrow.fs`` URI.
    label : str or None
        Label column; rows with a missing label are an error here (ingest rejects them)
        unless ``allow_unlabeled``.
    partitions : int, default 8
        Shards per split.
    split : tuple of float or str, default (1.0, 0.0, 0.0)
        Fractions for train, valid, test.
    strategy : str, default "random"
        ``random``, ``stratified``, ``hash:COL`` or ``range:COL``.
    seed : int, default 0
        Seed of the partitioner; the same seed gives the same dataset.
    overwrite : bool, default False
        Replace an existing dataset at ``out``.
    kinds : mapping, optional
        Column kinds that override the inferred ones, e.g. ``{"description": "text"}``.
    allow_unlabeled : bool, default False
        Rows with a missing label go to the ``unlabeled`` split (see :func:`ingest`).
    allow_non_finite : bool, default False
        Keep infinite numbers in float columns. By default a table holding any is refused
        with a :class:`~shardlearn.exceptions.DataError` naming each such column and how many
        it holds -- as :func:`ingest` rejects them, because models cannot train on them. (A
        NaN is kept either way: it reaches the trainer, which refuses it by name.)

    Returns
    -------
    Dataset

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", "b", "a", "b"]})
    >>> ds = write_dataset(t, "data/tiny", label="y", partitions=2)
    >>> ds.num_rows()
    4
    """
    table = _as_table(table)
    _check_label_options(strategy, label, allow_unlabeled)
    if label is not None and label not in table.column_names:
        raise SchemaError(unknown_name_message("label column", label, table.column_names))
    if table.num_rows == 0:
        raise DataError("write_dataset got an empty table; there are no rows to write.")
    if allow_unlabeled and label is not None and table.column(label).null_count == table.num_rows:
        raise DataError(f"The label column {label!r} has no values; there is nothing to train on.")
    if label is not None and table.column(label).null_count and not allow_unlabeled:
        raise DataError(
            f"The label column {label!r} has {table.column(label).null_count} missing values; "
            "drop those rows first, or keep them with allow_unlabeled=True."
        )
    schema = schema_for_table(table, label, kinds)
    table = table.cast(schema.to_arrow())
    if not allow_non_finite:
        _refuse_infinities(table)
    name = strategy.partition(":")[0].strip().lower()
    key = strategy.partition(":")[2].strip()
    partitioner = make_partitioner(
        strategy,
        label=label,
        partitions=partitions,
        split=split,
        seed=seed,
        column_names=table.column_names,
        range_sample=table.column(key) if name == "range" and key in table.column_names else None,
    )
    writer = DatasetWriter(
        os.fspath(out), schema, partitioner, overwrite=overwrite, allow_unlabeled=allow_unlabeled
    )
    try:
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            writer.write(batch)
        if label is not None:
            classes = pc.unique(pc.drop_null(table.column(label))).to_pylist()
            warn_single_class(classes, label)
        return writer.commit({"sources": ["<in-memory table>"]})
    except BaseException:
        writer.abort()
        raise


def _refuse_infinities(table: pa.Table) -> None:
    counts = {
        field.name: pc.sum(pc.is_inf(table.column(field.name))).as_py() or 0
        for field in table.schema
        if pa.types.is_floating(field.type)
    }
    found = [f"{name!r} ({count})" for name, count in counts.items() if count]
    if found:
        raise DataError(
            f"write_dataset got infinite values in column{'s' * (len(found) > 1)} "
            f"{', '.join(found)}; models cannot train on them: drop or replace those rows, or "
            "pass allow_non_finite=True to keep them (as ingest's --allow-non-finite does)."
        )


def ingest(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    label: str | None,
    out: str | os.PathLike[str],
    partitions: int = 8,
    strategy: str = "random",
    split: Sequence[float] | str = (0.8, 0.1, 0.1),
    seed: int = 0,
    overwrite: bool = False,
    *,
    format: str | None = None,
    delimiter: str | None = None,
    header: bool = True,
    columns: Sequence[str] | None = None,
    na_values: Sequence[str] | None = None,
    schema: Schema | str | os.PathLike[str] | None = None,
    kinds: Mapping[str, str] | None = None,
    label_strip: str | None = None,
    max_reject_rate: float = 0.05,
    trim: bool = True,
    block_size: int | None = None,
    progress: bool = True,
    allow_unlabeled: bool = False,
    allow_non_finite: bool = False,
    parsers: int | None = None,
    engine: Any = None,
) -> Dataset:
    """Read CSV/TSV, JSON Lines or Parquet files into a sharded, validated dataset.

    Rows are streamed batch by batch (memory does not grow with the input). A row that cannot
    be parsed to the schema, has the wrong number of fields or no label, holds an infinite
    number, is not valid UTF-8, is longer than ``block_size`` bytes, or (JSON Lines) holds a
    list or an object where a column takes one value is written to ``_rejects/`` with its
    file, line and reason (sorted by line within each file; a number in its raw text reads as
    its value, ``7`` for ``7.0``); ``rows_read == rows_written + rows_rejected`` is recorded in
    the manifest, with the number of ``parsers`` that ran and of byte ``ranges`` parsed. A
    compressed file that is corrupt or truncated is a :class:`DataError` naming the last good
    line, and nothing is written.

    Parameters
    ----------
    source : str, path or list of them
        Files or globs; ``.gz``, ``.zst`` and ``.bz2`` are decompressed on the fly. A folder
        is a (Hive-partitioned) Parquet dataset: its files, with its ``key=value`` folders as
        typed columns (``__HIVE_DEFAULT_PARTITION__`` is missing); symbolic links out of it are
        refused.
    label : str or None
        Label column. ``None`` makes a dataset without a label (for clustering and PCA):
        ``Schema.label`` is None, no class counts, and the ``stratified`` strategy and
        ``allow_unlabeled`` are errors.
    out : str or path
        Dataset directory (local path or pyarrow.fs URI).
    partitions : int, default 8
        Shards per split.
    strategy : str, default "random"
        ``random``, ``stratified``, ``hash:COL`` or ``range:COL``.
    split : tuple of float or str, default (0.8, 0.1, 0.1)
        Fractions for train, valid, test.
    seed : int, default 0
        The same seed and input give the same dataset.
    overwrite : bool, default False
        Replace an existing dataset at ``out``.
    format : {"csv", "tsv", "jsonl", "parquet"}, optional
        Input format; inferred from the extension by default.
    delimiter : str, optional
        Field separator for CSV (default ``,``; tab for TSV).
    header : bool, default True
        Whether text files start with a header line; with ``False`` give ``columns``.
    columns : list of str, optional
        Column names for files without a header.
    na_values : list of str, optional
        Strings read as missing (default: "", NA, N/A, NaN, null, None, ?, - and variants).
    schema : Schema or path to a YAML schema, optional
        Column kinds and types; inferred from a sample of the first file by default.
    kinds : mapping, optional
        Override inferred kinds, e.g. ``{"zip": "categorical"}``.
    label_strip : str, optional
        Characters stripped from the end of label values, e.g. ``"."`` for Adult's test file,
        whose labels are written ``>50K.``.
    max_reject_rate : float, default 0.05
        Fail (and write nothing) when a larger fraction of the rows is rejected.
    trim : bool, default True
        Strip whitespace around text values (``"a, b"`` reads ``b``).
    block_size : int, optional
        Bytes per read block (default 4 MiB); bounds memory. A line longer than this is
        rejected.
    progress : bool, default True
        Show a progress bar on stderr (rows read and bytes of input) while stderr is a
        terminal (see :func:`shardlearn.engine.show_progress`); False never.
    allow_unlabeled : bool, default False
        Keep rows whose label is missing (null or empty) instead of rejecting them: they go to
        a split of their own, ``unlabeled`` (``ds.shards("unlabeled")``), never to
        train/valid/test and never into a class count. ``rows_written`` includes them and the
        manifest records ``rows_unlabeled``. A row with an unparseable value is still
        rejected. Used by self-training (:class:`shardlearn.models.SelfTrainingClassifier`).
    allow_non_finite : bool, default False
        Keep infinite numbers (``inf``, ``-Infinity``, ``1e999``) and NaNs in float columns.
        By default an infinite value makes its row a reject (models cannot train on it) and a
        NaN is read as a missing value.
    parsers : int, optional
        Threads that parse in parallel (default: the engine's CPUs -- a local engine's workers,
        a Ray cluster's CPUs -- or without an engine the cores this process may use). A local
        CSV/TSV or JSON Lines file (uncompressed, or a ``.zst`` of several frames) is cut into
        byte ranges of about 16 MiB at line boundaries, a Parquet file into runs of row groups;
        a small compressed file that cannot be cut (``.gz``, ``.bz2``, a one-frame ``.zst``) is
        one range, so several small files are parsed side by side. The dataset is the same
        whatever the number: a cut that falls inside a quoted value (one holding a newline, or
        a quote left open on a malformed line) moves to the next row end, so rows, line numbers
        and rejects are those of one stream. Larger compressed files, pipes and remote files
        are each read as one stream, up to ``parsers`` of them at once; so is a CSV file whose
        quote never closes over more than four ranges' bytes, or with a row longer than
        ``block_size``. ``parsers=1`` reads every file as one stream, one file at a time.
        Parsers are threads: pyarrow's parser runs without the GIL. On the ``ray`` engine the
        ranges (of uncompressed ``s3://`` files too) are Ray tasks, ``parsers`` at once.
    engine : shardlearn.engine.Engine, optional
        Default: the engine of the innermost ``with shardlearn.engine(...)`` block, else the one
        ``$SHARDLEARN_ENGINE`` names, else none. Where byte ranges are parsed: with no engine or
        a ``local`` engine, on threads of this process;
        a ``ray`` engine (``create_engine("ray")``), as Ray tasks spread over every node of the
        cluster, each reading its own bytes (a local path must be on a filesystem every node
        mounts at the same path; ``s3://`` is read from each node). The dataset is the same,
        and the manifest records the rows each node read (``nodes``). A task whose worker
        died is retried (the engine's ``max_retries``); then the ingest fails, writing nothing.

    Returns
    -------
    Dataset

    Examples
    --------
    >>> from shardlearn.data.demo import write_loans_csv
    >>> _ = write_loans_csv("loans.csv", rows=400)   # 0.5% of its lines malformed on purpose
    >>> ds = ingest("loans.csv", label="default", out="data/loans", strategy="stratified")
    >>> ds.manifest["rows_rejected"]
    1
    """
    # The model a spec's ingest stage and the CLI's options come from: the same rules and
    # messages ("The 'partitions' parameter of ingest must be an integer >= 1. Got 0.").
    arguments = {k: v for k, v in locals().items() if k not in CALL_ONLY}
    check_call(IngestOptions, arguments, "ingest", SchemaError)
    fractions = parse_split(split)
    if engine is None:  # DESIGN §10: engine= > `with engine(...)` > $SHARDLEARN_ENGINE > threads
        engine = chosen_engine()
    _check_engine(engine)
    if parsers is None:
        parsers = default_parsers() if engine is None else max(int(engine.capacity.cpus), 1)
    if not isinstance(parsers, int) or isinstance(parsers, bool) or parsers < 1:
        raise SchemaError(f"The number of parsers must be an int >= 1. Got {parsers!r}.")
    _check_label_options(strategy, label, allow_unlabeled)
    options = reader_options(
        format=format,
        delimiter=delimiter,
        header=header,
        columns=columns,
        na_values=na_values,
        block_size=block_size,
    )
    run = IngestRun(
        paths=expand_sources(source),
        options=options,
        label=label,
        out=os.fspath(out),
        partitions=partitions,
        strategy=strategy,
        fractions=fractions,
        seed=int(seed),
        overwrite=overwrite,
        schema=schema,
        kinds=dict(kinds or {}),
        label_strip=label_strip,
        max_reject_rate=float(max_reject_rate),
        trim=trim,
        progress=progress,
        allow_unlabeled=bool(allow_unlabeled),
        allow_non_finite=bool(allow_non_finite),
        parsers=parsers,
        engine=engine,
    )
    return run.execute()


def _check_engine(engine: Any) -> None:
    # data sits below engine (DESIGN 11): an engine is recognised by its name, not its class.
    if engine is not None and getattr(engine, "name", None) not in ("local", "ray"):
        raise SchemaError(
            f"ingest's engine must be a shardlearn Engine (create_engine('local') or "
            f"create_engine('ray')) or None. Got {engine!r}."
        )
