"""The dataset writer's CPU per batch (issue 24): what it does to be cheaper must not change
what it writes.

- A shard's buffered rows are copied at most once by the compaction that keeps memory bounded
  (rows compacted before stay where they are; they were copied again at every compaction).
- The sort that puts a batch's rows in shard order uses 16-bit keys when every cell fits (a
  radix sort): the dataset is the one 64-bit keys give.
- A shard's buffered bytes (which decide its flushes) come from the columns' offsets and widths
  for all its slices at once: exactly each slice's ``nbytes``.
- The partitioners' hashes are computed in place and the split of a row by one comparison per
  edge: the same values as the plain formulas (the split of every row decides its file).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardlearn.data import _writer as _writer_module
from shardlearn.data import partition
from shardlearn.data._writer import DatasetWriter, _slice_bytes
from shardlearn.data.dataset import Dataset
from shardlearn.data.ingest import schema_for_table
from shardlearn.data.partition import make_partitioner


def _table(rows: int, seed: int = 5) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": rng.normal(size=rows),
            "city": pa.array([f"c{v}" for v in rng.integers(0, 9, rows)]),
            "label": pa.array(["ab"[v] for v in rng.integers(0, 2, rows)]),
        }
    )


def _writer(out: Path, table: pa.Table, partitions: int, flush_bytes: int) -> DatasetWriter:
    schema = schema_for_table(table, "label")
    partitioner = make_partitioner(
        "random", label="label", partitions=partitions, split=(0.8, 0.1, 0.1), seed=3,
        column_names=table.column_names,
    )  # fmt: skip
    return DatasetWriter(str(out), schema, partitioner, flush_bytes=flush_bytes)


def _write(writer: DatasetWriter, table: pa.Table, batch: int) -> Dataset:
    for piece in table.cast(writer.arrow_schema).to_batches(max_chunksize=batch):
        writer.write(piece)
    return writer.commit()


def _files(ds: Dataset, root: Path) -> dict[str, bytes]:
    return {s["path"]: (root / s["path"]).read_bytes() for s in ds.manifest["shards"]}


def test_compaction_copies_each_buffered_row_at_most_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards that are never flushed before the end (flush_bytes out of reach) are compacted
    every few batches; the rows the compactions copy add up to at most the rows written (the
    old compaction copied a shard's earlier rows again each time: 7x here), and the
    rows read back are the input's."""
    copied = []
    concat = pa.concat_batches

    def counting(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
        copied.append(sum(b.num_rows for b in batches))
        return concat(batches)

    monkeypatch.setattr(pa, "concat_batches", counting)
    table = _table(12_000)
    ds = _write(_writer(tmp_path / "ds", table, 2, flush_bytes=1 << 40), table, batch=300)
    assert len(copied) > 10  # the compaction ran, many times per shard
    assert sum(copied) <= table.num_rows
    back = pa.concat_tables(
        pq.read_table(tmp_path / "ds" / s["path"]) for s in ds.manifest["shards"]
    )
    assert sorted(back.column("id").to_pylist()) == list(range(table.num_rows))


def test_a_shard_that_flushes_with_its_next_slice_is_not_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards that reach flush_bytes at their fifth slice (slices of 25.8-28.7 kB, flushes at
    125 kB) are flushed from their slices, never copied into one batch first: at four slices
    the next one flushes them. A shard holds at most COMPACT_PIECES loose slices after any
    batch, and the files are those of a writer that compacts every COMPACT_PIECES slices."""
    copied: list[int] = []
    concat = pa.concat_batches
    loose: list[int] = []
    add = DatasetWriter._add

    def counting(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
        copied.append(sum(b.num_rows for b in batches))
        return concat(batches)

    def recording(self: DatasetWriter, cell: tuple[int, int], *args: Any) -> None:
        add(self, cell, *args)
        loose.append(self._buffers[cell].loose)

    def write(out: Path, compacts: Callable[..., bool] | None = None) -> dict[str, bytes]:
        partitioner = make_partitioner(
            "random", label="label", partitions=2, split=(1.0, 0.0, 0.0), seed=3,
            column_names=table.column_names,
        )  # fmt: skip
        writer = DatasetWriter(str(out), schema, partitioner, flush_bytes=125_000)
        if compacts is not None:
            monkeypatch.setattr(writer, "_compacts", compacts, raising=False)
        return _files(_write(writer, table, batch=2000), out)

    table = _table(40_000)
    schema = schema_for_table(table, "label")
    pieces = _writer_module.COMPACT_PIECES
    reference = write(
        tmp_path / "always",
        lambda buffer, size: buffer.loose >= pieces and buffer.pending_bytes < 125_000,
    )
    monkeypatch.setattr(pa, "concat_batches", counting)
    monkeypatch.setattr(DatasetWriter, "_add", recording)
    files = write(tmp_path / "ds")
    assert copied == []
    assert max(loose) == pieces == 4
    assert files == reference


@pytest.mark.parametrize("flush_bytes", [4_000, 1 << 40])
def test_the_cell_sort_key_width_does_not_change_the_dataset(
    tmp_path: Path, flush_bytes: int
) -> None:
    """16-bit cell keys (the radix sort) and 64-bit keys write byte-identical shards with the
    hashes of their files; a writer with more cells than 16 bits hold uses 64-bit keys."""
    table = _table(3_000)
    results = []
    for name, cell_type in (("narrow", np.int16), ("wide", np.int64)):
        writer = _writer(tmp_path / name, table, 5, flush_bytes)
        assert writer._cell_type is np.int16
        writer._cell_type = cell_type
        ds = _write(writer, table, batch=700)
        files = _files(ds, tmp_path / name)
        for shard in ds.manifest["shards"]:
            assert hashlib.sha256(files[shard["path"]]).hexdigest() == shard["sha256"]
        assert ds.verify() == []
        results.append(files)
    assert results[0] == results[1]
    many = _writer(tmp_path / "many", table, 9_000, flush_bytes)
    assert many._cell_type is np.int64
    ds = _write(many, table.slice(0, 200), batch=64)
    assert ds.num_rows() == 200


def test_a_tampered_shard_fails_verification(tmp_path: Path) -> None:
    """The manifest's hash is the written file's: one changed byte in a shard is reported."""
    table = _table(2_000)
    ds = _write(_writer(tmp_path / "ds", table, 3, flush_bytes=8_000), table, batch=256)
    assert ds.verify() == []
    shard = ds.manifest["shards"][0]
    path = tmp_path / "ds" / shard["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problems = Dataset.open(str(tmp_path / "ds")).verify()
    assert len(problems) == 1 and problems[0].startswith(shard["path"])


@pytest.mark.parametrize("nulls", [False, True])
def test_slice_bytes_are_each_slices_nbytes(nulls: bool) -> None:
    """Every column type a schema allows (validity bitmaps and booleans at odd bit offsets,
    32- and 64-bit offsets, a null column through the slow path), in a batch that is itself a
    slice."""
    rng = np.random.default_rng(11)
    rows = 3000
    columns = {
        "f": pa.array(rng.normal(size=rows)),
        "h": pa.array(rng.normal(size=rows).astype(np.float16)),
        "i": pa.array(rng.integers(0, 9, rows).astype(np.int8)),
        "b": pa.array(rng.integers(0, 2, rows).astype(bool)),
        "s": pa.array(["x" * int(k) for k in rng.integers(0, 7, rows)]),
        "bin": pa.array([b"ab" * int(k) for k in rng.integers(0, 3, rows)], pa.binary()),
        "lb": pa.array([b"abc"] * rows, pa.large_binary()),
        "d": pa.array(np.arange(rows).astype("datetime64[D]")).cast(pa.date32()),
        "t": pa.array(np.arange(rows).astype("datetime64[us]")).cast(pa.timestamp("us", "UTC")),
    }
    if nulls:
        mask = pa.array(rng.random(rows) < 0.2)
        columns = {
            k: pa.compute.if_else(mask, pa.scalar(None, c.type), c) for k, c in columns.items()
        }
    batch = pa.RecordBatch.from_pydict(columns).slice(37)
    starts = np.sort(rng.integers(0, batch.num_rows - 1, 300))
    ends = np.minimum(starts + rng.integers(1, 700, 300), batch.num_rows)
    expected = [batch.slice(s, e - s).nbytes for s, e in zip(starts, ends, strict=True)]
    assert _slice_bytes(batch, starts, ends).tolist() == expected
    with_null = batch.append_column("n", pa.nulls(batch.num_rows))
    expected = [with_null.slice(s, e - s).nbytes for s, e in zip(starts, ends, strict=True)]
    assert _slice_bytes(with_null, starts, ends).tolist() == expected


def test_row_hashes_and_splits_are_the_plain_formulas() -> None:
    """row_hashes is splitmix64 of (row ^ base) and leaves splitmix64's input alone; the split
    of a unit is searchsorted(edges, unit, "right"), on the edges themselves too, and a
    fraction of 0 still gets no row."""
    seed, salt, start, count = 11, partition._SHARD_SALT, 2**40 + 5, 5000
    base = partition.splitmix64(np.array([(seed * 0x1000193) ^ salt], dtype=np.uint64))[0]
    rows = np.arange(start, start + count, dtype=np.uint64)
    kept = rows.copy()
    expected = partition.splitmix64(rows ^ base)
    assert np.array_equal(rows, kept)
    assert np.array_equal(partition.row_hashes(seed, salt, start, count), expected)
    units = partition._unit(expected)
    assert np.array_equal(units, (expected >> np.uint64(11)).astype(np.float64) / 2.0**53)
    for fractions in [(0.8, 0.1, 0.1), (0.5, 0.0, 0.5), (1.0, 0.0, 0.0), (0.3, 0.3, 0.4)]:
        edges = np.cumsum(fractions)[:-1]
        probes = np.concatenate([units, edges, np.nextafter(edges, 0.0), [0.0]])
        split = partition._split_of_unit(probes, fractions)
        reference = np.searchsorted(edges, probes, side="right").astype(np.int8)
        for index, fraction in enumerate(fractions):
            if fraction == 0:
                reference[reference == index] = int(np.argmax(fractions))
                assert not (split == index).any()
        assert split.dtype == np.int8 and np.array_equal(split, reference)


@pytest.mark.parametrize("strategy", ["random", "stratified"])
def test_each_shards_class_counts_are_its_files(tmp_path: Path, strategy: str) -> None:
    """The per-shard class counts (one bincount per batch over (shard, class) numbers) are
    the label counts of each file, with classes that appear in some batches only."""
    rng = np.random.default_rng(4)
    rows = 4000
    labels = [f"k{v}" for v in rng.integers(0, 6, rows)]
    labels[1000:1300] = ["rare"] * 300  # in one batch only
    table = pa.table({"x": rng.normal(size=rows), "label": pa.array(labels)})
    schema = schema_for_table(table, "label")
    partitioner = make_partitioner(
        strategy, label="label", partitions=3, split=(0.6, 0.2, 0.2), seed=9,
        column_names=table.column_names,
    )  # fmt: skip
    writer = DatasetWriter(str(tmp_path / "ds"), schema, partitioner, flush_bytes=6_000)
    ds = _write(writer, table, batch=512)
    total: dict[str, int] = {}
    for shard in ds.manifest["shards"]:
        read = pq.read_table(tmp_path / "ds" / shard["path"]).column("label")
        counts = {v["values"]: v["counts"] for v in pa.compute.value_counts(read).to_pylist()}
        assert shard["class_counts"] == dict(sorted(counts.items()))
        for key, count in counts.items():
            total[key] = total.get(key, 0) + count
    assert ds.manifest["class_counts"] == dict(sorted(total.items()))
