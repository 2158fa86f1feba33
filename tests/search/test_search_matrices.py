"""The in-process boosting matrix of a small block: a plain DMatrix binned at once.

A search's trials and its refit train in this process on small blocks. Their training matrix is
a ``DMatrix`` whose histogram index is built when it is made (``_binned_dmatrix``), for about a
third of a ``QuantileDMatrix``'s CPU. XGBoost sketches both alike: the cuts, the trees, the
validation scores and a whole search's results are those of the ``QuantileDMatrix`` path
(``SMALL_MATRIX_VALUES = 0`` forces it).
"""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from shardlearn.engine import engine
from shardlearn.models import XGBoostClassifier
from shardlearn.models.ensemble import _xgb_collective as coll
from shardlearn.preprocess import FeatureBlock
from shardlearn.search import loguniform, randint, search, uniform


def _block(rows, seed, weighted):
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        rng.normal(size=rows), rng.lognormal(0, 3, size=rows),
        rng.integers(0, 4, size=rows), rng.integers(0, 10_000, size=rows),
        np.full(rows, 2.0), rng.random(rows) < 0.1,
    ]).astype(np.float32)  # fmt: skip
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (rng.random(rows) < 0.4).astype(np.int64)
    w = rng.uniform(0.2, 3.0, rows) if weighted else None
    return FeatureBlock(X, y, w, [f"x{j}" for j in range(X.shape[1])])


@pytest.mark.parametrize(("rows", "max_bin", "weighted"), [(300, 16, False), (5000, 256, True),
                                                          (20_000, 64, False)])  # fmt: skip
def test_the_binned_dmatrix_has_the_quantile_dmatrix_cuts_before_any_round(rows, max_bin, weighted):
    """Its index exists as soon as it is made (XGBoost refuses the cuts of a DMatrix not yet
    binned), and its cuts are the QuantileDMatrix's."""
    block = _block(rows, rows, weighted)
    binned = coll._binned_dmatrix(block, max_bin)
    quantile = xgb.QuantileDMatrix(block.X, block.y, weight=block.sample_weight, max_bin=max_bin)
    for ours, theirs in zip(binned.get_quantile_cut(), quantile.get_quantile_cut(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(xgb.core.XGBoostError):  # a plain DMatrix is binned at its first round
        xgb.DMatrix(block.X, block.y).get_quantile_cut()


def test_an_in_process_fit_trains_the_trees_of_the_quantile_dmatrix(split_dataset, monkeypatch):
    """Row subsampling, validation scores every round and early stopping: the same booster and
    history on the binned DMatrix as on a QuantileDMatrix."""
    params = {"n_estimators": 30, "max_depth": 4, "subsample": 0.7, "learning_rate": 0.3,
              "early_stopping_rounds": 5, "execution": "in_process", "verbose": 0,
              "max_bin": 32}  # fmt: skip
    built = []
    real = coll._binned_dmatrix

    def binned(block, max_bin):
        built.append(max_bin)
        return real(block, max_bin)

    monkeypatch.setattr(coll, "_binned_dmatrix", binned)
    ours = XGBoostClassifier(**params).fit(split_dataset)
    monkeypatch.setattr(coll, "SMALL_MATRIX_VALUES", 0)
    theirs = XGBoostClassifier(**params).fit(split_dataset)
    assert built == [32]  # the first fit only
    assert ours.booster_.save_raw("ubj") == theirs.booster_.save_raw("ubj")
    assert ours.evals_result_ == theirs.evals_result_
    assert ours.n_estimators_ == theirs.n_estimators_


SPACE = {"max_depth": randint(2, 6), "learning_rate": loguniform(0.05, 0.5), "n_estimators": 8,
         "subsample": uniform(0.5, 1.0)}  # fmt: skip


def _search(dataset):
    with engine("local", workers=2) as eng:
        return search(dataset, models="xgboost", space=SPACE, trials=4, seed=3, engine=eng,
                      verbose=0)  # fmt: skip


def test_a_search_bins_each_block_once_and_finds_what_the_quantile_dmatrix_finds(
    split_dataset, monkeypatch
):
    """The trials' fold and the refit each bin one DMatrix; the leaderboard, the refitted trees
    and the test metrics are the QuantileDMatrix path's."""
    built = []
    real = coll._binned_dmatrix

    def binned(block, max_bin):
        built.append(block.X.shape[0])
        return real(block, max_bin)

    monkeypatch.setattr(coll, "_binned_dmatrix", binned)
    ours = _search(split_dataset)
    train, valid = split_dataset.num_rows("train"), split_dataset.num_rows("valid")
    assert sorted(built) == [train, train + valid]  # the trials' (train), the refit's
    monkeypatch.setattr(coll, "SMALL_MATRIX_VALUES", 0)
    theirs = _search(split_dataset)
    assert len(built) == 2
    scores = [(row["trial"], row["score"]) for row in ours.leaderboard]
    assert scores == [(row["trial"], row["score"]) for row in theirs.leaderboard]
    assert ours.best_params == theirs.best_params
    ours_model, theirs_model = ours.best_model.estimator, theirs.best_model.estimator
    assert ours_model.booster_.save_raw("ubj") == theirs_model.booster_.save_raw("ubj")
    assert ours.test_metrics == theirs.test_metrics
