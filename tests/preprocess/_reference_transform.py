"""The transform as it was before the small-batch fast path: the specification it must match.

These functions are the pre-fast-path implementations of ``Preprocessor.transform`` and of
every transformer's ``_transform``, copied verbatim (only renamed to take the fitted object as
an argument). The fast path must return bit-identical blocks: same type, dtypes, shapes, and
for CSR the same ``data``, ``indices`` and ``indptr`` arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils import murmurhash3_32

from shardlearn.exceptions import SchemaError
from shardlearn.preprocess._batch import as_table, string_values
from shardlearn.preprocess.boolean import BooleanEncoder
from shardlearn.preprocess.categorical import CategoricalEncoder, HashingEncoder
from shardlearn.preprocess.datetime import DatetimeEncoder
from shardlearn.preprocess.numeric import NumericTransformer
from shardlearn.preprocess.text import TOKEN_PATTERN, TextVectorizer

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def column(table: pa.Table, name: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise SchemaError(
            f"Input is missing column {name!r} that the preprocessor was configured with. "
            f"Columns present: {', '.join(table.column_names) or '(none)'}."
        )
    return table.column(name)


def numeric_matrix(table: pa.Table, names: list[str]) -> np.ndarray:
    out = np.empty((len(names), table.num_rows), dtype=np.float64).T
    for j, name in enumerate(names):
        values = column(table, name)
        if pa.types.is_boolean(values.type):
            values = pc.cast(values, pa.int8())
        try:
            values = pc.cast(values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(
                f"Column {name!r} is configured as numeric but holds {values.type} values that "
                f"are not numbers ({exc}). Declare it with another kind (e.g. 'categorical')."
            ) from None
        out[:, j] = values.to_numpy(zero_copy_only=False) if table.num_rows else []
    return out


def numeric(t: NumericTransformer, table: pa.Table) -> np.ndarray:
    x = numeric_matrix(table, t.columns)
    missing = np.isnan(x)
    x = np.where(missing, t.impute_values_, x)
    x -= t.center_
    x /= t.scale_
    limit = t.clip if t.clip is not None else _FLOAT32_MAX
    np.clip(x, -limit, limit, out=x)
    out = x.astype(np.float32, order="C")
    if t.indicator_columns_:
        index = [t.columns.index(c) for c in t.indicator_columns_]
        out = np.hstack([out, missing[:, index].astype(np.float32)])
    return out


def _dictionary_codes(values: pa.ChunkedArray) -> tuple[np.ndarray, list[str | None]]:
    encoded = pc.dictionary_encode(string_values(values))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries().combine_chunks() if encoded.num_chunks else None
    if encoded is None or len(encoded) == 0:
        return np.empty(0, dtype=np.int64), []
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def categorical(t: CategoricalEncoder, table: pa.Table) -> np.ndarray:
    codes = np.empty((table.num_rows, len(t.columns)), dtype=np.int64)
    offset = 0
    for j, (name, categories) in enumerate(zip(t.columns, t.categories_, strict=True)):
        position = {c: i for i, c in enumerate(categories)}
        other = len(categories)
        column_codes, dictionary = _dictionary_codes(column(table, name))
        lookup = np.array([position.get(v, other) for v in dictionary] + [other], np.int64)
        codes[:, j] = offset + lookup[column_codes]
        offset += other + 1
    out = np.zeros((table.num_rows, t.n_features_out_), dtype=np.float32)
    rows = np.arange(table.num_rows)
    for j in range(codes.shape[1]):
        out[rows, codes[:, j]] = 1.0
    return out


def hashing(t: HashingEncoder, table: pa.Table) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for name in t.columns:
        codes, dictionary = _dictionary_codes(column(table, name))
        hashes = np.array(
            [murmurhash3_32(f"{name}={v}", seed=0) for v in dictionary] + [0], np.int64
        )
        keep = codes >= 0
        h = hashes[codes[keep]]
        rows.append(np.flatnonzero(keep))
        cols.append(np.abs(h) % t.n_features)
        vals.append(np.where(h >= 0, 1.0, -1.0) if t.alternate_sign else np.ones(h.size))
    matrix = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(table.num_rows, t.n_features),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    return matrix


def text(t: TextVectorizer, table: pa.Table) -> sp.csr_matrix:
    blocks = []
    for j, name in enumerate(t.columns):
        texts = column(table, name).to_pylist()
        documents = ["" if v is None else str(v) for v in texts]
        hasher = HashingVectorizer(
            n_features=t.n_features,
            lowercase=t.lowercase,
            token_pattern=TOKEN_PATTERN,
            alternate_sign=False,
            norm=None,
            dtype=np.float64,
        )
        x = sp.csr_matrix(hasher.transform(documents))
        if t.sublinear_tf:
            np.log(x.data, x.data)
            x.data += 1.0
        if t.tfidf:
            x.data *= t.idf_[j * t.n_features + x.indices]
        if t.norm is not None:
            x = normalize(x, norm=t.norm, copy=False)
        blocks.append(x)
    if not blocks:
        return sp.csr_matrix((table.num_rows, 0), dtype=np.float32)
    return sp.hstack(blocks, format="csr", dtype=np.float32)


_TRANSFORMS = {
    NumericTransformer: numeric,
    CategoricalEncoder: categorical,
    HashingEncoder: hashing,
    TextVectorizer: text,
}


def block(t: Any, table: pa.Table) -> np.ndarray | sp.csr_matrix:
    """One transformer's block as the old code computed it."""
    reference = _TRANSFORMS.get(type(t))
    if reference is None:  # boolean and datetime encoders did not change
        if not isinstance(t, BooleanEncoder | DatetimeEncoder):
            raise TypeError(f"no reference transform for {type(t).__name__}")
        return t._transform(table)
    return reference(t, table)


def transform(pre: Any, batch: Any) -> np.ndarray | sp.csr_matrix:
    """``Preprocessor.transform`` as it was."""
    table = as_table(batch)
    blocks = [block(t, table) for t in pre.transformers_]
    if pre.sparse_:
        return sp.hstack(
            [sp.csr_matrix(b) for b in blocks] or [sp.csr_matrix((table.num_rows, 0))],
            format="csr",
            dtype=np.float32,
        )
    dense = [b.toarray() if sp.issparse(b) else b for b in blocks]
    if len(dense) == 1:
        return np.ascontiguousarray(dense[0], dtype=np.float32)
    if not dense:
        return np.zeros((table.num_rows, 0), dtype=np.float32)
    return np.hstack(dense).astype(np.float32, copy=False)
