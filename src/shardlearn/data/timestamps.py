"""The date-times shardlearn can encode: 2**53 microseconds either side of 1970.

The date-time features (:mod:`shardlearn.preprocess.datetime`) compute epoch seconds through a
float64 count of microseconds, which is exact only within 2**53 us of 1970-01-01 --
:data:`EARLIEST` to :data:`LATEST`, about 1684 to 2255. The range lives here, in the data
layer, so that ingest, batch prediction and the prediction service refuse other date-times row
by row, with the same bounds the transform enforces.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["EARLIEST", "LATEST", "in_supported_range", "out_of_range", "range_reason"]

#: float64 holds integers exactly up to 2**53: the span, in microseconds either side of 1970,
#: whose epoch seconds the encoder computes (Arrow refuses the inexact cast beyond it).
_MAX_EPOCH_MICROS = 2**53
_EPOCH = datetime(1970, 1, 1)
#: The earliest and latest date-times (UTC, naive) shardlearn supports.
EARLIEST = _EPOCH - timedelta(microseconds=_MAX_EPOCH_MICROS)
LATEST = _EPOCH + timedelta(microseconds=_MAX_EPOCH_MICROS)
_UNITS_PER_MICRO = {"s": 1e-6, "ms": 1e-3, "us": 1, "ns": 1000}


def in_supported_range(value: datetime) -> bool:
    """Whether ``value`` can be encoded (an aware value is compared in UTC)."""
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01 east of UTC is in year 0
            return False
    return EARLIEST <= value <= LATEST


def out_of_range(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean mask of the timestamps of ``values`` outside ``EARLIEST..LATEST``.

    ``values`` is an Arrow timestamp array of any unit (aware values are stored in UTC);
    nulls are in range.
    """
    bound = int(_MAX_EPOCH_MICROS * _UNITS_PER_MICRO[values.type.unit])
    stored = pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):  # nulls arrive as NaN
        return np.abs(stored) > bound


def range_reason(column: str) -> str:
    """The reject reason for a date-time of ``column`` outside the supported range."""
    return (
        f"column {column!r}: a date-time outside {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}, "
        "the range shardlearn can encode"
    )
