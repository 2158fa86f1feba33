"""Partitioning invariants, checked with hypothesis over shard counts, seeds and inputs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlearn.data import Dataset, write_dataset
from shardlearn.data.partition import (
    SPLITS,
    HashPartitioner,
    RangePartitioner,
    StratifiedPartitioner,
    _QuotaSequence,
    parse_split,
)

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
split_choices = st.sampled_from(
    [(1.0, 0.0, 0.0), (0.8, 0.1, 0.1), (0.5, 0.5, 0.0), (0.6, 0.3, 0.1)]
)


def _input(n: int, seed: int, n_classes: int, n_keys: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(n_classes))
    return pa.table(
        {
            "row_id": np.arange(n),
            "key": rng.integers(0, n_keys, n),
            "t": rng.normal(size=n).round(2),
            "y": rng.choice([f"c{i}" for i in range(n_classes)], n, p=weights),
        }
    )


def _rows_by_shard(ds: Dataset) -> dict[tuple[str, int], pa.Table]:
    return {(s.split, s.index): s.read() for s in ds.shards(None)}


@pytest.mark.filterwarnings("ignore:The label column 'y' has a single class")
@SETTINGS
@given(
    n=st.integers(1, 400),
    seed=st.integers(0, 2**31),
    partitions=st.integers(1, 7),
    split=split_choices,
    strategy=st.sampled_from(["random", "stratified", "hash:key", "range:t"]),
)
def test_every_row_lands_in_exactly_one_shard_of_one_split(
    n: int, seed: int, partitions: int, split: tuple[float, ...], strategy: str
) -> None:
    table = _input(n, seed, n_classes=3, n_keys=20)
    with tempfile.TemporaryDirectory() as tmp:
        ds = write_dataset(table, Path(tmp) / "ds", "y", partitions, split, strategy, seed % 1000)
        ids = np.concatenate([t["row_id"].to_numpy() for t in _rows_by_shard(ds).values()])
        assert sorted(ids.tolist()) == list(range(n))
        assert ds.num_rows() == n
        assert all(s.split in SPLITS and 0 <= s.index < partitions for s in ds.shards(None))
        for fraction, name in zip(split, SPLITS, strict=True):
            if fraction == 0:
                assert name not in ds.splits


@SETTINGS
@given(
    n=st.integers(1, 3000),
    seed=st.integers(0, 2**31),
    partitions=st.integers(1, 9),
    split=split_choices,
    n_classes=st.integers(1, 5),
)
def test_stratified_counts_within_one_of_proportional(
    n: int, seed: int, partitions: int, split: tuple[float, ...], n_classes: int
) -> None:
    table = _input(n, seed, n_classes, 5)
    partitioner = StratifiedPartitioner("y", partitions, split, seed)
    splits, shards = [], []
    # Uneven batch sizes: the guarantee must hold wherever the input ends.
    start = 0
    for size in (1, 7, 300, 10_000):
        batch = table.slice(start, size).to_batches()
        for b in batch:
            s, h = partitioner.assign(b, start)
            splits.append(s)
            shards.append(h)
        start += size
    split_idx = np.concatenate(splits)
    shard_idx = np.concatenate(shards)
    labels = table["y"].to_numpy(zero_copy_only=False)
    for label in np.unique(labels):
        of_class = labels == label
        total = of_class.sum()
        for s, fraction in enumerate(split):
            in_split = of_class & (split_idx == s)
            assert abs(in_split.sum() - total * fraction) <= 1
            per_shard = np.bincount(shard_idx[in_split], minlength=partitions)
            assert per_shard.max() - per_shard.min() <= 1
            assert np.all(np.abs(per_shard - in_split.sum() / partitions) <= 1)


def test_quota_sequence_stays_within_one_of_every_prefix() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        fractions = rng.dirichlet(np.ones(3))
        sequence = _QuotaSequence(fractions).take(0, 5000)
        counts = np.cumsum(np.eye(3)[sequence], axis=0)
        expected = np.arange(1, 5001)[:, None] * fractions
        assert np.abs(counts - expected).max() < 1


def test_stratified_dataset_manifest_counts_match_shards(tmp_path: Path) -> None:
    table = _input(2000, 3, 3, 5)
    ds = write_dataset(table, tmp_path / "ds", "y", 4, (0.8, 0.1, 0.1), "stratified", 7)
    shards = _rows_by_shard(ds)
    for shard in ds.shards(None):
        values, counts = np.unique(shards[(shard.split, shard.index)]["y"], return_counts=True)
        assert shard.class_counts == dict(zip(map(str, values), counts.tolist(), strict=True))


@SETTINGS
@given(
    n=st.integers(1, 2000),
    seed=st.integers(0, 2**31),
    partitions=st.integers(1, 8),
    n_keys=st.integers(1, 60),
    split=split_choices,
)
def test_hash_keys_never_split_across_shards(
    n: int, seed: int, partitions: int, n_keys: int, split: tuple[float, ...]
) -> None:
    table = _input(n, seed, 2, n_keys)
    partitioner = HashPartitioner("key", partitions, split, seed)
    s, h = np.concatenate(
        [np.stack(partitioner.assign(b, 0)) for b in table.to_batches(max_chunksize=97)], axis=1
    )
    keys = table["key"].to_numpy()
    for key in np.unique(keys):
        cells = {(int(a), int(b)) for a, b in zip(s[keys == key], h[keys == key], strict=True)}
        assert len(cells) == 1


def test_hash_of_string_keys_is_stable_across_batches() -> None:
    keys = pa.array(["u1", "u2", None, "u1", "u3", None])
    batch = pa.RecordBatch.from_arrays([keys], names=["k"])
    partitioner = HashPartitioner("k", 5, (0.5, 0.5, 0.0), 0)
    whole = partitioner.assign(batch, 0)
    parts = [partitioner.assign(batch.slice(i, 1), i) for i in range(6)]
    assert whole[0].tolist() == [int(p[0][0]) for p in parts]
    assert whole[1].tolist() == [int(p[1][0]) for p in parts]
    assert whole[1][0] == whole[1][3] and whole[1][2] == whole[1][5]


@SETTINGS
@given(n=st.integers(1, 2000), seed=st.integers(0, 2**31), partitions=st.integers(1, 8))
def test_range_shards_are_ordered(n: int, seed: int, partitions: int) -> None:
    table = _input(n, seed, 2, 5)
    sample = table["t"].take(np.random.default_rng(seed).integers(0, n, min(n, 200)))
    partitioner = RangePartitioner("t", sample, partitions, (1.0, 0.0, 0.0), seed)
    _, shard = partitioner.assign(table.to_batches()[0], 0)
    values = table["t"].to_numpy()
    present = [values[shard == i] for i in range(partitions) if (shard == i).any()]
    for low, high in zip(present, present[1:], strict=False):
        assert low.max() <= high.min()


def test_range_strategy_on_strings_and_nulls(tmp_path: Path) -> None:
    table = pa.table({"d": ["2024-03", None, "2024-01", "2024-02", "2024-01"], "y": list("abaab")})
    ds = write_dataset(table, tmp_path / "ds", "y", 2, strategy="range:d")
    rows = {s.index: s.read()["d"].to_pylist() for s in ds.shards()}
    assert None in rows[0]
    assert ds.num_rows() == 5


def test_parse_split_messages() -> None:
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert parse_split([1.0]) == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="up to three fractions"):
        parse_split("a,b")
    with pytest.raises(ValueError, match="non-negative"):
        parse_split((1.2, -0.2))
