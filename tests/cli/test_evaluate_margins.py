"""``evaluate`` on margin models: a default SGDClassifier (hinge loss) has no predict_proba and
is scored from its decision_function, from Python and from the CLI (issue #22 finding 6)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.metrics import evaluate
from shardlearn.models import Pipeline, SGDClassifier
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import Registry, save
from shardlearn.testing import run_cli


@pytest.fixture(scope="module")
def hinge_sgd(tmp_path_factory):
    """A default SGDClassifier pipeline, saved and registered, and its test-split truth."""
    root = tmp_path_factory.mktemp("margins")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 3))
    y = np.where(x @ [1.0, -1.5, 0.5] + rng.normal(0, 1.0, 800) > 0, "yes", "no")
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
    ds = write_dataset(table, root / "ds", "y", partitions=3, split=(0.6, 0.0, 0.4))
    with engine("local", workers=1):
        model = Pipeline(Preprocessor.auto(ds.schema), SGDClassifier(random_state=0)).fit(ds)
    assert model.estimator.loss == "hinge" and not hasattr(model, "predict_proba")
    saved = save(model, root / "sgd")
    Registry(root / "models").register(model, "sgd")
    test = pa.concat_tables(s.read() for s in sorted(ds.shards("test"), key=lambda s: s.index))
    truth = test.column("y").to_numpy(zero_copy_only=False)
    margins = model.decision_function(test.drop_columns(["y"]))
    expected = {
        "roc_auc": roc_auc_score(truth == "yes", margins),
        "accuracy": accuracy_score(truth, model.predict(test.drop_columns(["y"]))),
    }
    return ds, model, str(saved), root / "models", expected


def test_python_evaluate_scores_hinge_sgd_from_its_margins(hinge_sgd):
    ds, model, _, _, expected = hinge_sgd
    with engine("local", workers=1):
        report = evaluate(model, ds, split="test")
    assert report["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-12)
    assert report["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert report.evaluation["scores"].startswith("decision_function")


@pytest.mark.parametrize("where", ["artifact", "registry"])
def test_cli_evaluates_a_saved_or_registered_hinge_sgd(capsys, hinge_sgd, where):
    ds, _, saved, registry, expected = hinge_sgd
    reference = saved if where == "artifact" else "sgd:1"
    options = ["--registry", str(registry), "--workers", "1"]
    code, out, err = run_cli(capsys, "evaluate", reference, str(ds.uri), *options, "--json", "-")
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert metrics["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-12)
    code, out, err = run_cli(capsys, "evaluate", reference, str(ds.uri), *options)
    assert code == 0, err
    assert f"{expected['roc_auc']:.4f}" in out
    # Log loss and Brier of squashed margins are shown, and said not to be of probabilities.
    assert out.count("sigmoid of margins, not probabilities") == 3
