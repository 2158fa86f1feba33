"""Mergeable quantiles: exact value counts while they are small, a KLL sketch beyond.

Why two representations
-----------------------
Most real columns have few distinct values (ages, counts, codes). For them we keep the exact
``(value, count)`` table, which merges by adding counts, so medians and percentiles equal
NumPy's (``np.median``, ``np.percentile`` with linear interpolation) exactly and do not depend on
how rows were split into shards. Once a column has more than ``max_exact`` distinct values the
table is dropped and the quantiles come from Apache DataSketches' KLL sketch
(``datasketches.kll_doubles_sketch``), which is updated all along.

Error bound of the sketch
-------------------------
KLL with parameter ``k`` (default 200) guarantees, with 99% confidence, that the returned
``q``-quantile ``x`` has a normalised rank within ``eps`` of ``q``: the fraction of values
``<= x`` lies in ``[q - eps, q + eps]``, with ``eps = kll_doubles_sketch.get_normalized_rank_error(
k, False)`` -- 1.33% for ``k = 200``, 0.67% for ``k = 400``; see :func:`rank_error`. The bound
holds for any merge order, but the sketch compacts with random coin flips, so two fits of more
than ``max_exact`` distinct values can differ within the bound.
"""

from __future__ import annotations

from typing import Any

import datasketches
import numpy as np

__all__ = ["DEFAULT_K", "DEFAULT_MAX_EXACT", "QuantileSketch", "rank_error"]

#: KLL accuracy parameter: 1.33% normalised rank error (99% confidence) in about 3 KB.
DEFAULT_K = 200
#: Distinct values kept exactly per column; 65,536 pairs are 1 MiB, small next to a shard.
DEFAULT_MAX_EXACT = 65_536


def rank_error(k: int = DEFAULT_K) -> float:
    """The KLL sketch's normalised rank error bound (99% confidence) for parameter ``k``."""
    return float(datasketches.kll_doubles_sketch.get_normalized_rank_error(k, False))


class QuantileSketch:
    """Quantiles of a stream of floats, mergeable across shards.

    Parameters
    ----------
    k : int, default 200
        KLL accuracy parameter (see :func:`rank_error`).
    max_exact : int, default 65536
        Distinct values kept exactly; above it quantiles come from the KLL sketch.

    Examples
    --------
    >>> a = QuantileSketch().update(np.array([1.0, 2.0]))
    >>> b = QuantileSketch().update(np.array([3.0, 4.0, np.nan]))
    >>> a.merge(b).quantiles([0.5])
    array([2.5])
    """

    def __init__(self, k: int = DEFAULT_K, max_exact: int = DEFAULT_MAX_EXACT) -> None:
        self.k = k
        self.max_exact = max_exact
        self._kll = datasketches.kll_doubles_sketch(k)
        self.values: np.ndarray | None = np.empty(0)
        self.counts: np.ndarray | None = np.empty(0, dtype=np.int64)

    @property
    def n(self) -> int:
        """Number of (non-NaN) values seen."""
        return int(self._kll.n)

    @property
    def exact(self) -> bool:
        """Whether quantiles are still computed from exact value counts."""
        return self.values is not None

    def update(self, values: np.ndarray) -> QuantileSketch:
        """Add the non-NaN entries of ``values``; returns ``self``."""
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            return self
        self._kll.update(values)
        if self.values is not None:
            uniq, cnt = np.unique(values, return_counts=True)
            self._combine_exact(uniq, cnt)
        return self

    def add_repeated(self, value: float, count: int) -> QuantileSketch:
        """Add ``value`` ``count`` times (used for imputed rows); returns ``self``."""
        if count <= 0 or np.isnan(value):
            return self
        chunk = np.full(min(count, 1 << 20), float(value))
        for start in range(0, count, chunk.size):
            self._kll.update(chunk[: min(chunk.size, count - start)])
        if self.values is not None:
            self._combine_exact(np.array([float(value)]), np.array([count], dtype=np.int64))
        return self

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """Fold ``other`` into ``self`` (associative); returns ``self``."""
        if other.n == 0:
            return self
        self._kll.merge(other._kll)
        if self.values is not None and other.values is not None and other.counts is not None:
            self._combine_exact(other.values, other.counts)
        else:
            self.values = self.counts = None
        return self

    def _combine_exact(self, values: np.ndarray, counts: np.ndarray) -> None:
        if self.values is None or self.counts is None:
            return  # past max_exact: only the KLL sketch is kept
        all_values = np.concatenate([self.values, values])
        all_counts = np.concatenate([self.counts, counts])
        uniq, inverse = np.unique(all_values, return_inverse=True)
        if uniq.size > self.max_exact:
            self.values = self.counts = None
            return
        self.values = uniq
        self.counts = np.bincount(inverse, weights=all_counts, minlength=uniq.size).astype(np.int64)

    def quantiles(self, qs: list[float]) -> np.ndarray:
        """Quantiles at ranks ``qs`` in [0, 1]; NaN when no value was seen.

        Exact mode interpolates linearly between order statistics (NumPy's default), so the
        0.5 quantile equals ``np.median``.
        """
        qs_arr = np.asarray(qs, dtype=np.float64)
        if self.n == 0:
            return np.full(qs_arr.shape, np.nan)
        if self.values is None or self.counts is None:
            return np.asarray(self._kll.get_quantiles(qs_arr.tolist()), dtype=np.float64)
        cum = np.cumsum(self.counts)
        position = qs_arr * (cum[-1] - 1)  # 0-based fractional index into the sorted data
        lower = np.floor(position).astype(np.int64)
        upper = np.minimum(lower + 1, cum[-1] - 1)
        low_value = self.values[np.searchsorted(cum, lower, side="right")]
        high_value = self.values[np.searchsorted(cum, upper, side="right")]
        return low_value + (high_value - low_value) * (position - lower)

    def most_frequent(self) -> float:
        """The most frequent value (the smallest on ties, like scikit-learn); NaN if empty.

        Beyond ``max_exact`` distinct values no counts are kept, so the median stands in.
        """
        if self.n == 0:
            return float("nan")
        if self.values is None or self.counts is None:
            return float(self.quantiles([0.5])[0])
        return float(self.values[int(np.argmax(self.counts))])

    # The KLL object is a C++ extension type: transport it as its own serialised bytes.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_kll"] = self._kll.serialize()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_kll"] = datasketches.kll_doubles_sketch.deserialize(state["_kll"])
        self.__dict__.update(state)
