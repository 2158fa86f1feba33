"""Boolean columns: true -> 1, false -> 0, missing -> the most frequent value seen in fit.

Accepts Arrow booleans, numbers (non-zero is true) and the strings ``true/false``, ``yes/no``,
``t/f``, ``y/n``, ``1/0`` in any case. Counts of true, false and missing merge by addition.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardlearn.exceptions import SchemaError
from shardlearn.preprocess._base import ColumnTransformer
from shardlearn.preprocess._batch import column

__all__ = ["BooleanEncoder"]

_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


def _as_float(values: pa.ChunkedArray, name: str) -> np.ndarray:
    """1.0 / 0.0 / NaN per row."""
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
        is_true = pc.is_in(lowered, value_set=pa.array(_TRUE))
        is_false = pc.is_in(lowered, value_set=pa.array(_FALSE))
        bad = pc.and_(pc.is_valid(lowered), pc.invert(pc.or_(is_true, is_false)))
        if pc.any(bad).as_py():
            example = pc.filter(values, bad)[0].as_py()
            raise SchemaError(
                f"Column {name!r} is configured as boolean but holds {example!r}; expected "
                f"one of {', '.join(_TRUE + _FALSE)} (any case)."
            )
        values = pc.if_else(pc.is_null(lowered), None, is_true)
    elif not pa.types.is_boolean(kind):
        try:
            values = pc.not_equal(pc.cast(values, pa.float64()), 0.0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise SchemaError(
                f"Column {name!r} is configured as boolean but holds {kind} values."
            ) from None
    return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)


class BooleanEncoder(ColumnTransformer):
    """Booleans as 0/1 floats; missing values take the column's most frequent value.

    Parameters
    ----------
    columns : list of str
        Input columns.

    Examples
    --------
    >>> BooleanEncoder(columns=["b"]).fit({"b": [True, True, None]}).transform(
    ...     {"b": [False, None]}).ravel().tolist()
    [0.0, 1.0]
    """

    _state_meta = ("feature_names_out_",)
    _state_arrays = ("impute_values_", "true_counts_", "false_counts_")

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns

    def _matrix(self, table: pa.Table) -> np.ndarray:
        out = np.empty((table.num_rows, len(self.columns)))
        for j, name in enumerate(self.columns):
            out[:, j] = _as_float(column(table, name), name) if table.num_rows else []
        return out

    def _empty_stats(self) -> np.ndarray:
        return np.zeros((2, len(self.columns)), dtype=np.int64)  # rows: false, true

    def _accumulate(self, table: pa.Table) -> None:
        x = self._matrix(table)
        self._merge_stats(np.vstack([(x == 0).sum(axis=0), (x == 1).sum(axis=0)]))

    def _merge_stats(self, other: np.ndarray) -> None:
        self._stats = self._stats + other

    def _finalize(self) -> None:
        self.false_counts_, self.true_counts_ = self._stats[0].copy(), self._stats[1].copy()
        # scikit-learn's most_frequent breaks ties toward the smaller value: false.
        self.impute_values_ = (self.true_counts_ > self.false_counts_).astype(np.float64)
        self.feature_names_out_ = list(self.columns)

    def _transform(self, table: pa.Table) -> np.ndarray:
        x = self._matrix(table)
        return np.where(np.isnan(x), self.impute_values_, x).astype(np.float32)
