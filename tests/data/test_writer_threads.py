"""The dataset writer: shards encoded on several threads, hashed from the bytes it writes.

Each shard's row groups must reach its file in order whatever thread encodes them, and the
manifest's sha256 and size must be those of the file on disk, without the commit reading the
shards back (it used to hash every shard again after the last row: seconds at 20M rows).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlearn.data import _writer
from shardlearn.data._writer import DatasetWriter
from shardlearn.data.dataset import Dataset
from shardlearn.data.ingest import schema_for_table
from shardlearn.data.partition import make_partitioner


def _table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": rng.normal(size=rows),
            "city": pa.array([f"c{v}" for v in rng.integers(0, 7, rows)]),
            "y": rng.integers(0, 3, rows),
        }
    )


def _write(table: pa.Table, out: Path, strategy: str, flush_bytes: int, batch: int) -> Dataset:
    schema = schema_for_table(table, "y", None)
    partitioner = make_partitioner(
        strategy,
        label="y",
        partitions=3,
        split=(0.6, 0.2, 0.2),
        seed=7,
        column_names=table.column_names,
    )
    writer = DatasetWriter(str(out), schema, partitioner, flush_bytes=flush_bytes)
    for piece in table.cast(schema.to_arrow()).to_batches(max_chunksize=batch):
        writer.write(piece)
    return writer.commit()


def _shards(ds: Dataset) -> dict[str, tuple[str, int]]:
    return {s["path"]: (s["sha256"], s["bytes"]) for s in ds.manifest["shards"]}


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(1, 1500),
    seed=st.integers(0, 2**16),
    strategy=st.sampled_from(["random", "stratified", "hash:city"]),
    flush_bytes=st.sampled_from([1, 2_000, 50_000]),
    batch=st.sampled_from([61, 256, 4096]),
)
def test_threads_give_the_same_bytes_and_true_hashes(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    rows: int,
    seed: int,
    strategy: str,
    flush_bytes: int,
    batch: int,
) -> None:
    """1, 2 and 4 writer threads write byte-identical shards (many row groups each, so the
    per-shard order is exercised); every recorded hash and size is the file's own; the rows
    read back are the input's."""
    table = _table(rows, seed)
    root = tmp_path_factory.mktemp("writer")
    results = []
    for threads in (1, 2, 4):
        monkeypatch.setattr(_writer, "WRITE_THREADS", threads)
        out = root / f"t{threads}"
        ds = _write(table, out, strategy, flush_bytes, batch)
        shards = _shards(ds)
        for path, (digest, size) in shards.items():
            data = (out / path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest
            assert len(data) == size
        results.append(shards)
        back = pa.concat_tables(pq.read_table(out / path) for path in shards)
        assert sorted(back.column("id").to_pylist()) == list(range(rows))
    assert results[0] == results[1] == results[2]


def test_commit_does_not_read_the_shards_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hashes come from the bytes as they were written: hashing a written shard again
    (reading it back) fails the test."""
    from shardlearn.data import dataset

    def read_back(*args: object) -> str:
        raise AssertionError("a shard was read back to hash it")

    monkeypatch.setattr(dataset, "sha256_of", read_back)
    monkeypatch.setattr(_writer, "sha256_of", read_back, raising=False)
    ds = _write(_table(2000, 1), tmp_path / "ds", "random", 10_000, 512)
    assert ds.num_rows() == 2000
    for shard in ds.manifest["shards"]:
        data = (tmp_path / "ds" / shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
