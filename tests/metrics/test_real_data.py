"""evaluate() of real shardlearn Pipelines on a real dataset (Adult) equals sklearn.metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardlearn.data.ingest import ingest
from shardlearn.engine import engine
from shardlearn.metrics import evaluate
from shardlearn.models import GaussianNB, LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor

from .test_functions import assert_matches_sklearn


@pytest.mark.slow
@pytest.mark.parametrize("estimator", [GaussianNB, LogisticRegression], ids=lambda c: c.__name__)
def test_adult_pipeline_metrics_equal_sklearn_on_its_predictions(
    estimator, shared_datasets: Path, tmp_path: Path
) -> None:
    ds = ingest(
        shared_datasets / "adult" / "adult.data", "Y", tmp_path / "adult",
        partitions=6, strategy="stratified", split=(0.8, 0.0, 0.2),
    )  # fmt: skip
    with engine("local", workers=2) as eng:
        model = Pipeline(Preprocessor.auto(ds.schema), estimator()).fit(ds, engine=eng)
        report = evaluate(model, ds, split="test", engine=eng)
    test = ds.read("test")
    y = np.array([ds.classes.index(v) for v in test.column("Y").to_pylist()])
    proba = np.asarray(model.predict_proba(test.drop_columns(["Y"])), dtype=np.float64)
    assert report.metrics["rows"] == test.num_rows > 6000
    assert_matches_sklearn(report.metrics, y, proba)
    assert report.model["estimator"] == estimator.__name__
    assert report.title == f"Evaluation of Pipeline({estimator.__name__})"
    assert report.metrics["roc_auc"] > 0.8  # the model learned something: the check is not vacuous
