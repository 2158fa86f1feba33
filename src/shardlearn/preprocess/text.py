"""Text columns: hashed term counts and TF-IDF with document frequencies merged across shards.

Tokenisation is scikit-learn's default (token pattern ``(?u)\\b\\w\\w+\\b`` after lowercasing)
and terms are hashed exactly as ``HashingVectorizer(alternate_sign=False)`` hashes them, into
``n_features`` columns per text column (2**18 by default). A partial fit counts, per hashed
term, the documents that contain it; document frequencies and document counts add up when
shards merge, so the inverse document frequency equals a one-pass fit:
``idf = ln((1 + n) / (1 + df)) + 1`` (``smooth_idf``, scikit-learn's default) or
``ln(n / df) + 1``. Transform: counts, then ``1 + ln(tf)`` if ``sublinear_tf``, times idf,
then row normalisation -- ``TfidfTransformer``'s order. Missing text is an empty document;
an empty document is an all-zero row (normalising it divides by nothing). Tokenising and
hashing (Python, the cost of this module) run once per distinct document of a batch: repeated
texts take their counts from the dictionary-encoded column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils.sparsefuncs_fast import (
    inplace_csr_row_normalize_l1,
    inplace_csr_row_normalize_l2,
)

from shardlearn._validation import Interval, Options, Type
from shardlearn.preprocess._base import ColumnTransformer
from shardlearn.preprocess._batch import column

__all__ = ["TOKEN_PATTERN", "TextVectorizer"]

#: scikit-learn's default token pattern: words of two or more word characters.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_ROW_NORMALIZE = {"l1": inplace_csr_row_normalize_l1, "l2": inplace_csr_row_normalize_l2}


@dataclass
class _DocStats:
    documents: int
    nonzeros: int
    df: list[np.ndarray]  # one int64 array of n_features per column


class TextVectorizer(ColumnTransformer):
    """Hashed bag of words with optional TF-IDF; one ``n_features`` block per text column.

    Parameters
    ----------
    columns : list of str
        Input text columns.
    n_features : int, default 2**18
        Hashed columns per text column.
    tfidf : bool, default True
        Weight counts by the inverse document frequency fitted across shards.
    sublinear_tf : bool, default False
        Replace a count ``tf`` by ``1 + ln(tf)``.
    norm : {"l2", "l1", None}, default "l2"
        Row normalisation of each column's block.
    smooth_idf : bool, default True
        Add one to document counts, as if one extra document held every term.
    lowercase : bool, default True
        Lowercase before tokenising.

    Examples
    --------
    >>> vec = TextVectorizer(columns=["msg"], n_features=16).fit({"msg": ["a cat", "the cat"]})
    >>> vec.transform({"msg": ["cat"]}).nnz
    1
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        **ColumnTransformer._parameter_constraints,
        "n_features": [Interval("int", 1, 2**31 - 1)],
        "tfidf": [Type(bool)],
        "sublinear_tf": [Type(bool)],
        "norm": [Options(("l2", "l1", None))],
        "smooth_idf": [Type(bool)],
        "lowercase": [Type(bool)],
    }
    _state_meta = ("n_documents_", "mean_nonzeros_")
    _state_arrays = ("idf_",)
    sparse_output = True

    def __init__(
        self,
        columns: list[str],
        n_features: int = 2**18,
        tfidf: bool = True,
        sublinear_tf: bool = False,
        norm: str | None = "l2",
        smooth_idf: bool = True,
        lowercase: bool = True,
    ) -> None:
        self.columns = columns
        self.n_features = n_features
        self.tfidf = tfidf
        self.sublinear_tf = sublinear_tf
        self.norm = norm
        self.smooth_idf = smooth_idf
        self.lowercase = lowercase

    def _hasher(self) -> HashingVectorizer:
        return HashingVectorizer(
            n_features=self.n_features,
            lowercase=self.lowercase,
            token_pattern=TOKEN_PATTERN,
            alternate_sign=False,
            norm=None,
            dtype=np.float64,
        )

    def _tokenize_and_hash(self) -> tuple[Callable[[str], list[str]], FeatureHasher]:
        """The hasher's analyzer and feature hasher, built once per parameter set.

        ``HashingVectorizer.transform`` (norm None, binary False) is exactly
        ``FeatureHasher.transform(analyzer(doc) for doc in docs)``; building both once per
        transformer instead of once per call removes most of its cost on a few rows.
        """
        key = (self.n_features, self.lowercase)
        cached = self.__dict__.get("_hashing_cache")
        if cached is None or cached[0] != key:
            hasher = self._hasher()
            feature_hasher = FeatureHasher(
                n_features=self.n_features,
                input_type="string",
                dtype=np.float64,
                alternate_sign=False,
            )
            cached = self._hashing_cache = (key, hasher.build_analyzer(), feature_hasher)
        return cached[1], cached[2]

    def _counts(self, table: pa.Table, name: str) -> sp.csr_matrix:
        """Hashed term counts, one row per document.

        Tokenising and hashing run in Python, once per *distinct* document: texts repeat
        (templated descriptions, titles, short messages), so the column is dictionary-encoded
        and each row takes its document's row of the distinct documents' counts -- the same
        matrix, a row at a time, as hashing every row.
        """
        values = column(table, name)
        if len(values) == 0:  # scikit-learn's hashers cannot vectorize an empty sequence
            return sp.csr_matrix((0, self.n_features), dtype=np.float64)
        encoded = values.combine_chunks().dictionary_encode()
        distinct = encoded.dictionary.to_pylist()
        if len(distinct) == len(values):  # no document repeats (and none is missing)
            return self._hash_documents(distinct)
        # A missing document is the empty one, after the distinct ones.
        rows = encoded.indices.fill_null(len(distinct)).to_numpy()
        return self._hash_documents([*distinct, None])[rows]

    def _hash_documents(self, texts: list) -> sp.csr_matrix:
        analyzer, feature_hasher = self._tokenize_and_hash()
        documents = ("" if t is None else str(t) for t in texts)
        return sp.csr_matrix(feature_hasher.transform(analyzer(doc) for doc in documents))

    def _empty_stats(self) -> _DocStats:
        return _DocStats(0, 0, [np.zeros(self.n_features, np.int64) for _ in self.columns])

    def _accumulate(self, table: pa.Table) -> None:
        for j, name in enumerate(self.columns):
            counts = self._counts(table, name)
            # Never in place: arrays that came back from a Ray worker are read-only.
            self._stats.df[j] = self._stats.df[j] + np.bincount(
                counts.indices, minlength=self.n_features
            )
            self._stats.nonzeros += counts.nnz
        self._stats.documents += table.num_rows

    def _merge_stats(self, other: _DocStats) -> None:
        self._stats.documents += other.documents
        self._stats.nonzeros += other.nonzeros
        self._stats.df = [
            mine + theirs for mine, theirs in zip(self._stats.df, other.df, strict=True)
        ]

    def _finalize(self) -> None:
        n = self._stats.documents
        df = np.concatenate(self._stats.df).astype(np.float64) if self.columns else np.empty(0)
        if self.smooth_idf:
            idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        else:
            with np.errstate(divide="ignore"):
                # A term no document holds never occurs in a fitted row: its weight is unused.
                idf = np.where(df > 0, np.log(n / np.where(df > 0, df, 1.0)) + 1.0, 1.0)
        self.idf_ = idf
        self.n_documents_ = int(n)
        self.mean_nonzeros_ = float(self._stats.nonzeros / n) if n else 0.0

    @property
    def feature_names_out_(self) -> list[str]:
        return [f"{name}#tok{i}" for name in self.columns for i in range(self.n_features)]

    @property
    def n_features_out_(self) -> int:
        return self.n_features * len(self.columns)

    def _transform(self, table: pa.Table) -> sp.csr_matrix:
        blocks = []
        for j, name in enumerate(self.columns):
            x = self._counts(table, name)
            if self.sublinear_tf:
                np.log(x.data, x.data)
                x.data += 1.0
            if self.tfidf:
                x.data *= self.idf_[j * self.n_features + x.indices]
            if self.norm is not None:
                # What sklearn.preprocessing.normalize runs on a float64 CSR matrix, without
                # its input validation (a quarter of a millisecond per call).
                _ROW_NORMALIZE[self.norm](x)
            blocks.append(x)
        if not blocks:
            return sp.csr_matrix((table.num_rows, 0), dtype=np.float32)
        if len(blocks) == 1 and blocks[0].indices.dtype == np.int32:
            return blocks[0].astype(np.float32)  # what stacking one int32-indexed block gives
        return sp.hstack(blocks, format="csr", dtype=np.float32)
