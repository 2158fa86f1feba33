"""The dataset writer's buffer budget and Parquet options (issue 24: the writer's tail).

- After every batch the fullest shards are flushed while the buffers hold more than the budget
  (``buffer_bytes``, or an eighth of the rows so far), so what is left to encode after the
  parse is bounded: it used to be every shard's partial row group (half of all encoding at 500k
  rows). The flushes depend only on the batches: 1, 2 and 4 parsers write the same row groups.
- Float columns carry no min/max statistics (useless over rows assigned at random, and 15% of
  the encoding), except a hash or range key; every other column keeps them, and the shards
  read back as written.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shardlearn.data._ingest_run as ingest_run
from shardlearn.data import _writer
from shardlearn.data._writer import DatasetWriter
from shardlearn.data.dataset import Dataset
from shardlearn.data.ingest import schema_for_table
from shardlearn.data.partition import make_partitioner

from ._speculation import fingerprint, ingest_in_ranges


def _table(rows: int, seed: int = 11) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": rng.normal(size=rows),
            "z": rng.normal(size=rows),
            "city": pa.array([f"c{v}" for v in rng.integers(0, 9, rows)]),
            "label": pa.array(["ab"[v] for v in rng.integers(0, 2, rows)]),
        }
    )


def _writer_for(
    out: Path, table: pa.Table, strategy: str = "random", **sizes: int
) -> DatasetWriter:
    schema = schema_for_table(table, "label")
    column = strategy.partition(":")[2]
    partitioner = make_partitioner(
        strategy, label="label", partitions=4, split=(0.8, 0.1, 0.1), seed=3,
        column_names=table.column_names,
        range_sample=table.column(column) if strategy.startswith("range") else None,
    )  # fmt: skip
    return DatasetWriter(str(out), schema, partitioner, **sizes)


def _row_groups(ds: Dataset) -> dict[str, list[int]]:
    root = Path(ds.uri)
    groups = {}
    for shard in ds.manifest["shards"]:
        metadata = pq.read_metadata(root / shard["path"])
        groups[shard["path"]] = [
            metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)
        ]
    return groups


def test_the_buffers_never_hold_more_than_the_budget_after_a_batch(tmp_path: Path) -> None:
    """12 shards of flush_bytes 16 kB would buffer up to 192 kB (most of a 6,000-row input of
    210 kB); with the budget they hold at most an eighth of the rows so far (or 60 kB), or one
    floor-sized row group per shard, after every batch, so that is all the last batch leaves to
    encode; the rows read back are the input's."""
    table = _table(6_000)
    flush, budget = 16_000, 60_000
    writer = _writer_for(tmp_path / "ds", table, flush_bytes=flush, buffer_bytes=budget)
    shards = 4 * 3
    floor = flush * _writer.FLUSH_FLOOR
    added = 0
    for batch in table.cast(writer.arrow_schema).to_batches(max_chunksize=200):
        writer.write(batch)
        added += batch.nbytes
        buffered = sum(b.pending_bytes for b in writer._buffers.values())
        assert buffered <= max(min(budget, added // _writer.TAIL_SHARE), shards * floor)
        assert writer._pending_bytes <= budget + flush
    assert added > 8 * shards * floor  # the eighth of the rows, not the floor, bounds the end
    ds = writer.commit()
    back = pa.concat_tables(pq.read_table(Path(ds.uri) / s["path"]) for s in ds.manifest["shards"])
    assert sorted(back.column("id").to_pylist()) == list(range(6_000))
    assert ds.verify() == []


def test_one_two_and_four_parsers_write_the_same_row_groups_with_budget_flushes(
    tmp_path: Path,
) -> None:
    """Small batches, row groups and budget, so that budget flushes happen in the middle of
    the input: the datasets of 1, 2 and 4 parsers (ranges of a twelfth of the file) are byte
    identical, and they hold more row groups than flush_bytes alone gives (no budget)."""
    rows = 3_000
    rng = np.random.default_rng(4)
    lines = ["x,s,label"] + [
        f"{rng.normal():.4f},s{rng.integers(0, 50)},{'ab'[i % 2]}" for i in range(rows)
    ]
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    range_bytes = path.stat().st_size // 12
    with (
        mock.patch.object(ingest_run, "BATCH_ROWS", 97),
        mock.patch.object(_writer, "DEFAULT_FLUSH_BYTES", 8_000),
    ):
        with (
            mock.patch.object(_writer, "DEFAULT_BUFFER_BYTES", 1 << 40),
            mock.patch.object(_writer, "TAIL_SHARE", 1),
        ):
            unbudgeted = ingest_in_ranges(path, tmp_path / "whole", range_bytes, 1)
        with mock.patch.object(_writer, "DEFAULT_BUFFER_BYTES", 12_000):
            results = [
                ingest_in_ranges(path, tmp_path / f"p{n}", range_bytes, n) for n in (1, 2, 4)
            ]
    assert [ds.manifest["parsers"] for ds in results] == [1, 2, 4]
    assert fingerprint(results[1]) == fingerprint(results[0])
    assert fingerprint(results[2]) == fingerprint(results[0])
    groups = _row_groups(results[0])
    assert sum(map(len, groups.values())) > 2 * sum(map(len, _row_groups(unbudgeted).values()))
    assert sum(map(sum, groups.values())) == rows


@pytest.mark.parametrize("strategy", ["random", "hash:x", "range:x", "range:id"])
def test_float_columns_have_no_statistics_unless_they_are_the_key(
    tmp_path: Path, strategy: str
) -> None:
    """Min/max statistics are written for every column but floats, and for the float key of a
    hash or range strategy; the shards read back with the input's values and types."""
    table = _table(2_000)
    writer = _writer_for(tmp_path / "ds", table, strategy, flush_bytes=20_000)
    for batch in table.cast(writer.arrow_schema).to_batches(max_chunksize=300):
        writer.write(batch)
    ds = writer.commit()
    key = strategy.partition(":")[2]
    expected = {"id", "city", "label"} | ({key} if key else set())
    for shard in ds.manifest["shards"]:
        metadata = pq.read_metadata(Path(ds.uri) / shard["path"])
        names = metadata.schema.names
        for i in range(metadata.num_row_groups):
            group = metadata.row_group(i)
            with_stats = {
                names[c] for c in range(group.num_columns) if group.column(c).is_stats_set
            }
            assert with_stats == expected, (shard["path"], i)
    back = pa.concat_tables(s.read() for s in ds.shards(None)).sort_by("id")
    assert back.schema == writer.arrow_schema
    assert back.equals(table.cast(writer.arrow_schema))
