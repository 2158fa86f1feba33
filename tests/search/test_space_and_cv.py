"""Spaces (Python and YAML, validated) and shard-level folds (stratified, no leakage)."""

from __future__ import annotations

import numpy as np
import pytest

from shardlearn.engine import engine
from shardlearn.exceptions import DataError, SpecError
from shardlearn.models import GaussianNB, Pipeline
from shardlearn.preprocess import Preprocessor
from shardlearn.search import (
    choice,
    fold_views,
    loguniform,
    parse_space,
    randint,
    search,
    shard_folds,
    uniform,
)


def test_yaml_and_python_spaces_parse_to_the_same_thing():
    python = {
        "logistic": {"C": loguniform(1e-3, 1e2), "class_weight": [None, "balanced"]},
        "xgboost": {"max_depth": randint(3, 12), "learning_rate": uniform(0.01, 0.3)},
    }
    yaml_like = {"logistic": {"C": {"loguniform": [1e-3, 1e2]}, "class_weight": [None, "balanced"]},
                 "xgboost": {"max_depth": {"randint": [3, 12]},
                             "learning_rate": {"uniform": [0.01, 0.3]}}}  # fmt: skip
    models = ["logistic", "xgboost"]
    assert parse_space(python, models) == parse_space(yaml_like, models)


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(SpecError, match=r"'max_dept'.*max_depth"):
        parse_space({"max_dept": [3]}, ["xgboost"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: loguniform(0, 1), "0 < low < high"),
        (lambda: uniform(2, 1), "low < high"),
        (lambda: randint(1.5, 3), "integers"),
        (lambda: choice([]), "non-empty"),
    ],
)
def test_bad_distributions_are_clear_errors(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def test_grid_of_a_continuous_distribution_is_a_clear_error():
    with pytest.raises(SpecError, match="list of values"):
        search(objective=_score, space={"x": uniform(0, 1)}, strategy="grid")


def _score(params, budget):
    return 0.0


def test_fold_i_holds_the_train_shards_with_index_congruent_to_i(small_dataset):
    assert shard_folds(small_dataset, 2) == [[0, 2], [1, 3]]
    for fold, view in enumerate(fold_views(small_dataset, 2)):
        assert [s.index for s in view.shards("valid")] == [fold, fold + 2]
        assert [s.index for s in view.shards("train")] == [1 - fold, 3 - fold]
    with pytest.raises(DataError, match="at least 5"):
        shard_folds(small_dataset, 5)


def test_stratified_dataset_gives_stratified_folds(small_dataset):
    overall = small_dataset.class_counts("train")
    share = overall["1"] / sum(overall.values())
    for view in fold_views(small_dataset, 2):
        counts = view.class_counts("valid")
        assert counts["1"] == pytest.approx(share * sum(counts.values()), abs=2)


def test_preprocessing_is_fitted_on_the_fold_training_shards_only(small_dataset):
    view = fold_views(small_dataset, 2)[0]
    with engine("local", workers=1) as eng:
        model = Pipeline(Preprocessor.auto(view.schema), GaussianNB()).fit(view, engine=eng)
    train = view.read("train")
    held_out = view.read("valid")
    expected = np.mean(train["x0"].to_numpy())
    state, arrays = model.preprocessor.get_state()
    centers = [v for k, v in arrays.items() if k.endswith("center_")]
    assert any(np.isclose(c[0], expected, rtol=1e-9) for c in centers if c.size)
    assert not np.isclose(expected, np.mean(held_out["x0"].to_numpy()), rtol=1e-3)


def test_halving_scales_boosting_rounds_and_refits_with_the_full_budget(split_dataset):
    with engine("local", workers=1) as eng:
        result = search(split_dataset, models="xgboost", strategy="halving", trials=3, eta=3,
                        rungs=2, space={"max_depth": [1, 2, 3], "n_estimators": 9},
                        metric="roc_auc", engine=eng)  # fmt: skip
    budgets = sorted({(t["rung"], t["budget_value"]) for t in result.trials})
    assert budgets == [(0, 3), (1, 9)]
    assert result.best_params["n_estimators"] == 9
    assert result.best_model.estimator.n_estimators == 9
    assert 0.5 < result.test_metrics["roc_auc"] <= 1


def test_time_budgets_read_like_durations():
    from shardlearn.search import parse_duration

    assert [parse_duration(v) for v in (90, "90s", "10m", "1.5h", None)] == [
        90.0, 90.0, 600.0, 5400.0, None,
    ]  # fmt: skip
    with pytest.raises(SpecError, match="10m"):
        parse_duration("ten minutes")
