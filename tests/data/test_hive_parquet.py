"""Hive-partitioned Parquet folders (``key=value/part-*.parquet``, as Spark, Dask and Ray write
them) ingest with their keys as typed columns, every source row once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import shardlearn as sl
from shardlearn.exceptions import DataError


def _source(rows: int = 600) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "id": np.arange(rows),
            "x": np.round(rng.normal(size=rows), 3),
            "label": rng.choice(["a", "b"], rows),
            "year": rng.choice([2019, 2020, 2021], rows),
            "region": pa.array(rng.choice(["north", "south/east", ""], rows)).cast(pa.string()),
        }
    )


def _write(folder: Path, table: pa.Table) -> None:
    # An empty region is written as __HIVE_DEFAULT_PARTITION__ (a null); "/" is URL-encoded.
    region = pa.compute.if_else(pa.compute.equal(table["region"], ""), None, table["region"])
    table = table.set_column(4, "region", region)
    pads.write_dataset(
        table,
        folder,
        format="parquet",
        partitioning=["year", "region"],
        partitioning_flavor="hive",
        max_rows_per_group=64,  # several row groups per file
        max_rows_per_file=100,  # several files per partition
    )
    (folder / "_SUCCESS").write_text("")  # Spark's marker is not data


def _rows(ds: sl.Dataset) -> pa.Table:
    table = pa.concat_tables(ds.read(s) for s in ds.splits)
    return table.sort_by("id")


def test_partitioned_folder_ingests_every_row_with_typed_keys(tmp_path: Path) -> None:
    source = _source()
    _write(tmp_path / "in", source)
    files = [p for p in (tmp_path / "in").rglob("*.parquet")]
    assert any("__HIVE_DEFAULT_PARTITION__" in str(p) for p in files)
    assert any("%2F" in str(p) for p in files)
    ds = sl.ingest(tmp_path / "in", "label", tmp_path / "ds", partitions=2)
    got = _rows(ds)
    assert ds.manifest["rows_rejected"] == 0
    assert ds.manifest["rows_read"] == ds.num_rows() == source.num_rows
    assert len(ds.manifest["sources"]) == len(files)
    assert got["id"].to_pylist() == list(range(source.num_rows))
    assert got["x"].to_pylist() == source["x"].to_pylist()
    assert got["year"].type == pa.int64()
    assert got["year"].to_pylist() == source["year"].to_pylist()
    expected = [r or None for r in source["region"].to_pylist()]
    assert [str(v) if v is not None else None for v in got["region"].to_pylist()] == expected


def test_rows_of_a_partitioned_folder_keep_their_file_and_row(tmp_path: Path) -> None:
    table = pa.table({"x": [1.0, float("inf"), 3.0] * 20, "label": ["a", "b"] * 30,
                      "k": ["p", "q", "q", "p"] * 15})  # fmt: skip
    pads.write_dataset(table, tmp_path / "in", format="parquet", partitioning=["k"],
                       partitioning_flavor="hive")  # fmt: skip
    ds = sl.ingest(tmp_path / "in", "label", tmp_path / "ds", partitions=1, max_reject_rate=0.5)
    rejects = ds.read_rejects().to_pylist()
    assert len(rejects) == 20
    assert {Path(r["source"]).parent.name for r in rejects} == {"k=p", "k=q"}
    # Each reject names its file and the row (1-based) in that file that holds the inf.
    for reject in rejects:
        part = pq.read_table(reject["source"])
        assert part["x"][reject["line"] - 1].as_py() == float("inf")


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "in", _source(100))
    outside = tmp_path / "secret.parquet"
    pq.write_table(_source(5).drop_columns(["year", "region"]), outside)
    inside = next((tmp_path / "in").rglob("*.parquet"))
    os.symlink(inside, tmp_path / "in" / "year=2019" / "alias.parquet")  # inside: read
    ds = sl.ingest(tmp_path / "in", "label", tmp_path / "ds", partitions=1)
    assert ds.manifest["rows_read"] == 100 + pq.read_metadata(inside).num_rows
    os.symlink(outside, tmp_path / "in" / "year=2019" / "leak.parquet")
    with pytest.raises(DataError, match="symbolic link out of"):
        sl.ingest(tmp_path / "in", "label", tmp_path / "ds2", partitions=1)
    os.remove(tmp_path / "in" / "year=2019" / "leak.parquet")
    os.symlink(tmp_path, tmp_path / "in" / "year=2019" / "loop")
    with pytest.raises(DataError, match="symbolic link to a folder"):
        sl.ingest(tmp_path / "in", "label", tmp_path / "ds3", partitions=1)


def test_a_folder_with_a_text_file_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "in", _source(50))
    (tmp_path / "in" / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a Parquet file"):
        sl.ingest(tmp_path / "in", "label", tmp_path / "ds", partitions=1)


def test_partitioned_folder_on_s3(tmp_path: Path, s3_endpoint: str, s3_bucket) -> None:
    """The same folder on a real S3 API (moto's server on 127.0.0.1), by its s3:// prefix."""
    filesystem = s3_bucket("lake")
    source = _source(200)
    _write(tmp_path / "in", source)
    pafs.copy_files(str(tmp_path / "in"), "lake/in", destination_filesystem=filesystem)
    uri = f"s3://lake/in?endpoint_override={s3_endpoint}&scheme=http"
    ds = sl.ingest(uri, "label", tmp_path / "ds", partitions=1)
    got = _rows(ds)
    assert got["id"].to_pylist() == list(range(200))
    assert got["year"].to_pylist() == source["year"].to_pylist()
    assert all(s.startswith("s3://lake/in/year=") for s in ds.manifest["sources"])


def test_a_column_named_like_a_partition_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in" / "label=a").mkdir(parents=True)
    pq.write_table(
        pa.table({"x": [1.0, 2.0], "label": ["a", "b"]}), tmp_path / "in" / "label=a" / "p.parquet"
    )
    with pytest.raises(sl.exceptions.SchemaError, match="partition folder"):
        sl.ingest(tmp_path / "in", "label", tmp_path / "ds", partitions=1)


def test_a_text_format_for_a_folder_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "in", _source(50))
    with pytest.raises(sl.exceptions.SchemaError, match="--format csv does not apply"):
        sl.ingest(tmp_path / "in", "label", tmp_path / "ds", partitions=1, format="csv")
