"""The public names of ``shardlearn.models`` and ``shardlearn`` survive the family packages
(issue #25): the list below is ``shardlearn.models.__all__`` as it was before the move."""

from __future__ import annotations

import importlib

import pytest

import shardlearn as sl
import shardlearn.models

BEFORE_THE_MOVE = [
    "MODELS",
    "ConvNetClassifier",
    "ExtraTreesClassifier",
    "GaussianNB",
    "KMeans",
    "LinearSVC",
    "LogisticRegression",
    "MLPClassifier",
    "MultinomialNB",
    "PCA",
    "Pipeline",
    "RandomForestClassifier",
    "SGDClassifier",
    "SelfTrainingClassifier",
    "XGBoostClassifier",
    "model_class",
    "model_class_by_type",
    "recording",
    "score_split",
    "timed",
]


#: Public names added since the move (issue #23: a search's refit takes the cores its trials free).
ADDED_SINCE = ["sharing_cores"]


def test_all_is_unchanged():
    assert sorted(shardlearn.models.__all__) == sorted(BEFORE_THE_MOVE + ADDED_SINCE)


@pytest.mark.parametrize("name", BEFORE_THE_MOVE)
def test_each_name_imports_from_shardlearn_models(name):
    namespace: dict[str, object] = {}
    exec(f"from shardlearn.models import {name}", namespace)
    value = namespace[name]
    assert value is getattr(shardlearn.models, name)
    if name in sl.__all__:
        assert getattr(sl, name) is value  # shardlearn.LogisticRegression is the same class


@pytest.mark.parametrize("name", [n for n in BEFORE_THE_MOVE if n[0].isupper() and n != "MODELS"])
def test_each_class_lives_in_a_models_module_that_exports_it(name):
    cls = getattr(shardlearn.models, name)
    assert getattr(importlib.import_module(cls.__module__), name) is cls
    assert cls.__module__.startswith("shardlearn.models.")
