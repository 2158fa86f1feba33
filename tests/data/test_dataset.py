"""Dataset format, write_dataset and the Dataset reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shardlearn.data import Column, Dataset, Schema, Shard, write_dataset
from shardlearn.exceptions import DataError, SchemaError


def _table(n: int = 1000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "row_id": np.arange(n),
            "x": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], n),
            "y": rng.choice(["no", "yes"], n, p=[0.7, 0.3]),
        }
    )


def test_schema_round_trips_through_dict() -> None:
    schema = Schema((Column("x", "numeric", "float64"), Column("y", "categorical", "string")), "y")
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    assert [c.name for c in schema.feature_columns] == ["x"]
    assert schema["y"].kind == "categorical"
    assert schema.names == ["x", "y"]


def test_schema_rejects_unknown_kind_dtype_and_label() -> None:
    with pytest.raises(SchemaError, match="unknown kind 'number'"):
        Column("x", "number", "float64")  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="Unknown dtype 'float99'"):
        Column("x", "numeric", "float99")
    with pytest.raises(SchemaError, match="Unknown label column 'z'"):
        Schema((Column("x", "numeric", "float64"),), "z")
    with pytest.raises(KeyError, match="Did you mean 'x'"):
        Schema((Column("x", "numeric", "float64"),), None)["xx"]


def test_write_dataset_then_open_reads_every_row(tmp_path: Path) -> None:
    table = _table()
    written = write_dataset(table, tmp_path / "ds", label="y", partitions=3, split=(0.8, 0.1, 0.1))
    ds = Dataset.open(tmp_path / "ds")
    assert ds.manifest == written.manifest
    assert ds.splits == ["train", "valid", "test"]
    assert ds.classes == ["no", "yes"]
    assert ds.num_rows() == 1000
    assert ds.manifest["rows_read"] == ds.manifest["rows_written"] == 1000
    ids = np.concatenate([ds.read(s, columns=["row_id"])["row_id"].to_numpy() for s in ds.splits])
    assert sorted(ids) == list(range(1000))
    for shard in ds.shards("train"):
        assert isinstance(shard, Shard)
        assert shard.read().num_rows == shard.rows
        assert sum(b.num_rows for b in shard.iter_batches(batch_size=7)) == shard.rows
        assert sum(shard.class_counts.values()) == shard.rows
    assert sum(b.num_rows for b in ds.iter_batches("valid", batch_size=10)) == ds.num_rows("valid")
    assert ds.read("train").schema.field("x").type == pa.float64()


def test_label_keeps_native_integer_values(tmp_path: Path) -> None:
    table = pa.table({"x": [0.1, 0.2, 0.3, 0.4], "y": [2, 1, 2, 1]})
    ds = write_dataset(table, tmp_path / "ds", label="y", partitions=2)
    assert ds.classes == [1, 2]
    assert ds.read()["y"].type == pa.int64()
    assert ds.schema["y"].kind == "categorical"


def test_dataset_opens_from_file_uri(tmp_path: Path) -> None:
    write_dataset(_table(50), tmp_path / "ds", label="y", partitions=2)
    ds = Dataset.open(f"file://{tmp_path / 'ds'}")
    assert ds.uri.startswith("file://")
    assert ds.shards()[0].uri.startswith("file://")
    assert ds.read().num_rows == 50


def test_same_seed_same_dataset_other_seed_other_dataset(tmp_path: Path) -> None:
    table = _table(500)
    hashes = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        ds = write_dataset(
            table, tmp_path / name, "y", partitions=4, strategy="stratified", seed=seed
        )
        hashes.append([s.sha256 for s in ds.shards(None)])
    assert hashes[0] == hashes[1]
    assert hashes[0] != hashes[2]


def test_existing_dataset_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    write_dataset(_table(100), tmp_path / "ds", "y", partitions=2)
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        write_dataset(_table(30), tmp_path / "ds", "y", partitions=2)
    assert Dataset.open(tmp_path / "ds").num_rows() == 100
    write_dataset(_table(30), tmp_path / "ds", "y", partitions=2, overwrite=True)
    assert Dataset.open(tmp_path / "ds").num_rows() == 30
    assert not [p for p in (tmp_path / "ds").iterdir() if p.name.startswith(".")]


def test_non_dataset_directory_is_not_overwritten_silently(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and is not a dataset"):
        write_dataset(_table(10), tmp_path / "out", "y")


def test_open_without_manifest_explains(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="manifest.json is missing"):
        Dataset.open(tmp_path / "half")


def test_unknown_split_and_label_errors_name_the_valid_ones(tmp_path: Path) -> None:
    ds = write_dataset(_table(100), tmp_path / "ds", "y", partitions=2)
    with pytest.raises(DataError, match="no 'test' split; it has train"):
        ds.shards("test")
    with pytest.raises(DataError, match="Unknown split 'trian'. Did you mean 'train'"):
        ds.read("trian")
    with pytest.raises(SchemaError, match="Unknown label column 'label'"):
        write_dataset(_table(10), tmp_path / "x", "label")
    with pytest.raises(SchemaError, match="Unknown partitioning strategy 'roundrobin'"):
        write_dataset(_table(10), tmp_path / "x", "y", strategy="roundrobin")
    with pytest.raises(SchemaError, match="Unknown hash column 'nope'"):
        write_dataset(_table(10), tmp_path / "x", "y", strategy="hash:nope")
    with pytest.raises(SchemaError, match="must sum to 1"):
        write_dataset(_table(10), tmp_path / "x", "y", split=(0.5, 0.1))


def test_single_class_label_warns_but_writes(tmp_path: Path) -> None:
    table = pa.table({"x": [1.0, 2.0], "y": ["a", "a"]})
    with pytest.warns(UserWarning, match="single class"):
        ds = write_dataset(table, tmp_path / "ds", "y", partitions=1)
    assert ds.classes == ["a"]


def test_missing_label_values_are_an_error_for_in_memory_tables(tmp_path: Path) -> None:
    table = pa.table({"x": [1.0, 2.0], "y": ["a", None]})
    with pytest.raises(DataError, match="1 missing values"):
        write_dataset(table, tmp_path / "ds", "y")
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_verify_detects_a_changed_shard(tmp_path: Path) -> None:
    ds = write_dataset(_table(200), tmp_path / "ds", "y", partitions=2)
    assert ds.verify() == []
    shard = ds.shards()[0]
    Path(shard.uri).write_bytes(Path(shard.uri).read_bytes() + b"x")
    problems = ds.verify()
    assert len(problems) == 1 and shard.path in problems[0]


def test_text_columns_are_recognised(tmp_path: Path) -> None:
    words = ["loan for a new car", "paying off my credit cards", "home repair after storm"]
    table = pa.table(
        {"desc": [f"{w} number {i}" for i, w in enumerate(words * 40)], "y": ["a", "b"] * 60}
    )
    ds = write_dataset(table, tmp_path / "ds", "y", partitions=1)
    assert ds.schema["desc"].kind == "text"


def test_boolean_columns_round_trip_through_the_schema(tmp_path):
    import pyarrow as pa

    from shardlearn.data import Dataset, write_dataset

    table = pa.table({"flag": [True, False, None, True], "y": ["a", "b", "a", "b"]})
    write_dataset(table, tmp_path / "ds", "y", partitions=1)
    dataset = Dataset.open(tmp_path / "ds")
    assert dataset.schema["flag"].kind == "boolean"
    assert dataset.schema["flag"].arrow_type == pa.bool_()
    assert dataset.read("train").column("flag").null_count == 1
