"""Grid and random search pick what scikit-learn's searches pick on the same shard folds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.model_selection import GridSearchCV, PredefinedSplit, RandomizedSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shardlearn.engine import engine
from shardlearn.search import fold_assignment, loguniform, search

FOLDS = 2
TOL = 1e-10


def _sklearn_inputs(dataset):
    table = dataset.read("train")
    X = np.column_stack([table[c].to_numpy() for c in table.column_names if c != "y"])
    y = table["y"].to_numpy()
    return X, y, PredefinedSplit(fold_assignment(dataset, FOLDS))


def _sklearn_model():
    return make_pipeline(StandardScaler(), SkLogistic(tol=TOL, max_iter=5000))


def _scores_by_c(rows):
    return {row["params"]["C"]: row["score"] for row in rows}


def test_grid_search_matches_gridsearchcv(small_dataset):
    grid = [1e-3, 1e-2, 0.1, 10.0]
    with engine("local", workers=1) as eng:
        result = search(small_dataset, models="logistic", strategy="grid", cv=FOLDS,
                        space={"C": grid, "tol": TOL, "max_iter": 1000}, metric="log_loss",
                        engine=eng, refit=False)  # fmt: skip
    X, y, folds = _sklearn_inputs(small_dataset)
    reference = GridSearchCV(_sklearn_model(), {"logisticregression__C": grid}, cv=folds,
                             scoring="neg_log_loss").fit(X, y)  # fmt: skip
    assert result.best_params["C"] == reference.best_params_["logisticregression__C"]
    ours = _scores_by_c(result.leaderboard)
    for params, score in zip(reference.cv_results_["params"],
                             reference.cv_results_["mean_test_score"], strict=True):  # fmt: skip
        assert ours[params["logisticregression__C"]] == pytest.approx(-score, rel=1e-4)
    # Lower log loss ranks first.
    scores = [row["score"] for row in result.leaderboard]
    assert scores == sorted(scores)


def test_random_search_matches_randomizedsearchcv(small_dataset):
    with engine("local", workers=1) as eng:
        result = search(small_dataset, models="logistic", strategy="random", trials=5, seed=7,
                        cv=FOLDS, space={"C": loguniform(1e-4, 10.0), "tol": TOL},
                        metric="log_loss", engine=eng, refit=False)  # fmt: skip
    X, y, folds = _sklearn_inputs(small_dataset)
    reference = RandomizedSearchCV(
        _sklearn_model(), {"logisticregression__C": loguniform(1e-4, 10.0).to_scipy()},
        n_iter=5, cv=folds, scoring="neg_log_loss", random_state=7,
    ).fit(X, y)  # fmt: skip
    sampled = sorted(p["logisticregression__C"] for p in reference.cv_results_["params"])
    assert sorted(_scores_by_c(result.leaderboard)) == pytest.approx(sampled, rel=1e-12)
    assert result.best_params["C"] == pytest.approx(
        reference.best_params_["logisticregression__C"], rel=1e-12
    )
