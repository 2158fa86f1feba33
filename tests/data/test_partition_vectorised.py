"""The vectorised partitioner parts equal the plain formulas they replace, bit for bit.

The stratified quota sequence (speculated with numpy, checked by replaying the recurrence) is
compared with the plain Python loop, and the cached string-key digests of ``hash:COL`` with
one blake2b per row: the split and shard of every row are part of "the same output for the
same input and seed", across versions too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlearn.data import partition
from shardlearn.data.partition import (
    HashPartitioner,
    KeyDigests,
    StratifiedPartitioner,
    _QuotaSequence,
    key_hashes,
    parse_split,
)


def _loop(fractions: Sequence[float], deficit: list[float], count: int) -> np.ndarray:
    """The reference: greedy largest deficit, one float operation at a time."""
    out = np.empty(count, dtype=np.int8)
    for i in range(count):
        best, best_value = 0, -2.0
        for s, fraction in enumerate(fractions):
            value = deficit[s] + fraction
            deficit[s] = value
            if value > best_value:
                best, best_value = s, value
        deficit[best] -= 1.0
        out[i] = best
    return out


class _LoopQuota:
    def __init__(self, fractions: Sequence[float]) -> None:
        self.fractions = list(fractions)
        self.deficit = [0.0] * len(self.fractions)
        self.sequence = np.zeros(0, dtype=np.int8)

    def take(self, start: int, count: int) -> np.ndarray:
        missing = start + count - len(self.sequence)
        if missing > 0:
            more = _loop(self.fractions, self.deficit, missing)
            self.sequence = np.concatenate([self.sequence, more])
        return self.sequence[start : start + count]


# Decimal splits as users write them (periodic sequences, float ties broken by rounding: the
# 0.333 one), sums 1e-6 away from 1 (accepted by parse_split), one split, and random fractions
# (no short period: the guesses fail and the loop takes over).
_SPLITS = [
    "0.8,0.1,0.1",
    "0.7,0.2,0.1",
    "0.333,0.333,0.334",
    "0.85,0.1,0.05",
    "0.123,0.456,0.421",
    "0.7000009,0.2,0.1",
    "0.6999991,0.2,0.1",
    "0.9,0.1",
    "1",
    "0,0,1",
]


@pytest.mark.parametrize("spec", _SPLITS)
def test_quota_sequence_is_the_loop(spec: str) -> None:
    fractions = parse_split(spec)
    quota = _QuotaSequence(fractions)
    assert np.array_equal(quota.take(0, 30000), _loop(fractions, [0.0] * 3, 30000))


def test_quota_sequence_is_the_loop_for_random_fractions_and_pieces() -> None:
    rng = np.random.default_rng(3)
    for _ in range(6):
        fractions = tuple(rng.dirichlet(np.ones(3)).tolist())
        quota = _QuotaSequence(fractions)
        ends = np.sort(rng.integers(0, 20000, 12)).tolist() + [20000]
        pieces, start = [], 0
        for end in ends:
            pieces.append(quota.take(start, end - start).copy())
            start = end
        assert np.array_equal(np.concatenate(pieces), _loop(fractions, [0.0] * 3, 20000))


def test_quota_guesses_are_checked_from_any_state() -> None:
    """From deficits where every value stays at or below -2 (the loop's floor picks split 0)
    and from perturbed ones, the speculated steps equal the loop's from the same state."""
    fractions = parse_split("0.8,0.1,0.1")
    for deficit in ([-2.6, -2.7, -2.4], [0.3, -0.1, -0.2 + 1e-15], [1e-17, -1e-17, 0.0]):
        quota = _QuotaSequence(fractions)
        quota.take(0, 5000)  # past the warm-up: the rest is guessed and checked
        assert quota._period == 10
        quota.deficit = np.array(deficit)
        tail = quota.take(5000, 20000)
        assert np.array_equal(tail, _loop(fractions, list(deficit), 20000))


def _stratified_pair(spec: str) -> tuple[StratifiedPartitioner, StratifiedPartitioner]:
    new = StratifiedPartitioner("y", 5, spec, seed=11)
    reference = StratifiedPartitioner("y", 5, spec, seed=11)
    reference._quota = _LoopQuota(reference.fractions)  # type: ignore[assignment]  # the loop
    return new, reference


@pytest.mark.parametrize("spec", ["0.8,0.1,0.1", "0.333,0.333,0.334", "1"])
def test_stratified_assignment_is_the_loops(spec: str) -> None:
    """Batches with one class, an empty batch, a class first seen in a later batch, nulls;
    the large class passes the warm-up, so its later rows take the guessed sequence."""
    rng = np.random.default_rng(5)
    batches = [
        pa.table({"y": ["a"] * 3000}),
        pa.table({"y": pa.array([], pa.string())}),
        pa.table({"y": rng.choice(["a", "b"], 6000, p=[0.9, 0.1])}),
        pa.table(
            {
                "y": pa.array(
                    rng.choice(np.array(["a", "b", "c", None]), 7000, p=[0.7, 0.1, 0.1, 0.1])
                )
            }
        ),
    ]
    new, reference = _stratified_pair(spec)
    start = 0
    for batch in batches:
        got, expected = new.assign(batch, start), reference.assign(batch, start)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
        start += batch.num_rows


def _blake2b(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def _reference_hashes(values: pa.Array) -> np.ndarray:
    """One blake2b per row of the key as text; every null the same constant."""
    text = values.cast(pa.string()).to_pylist()
    return np.array(
        [int(partition._NULL_KEY_HASH) if v is None else _blake2b(v) for v in text],
        dtype=np.uint64,
    )


_KEYS = st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=200)


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(_KEYS, min_size=1, max_size=5), limit=st.sampled_from([3, 1 << 18]))
def test_key_hashes_are_one_blake2b_per_row(batches: list[list[str | None]], limit: int) -> None:
    """Unicode and empty strings, nulls, empty batches, keys repeated or new in later
    batches, a cache that fills up (limit 3): every row's hash is its key's blake2b."""
    digests = KeyDigests()
    digests.LIMIT = limit
    digests.FEW = 2  # most batches go through the cache
    for keys in batches:
        values = pa.array(keys, pa.string())
        assert np.array_equal(key_hashes(values, digests), _reference_hashes(values))


