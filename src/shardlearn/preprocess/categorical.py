"""Categorical columns: top-k one-hot with an "other" bucket, or feature hashing.

:class:`CategoricalEncoder` counts every category per shard (counts add up when merged), keeps
the ``top_k`` most frequent and sends everything else -- rare categories, categories never seen
at fit time, missing values -- to one ``<column>=__other__`` feature, so transform never fails
on new data. The choice of the top k matches scikit-learn's
``OneHotEncoder(max_categories=top_k + 1, handle_unknown="infrequent_if_exist")``: categories are
ordered by count with ties broken toward the later category in sorted order, and the kept
categories appear in sorted order followed by the other bucket.

Values are compared as text (``3``, ``3.0`` and ``"3"`` are one category). To bound memory on a
column with millions of distinct values, a partial fit keeps at most ``max_tracked`` categories
(the most frequent); beyond that the top k is approximate. Use :class:`HashingEncoder` for such
columns: it keeps no state at all.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from sklearn.utils import murmurhash3_32

from shardlearn._validation import Interval, Type
from shardlearn.preprocess._base import ColumnTransformer
from shardlearn.preprocess._batch import SMALL_BATCH_ROWS, column, string_values

__all__ = ["CategoricalEncoder", "HashingEncoder", "OTHER"]

#: Name of the bucket for rare, unseen and missing categories.
OTHER = "__other__"


def _dictionary_codes(values: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Per-row integer codes (-1 for null) and the distinct strings they index (nulls are
    masked in the codes, never a dictionary entry)."""
    encoded = pc.dictionary_encode(string_values(values))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries().combine_chunks() if encoded.num_chunks else None
    if encoded is None or len(encoded) == 0:
        return np.empty(0, dtype=np.int64), []
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


class CategoricalEncoder(ColumnTransformer):
    """One-hot encoding of the ``top_k`` most frequent categories plus an "other" bucket.

    Parameters
    ----------
    columns : list of str
        Input columns.
    top_k : int, default 20
        Categories kept per column; the rest share the ``=__other__`` feature.
    max_tracked : int, default 100000
        Distinct categories counted per column during fit (see module notes).

    Examples
    --------
    >>> enc = CategoricalEncoder(columns=["c"], top_k=1).fit({"c": ["a", "a", "b"]})
    >>> enc.feature_names_out_
    ['c=a', 'c=__other__']
    >>> enc.transform({"c": ["b", "zzz", "a"]}).tolist()
    [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        **ColumnTransformer._parameter_constraints,
        "top_k": [Interval("int", 0, None)],
        "max_tracked": [Interval("int", 1, None)],
    }
    _state_meta = ("categories_", "counts_", "feature_names_out_")

    def __init__(self, columns: list[str], top_k: int = 20, max_tracked: int = 100_000) -> None:
        self.columns = columns
        self.top_k = top_k
        self.max_tracked = max_tracked

    def _empty_stats(self) -> list[Counter]:
        return [Counter() for _ in self.columns]

    def _accumulate(self, table: pa.Table) -> None:
        batch = []
        for name in self.columns:
            counts = pc.value_counts(string_values(column(table, name)))
            values = counts.field("values").to_pylist()
            numbers = counts.field("counts").to_pylist()
            batch.append(
                Counter({v: n for v, n in zip(values, numbers, strict=True) if v is not None})
            )
        self._merge_stats(batch)

    def _merge_stats(self, other: list[Counter]) -> None:
        for mine, theirs in zip(self._stats, other, strict=True):
            mine.update(theirs)
            if len(mine) > self.max_tracked:
                kept = sorted(mine.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_tracked]
                mine.clear()
                mine.update(dict(kept))

    def _finalize(self) -> None:
        self.categories_ = []
        self.counts_ = []
        names = []
        for name, counter in zip(self.columns, self._stats, strict=True):
            categories = sorted(counter)
            counts = np.array([counter[c] for c in categories], dtype=np.int64)
            if len(categories) > self.top_k:
                # Stable ascending sort over sorted categories, keep the last top_k: exactly
                # scikit-learn's choice of infrequent categories under max_categories.
                order = np.argsort(counts, kind="mergesort")
                kept: Any = np.sort(order[len(order) - self.top_k :]) if self.top_k else []
                categories = [categories[i] for i in kept]
                counts = counts[kept] if self.top_k else counts[:0]
            self.categories_.append(categories)
            self.counts_.append([int(c) for c in counts])
            names += [f"{name}={c}" for c in categories] + [f"{name}={OTHER}"]
        self.feature_names_out_ = names

    def _positions(self) -> list[dict[str, int]]:
        """Per column, category -> its index among the column's features (built once)."""
        cached = self.__dict__.get("_positions_cache")
        if cached is None or cached[0] is not self.categories_:
            positions = [{c: i for i, c in enumerate(cats)} for cats in self.categories_]
            cached = self._positions_cache = (self.categories_, positions)
        return cached[1]

    def codes(self, table: pa.Table) -> np.ndarray:
        """Output column index per (row, input column): shape ``(rows, len(columns))``."""
        rows = table.num_rows
        out = np.empty((rows, len(self.columns)), dtype=np.int64)
        offset = 0
        for j, (name, position) in enumerate(zip(self.columns, self._positions(), strict=True)):
            other = len(position)
            values = column(table, name)
            if rows <= SMALL_BATCH_ROWS and pa.types.is_string(values.type):
                # A few rows: a dict lookup per value beats dictionary-encoding the column.
                # Null (None) and unseen strings both miss the dict and land in `other`.
                found = [position.get(v, other) for v in values.to_pylist()]
                out[:, j] = offset + np.array(found, dtype=np.int64)
            else:
                codes, dictionary = _dictionary_codes(values)
                lookup = np.array([position.get(v, other) for v in dictionary] + [other], np.int64)
                out[:, j] = offset + lookup[codes]  # code -1 (null) picks the trailing `other`
            offset += other + 1
        return out

    def _transform(self, table: pa.Table) -> np.ndarray:
        codes = self.codes(table)
        out = np.zeros((table.num_rows, self.n_features_out_), dtype=np.float32)
        rows = np.arange(table.num_rows)
        for j in range(codes.shape[1]):
            out[rows, codes[:, j]] = 1.0
        return out


