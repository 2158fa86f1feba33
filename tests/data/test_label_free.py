"""Datasets without a label column (``ingest`` without ``--label``), for clustering and PCA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from shardlearn.cli import app
from shardlearn.data import Dataset, ingest, write_dataset
from shardlearn.exceptions import SchemaError

runner = CliRunner()
ALLOWED_STRATEGIES = ["random", "hash:key", "range:t"]


def _points_csv(path: Path, n: int = 240, bad_rows: tuple[int, ...] = ()) -> Path:
    """``id,key,t,a,b``: no label column; rows in ``bad_rows`` have an unparseable ``a``."""
    rng = np.random.default_rng(7)
    lines = ["id,key,t,a,b"]
    for i in range(n):
        a = "oops" if i in bad_rows else f"{rng.normal():.4f}"
        lines.append(f"{i},{i % 40},{i * 0.5:.1f},{a},{rng.normal(3.0):.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _ids(ds: Dataset, split: str | None) -> list[int]:
    return sorted(v for s in ds.shards(split) for v in s.read(["id"])["id"].to_pylist())


def _check_label_free(ds: Dataset, rows_written: int) -> None:
    m = ds.manifest
    assert ds.label is None and ds.schema.label is None and not ds.has_label
    assert ds.classes == [] and not ds.has_unlabeled
    assert ds.schema.names == ["id", "key", "t", "a", "b"]
    assert [c.name for c in ds.schema.feature_columns] == ds.schema.names
    assert m["rows_read"] == m["rows_written"] + m["rows_rejected"]
    assert m["rows_written"] == rows_written == ds.num_rows() == ds.num_rows(None)
    assert sum(ds.num_rows(split) for split in ds.splits) == rows_written
    assert all(shard.class_counts == {} for shard in ds.shards(None))
    assert all(ds.class_counts(split) == {} for split in ds.splits)
    assert ds.verify() == []


@pytest.mark.parametrize("strategy", ALLOWED_STRATEGIES)
def test_ingest_without_a_label_puts_every_row_in_exactly_one_shard(tmp_path, strategy):
    source = _points_csv(tmp_path / "points.csv")
    ds = ingest(source, None, tmp_path / "ds", partitions=3, strategy=strategy, seed=4)
    assert ds.splits == ["train", "valid", "test"]
    assert _ids(ds, None) == list(range(240))  # no row lost, none written twice
    _check_label_free(ds, 240)
    assert Dataset.open(tmp_path / "ds").label is None  # the manifest says so too
    if strategy == "hash:key":  # all rows with the same key in one shard of a split
        for split in ds.splits:
            homes: dict[int, set[int]] = {}
            for shard in ds.shards(split):
                for key in set(shard.read(["key"])["key"].to_pylist()):
                    homes.setdefault(key, set()).add(shard.index)
            assert all(len(shards) == 1 for shards in homes.values())


def test_label_free_ingest_is_random_by_default_and_deterministic(tmp_path):
    source = _points_csv(tmp_path / "points.csv")
    first = ingest(source, None, tmp_path / "one", partitions=2)
    second = ingest(source, None, tmp_path / "two", partitions=2, strategy="random")
    assert first.manifest["strategy"] == "random"
    assert [s.sha256 for s in first.shards(None)] == [s.sha256 for s in second.shards(None)]


def test_label_free_ingest_still_rejects_unparseable_rows(tmp_path):
    source = _points_csv(tmp_path / "points.csv", bad_rows=(5, 77))
    ds = ingest(source, None, tmp_path / "ds", partitions=2,
                kinds={"a": "numeric"}, max_reject_rate=0.1)  # fmt: skip
    assert ds.manifest["rows_rejected"] == 2
    assert sorted(ds.read_rejects()["line"].to_pylist()) == [7, 79]  # header is line 1
    assert _ids(ds, None) == [i for i in range(240) if i not in (5, 77)]
    _check_label_free(ds, 238)


def test_write_dataset_without_a_label(tmp_path):
    table = pa.table({"id": np.arange(50), "key": np.arange(50) % 5, "t": np.arange(50) * 0.5,
                      "a": np.linspace(0, 1, 50), "b": np.ones(50)})  # fmt: skip
    ds = write_dataset(table, tmp_path / "ds", None, partitions=2, split=(0.6, 0.2, 0.2))
    assert _ids(ds, None) == list(range(50))
    _check_label_free(ds, 50)


def test_stratified_and_allow_unlabeled_need_a_label_and_say_what_to_do(tmp_path):
    source = _points_csv(tmp_path / "points.csv")
    with pytest.raises(SchemaError, match="stratified.*needs a label column: pass --label COLUMN"):
        ingest(source, None, tmp_path / "s", strategy="stratified")
    with pytest.raises(SchemaError, match="hash:COL or range:COL for a dataset without a label"):
        write_dataset(pa.table({"a": [1.0, 2.0]}), tmp_path / "w", None, strategy="stratified")
    with pytest.raises(SchemaError, match="needs a label column: pass --label COLUMN, or drop"):
        ingest(source, None, tmp_path / "u", allow_unlabeled=True)
    assert not any((tmp_path / name).exists() for name in ("s", "w", "u"))


def test_cli_ingest_without_label_and_describe_say_there_is_no_label(tmp_path):
    source = _points_csv(tmp_path / "points.csv")
    out = tmp_path / "ds"
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), "--partitions", "2"])
    assert result.exit_code == 0, result.output
    assert "rows_read=240 = rows_written=240 + rows_rejected=0" in result.output
    assert "no label column" in result.output
    described = runner.invoke(app, ["describe", str(out)])
    assert described.exit_code == 0, described.output
    assert "no label column" in described.output and "kmeans|pca" in described.output
    assert "(label)" not in described.output
    as_json = runner.invoke(app, ["describe", str(out), "--json", "--verify"])
    assert as_json.exit_code == 0, as_json.output
    info = json.loads(as_json.output)
    assert info["label"] is None and info["has_label"] is False and info["classes"] == []
    assert info["schema"]["label"] is None and info["verify"]["ok"]
    assert sum(s["rows"] for s in info["splits"].values()) == 240
    assert all(s["class_counts"] == {} for s in info["splits"].values())


def test_cli_ingest_without_label_refuses_stratified_and_allow_unlabeled(tmp_path):
    source = str(_points_csv(tmp_path / "points.csv"))
    out = str(tmp_path / "ds")
    stratified = runner.invoke(app, ["ingest", source, "--out", out, "--strategy", "stratified"])
    assert stratified.exit_code == 1
    assert "pass --label COLUMN" in str(stratified.exception) + stratified.output
    unlabeled = runner.invoke(app, ["ingest", source, "--out", out, "--allow-unlabeled"])
    assert unlabeled.exit_code == 1
    assert "--allow-unlabeled" in str(unlabeled.exception) + unlabeled.output
    assert not Path(out).exists()
