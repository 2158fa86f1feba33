"""The call a pipeline ``search`` stage makes: plain arguments in, a JSON-able dict out."""

from __future__ import annotations

import json

from shardlearn.engine import engine
from shardlearn.registry import load
from shardlearn.search import search


def test_search_stage_call_returns_json_with_the_saved_best_model(split_dataset, tmp_path):
    with engine("local", workers=1):
        result = search(
            split_dataset.uri, models=["gaussian_nb", "logistic"],
            space={"gaussian_nb": {"var_smoothing": [1e-9, 1e-2]}, "logistic": {"C": [0.1, 1.0]}},
            strategy="grid", trials=None, cv=2, metric="roc_auc", seed=0, out=tmp_path / "out",
        )  # fmt: skip
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["model"] == str(tmp_path / "out" / "best_model")
    assert summary["best_params"] == result.leaderboard[0]["params"]
    assert len(summary["leaderboard"]) == 4
    assert summary["leaderboard"][0]["score"] >= summary["leaderboard"][-1]["score"]
    model = load(summary["model"])
    test = split_dataset.read("test")
    assert model.predict_proba(test).shape == (test.num_rows, 2)
    assert summary["test_metrics"]["roc_auc"] == result.test_metrics["roc_auc"]
    assert json.loads((tmp_path / "out" / "result.json").read_text()) == summary
