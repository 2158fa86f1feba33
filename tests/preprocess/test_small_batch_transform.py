"""The small-batch transform path returns exactly what the general path returned before it.

``_reference_transform`` holds the pre-fast-path code verbatim. Every transformer kind and
option, every input dtype the transformers accept, missing values, NaN, empty strings, unseen
categories, chunked columns, and batch sizes on both sides of ``SMALL_BATCH_ROWS`` must give
bit-identical blocks (same type, dtype, shape and bytes; for CSR the same data, indices and
indptr arrays).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import _reference_transform as reference
import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from shardlearn.preprocess import Preprocessor
from shardlearn.preprocess._batch import SMALL_BATCH_ROWS
from shardlearn.preprocess.text import TextVectorizer

WORDS = ["loan", "car", "home", "Debt", "credit", "card", "a", "café", "über", "x1", "42"]
CATEGORIES = ["a", "b", "c", "d", "", "zz-unseen", "B"]
SIZES = [0, 1, 2, 7, SMALL_BATCH_ROWS, SMALL_BATCH_ROWS + 1]


def _with_nulls(values: list, rng: np.random.Generator, rate: float = 0.15) -> list:
    return [None if rng.random() < rate else v for v in values]


def _document(rng: np.random.Generator) -> str:
    words = rng.choice(WORDS, size=int(rng.integers(0, 9)))
    return rng.choice(["", " ", "!!"]) + " ".join(words) + rng.choice(["", ".", " loan loan"])


def make_table(rows: int, seed: int, fit: bool = False) -> pa.Table:
    """Every column type the transformers read; the fit data never holds the unseen values."""
    rng = np.random.default_rng(seed)
    categories = CATEGORIES[:4] if fit else CATEGORIES
    real = rng.normal(3.0, 10.0, rows)
    real[rng.random(rows) < 0.05] = np.nan
    start = datetime(2020, 1, 1)
    return pa.table(
        {
            "real": pa.array(_with_nulls(real.tolist(), rng), pa.float64()),
            "count": pa.array(_with_nulls(rng.integers(-5, 50, rows).tolist(), rng), pa.int64()),
            "small": pa.array(rng.normal(size=rows).astype(np.float32)),
            "flag_as_number": pa.array(_with_nulls(rng.random(rows) < 0.3, rng), pa.bool_()),
            "color": pa.array(_with_nulls(list(rng.choice(categories, rows)), rng), pa.string()),
            "shade": pa.array(
                _with_nulls(list(rng.choice(categories, rows)), rng), pa.large_string()
            ),
            "coded": pa.array(
                _with_nulls(list(rng.choice(categories, rows)), rng), pa.string()
            ).dictionary_encode(),
            "level": pa.array(_with_nulls(rng.integers(0, 6 if fit else 9, rows).tolist(), rng)),
            "ratio": pa.array(_with_nulls(rng.choice([1.0, 2.5, 3.0], rows).tolist(), rng)),
            "note": pa.array(_with_nulls([_document(rng) for _ in range(rows)], rng), pa.string()),
            "title": pa.array(_with_nulls([_document(rng) for _ in range(rows)], rng), pa.string()),
            "flag": pa.array(_with_nulls((rng.random(rows) < 0.5).tolist(), rng), pa.bool_()),
            "when": pa.array(
                _with_nulls(
                    [start + timedelta(hours=int(h)) for h in rng.integers(0, 20_000, rows)],
                    rng,
                ),
                pa.timestamp("us"),
            ),
        }
    )


NUMERIC = ["real", "count", "small", "flag_as_number"]
CATEGORICAL = ["color", "shade", "coded", "level", "ratio"]

SPECS: dict[str, dict[str, Any]] = {
    "numeric-standard": {c: "numeric" for c in NUMERIC},
    "numeric-median-indicator-clip": {
        c: {"kind": "numeric", "impute": "median", "add_indicator": True, "clip": 0.5}
        for c in NUMERIC
    },
    "numeric-constant-minmax": {
        c: {"kind": "numeric", "impute": "constant", "fill_value": -1.0, "scale": "minmax"}
        for c in NUMERIC
    },
    "numeric-robust-unscaled": {
        "real": {"kind": "numeric", "scale": "robust", "impute": "most_frequent"},
        "count": {"kind": "numeric", "scale": None},
    },
    "onehot": {c: {"kind": "categorical", "top_k": 3} for c in CATEGORICAL},
    "onehot-top0": {c: {"kind": "categorical", "top_k": 0} for c in CATEGORICAL},
    "hash": {c: {"kind": "categorical", "encoding": "hash", "n_features": 16} for c in CATEGORICAL},
    "hash-signed": {
        c: {"kind": "categorical", "encoding": "hash", "alternate_sign": True} for c in CATEGORICAL
    },
    "text-tfidf-l2": {"note": "text", "title": "text"},
    "text-sublinear-l1": {
        c: {"kind": "text", "sublinear_tf": True, "norm": "l1", "n_features": 64}
        for c in ("note", "title")
    },
    "text-counts-unnormalised": {
        "note": {"kind": "text", "tfidf": False, "norm": None, "lowercase": False},
    },
    "text-raw-idf": {"note": {"kind": "text", "smooth_idf": False, "n_features": 32}},
    "boolean-datetime": {"flag": "boolean", "when": "datetime"},
    "everything": {
        **{c: "numeric" for c in NUMERIC},
        **{c: "categorical" for c in CATEGORICAL},
        "note": "text",
        "title": {"kind": "text", "n_features": 128},
        "flag": "boolean",
        "when": "datetime",
        "coded": {"kind": "categorical", "encoding": "hash"},
    },
}


@pytest.fixture(scope="module")
def fit_table() -> pa.Table:
    return make_table(400, seed=0, fit=True)


def assert_identical(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    if sp.issparse(want):
        for name in ("data", "indices", "indptr"):
            mine, theirs = getattr(got, name), getattr(want, name)
            assert mine.dtype == theirs.dtype, name
            assert mine.tobytes() == theirs.tobytes(), name
    else:
        assert got.tobytes() == want.tobytes()


#: Hashed text width of a dense block: the default 2**18 columns per text column made a
#: 513-row dense block 0.5 GB per column (20-45 s per spec on the shared 2-core machine). The
#: densified bytes do not depend on the width; the default width is covered sparse and "auto".
DENSE_TEXT_FEATURES = 2**10


def _columns(spec: str, output: str) -> dict[str, Any]:
    """``SPECS[spec]``, with text at :data:`DENSE_TEXT_FEATURES` columns for a dense block
    where the spec leaves the width at its default."""
    columns = SPECS[spec]
    if output != "dense":
        return columns
    narrow = {}
    for name, option in columns.items():
        if option == "text":
            option = {"kind": "text"}
        if isinstance(option, dict) and option.get("kind") == "text":
            option = {"n_features": DENSE_TEXT_FEATURES, **option}
        narrow[name] = option
    return narrow


@pytest.mark.parametrize("output", ["auto", "dense", "sparse"])
@pytest.mark.parametrize("spec", list(SPECS))
def test_transform_is_bit_identical_to_the_general_path(
    fit_table: pa.Table, spec: str, output: str
) -> None:
    pre = Preprocessor(columns=_columns(spec, output), output=output).fit(fit_table)
    for size in SIZES:
        table = make_table(size, seed=size + 1)
        if size == 0 and any(isinstance(t, TextVectorizer) for t in pre.transformers_):
            # The old path crashed on an empty batch with text (scikit-learn's hasher cannot
            # vectorize nothing); now it is an empty block of the right width.
            block = pre.transform(table)
            assert block.shape == (0, pre.n_features_out_) and block.dtype == np.float32
            continue
        assert_identical(pre.transform(table), reference.transform(pre, table))
        for transformer in pre.transformers_:
            assert_identical(transformer._transform(table), reference.block(transformer, table))


def test_state_round_trip_transforms_identically(fit_table: pa.Table) -> None:
    # The server transforms with a preprocessor rebuilt from its artifact state.
    fitted = Preprocessor(columns=SPECS["everything"]).fit(fit_table)
    restored = Preprocessor.from_state(*fitted.get_state())
    for size in (1, 5, SMALL_BATCH_ROWS + 1):
        table = make_table(size, seed=100 + size)
        assert_identical(restored.transform(table), reference.transform(fitted, table))


def test_chunked_columns_and_dicts_transform_identically(fit_table: pa.Table) -> None:
    pre = Preprocessor(columns=SPECS["everything"]).fit(fit_table)
    table = make_table(9, seed=3)
    chunked = pa.concat_tables([table.slice(0, 4), table.slice(4, 5)])
    assert chunked.column("color").num_chunks == 2
    want = reference.transform(pre, table)
    assert_identical(pre.transform(chunked), want)
    assert_identical(pre.transform(table.to_pydict()), reference.transform(pre, table.to_pydict()))


def test_refitting_refreshes_the_cached_category_lookup(fit_table: pa.Table) -> None:
    pre = Preprocessor(columns={"color": {"kind": "categorical", "top_k": 1}})
    table = make_table(3, seed=11)
    pre.fit({"color": ["a", "a", "b"]})
    assert_identical(pre.transform(table), reference.transform(pre, table))
    pre.fit({"color": ["b", "b", "a"]})
    assert_identical(pre.transform(table), reference.transform(pre, table))
