"""Datetime columns: year, month, day of week, hour and epoch seconds, standardised.

Each datetime column becomes up to five numbers (``parts``): calendar year, month (1-12), day
of the week (Monday = 0, like pandas), hour (0-23) and seconds since 1970-01-01 UTC. The
numbers are then imputed with their mean and, with ``scale="standard"``, standardised -- epoch
seconds (about 1.7e9) would otherwise lose all resolution in float32. The statistics are those
of :class:`~shardlearn.preprocess.numeric.NumericTransformer`, so they merge exactly. Columns
may be Arrow timestamps (any unit; time-zone aware values use UTC), dates, or ISO-8601 strings.

Epoch seconds pass through a float64 count of microseconds, exact only within 2**53 us of
1970 -- :data:`EARLIEST` to :data:`LATEST`, about 1684 to 2255 (defined in
:mod:`shardlearn.data.timestamps`, re-exported here). Ingest, batch prediction and the
prediction service refuse other dates row by row; a transform given one raises a
:class:`~shardlearn.exceptions.DataError` naming the column and the row.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardlearn._validation import Options, Type
from shardlearn.data.timestamps import EARLIEST, LATEST, in_supported_range, out_of_range
from shardlearn.exceptions import DataError, SchemaError
from shardlearn.preprocess._base import ColumnTransformer
from shardlearn.preprocess._batch import column
from shardlearn.preprocess.numeric import NumericTransformer

__all__ = ["EARLIEST", "LATEST", "PARTS", "DatetimeEncoder", "in_supported_range", "out_of_range"]

PARTS = ("year", "month", "day_of_week", "hour", "epoch_seconds")


def _as_timestamp(values: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    kind = values.type
    try:
        if pa.types.is_timestamp(kind):
            return pc.cast(values, pa.timestamp("us", tz=kind.tz)) if kind.tz else values
        if pa.types.is_date(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return pc.cast(values, pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(
            f"Column {name!r} is configured as datetime but its values do not parse as "
            f"timestamps ({exc}). Use ISO-8601 text such as '2024-05-01 13:45:00'."
        ) from None
    raise SchemaError(
        f"Column {name!r} is configured as datetime but holds {kind} values; expected a "
        "timestamp, a date or ISO-8601 text."
    )


def _check_range(ts: pa.ChunkedArray, name: str) -> None:
    outside = np.flatnonzero(out_of_range(ts))
    if outside.size:
        row = int(outside[0])
        raise DataError(
            f"Column {name!r} holds {ts[row]} at row {row}, outside the supported range "
            f"{EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}."
        )


def _part(ts: pa.ChunkedArray, part: str) -> np.ndarray:
    if part == "epoch_seconds":
        micros = pc.cast(pc.cast(ts, pa.timestamp("us")), pa.int64())
        return pc.cast(micros, pa.float64()).to_numpy(zero_copy_only=False) / 1e6
    value = getattr(pc, part)(ts)
    return pc.cast(value, pa.float64()).to_numpy(zero_copy_only=False)


class DatetimeEncoder(ColumnTransformer):
    """Calendar parts and epoch seconds of datetime columns, mean-imputed and standardised.

    Parameters
    ----------
    columns : list of str
        Input columns.
    parts : list of str, default all of ``PARTS``
        Which numbers to extract, in output order.
    scale : {"standard", None}, default "standard"
        Standardise each part (constant parts get scale 1).
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        **ColumnTransformer._parameter_constraints,
        "parts": [Type(list, "a list"), Type(type(None))],
        "scale": [Options(("standard", None))],
    }

    def __init__(
        self, columns: list[str], parts: list[str] | None = None, scale: str | None = "standard"
    ):
        self.columns = columns
        self.parts = parts
        self.scale = scale

    def _parts(self) -> list[str]:
        parts = list(PARTS) if self.parts is None else list(self.parts)
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(
                f"Unknown datetime part {unknown[0]!r} in DatetimeEncoder. Valid: "
                f"{', '.join(PARTS)}."
            )
        return parts

    def _derived_names(self) -> list[str]:
        return [f"{name}_{part}" for name in self.columns for part in self._parts()]

    def _derived(self, table: pa.Table) -> dict[str, np.ndarray]:
        derived = {}
        for name in self.columns:
            ts = _as_timestamp(column(table, name), name)
            _check_range(ts, name)
            for part in self._parts():
                derived[f"{name}_{part}"] = _part(ts, part) if table.num_rows else np.empty(0)
        return derived

    def _inner(self) -> NumericTransformer:
        return NumericTransformer(self._derived_names(), impute="mean", scale=self.scale)

    def _empty_stats(self) -> NumericTransformer:
        return self._inner().partial_fit({})

    def _accumulate(self, table: pa.Table) -> None:
        self._stats.partial_fit(self._derived(table))

    def _merge_stats(self, other: NumericTransformer) -> None:
        self._stats.merge(other)

    def _finalize(self) -> None:
        inner = self._stats.finalize()
        self.center_, self.scale_, self.impute_values_ = (
            inner.center_,
            inner.scale_,
            inner.impute_values_,
        )
        self.feature_names_out_ = inner.feature_names_out_

    _state_meta = ("feature_names_out_",)
    _state_arrays = ("center_", "scale_", "impute_values_")

    def _transform(self, table: pa.Table) -> np.ndarray:
        derived = self._derived(table)
        x = np.column_stack([derived[n] for n in self.feature_names_out_]) if derived else None
        if x is None or x.size == 0:
            return np.zeros((table.num_rows, self.n_features_out_), dtype=np.float32)
        x = np.where(np.isnan(x), self.impute_values_, x)
        return ((x - self.center_) / self.scale_).astype(np.float32)
