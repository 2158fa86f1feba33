"""A Pipeline's steps: ``named_steps``, ``importances()`` forwarded to the final step, and the
estimator named in ``models list`` / ``models show`` (issue #22 finding 7)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import PCA, LogisticRegression, Pipeline, RandomForestClassifier
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import Registry, load
from shardlearn.testing import run_cli


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Three pipelines (forest, PCA + logistic, logistic) registered as forest, pca, lr."""
    root = tmp_path_factory.mktemp("steps")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    colour = rng.choice(["red", "blue"], 400)
    y = np.where(x[:, 0] + (colour == "red") + rng.normal(0, 0.5, 400) > 0.5, "yes", "no")
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "colour": colour, "y": y})
    ds = write_dataset(table, root / "ds", "y", partitions=2, split=(0.7, 0.0, 0.3))
    registry = Registry(root / "models")
    forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)
    with engine("local", workers=1):
        for name, steps in (
            ("forest", [forest]),
            ("pca", [PCA(n_components=2), LogisticRegression()]),
            ("lr", [LogisticRegression()]),
        ):
            registry.register(Pipeline(Preprocessor.auto(ds.schema), *steps).fit(ds), name)
    return registry


def test_pipeline_forwards_importances_with_preprocessed_feature_names(registered):
    model = registered.load("forest:1")
    scores = model.importances()
    assert scores == model.estimator.importances()
    assert list(scores["gain"]) == list(model.preprocessor.feature_names_out_)
    assert any(name.startswith("colour") for name in scores["gain"])
    assert sum(scores["gain"].values()) == pytest.approx(1.0)


def test_importances_exist_only_when_the_final_step_has_them(registered):
    model = registered.load("lr:1")
    assert not hasattr(model, "importances")
    with pytest.raises(AttributeError, match="LogisticRegression has no importances"):
        model.importances()


def test_named_steps_like_scikit_learn(registered):
    model = registered.load("pca:1")
    steps = model.named_steps
    assert list(steps) == ["preprocessor", "pca", "logisticregression"]
    assert steps.pca is model.transformers[0] and steps["logisticregression"] is model.estimator
    twice = Pipeline(Preprocessor({"a": {"kind": "numeric"}}), PCA(2), PCA(1), LogisticRegression())
    assert list(twice.named_steps) == ["preprocessor", "pca-1", "pca-2", "logisticregression"]


def test_models_list_and_show_name_the_estimator(capsys, registered):
    code, out, err = run_cli(capsys, "models", "list", "--registry", str(registered.root))
    assert code == 0, err
    for shown in ("Pipeline(RandomForestClassifier)", "Pipeline(PCA, LogisticRegression)",
                  "Pipeline(LogisticRegression)"):  # fmt: skip
        assert shown in out
    code, out, err = run_cli(
        capsys, "models", "show", "forest:1", "--registry", str(registered.root), "--json"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert (
        shown["model"] == "Pipeline(RandomForestClassifier)" and shown["model_type"] == "Pipeline"
    )
    gain = load(shown["path"]).importances()["gain"]
    assert {row["feature"]: row["gain"] for row in shown["feature_importances"]} == {
        name: gain[name] for name in sorted(gain, key=lambda name: -gain[name])[:15]
    }