class HashingEncoder(ColumnTransformer):
    """Hash ``"<column>=<value>"`` strings into ``n_features`` columns (no fitted state).

    The same hash as scikit-learn's ``FeatureHasher(input_type="string")``: signed 32-bit
    MurmurHash3 with seed 0, column ``abs(h) % n_features``, sign of ``h`` when
    ``alternate_sign``. Missing values contribute nothing.

    Parameters
    ----------
    columns : list of str
        Input columns (hashed into one shared space).
    n_features : int, default 1024
        Output width.
    alternate_sign : bool, default False
        Give each hashed feature the sign of its hash (reduces collision bias).
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        **ColumnTransformer._parameter_constraints,
        "n_features": [Interval("int", 1, 2**31 - 1)],
        "alternate_sign": [Type(bool)],
    }
    sparse_output = True

    def __init__(self, columns: list[str], n_features: int = 1024, alternate_sign: bool = False):
        self.columns = columns
        self.n_features = n_features
        self.alternate_sign = alternate_sign

    def _empty_stats(self) -> None:
        return None

    def _accumulate(self, table: pa.Table) -> None:
        for name in self.columns:
            column(table, name)  # fail at fit time, not first at predict time

    def _merge_stats(self, other: None) -> None:
        return None

    def _finalize(self) -> None:
        return None

    @property
    def feature_names_out_(self) -> list[str]:
        prefix = "|".join(self.columns)
        return [f"{prefix}#hash{i}" for i in range(self.n_features)]

    @property
    def n_features_out_(self) -> int:
        return self.n_features

    def _transform(self, table: pa.Table) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        for name in self.columns:
            codes, dictionary = _dictionary_codes(column(table, name))
            hashes = np.array(
                [murmurhash3_32(f"{name}={v}", seed=0) for v in dictionary] + [0], np.int64
            )
            keep = codes >= 0
            h = hashes[codes[keep]]
            rows.append(np.flatnonzero(keep))
            cols.append(np.abs(h) % self.n_features)
            vals.append(np.where(h >= 0, 1.0, -1.0) if self.alternate_sign else np.ones(h.size))
        shape = (table.num_rows, self.n_features)
        matrix = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=shape,
            dtype=np.float32,
        )
        matrix.sum_duplicates()
        return matrix
