"""GradientBoostingClassifier renamed XGBoostClassifier (issue #25): the old name is a deprecated
alias for one release, and artifacts saved under the old name still load.

The fixtures under ``fixtures/xgboost_0_1_0/`` were written by shardlearn 0.1.0 at commit
b95a135 (before the rename), with xgboost 3.2.0: ``model/`` is a bare
``GradientBoostingClassifier(n_estimators=3, max_depth=2)`` fitted on arrays, ``pipeline/`` a
``Pipeline(Preprocessor.auto(schema), GradientBoostingClassifier(...))`` fitted on a dataset of
columns ``a``, ``b`` (numeric) and ``c`` (categorical); ``expected.json`` holds the inputs and
the probabilities that code predicted for them.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.base import clone

import shardlearn as sl
import shardlearn.models
from shardlearn.engine import engine
from shardlearn.exceptions import ArtifactError
from shardlearn.models import MODELS, Pipeline, XGBoostClassifier, model_class_by_type

FIXTURES = Path(__file__).parent / "fixtures" / "xgboost_0_1_0"


def _uses_of_the_old_name() -> dict[str, object]:
    """Each way a user can reach the old name, as a function doing exactly that once."""

    def attribute():
        return sl.GradientBoostingClassifier

    def models_attribute():
        return shardlearn.models.GradientBoostingClassifier

    def from_shardlearn():
        from shardlearn import GradientBoostingClassifier

        return GradientBoostingClassifier

    def from_models():
        from shardlearn.models import GradientBoostingClassifier

        return GradientBoostingClassifier

    def construct():
        return sl.GradientBoostingClassifier(n_estimators=3)

    uses = (attribute, models_attribute, from_shardlearn, from_models, construct)
    return {use.__name__: use for use in uses}


def _recorded(use) -> tuple[object, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = use()
    return value, caught


@pytest.mark.parametrize("use", list(_uses_of_the_old_name()))
def test_each_use_of_the_old_name_warns_exactly_once(use):
    value, caught = _recorded(_uses_of_the_old_name()[use])
    assert [w.category for w in caught] == [FutureWarning]
    message = str(caught[0].message)
    assert "XGBoostClassifier" in message and "removed in shardlearn 0.2.0" in message
    assert caught[0].filename == __file__  # points at the user's line, not at shardlearn
    assert value is XGBoostClassifier or type(value) is XGBoostClassifier


def test_the_alias_is_not_cached_so_every_use_warns():
    def twice():
        return sl.GradientBoostingClassifier, sl.GradientBoostingClassifier

    _, caught = _recorded(twice)
    assert [w.category for w in caught] == [FutureWarning, FutureWarning]


def test_the_new_name_and_star_imports_do_not_warn():
    def uses():
        namespace: dict[str, object] = {}
        exec("from shardlearn import *\nfrom shardlearn.models import *", namespace)
        return sl.XGBoostClassifier(), namespace

    (model, namespace), caught = _recorded(uses)
    assert caught == []
    assert namespace["XGBoostClassifier"] is XGBoostClassifier
    assert "GradientBoostingClassifier" not in namespace
    assert "GradientBoostingClassifier" not in sl.__all__ + shardlearn.models.__all__
    assert repr(model) == "XGBoostClassifier()"


def test_the_old_name_behaves_the_same():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    params = {"n_estimators": 4, "max_depth": 3, "verbose": 0}
    with pytest.warns(FutureWarning, match="XGBoostClassifier"):
        old = sl.GradientBoostingClassifier(**params)
    with engine("local", workers=1):
        old.fit(X, y)
        new = XGBoostClassifier(**params).fit(X, y)
    assert type(old) is XGBoostClassifier
    assert old.get_params() == new.get_params()
    np.testing.assert_array_equal(old.predict_proba(X), new.predict_proba(X))


def test_get_params_and_clone_on_the_new_class():
    model = XGBoostClassifier(n_estimators=7, max_depth=2, xgb_params={"max_leaves": 4})
    copy = clone(model)
    assert type(copy) is XGBoostClassifier and copy is not model
    assert copy.get_params() == model.get_params()
    assert copy.get_params()["n_estimators"] == 7
    assert copy.set_params(max_depth=5).max_depth == 5


def test_the_catalogue_resolves_the_old_type_name_by_catalogue_name():
    assert MODELS["xgboost"] is XGBoostClassifier
    assert model_class_by_type("XGBoostClassifier") is XGBoostClassifier
    assert model_class_by_type("GradientBoostingClassifier") is XGBoostClassifier


def _expected() -> dict:
    return json.loads((FIXTURES / "expected.json").read_text())


def _load_without_warnings(path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = sl.load(path)
    assert caught == []  # the user only loads: they never wrote the old name
    return model


def test_a_model_saved_before_the_rename_loads_and_predicts_the_same():
    assert json.loads((FIXTURES / "model" / "model.json").read_text())["model"]["type"] == (
        "GradientBoostingClassifier"
    )
    expected = _expected()
    model = _load_without_warnings(FIXTURES / "model")
    assert type(model) is XGBoostClassifier
    np.testing.assert_array_equal(
        model.predict_proba(np.asarray(expected["X"])), np.asarray(expected["model_proba"])
    )


def test_a_pipeline_saved_before_the_rename_loads_and_predicts_the_same():
    expected = _expected()
    pipeline = _load_without_warnings(FIXTURES / "pipeline")
    assert type(pipeline) is Pipeline and type(pipeline.estimator) is XGBoostClassifier
    rows = pa.Table.from_pylist(expected["rows"])
    np.testing.assert_array_equal(
        pipeline.predict_proba(rows), np.asarray(expected["pipeline_proba"])
    )


def test_resaving_an_old_artifact_records_the_new_name(tmp_path):
    model = _load_without_warnings(FIXTURES / "model")
    sl.save(model, tmp_path / "resaved", sign=False, encrypt=False)
    meta = json.loads((tmp_path / "resaved" / "model.json").read_text())
    assert meta["model"]["type"] == "XGBoostClassifier"
    assert type(_load_without_warnings(tmp_path / "resaved")) is XGBoostClassifier


@pytest.mark.parametrize(
    "type_name",
    ["shardlearn.models.boosting.GradientBoostingClassifier", "boosting.XGBoostClassifier"],
)
def test_a_module_path_as_the_type_is_refused(tmp_path, type_name):
    path = shutil.copytree(FIXTURES / "model", tmp_path / "model")
    meta = json.loads((path / "model.json").read_text())
    meta["model"]["type"] = type_name
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="unknown model type"):
        sl.load(path)
