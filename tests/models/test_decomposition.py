"""PCA against scikit-learn (up to component sign) on both engines and 1/2/4 workers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA as SklearnPCA

import shardlearn as sl
from shardlearn._moments import merge_moments
from shardlearn.engine import engine
from shardlearn.exceptions import DataError
from shardlearn.models import PCA


@pytest.fixture(scope="module")
def correlated() -> np.ndarray:
    rng = np.random.default_rng(0)
    # A large offset: the centred (Chan) merge must not lose the spread to the mean.
    return rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 1e4


def _signs(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.sign((ours * ref).sum(1))


@pytest.mark.parametrize("whiten", [False, True])
def test_pca_equals_sklearn_up_to_sign(correlated, any_engine, whiten):
    ours = PCA(4, whiten=whiten).fit(correlated)
    ref = SklearnPCA(4, whiten=whiten).fit(correlated)
    signs = _signs(ours.components_, ref.components_)
    np.testing.assert_allclose(ours.components_ * signs[:, None], ref.components_, atol=1e-6)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(
        ours.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-6
    )
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-9)
    np.testing.assert_allclose(
        ours.transform(correlated) * signs, ref.transform(correlated), atol=1e-6
    )
    np.testing.assert_allclose(
        ours.inverse_transform(ours.transform(correlated)),
        ref.inverse_transform(ref.transform(correlated)),
        atol=1e-6,
    )


def test_fraction_of_variance_picks_the_same_number_of_components(correlated):
    with engine("local", workers=1):
        ours = PCA(0.9).fit(correlated)
    assert ours.n_components_ == SklearnPCA(0.9).fit(correlated).n_components_


def test_one_two_and_four_workers_give_the_same_components(correlated):
    fitted = []
    for workers in (1, 2, 4):
        with engine("local", workers=workers):
            fitted.append(PCA(3).fit(correlated))
    for other in fitted[1:]:
        np.testing.assert_allclose(other.components_, fitted[0].components_, atol=1e-9)
        np.testing.assert_allclose(other.explained_variance_, fitted[0].explained_variance_)


def test_chan_merge_equals_the_statistics_of_the_union(correlated):
    def moments(X):
        c = X - X.mean(0)
        return X.shape[0], X.mean(0), c.T @ c

    merged = merge_moments(moments(correlated[:70]), moments(correlated[70:]))
    whole = moments(correlated)
    assert merged[0] == whole[0]
    np.testing.assert_allclose(merged[1], whole[1], rtol=1e-12)
    np.testing.assert_allclose(merged[2], whole[2], rtol=1e-9)


def test_round_trips_through_an_artifact(correlated, tmp_path):
    with engine("local", workers=1):
        model = PCA(2, whiten=True).fit(correlated)
    loaded = sl.load(sl.save(model, tmp_path / "pca"))
    np.testing.assert_array_equal(loaded.transform(correlated), model.transform(correlated))


def test_bad_input_gets_clear_errors(correlated):
    with engine("local", workers=1):
        with pytest.raises(DataError, match="n_components=9"):
            PCA(9).fit(correlated)
        with pytest.raises(DataError, match="at least 2 training rows"):
            PCA().fit(correlated[:1])
        with pytest.raises(ValueError, match="n_components"):
            PCA(-1).fit(correlated)
        model = PCA(2).fit(correlated)
    with pytest.raises(DataError, match="expects 2 columns"):
        model.inverse_transform(np.zeros((3, 4)))
