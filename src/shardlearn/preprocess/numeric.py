"""Numeric columns: imputation, an optional missing indicator, scaling and clipping.

Statistics per column are merged exactly: count, mean and sum of squared deviations (Chan et
al.'s parallel update), min, max, the number of missing values, and -- only when median,
most-frequent or robust scaling need them -- a
:class:`~shardlearn.preprocess.sketch.QuantileSketch`.

Scaling is fitted on the *imputed* column, like ``Pipeline([SimpleImputer, Scaler])`` in
scikit-learn: the imputed value contributes ``n_missing`` rows to the mean/variance, min/max
and quantiles. Constant columns get scale 1 (no division by zero); all-missing columns impute 0
(scikit-learn's ``keep_empty_features=True``) unless ``impute="constant"``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa

from shardlearn._moments import merge_moments
from shardlearn._validation import Interval, Options, Type
from shardlearn.preprocess._base import ColumnTransformer
from shardlearn.preprocess._batch import numeric_matrix
from shardlearn.preprocess.sketch import DEFAULT_K, QuantileSketch

__all__ = ["NumericTransformer"]

IMPUTE = ("mean", "median", "most_frequent", "constant")
SCALE = ("standard", "minmax", "robust", None)
_EPS = np.finfo(np.float64).eps
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class _Stats:
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    missing: np.ndarray
    sketches: list[QuantileSketch] | None = field(default=None)


class NumericTransformer(ColumnTransformer):
    """Impute, scale and optionally clip numeric columns; mergeable across shards.

    Parameters
    ----------
    columns : list of str
        Input columns.
    impute : {"mean", "median", "most_frequent", "constant"}, default "mean"
        Replacement for missing values (null or NaN). Median and most_frequent are exact
        while a column has at most ``max_exact`` distinct values, else from the KLL sketch.
    fill_value : float, default 0.0
        The value used by ``impute="constant"``.
    add_indicator : bool, default False
        Append a 0/1 ``<column>_missing`` feature for each column that had missing values
        during fit (scikit-learn's ``features="missing-only"``).
    scale : {"standard", "minmax", "robust", None}, default "standard"
        Standard: ``(x - mean) / std``; minmax: ``(x - min) / (max - min)``; robust:
        ``(x - median) / (q75 - q25)`` with quantiles from the sketch.
    clip : float or None, default None
        Clip the scaled values to ``[-clip, clip]``.
    sketch_k : int, default 200
        KLL accuracy parameter (see :func:`shardlearn.preprocess.sketch.rank_error`).

    Examples
    --------
    >>> t = NumericTransformer(columns=["x"]).fit({"x": [1.0, 2.0, None]})
    >>> t.transform({"x": [3.0]})
    array([[3.6742346]], dtype=float32)
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        **ColumnTransformer._parameter_constraints,
        "impute": [Options(IMPUTE)],
        "fill_value": [Interval("real", None, None)],
        "add_indicator": [Type(bool)],
        "scale": [Options(SCALE)],
        "clip": [Interval("real", 0, None, closed="neither"), Type(type(None))],
        "sketch_k": [Interval("int", 8, 65535)],
    }
    _state_meta = ("feature_names_out_", "indicator_columns_")
    _state_arrays = ("impute_values_", "center_", "scale_", "n_missing_")

    def __init__(
        self,
        columns: list[str],
        impute: str = "mean",
        fill_value: float = 0.0,
        add_indicator: bool = False,
        scale: str | None = "standard",
        clip: float | None = None,
        sketch_k: int = DEFAULT_K,
    ) -> None:
        self.columns = columns
        self.impute = impute
        self.fill_value = fill_value
        self.add_indicator = add_indicator
        self.scale = scale
        self.clip = clip
        self.sketch_k = sketch_k

    @property
    def _needs_sketch(self) -> bool:
        return self.impute in ("median", "most_frequent") or self.scale == "robust"

    def _empty_stats(self) -> _Stats:
        m = len(self.columns)
        return _Stats(
            count=np.zeros(m),
            mean=np.zeros(m),
            m2=np.zeros(m),
            minimum=np.full(m, np.inf),
            maximum=np.full(m, -np.inf),
            missing=np.zeros(m, dtype=np.int64),
            sketches=[QuantileSketch(self.sketch_k) for _ in range(m)]
            if self._needs_sketch
            else None,
        )

    def _accumulate(self, table: pa.Table) -> None:
        x = numeric_matrix(table, self.columns)
        present = ~np.isnan(x)
        count = present.sum(axis=0).astype(np.float64)
        zeroed = np.where(present, x, 0.0)
        mean = zeroed.sum(axis=0) / np.where(count > 0, count, 1)
        deviation = np.where(present, x - mean, 0.0)
        m2 = np.einsum("ij,ij->j", deviation, deviation)
        batch = _Stats(
            count=count,
            mean=mean,
            m2=m2,
            minimum=np.min(np.where(present, x, np.inf), axis=0),
            maximum=np.max(np.where(present, x, -np.inf), axis=0),
            missing=(~present).sum(axis=0).astype(np.int64),
        )
        if self._stats.sketches is not None:
            for j, sketch in enumerate(self._stats.sketches):
                sketch.update(x[:, j])
        self._merge_stats(batch)

    def _merge_stats(self, other: _Stats) -> None:
        s = self._stats
        s.count, s.mean, s.m2 = merge_moments(
            (s.count, s.mean, s.m2), (other.count, other.mean, other.m2)
        )
        s.minimum = np.minimum(s.minimum, other.minimum)
        s.maximum = np.maximum(s.maximum, other.maximum)
        s.missing = s.missing + other.missing
        if s.sketches is not None and other.sketches is not None:
            for mine, theirs in zip(s.sketches, other.sketches, strict=True):
                mine.merge(theirs)

    def _impute_values(self) -> np.ndarray:
        s = self._stats
        if self.impute == "constant":
            return np.full(len(self.columns), float(self.fill_value))
        if self.impute == "mean":
            values = np.where(s.count > 0, s.mean, np.nan)
        elif self.impute == "median":
            values = np.array([sk.quantiles([0.5])[0] for sk in s.sketches])
        else:
            values = np.array([sk.most_frequent() for sk in s.sketches])
        return np.where(np.isnan(values), 0.0, values)  # all-missing column: impute 0

    def _finalize(self) -> None:
        s = self._stats
        fill = self._impute_values()
        missing = s.missing.astype(np.float64)
        # The scaler sees the imputed column: n_missing extra rows equal to `fill`.
        count, mean, m2 = merge_moments(
            (s.count, s.mean, s.m2), (missing, fill, np.zeros_like(fill))
        )
        has_missing = missing > 0
        minimum = np.where(has_missing, np.minimum(s.minimum, fill), s.minimum)
        maximum = np.where(has_missing, np.maximum(s.maximum, fill), s.maximum)
        m = len(self.columns)
        if self.scale == "standard":
            var = np.where(count > 0, m2 / np.where(count > 0, count, 1), 0.0)
            # scikit-learn's test for a constant feature: variance within rounding of zero.
            constant = var <= count * _EPS * var + (count * mean * _EPS) ** 2
            center, scale = mean, np.where(constant, 1.0, np.sqrt(var))
        elif self.scale == "minmax":
            width = maximum - minimum
            empty = ~np.isfinite(width)
            center = np.where(empty, 0.0, minimum)
            scale = np.where(empty | (width == 0), 1.0, width)
        elif self.scale == "robust":
            quartiles = np.array([self._imputed_quantiles(j, fill[j]) for j in range(m)]).reshape(
                m, 3
            )
            quartiles = np.where(np.isnan(quartiles), 0.0, quartiles)
            center = quartiles[:, 1]
            iqr = quartiles[:, 2] - quartiles[:, 0]
            scale = np.where(iqr == 0, 1.0, iqr)
        else:
            center, scale = np.zeros(m), np.ones(m)
        self.impute_values_ = fill
        self.center_ = np.asarray(center, dtype=np.float64)
        self.scale_ = np.asarray(scale, dtype=np.float64)
        self.n_missing_ = s.missing.copy()
        self.indicator_columns_ = (
            [c for c, miss in zip(self.columns, has_missing, strict=True) if miss]
            if self.add_indicator
            else []
        )
        self.feature_names_out_ = list(self.columns) + [
            f"{c}_missing" for c in self.indicator_columns_
        ]

    def _imputed_quantiles(self, j: int, fill: float) -> np.ndarray:
        sketch = copy.deepcopy(self._stats.sketches[j])
        sketch.add_repeated(fill, int(self._stats.missing[j]))
        return sketch.quantiles([0.25, 0.5, 0.75])

    def _transform(self, table: pa.Table) -> np.ndarray:
        x = numeric_matrix(table, self.columns)
        missing = np.isnan(x)
        x = np.where(missing, self.impute_values_, x)
        x -= self.center_
        x /= self.scale_
        # Saturate instead of overflowing to inf: blocks are float32 (a near-zero IQR or range
        # can scale an ordinary value past 3.4e38).
        limit = self.clip if self.clip is not None else _FLOAT32_MAX
        np.clip(x, -limit, limit, out=x)
        out = x.astype(np.float32, order="C")
        if self.indicator_columns_:
            index = [self.columns.index(c) for c in self.indicator_columns_]
            out = np.hstack([out, missing[:, index].astype(np.float32)])
        return out