def test_key_hashes_of_many_keys_sliced_chunked_and_not_text() -> None:
    """Batches of many keys from a larger set (the cache's normal use), sliced and chunked
    arrays (buffers read at an offset), a byte cap on the cache, and a float key (as text)."""
    rng = np.random.default_rng(9)
    names = np.array([f"clé-{i}-" + "x" * (i % 40) for i in range(3000)], dtype=object)
    digests = KeyDigests()
    digests.MAX_BYTES = 40_000
    for _ in range(6):
        values = pa.array(names[rng.integers(0, 3000, 2000)], pa.string())
        sliced = values.slice(37, 1500)
        chunked = pa.chunked_array([values.slice(0, 900), values.slice(900)])
        for keys in (values, sliced, chunked):
            combined = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
            assert np.array_equal(key_hashes(keys, digests), _reference_hashes(combined))
    assert 0 < digests._bytes <= 40_000
    floats = pa.array([0.5, None, 1e300, -0.0, 0.5] * 30)
    assert np.array_equal(key_hashes(floats, digests), _reference_hashes(floats))


def test_key_hashes_survive_fingerprint_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every fingerprint equal, cached keys are told apart by their bytes: the cache
    keeps one of them and every other key is digested again, never given another's digest."""
    monkeypatch.setattr(
        partition, "_string_fingerprints", lambda values: np.zeros(len(values), np.uint64)
    )
    digests = KeyDigests()
    digests.FEW = 0
    rng = np.random.default_rng(2)
    for _ in range(4):
        values = pa.array([f"k{i}" for i in rng.integers(0, 300, 500)], pa.string())
        assert np.array_equal(key_hashes(values, digests), _reference_hashes(values))
    assert len(digests._fingerprints) == 1


def test_string_fingerprints_depend_on_bytes_only() -> None:
    """Equal strings, equal fingerprints (at any offset), and distinct ones distinct here."""
    words = ["", "a", "b", "ab", "ba", "aa", "\x00", "\x00\x00", "é", "e\u0301", "ab" * 50]
    values = pa.array(words + words, pa.string())
    fingerprints = partition._string_fingerprints(values)
    assert np.array_equal(fingerprints[: len(words)], fingerprints[len(words) :])
    assert len(set(fingerprints[: len(words)].tolist())) == len(words)
    sliced = partition._string_fingerprints(values.slice(len(words) + 3, 4))
    assert np.array_equal(sliced, fingerprints[3:7])


def test_hash_partitioner_is_the_plain_formula() -> None:
    """A string key's split and shard from one blake2b per row, as before the cache."""
    rng = np.random.default_rng(4)
    names = np.array([f"user-{i}" for i in range(500)] + [""], dtype=object)
    partitioner = HashPartitioner("k", 7, "0.7,0.2,0.1", seed=3)
    seed_mix = partition.splitmix64(np.array([3, partition._SPLIT_SALT], dtype=np.uint64))
    for _ in range(4):
        keys = pa.array(names[rng.integers(0, 501, 800)], pa.string())
        keys = pa.array([None if i % 17 == 0 else v for i, v in enumerate(keys.to_pylist())])
        hashes = _reference_hashes(keys)
        units = partition._unit(partition.splitmix64(hashes ^ seed_mix[0]))
        edges = np.cumsum(partitioner.fractions)[:-1]
        split = np.searchsorted(edges, units, side="right")
        shard = partition.splitmix64(hashes ^ seed_mix[1]) % np.uint64(7)
        got_split, got_shard = partitioner.assign(pa.table({"k": keys}), 0)
        assert np.array_equal(got_split, split) and np.array_equal(got_shard, shard)
