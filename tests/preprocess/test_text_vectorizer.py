"""TextVectorizer against HashingVectorizer + TfidfTransformer and TfidfVectorizer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from _preprocess_helpers import assert_state_close, fit_merged, split_rows
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer

from shardlearn.preprocess import TextVectorizer

WORDS = ["Cheap", "loan", "offer", "hello", "meeting", "today", "a", "é-mail", "2024", "win!"]


@st.composite
def documents(draw):
    docs = draw(
        st.lists(
            st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join), min_size=1, max_size=30
        )
    )
    cuts = draw(st.lists(st.integers(0, len(docs)), max_size=3))
    return pa.table({"msg": pa.array(docs, pa.string())}), cuts


def _reference(docs: list[str], n_features: int, **tfidf) -> np.ndarray:
    hashing = HashingVectorizer(n_features=n_features, alternate_sign=False, norm=None)
    counts = hashing.transform(docs)
    return TfidfTransformer(**tfidf).fit(counts).transform(counts).toarray()


# scikit-learn's own non-smooth idf divides by zero for hashed columns no document uses.
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
@settings(max_examples=40, deadline=None)
@given(documents(), st.booleans(), st.booleans(), st.sampled_from(["l2", "l1", None]))
def test_merged_shard_fits_equal_scikit_learn_tfidf(data, sublinear_tf, smooth_idf, norm):
    table, cuts = data
    make = lambda: TextVectorizer(  # noqa: E731
        columns=["msg"],
        n_features=2**10,
        sublinear_tf=sublinear_tf,
        smooth_idf=smooth_idf,
        norm=norm,
    )
    merged = fit_merged(make, split_rows(table, cuts))
    assert_state_close(merged, make().fit(table))
    docs = table.column("msg").to_pylist()
    expected = _reference(docs, 2**10, sublinear_tf=sublinear_tf, smooth_idf=smooth_idf, norm=norm)
    got = merged.transform(table)
    assert got.format == "csr" and got.dtype == np.float32
    np.testing.assert_allclose(got.toarray(), expected, rtol=1e-6, atol=1e-7)


def test_same_values_as_tfidf_vectorizer_when_no_hash_collides():
    docs = ["the cat sat", "the dog sat down", "cats and dogs", "The THE the"]
    got = TextVectorizer(columns=["t"]).fit({"t": docs}).transform({"t": docs}).toarray()
    expected = TfidfVectorizer().fit_transform(docs).toarray()
    for row_got, row_expected in zip(got, expected, strict=True):
        np.testing.assert_allclose(
            np.sort(row_got[row_got != 0]), np.sort(row_expected[row_expected != 0]), rtol=1e-6
        )


def test_default_width_is_two_to_the_eighteen():
    vec = TextVectorizer(columns=["t"]).fit({"t": ["a b"]})
    assert vec.n_features_out_ == 2**18 and vec.idf_.shape == (2**18,)


def test_empty_and_missing_documents_are_zero_rows():
    vec = TextVectorizer(columns=["t"], n_features=32).fit({"t": ["", None, "good words"]})
    out = vec.transform({"t": pa.array(["", None, "!!", "good"])}).toarray()
    np.testing.assert_array_equal(out[:3], 0.0)
    assert np.isfinite(out).all() and out[3].sum() > 0


def test_all_empty_fit_does_not_divide_by_zero():
    vec = TextVectorizer(columns=["t"], n_features=8, smooth_idf=False).fit({"t": ["", ""]})
    assert np.isfinite(vec.idf_).all()
    assert vec.transform({"t": ["new words"]}).shape == (1, 8)


@settings(max_examples=20, deadline=None)
@given(documents(), documents(), documents())
def test_merge_is_associative(a, b, c):
    make = lambda t: TextVectorizer(columns=["msg"], n_features=64).partial_fit(t[0])  # noqa: E731
    left = make(a).merge(make(b)).merge(make(c)).finalize()
    right = make(a).merge(make(b).merge(make(c))).finalize()
    assert_state_close(left, right)


def test_bad_norm_is_named():
    with pytest.raises(ValueError, match="'norm' parameter of TextVectorizer"):
        TextVectorizer(columns=["t"], norm="l3").fit({"t": ["x"]})


def test_repeated_documents_are_tokenised_once_and_give_every_row_its_counts():
    docs = ["win a loan", None, "hello today", "win a loan", "", None, "hello today"] * 50
    table = pa.table({"msg": pa.chunked_array([docs[:100], docs[100:]], pa.string())})
    vec = TextVectorizer(columns=["msg"], n_features=64, tfidf=False, norm=None).fit(table)
    analyzer, hasher = vec._tokenize_and_hash()
    seen: list[str] = []

    def counting(doc: str) -> list[str]:
        seen.append(doc)
        return analyzer(doc)

    vec._hashing_cache = (vec._hashing_cache[0], counting, hasher)
    got = vec.transform(table).toarray()
    reference = HashingVectorizer(n_features=64, alternate_sign=False, norm=None)
    expected = reference.transform(["" if d is None else d for d in docs]).toarray()
    np.testing.assert_array_equal(got, expected)
    # three distinct texts and the empty document that stands for the missing ones
    assert sorted(seen) == sorted(["win a loan", "hello today", "", ""])
