"""``shardlearn demo``: generated loans through the whole pipeline, as ``make demo`` runs it."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from shardlearn.cli import app
from shardlearn.data import Dataset
from shardlearn.registry import Registry


@pytest.mark.filterwarnings("ignore::shardlearn.metrics.functions.UndefinedMetricWarning")
def test_demo_generates_ingests_trains_registers_and_predicts(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "--rows", "3000", "--out", str(out), "--partitions", "2", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    dataset = Dataset.open(out / "run" / "dataset")
    m = dataset.manifest
    assert m["rows_read"] == 3000 == m["rows_written"] + m["rows_rejected"]
    assert 0 < m["rows_rejected"] < 60  # the generator writes ~0.5% malformed lines
    assert dataset.classes == ["no", "yes"] and m["strategy"] == "stratified"
    assert dataset.schema["description"].kind == "text"
    production = Registry(out / "run" / "registry").get("loans", stage="production")
    assert production.model_type == "Pipeline"
    predictions = pq.read_table(out / "run" / "predictions" / "scores.parquet")
    assert predictions.num_rows == dataset.num_rows("test")
    assert {"prediction", "proba_no", "proba_yes"} <= set(predictions.column_names)
    assert (out / "run" / "reports" / "leaderboard.html").exists()
    assert "Leaderboard" in result.output and "shardlearn serve" in result.output
