"""Artifacts saved before ``shardlearn.models`` became family packages (issue #25) still load
and predict the same.

The fixtures under ``fixtures/families_0_1_0/`` were written by shardlearn 0.1.0 at commit
8284d21, when ``models/`` was 30 flat modules, with xgboost 3.2.0 and torch 2.13.0 (CPU): one
artifact per catalogue model, fitted with ``engine("local", workers=2)`` on 240 seeded rows of
four numeric features (MultinomialNB on Poisson counts; SelfTrainingClassifier with 180 of
the labels set to -1), plus ``pipeline/``, a ``Pipeline(Preprocessor(numeric a, b, c),
PCA(n_components=2), LogisticRegression())`` fitted on an Arrow table. ``expected.json``
holds the first 12 rows and what each model's ``predict``, ``predict_proba``,
``decision_function`` and ``transform`` returned for them.

Every ``model.json`` records the module its class lived in then (``shardlearn.models.linear``,
``shardlearn.models.boosting``, ...); the loader resolves the class by the catalogue's type
name and never imports the recorded module, so these load whatever the module is called now.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import shardlearn as sl
from shardlearn.models import MODELS, Pipeline

FIXTURES = Path(__file__).parent / "fixtures" / "families_0_1_0"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
NEEDS = {"mlp": "torch", "xgboost": "xgboost"}


def _load(name: str):
    needed = NEEDS.get(name)
    if needed is not None and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{name} needs the {needed} extra")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = sl.load(FIXTURES / name)
    assert caught == []
    return model


def _assert_same(name: str, model, inputs) -> None:
    outputs = EXPECTED["outputs"][name]
    assert outputs  # the fixture recorded at least one method's output
    for method, expected in outputs.items():
        got = np.asarray(getattr(model, method)(inputs))
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-9, atol=1e-12)
        else:
            np.testing.assert_array_equal(got, np.asarray(expected))


def test_there_is_a_fixture_for_every_catalogue_model():
    assert set(EXPECTED["outputs"]) == {*MODELS, "pipeline"} - {"convnet"}


@pytest.mark.parametrize("name", sorted(set(EXPECTED["outputs"]) - {"pipeline"}))
def test_a_model_saved_before_the_family_move_predicts_the_same(name):
    recorded = json.loads((FIXTURES / name / "model.json").read_text())["model"]
    assert recorded["module"].count(".") == 2  # a flat module of the old layout
    model = _load(name)
    assert type(model) is MODELS[name]
    inputs = EXPECTED["counts"] if name == "multinomial_nb" else EXPECTED["X"]
    _assert_same(name, model, np.asarray(inputs))


def test_a_pipeline_saved_before_the_family_move_predicts_the_same():
    pipeline = _load("pipeline")
    assert type(pipeline) is Pipeline
    assert [type(step).__name__ for step in pipeline.named_steps.values()] == [
        "Preprocessor",
        "PCA",
        "LogisticRegression",
    ]
    _assert_same("pipeline", pipeline, pa.Table.from_pylist(EXPECTED["rows"]))
