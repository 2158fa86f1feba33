"""Turning data into datasets: :func:`write_dataset` (in memory) and :func:`ingest` (files).

Both partition rows with the same partitioners and write through the same staged
:class:`~shardlearn.data._writer.DatasetWriter`, so datasets from either are identical in format.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from shardlearn._validation import unknown_name_message
from shardlearn.data._writer import DatasetWriter
from shardlearn.data.dataset import Dataset
from shardlearn.data.partition import make_partitioner
from shardlearn.data.schema import Column, Schema, infer_kind, kind_of_type, type_name
from shardlearn.exceptions import DataError, SchemaError

__all__ = ["write_dataset"]

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
        if field.name == label:
            kind = "categorical"
        elif field.name in kinds:
            kind = kinds[field.name]
        elif pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            kind = infer_kind(table.column(field.name).cast(pa.string()))
        else:
            kind = kind_of_type(dtype)
        columns.append(Column(field.name, kind, type_name(dtype)))  # type: ignore[arg-type]
    return Schema(tuple(columns), label)


def warn_single_class(classes: Sequence[Any], label: str) -> None:
    """Warn (but go on) when the label has fewer than two classes."""
    if len(classes) < 2:
        warnings.warn(
            f"The label column {label!r} has a single class ({classes[0]!r}); a classifier "
            "cannot be trained on it. The dataset is written anyway.",
            UserWarning,
            stacklevel=3,
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
) -> Dataset:
    """Write an in-memory table as a sharded dataset.

    Parameters
    ----------
    table : pyarrow.Table
        The rows (a dict of columns or a pandas DataFrame is converted).
    out : str or path
        Dataset directory: local path or ``pyarrow.fs`` URI.
    label : str or None
        Label column; rows with a missing label are an error here (ingest rejects them).
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

    Returns
    -------
    Dataset

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", "b", "a", "b"]})
    >>> ds = write_dataset(t, "/tmp/sl-doc-ds", label="y", partitions=2,
    ...                    overwrite=True)  # doctest: +SKIP
    >>> ds.num_rows()                                                    # doctest: +SKIP
    4
    """
    table = _as_table(table)
    if label is not None and label not in table.column_names:
        raise SchemaError(unknown_name_message("label column", label, table.column_names))
    if table.num_rows == 0:
        raise DataError("write_dataset got an empty table; there are no rows to write.")
    if label is not None and table.column(label).null_count:
        raise DataError(
            f"The label column {label!r} has {table.column(label).null_count} missing values; "
            "drop those rows first."
        )
    schema = schema_for_table(table, label, kinds)
    table = table.cast(schema.to_arrow())
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
    writer = DatasetWriter(os.fspath(out), schema, partitioner, overwrite=overwrite)
    try:
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            writer.write(batch)
        if label is not None:
            classes = pc.unique(table.column(label)).to_pylist()
            warn_single_class(classes, label)
        return writer.commit({"sources": ["<in-memory table>"]})
    except BaseException:
        writer.abort()
        raise
