"""Turning whatever the user passes (Arrow, pandas, a dict of columns) into Arrow columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardlearn.exceptions import SchemaError

__all__ = ["SMALL_BATCH_ROWS", "as_table", "column", "numeric_matrix", "string_values"]

#: Batches up to this many rows take the small-batch paths (plain Python lookups instead of
#: Arrow kernels, one CSR built directly instead of a stack of blocks): below it the fixed cost
#: per Arrow/scipy call dominates, above it their vectorised loops win. Same output either way.
SMALL_BATCH_ROWS = 512


def as_table(batch: Any) -> pa.Table:
    """A ``pyarrow.Table`` from a Table, RecordBatch, pandas DataFrame or dict of columns."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if isinstance(batch, Mapping):
        return pa.table({str(k): _as_array(v) for k, v in batch.items()})
    if type(batch).__name__ == "DataFrame" and hasattr(batch, "columns"):
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise TypeError(
        "Expected a pyarrow Table or RecordBatch, a pandas DataFrame or a dict of columns; "
        f"got {type(batch).__name__}."
    )


def _as_array(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if isinstance(values, np.ndarray) and values.dtype.kind in "fc":
        return pa.array(values, from_pandas=True)  # NaN stays a float NaN, read as missing
    return pa.array(list(values) if not isinstance(values, np.ndarray) else values)


def column(table: pa.Table, name: str) -> pa.ChunkedArray:
    """Column ``name`` of ``table``; a missing column is a SchemaError listing the present ones."""
    # The field lookup is done in C; ``table.column_names`` builds a list of every name, which
    # dominated small-batch transforms. -1 also means "twice": the slow path reports that.
    index = table.schema.get_field_index(name)
    if index >= 0:
        return table.column(index)
    if name not in table.column_names:
        raise SchemaError(
            f"Input is missing column {name!r} that the preprocessor was configured with. "
            f"Columns present: {', '.join(table.column_names) or '(none)'}."
        )
    return table.column(name)


def numeric_matrix(table: pa.Table, names: list[str]) -> np.ndarray:
    """A float64 ``(rows, len(names))`` matrix; nulls and NaN become NaN."""
    # Column-major: each column is one contiguous write, and per-column reductions stream.
    out = np.empty((len(names), table.num_rows), dtype=np.float64).T
    for j, name in enumerate(names):
        values = column(table, name)
        if pa.types.is_boolean(values.type):
            values = pc.cast(values, pa.int8())
        try:
            if not pa.types.is_float64(values.type):  # a float64 cast would be a no-op call
                values = pc.cast(values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(
                f"Column {name!r} is configured as numeric but holds {values.type} values that "
                f"are not numbers ({exc}). Declare it with another kind (e.g. 'categorical')."
            ) from None
        out[:, j] = values.to_numpy(zero_copy_only=False) if table.num_rows else []
    return out


def string_values(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """``values`` as strings (categories compare as text whatever their stored type)."""
    if pa.types.is_dictionary(values.type):
        values = pc.cast(values, values.type.value_type)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    if pa.types.is_floating(values.type):
        # 3.0 and 3 name the same category: integral floats are written without ".0".
        as_float = values.to_numpy(zero_copy_only=False) if len(values) else np.empty(0)
        text = [
            None if np.isnan(v) else (str(int(v)) if float(v).is_integer() else repr(float(v)))
            for v in as_float
        ]
        return pa.array(text, type=pa.string())
    return pc.cast(values, pa.string())
