"""The mergeable transformer contract shared by every column transformer.

Life cycle: ``partial_fit(batch)`` on each shard (any number of times) accumulates sufficient
statistics; ``merge(other)`` folds another partial fit in (associative, so shard fits can be
tree-merged in any grouping); ``finalize()`` turns the statistics into fitted attributes (ending
in ``_``); ``transform(batch)`` maps a batch to a float32 block. The fitted state is plain
(numbers, strings, lists, NumPy arrays): :meth:`get_state` returns it as a JSON-able dict plus
named arrays, and :meth:`from_state` rebuilds the transformer without pickle.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from shardlearn._validation import Type
from shardlearn.base import BaseEstimator
from shardlearn.exceptions import NotFittedError
from shardlearn.preprocess._batch import as_table

__all__ = ["ColumnTransformer"]


class ColumnTransformer(BaseEstimator):
    """Base class: a transformer of the input columns ``columns`` (all of one kind)."""

    _parameter_constraints: ClassVar[dict[str, list]] = {"columns": [Type(list, "a list")]}
    #: Fitted attributes stored as JSON values / as NumPy arrays by :meth:`get_state`.
    _state_meta: ClassVar[tuple[str, ...]] = ()
    _state_arrays: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`transform` returns a CSR matrix.
    sparse_output: ClassVar[bool] = False

    columns: list[str]

    # -- life cycle ----------------------------------------------------------------------
    def partial_fit(self, batch: Any) -> Self:
        """Accumulate statistics of ``batch`` (Arrow table/batch, DataFrame or dict)."""
        if not hasattr(self, "_stats"):
            self._validate_params()
            self._stats = self._empty_stats()
        table = as_table(batch)
        if table.num_rows:
            self._accumulate(table)
        return self

    def merge(self, other: Self) -> Self:
        """Fold the partial fit ``other`` into ``self``; returns ``self``."""
        if type(other) is not type(self) or other.get_params() != self.get_params():
            raise ValueError(
                f"Cannot merge {other!r} into {self!r}: only partial fits of the same "
                "transformer with the same parameters merge."
            )
        if not hasattr(other, "_stats"):
            return self
        if not hasattr(self, "_stats"):
            self._validate_params()
            self._stats = self._empty_stats()
        self._merge_stats(other._stats)
        return self

    def finalize(self) -> Self:
        """Turn the accumulated statistics into fitted attributes; returns ``self``."""
        if not hasattr(self, "_stats"):
            self.partial_fit(pa.table({}))
        self._finalize()
        self.fitted_ = True
        return self

    def fit(self, batch: Any) -> Self:
        """One-pass fit on ``batch``: ``partial_fit`` then ``finalize``."""
        if hasattr(self, "_stats"):
            del self._stats
        return self.partial_fit(batch).finalize()

    def transform(self, batch: Any) -> np.ndarray | sp.csr_matrix:
        """The float32 feature block of ``batch`` (CSR when ``sparse_output``)."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet. Call 'finalize' (after "
                "'partial_fit') or 'fit' before 'transform'."
            )
        return self._transform(as_table(batch))

    @property
    def n_features_out_(self) -> int:
        """Number of output columns."""
        return len(self.feature_names_out_)

    # -- plain state ---------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted transformer as (JSON-able metadata, named arrays)."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet.")
        meta = {
            "type": type(self).__name__,
            "params": self.get_params(deep=False),
            "fitted": {name: getattr(self, name) for name in self._state_meta},
        }
        arrays = {name: np.asarray(getattr(self, name)) for name in self._state_arrays}
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        """Rebuild a fitted transformer from :meth:`get_state` output."""
        obj = cls(**meta["params"])
        for name in cls._state_meta:
            setattr(obj, name, meta["fitted"][name])
        for name in cls._state_arrays:
            setattr(obj, name, np.asarray(arrays[name]))
        obj.fitted_ = True
        return obj

    # -- hooks for subclasses ------------------------------------------------------------
    def _empty_stats(self) -> Any:
        raise NotImplementedError

    def _accumulate(self, table: pa.Table) -> None:
        raise NotImplementedError

    def _merge_stats(self, other: Any) -> None:
        raise NotImplementedError

    def _finalize(self) -> None:
        raise NotImplementedError

    def _transform(self, table: pa.Table) -> np.ndarray | sp.csr_matrix:
        raise NotImplementedError
