"""Leak-free selection: early stopping never watches scored rows; the refit repeats the rounds.

Issue #20, finding 2: the fold being scored was the trainer's ``valid`` split, so XGBoost's
``early_stopping_rounds`` and the MLP's early stopping stopped on the rows the trial was then
scored on, and the refit (no valid split) trained a different number of rounds -- or failed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import Pipeline, XGBoostClassifier
from shardlearn.preprocess import Preprocessor
from shardlearn.search import fold_views, holdout_view, search, shard_folds, trainer_view
from tests.search.conftest import make_table

#: Boosting that overfits 360 noisy rows quickly, so early stopping stops well before 80.
XGB = {"n_estimators": 80, "learning_rate": 0.5, "max_depth": 4, "early_stopping_rounds": 3}
SEED = 5


def _uris(view, split: str) -> set[str]:
    return {s.uri for s in view.shards(split)} if split in view.splits else set()


def _views(dataset, cv):
    return fold_views(dataset, cv) if cv else [holdout_view(dataset)]


@pytest.mark.parametrize(("fixture", "cv"), [("small_dataset", 2), ("split_dataset", None)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_trainer_is_never_given_the_scored_shards(request, fixture, cv, seed):
    dataset = request.getfixturevalue(fixture)
    for fold, view in enumerate(_views(dataset, cv)):
        scored = _uris(view, "valid")
        given, inner = trainer_view(view, seed, fold, early_stopping=True)
        watched = _uris(given, "valid")
        assert scored and watched and not watched & scored
        # Early stopping watches some of the fold's own training shards; nothing else is given.
        assert _uris(given, "train") | watched == _uris(view, "train")
        assert not _uris(given, "train") & watched and "test" not in given.splits
        assert {s.index for s in given.shards("valid")} == set(inner)
        assert trainer_view(view, seed, fold, early_stopping=True)[1] == inner
        plain, none = trainer_view(view, seed, fold, early_stopping=False)
        assert none == [] and plain.splits == ["train"]
        assert _uris(plain, "train") == _uris(view, "train")


def _fold_fit(view, fit_view, params):
    with engine("local", workers=1) as eng:
        estimator = XGBoostClassifier(**params)
        model = Pipeline(Preprocessor.auto(view.schema), estimator).fit(fit_view, engine=eng)
        proba = model.predict_proba(view.read("valid"))[:, 1]
    y = view.read("valid")["y"].to_numpy()
    log_loss = -np.mean(np.log(np.where(y == 1, proba, 1 - proba)))
    return log_loss, estimator.n_estimators_


@pytest.mark.parametrize(("fixture", "cv"), [("small_dataset", 2), ("split_dataset", None)])
def test_xgboost_trials_stop_on_training_shards_and_score_on_the_held_out_ones(
    request, fixture, cv
):
    dataset = request.getfixturevalue(fixture)
    with engine("local", workers=1) as eng:
        result = search(dataset, models="xgboost", space=XGB, strategy="grid", trials=None, cv=cv,
                        metric="log_loss", seed=SEED, engine=eng, refit=False)  # fmt: skip
    (trial,) = result.trials
    rounds = []
    for fold, view in enumerate(_views(dataset, cv)):
        leaky, _ = _fold_fit(view, view, XGB)  # stopped on the very rows it is scored on
        assert trial["fold_scores"][fold] != pytest.approx(leaky, rel=1e-3)
        honest, kept = _fold_fit(view, trainer_view(view, SEED, fold, True)[0], XGB)
        assert trial["fold_scores"][fold] == pytest.approx(honest, rel=1e-6)
        rounds.append(kept)
    record = trial["early_stopping"]
    assert record["param"] == "n_estimators" and record["note"] is None
    assert record["rounds"] == rounds and max(rounds) < XGB["n_estimators"]
    assert record["selected"] == int(np.floor(np.median(rounds) + 0.5))
    # The shards early stopping watched are training shards of their fold, never scored ones.
    folds = shard_folds(dataset, cv) if cv else [[]]
    for watched, held_out in zip(record["watched"], folds, strict=True):
        assert watched and not set(watched) & set(held_out)


def test_the_refit_trains_the_boosting_rounds_selected_by_the_folds(small_dataset, tmp_path):
    with engine("local", workers=1) as eng:
        result = search(small_dataset, models="xgboost", space=XGB, strategy="grid",
                        trials=None, cv=2, metric="log_loss", seed=SEED, engine=eng,
                        out=tmp_path / "out")  # fmt: skip
    record = result.leaderboard[0]["early_stopping"]
    selected = record["selected"]
    assert selected == int(np.floor(np.median(record["rounds"]) + 0.5)) < XGB["n_estimators"]
    assert result.refit_params == {**XGB, "n_estimators": selected, "early_stopping_rounds": None}
    fitted = result.best_model.estimator
    assert fitted.n_estimators == fitted.n_estimators_ == selected
    assert fitted.early_stopping_rounds is None
    summary = json.loads((tmp_path / "out" / "result.json").read_text())
    assert summary["refit_params"]["n_estimators"] == selected
    assert summary["leaderboard"][0]["early_stopping"]["rounds"] == record["rounds"]


def test_the_refit_trains_the_mlp_epochs_selected_by_the_folds(small_dataset):
    pytest.importorskip("torch")
    space = {"hidden_layer_sizes": [(32, 32)], "epochs": 40, "learning_rate": 0.05,
             "n_iter_no_change": 3, "random_state": 0, "verbose": False}  # fmt: skip
    with engine("local", workers=1) as eng:
        result = search(small_dataset, models="mlp", space=space, strategy="grid", trials=None,
                        cv=2, metric="log_loss", seed=SEED, engine=eng)  # fmt: skip
    # The scored models stopped early, so the refit must stop early too (not run 40 epochs).
    assert result.best_model.estimator.n_iter_ < space["epochs"]
    record = result.trials[0]["early_stopping"]
    assert record["param"] == "epochs" and len(record["rounds"]) == 2
    selected = record["selected"]
    assert result.refit_params["epochs"] == selected
    assert result.refit_params["early_stopping"] is False
    assert result.best_model.estimator.n_iter_ == selected


def test_too_few_shards_switch_early_stopping_off_for_the_trial_and_the_refit(tmp_path):
    # Two train shards and two folds: each fold trains on one shard, nothing to carve.
    dataset = write_dataset(make_table(), tmp_path / "two", label="y", partitions=2,
                            strategy="stratified")  # fmt: skip
    with engine("local", workers=1) as eng:
        result = search(dataset, models="xgboost", space=XGB, strategy="grid", trials=None,
                        cv=2, metric="log_loss", seed=SEED, engine=eng)  # fmt: skip
    record = result.trials[0]["early_stopping"]
    assert record["watched"] == [] and record["selected"] is None
    assert "early stopping off" in record["note"]
    assert result.refit_params == {**XGB, "early_stopping_rounds": None}
    assert result.best_model.estimator.n_estimators_ == XGB["n_estimators"]
    plain = {**XGB, "early_stopping_rounds": None}
    for fold, view in enumerate(fold_views(dataset, 2)):
        score, rounds = _fold_fit(view, trainer_view(view, SEED, fold, False)[0], plain)
        assert result.trials[0]["fold_scores"][fold] == pytest.approx(score, rel=1e-6)
        assert rounds == XGB["n_estimators"]


def test_halving_refits_the_rounds_its_top_rung_selected(small_dataset):
    space = {**XGB, "max_depth": [2, 3, 4]}
    with engine("local", workers=1) as eng:
        result = search(small_dataset, models="xgboost", space=space, strategy="halving",
                        trials=3, eta=3, rungs=2, cv=2, metric="log_loss", seed=SEED,
                        engine=eng)  # fmt: skip
    caps = {t["rung"]: t["budget_value"] for t in result.trials}
    assert caps == {0: 27, 1: 80}
    for trial in result.trials:  # early stopping stops within each rung's budget
        assert max(trial["early_stopping"]["rounds"]) <= caps[trial["rung"]]
    best = result.leaderboard[0]
    assert best["rung"] == 1 and result.best_params["n_estimators"] == 80
    selected = best["early_stopping"]["selected"]
    assert result.refit_params["n_estimators"] == selected
    assert result.best_model.estimator.n_estimators_ == selected
