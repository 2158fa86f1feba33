"""Partitioners: which split and which shard every row goes to.

A partitioner sees the input as a stream of record batches and returns, per batch, a split index
(0 = train, 1 = valid, 2 = test) and a shard index in ``[0, partitions)`` for every row. Every
split holds up to ``partitions`` shards. Assignments are deterministic for a seed and the same
input; none of them needs the whole input in memory.

- ``random``: a counter-based hash of (seed, global row number) picks the split and the shard,
  so the result does not depend on how the input is cut into batches.
- ``stratified``: per class, the k-th row goes to the split given by a fixed *quota sequence*
  (greedy largest-deficit apportionment: after any number of rows every split holds its
  proportional share within ±1), and the k-th row of a class within a split goes to shard
  ``k mod partitions``. Counts are therefore within ±1 of proportional per split and per shard
  whenever the input ends, and ends only at batch boundaries, so the rows of a class are visited
  in a seeded random order *within each batch*: that is where the randomness comes from, and it
  keeps the counts exact.
- ``hash:COL``: the key's hash picks the split and the shard; equal keys share both.
- ``range:COL``: shards are contiguous key ranges with boundaries at quantiles of a sample of the
  key (nulls go to shard 0); the split is picked per row as in ``random``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shardlearn.exceptions import SchemaError

__all__ = [
    "SPLITS",
    "UNLABELED_SPLIT",
    "HashPartitioner",
    "Partitioner",
    "RandomPartitioner",
    "RangePartitioner",
    "Rows",
    "StratifiedPartitioner",
    "make_partitioner",
    "parse_split",
    "parse_strategy",
    "row_hashes",
]

SPLITS: tuple[str, str, str] = ("train", "valid", "test")
#: Rows kept without a label (``ingest --allow-unlabeled``) form this split of their own; it is
#: never one of :data:`SPLITS`, so nothing that trains or evaluates on labelled splits sees it.
#: Its shards are numbered like any split's (the partitioner picks the shard, not the split).
UNLABELED_SPLIT = "unlabeled"
STRATEGIES = ("random", "stratified", "hash:COL", "range:COL")

# Salts separate the independent hash streams drawn from one seed.
_SPLIT_SALT = 0x5EED_0001
_SHARD_SALT = 0x5EED_0002
_SAMPLE_SALT = 0x5EED_0003
_NULL_KEY_HASH = np.uint64(0x9E3779B97F4A7C15)
_TWO_TO_53 = float(1 << 53)


def parse_split(split: Sequence[float] | str) -> tuple[float, float, float]:
    """Normalise ``split`` to three fractions (train, valid, test) that sum to 1.

    Accepts one to three numbers (missing ones are 0) or a comma-separated string.
    """
    if isinstance(split, str):
        try:
            values = [float(v) for v in split.split(",") if v.strip()]
        except ValueError:
            raise SchemaError(
                f"Invalid split {split!r}; expected up to three fractions like 0.8,0.1,0.1."
            ) from None
    else:
        values = [float(v) for v in split]
    if not 1 <= len(values) <= 3 or any(v < 0 or not np.isfinite(v) for v in values):
        raise SchemaError(
            f"Invalid split {split!r}; expected up to three non-negative fractions "
            "(train, valid, test) like 0.8,0.1,0.1."
        )
    if abs(sum(values) - 1.0) > 1e-6:
        raise SchemaError(
            f"The split fractions {values} must sum to 1 (they sum to {sum(values):g})."
        )
    values += [0.0] * (3 - len(values))
    return values[0], values[1], values[2]


def parse_strategy(strategy: str) -> tuple[str, str | None]:
    """Split ``"hash:user_id"`` into ``("hash", "user_id")``; validate the name."""
    name, _, column = strategy.partition(":")
    name = name.strip().lower()
    if name in ("random", "stratified") and not column:
        return name, None
    if name in ("hash", "range") and column.strip():
        return name, column.strip()
    raise SchemaError(
        f"Unknown partitioning strategy {strategy!r}; use one of {', '.join(STRATEGIES)}."
    )


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised: a fast, well-mixed 64-bit hash of uint64 values."""
    return _splitmix64_in_place(values.astype(np.uint64, copy=True))


def _splitmix64_in_place(z: np.ndarray) -> np.ndarray:
    """splitmix64 of the uint64 array ``z``, computed in ``z`` with one scratch array: every
    temporary of a batch's size is a fresh allocation that glibc takes from the OS and hands
    back (page faults each time), which made a batch's hashes 6x slower than the arithmetic."""
    scratch = np.empty_like(z)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z ^= np.right_shift(z, np.uint64(30), out=scratch)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= np.right_shift(z, np.uint64(27), out=scratch)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= np.right_shift(z, np.uint64(31), out=scratch)
    return z


def row_hashes(seed: int, salt: int, start: int, count: int) -> np.ndarray:
    """Hashes of global row numbers ``start .. start+count-1`` for a seed and a salt."""
    base = splitmix64(np.array([(seed * 0x1000193) ^ salt], dtype=np.uint64))[0]
    rows = np.arange(start, start + count, dtype=np.uint64)
    rows ^= base
    return _splitmix64_in_place(rows)


def _unit(hashes: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats uniform in [0, 1)."""
    units = (hashes >> np.uint64(11)).astype(np.float64)
    units /= _TWO_TO_53
    return units


def _split_of_unit(units: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    # The number of edges at or below each unit (searchsorted(edges, units, "right")), by one
    # comparison per edge: a binary search per row cost 5x more for two edges.
    split = np.zeros(len(units), dtype=np.int8)
    for edge in np.cumsum(fractions)[:-1].tolist():
        split += units >= edge
    # Never send a row to a split whose fraction is 0 (possible only through float rounding).
    for index, fraction in enumerate(fractions):
        if fraction == 0:
            split[split == index] = int(np.argmax(fractions))
    return split


def key_hashes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash per value (equal values, equal hashes; nulls share one hash)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_integer(values.type) or pa.types.is_boolean(values.type):
        ints = pc.fill_null(values.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        hashes = splitmix64(ints.view(np.uint64) if ints.dtype == np.int64 else ints)
    else:
        encoded = pc.dictionary_encode(values.cast(pa.string()))
        digests = [
            int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")
            for v in encoded.dictionary.to_pylist()
        ]
        table = np.array(digests, dtype=np.uint64)
        indices = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
        hashes = table[indices] if len(table) else np.zeros(len(values), dtype=np.uint64)
    if values.null_count:
        hashes = np.where(values.is_null().to_numpy(zero_copy_only=False), _NULL_KEY_HASH, hashes)
    return hashes


# A batch of rows to assign: a record batch, or a table (the writer's batches are slices of
# the parsed batches, not copied into one).
Rows: TypeAlias = pa.RecordBatch | pa.Table


class Partitioner:
    """Base class: ``assign(batch, start)`` -> (split index, shard index) per row.

    ``start`` is the global number of the batch's first row among the accepted rows;
    ``batch`` is a record batch or a table (its columns may be chunked).
    """

    name = "base"

    def __init__(self, partitions: int, split: Sequence[float] | str, seed: int = 0) -> None:
        self.partitions = int(partitions)
        self.fractions = parse_split(split)
        self.seed = int(seed)

    @property
    def strategy(self) -> str:
        return self.name

    def assign(self, batch: Rows, start: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _random_split(self, start: int, count: int) -> np.ndarray:
        return _split_of_unit(
            _unit(row_hashes(self.seed, _SPLIT_SALT, start, count)), self.fractions
        )


class RandomPartitioner(Partitioner):
    """Seeded random split and shard per row, independent of batch boundaries."""

    name = "random"

    def assign(self, batch: Rows, start: int) -> tuple[np.ndarray, np.ndarray]:
        count = batch.num_rows
        shard = row_hashes(self.seed, _SHARD_SALT, start, count) % np.uint64(self.partitions)
        return self._random_split(start, count), shard.astype(np.int32)


class _QuotaSequence:
    """The split of the k-th row of a class: greedy largest-deficit apportionment.

    After assigning n rows, split s holds within ±1 of ``n * fraction[s]`` rows (checked by
    the property tests). The sequence only depends on the fractions, so it is extended lazily
    and shared by all classes.
    """

    _CHUNK = 1 << 16

    def __init__(self, fractions: Sequence[float]) -> None:
        self.fractions = np.asarray(fractions, dtype=np.float64)
        self.deficit = np.zeros(len(fractions))
        self.sequence = np.zeros(0, dtype=np.int8)

    def take(self, start: int, count: int) -> np.ndarray:
        while len(self.sequence) < start + count:
            # Grow geometrically (small inputs stay cheap), capped at one chunk per step.
            step = min(self._CHUNK, max(1024, len(self.sequence)))
            self._extend(max(step, start + count - len(self.sequence)))
        return self.sequence[start : start + count]

    def _extend(self, count: int) -> None:
        out = np.empty(count, dtype=np.int8)
        deficit = self.deficit.tolist()
        fractions = self.fractions.tolist()
        splits = range(len(fractions))
        for i in range(count):
            best, best_value = 0, -2.0
            for s in splits:
                value = deficit[s] + fractions[s]
                deficit[s] = value
                if value > best_value:
                    best, best_value = s, value
            deficit[best] -= 1.0
            out[i] = best
        self.deficit = np.asarray(deficit)
        self.sequence = np.concatenate([self.sequence, out])


class StratifiedPartitioner(Partitioner):
    """Exact per-class proportions (±1) in every split and every shard."""

    name = "stratified"

    def __init__(
        self, label: str, partitions: int, split: Sequence[float] | str, seed: int = 0
    ) -> None:
        super().__init__(partitions, split, seed)
        self.label = label
        self._quota = _QuotaSequence(self.fractions)
        self._class_seen: dict[Any, int] = {}
        self._cell_seen: dict[tuple[Any, int], int] = {}

    def assign(self, batch: Rows, start: int) -> tuple[np.ndarray, np.ndarray]:
        count = batch.num_rows
        split = np.zeros(count, dtype=np.int8)
        shard = np.zeros(count, dtype=np.int32)
        labels = batch.column(self.label)
        if isinstance(labels, pa.ChunkedArray):
            labels = labels.combine_chunks()  # one dictionary for the whole batch
        encoded = pc.dictionary_encode(labels)
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        rng = np.random.default_rng([self.seed, start])
        # A seeded random visiting order within the batch; grouping it by class keeps each
        # class's rows in that random order.
        order = rng.permutation(count)
        order = order[np.argsort(codes[order], kind="stable")]
        bounds = np.searchsorted(codes[order], np.arange(-1, len(encoded.dictionary) + 1))
        classes = [None, *encoded.dictionary.to_pylist()]
        for position, value in enumerate(classes):
            rows = order[bounds[position] : bounds[position + 1]]
            if len(rows):
                self._assign_class(value, rows, split, shard)
        return split, shard

    def _assign_class(
        self, value: Any, rows: np.ndarray, split: np.ndarray, shard: np.ndarray
    ) -> None:
        seen = self._class_seen.get(value, 0)
        class_split = self._quota.take(seen, len(rows))
        self._class_seen[value] = seen + len(rows)
        split[rows] = class_split
        for s in np.unique(class_split):
            in_split = rows[class_split == s]
            key = (value, int(s))
            cell_seen = self._cell_seen.get(key, 0)
            # Seeded offset per class so that the remainder rows do not all pile on shard 0.
            offset = int(row_hashes(self.seed, _SHARD_SALT, hash_value(value) + int(s), 1)[0])
            slots = np.arange(cell_seen, cell_seen + len(in_split), dtype=np.int64)
            shard[in_split] = (slots + offset % self.partitions) % self.partitions
            self._cell_seen[key] = cell_seen + len(in_split)


def hash_value(value: Any) -> int:
    """A stable small integer for a label value (Python's ``hash`` of str is salted)."""
    digest = hashlib.blake2b(repr(value).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class HashPartitioner(Partitioner):
    """All rows with the same key land in one shard of one split."""

    name = "hash"

    def __init__(
        self, column: str, partitions: int, split: Sequence[float] | str, seed: int = 0
    ) -> None:
        super().__init__(partitions, split, seed)
        self.column = column

    @property
    def strategy(self) -> str:
        return f"hash:{self.column}"

    def assign(self, batch: Rows, start: int) -> tuple[np.ndarray, np.ndarray]:
        hashes = key_hashes(batch.column(self.column))
        seed_mix = splitmix64(np.array([self.seed, _SPLIT_SALT], dtype=np.uint64))
        with np.errstate(over="ignore"):
            split_units = _unit(splitmix64(hashes ^ seed_mix[0]))
            shard = splitmix64(hashes ^ seed_mix[1]) % np.uint64(self.partitions)
        return _split_of_unit(split_units, self.fractions), shard.astype(np.int32)


class RangePartitioner(Partitioner):
    """Contiguous key ranges per shard; the boundaries come from a sample of the key."""

    name = "range"

    def __init__(
        self,
        column: str,
        sample: pa.Array | pa.ChunkedArray,
        partitions: int,
        split: Sequence[float] | str,
        seed: int = 0,
    ) -> None:
        super().__init__(partitions, split, seed)
        self.column = column
        self.boundaries = range_boundaries(sample, self.partitions)

    @property
    def strategy(self) -> str:
        return f"range:{self.column}"

    def assign(self, batch: Rows, start: int) -> tuple[np.ndarray, np.ndarray]:
        keys = batch.column(self.column)
        shard = np.zeros(batch.num_rows, dtype=np.int32)
        present = pc.is_valid(keys).to_numpy(zero_copy_only=False)
        if present.any() and len(self.boundaries):
            values = _sortable(pc.drop_null(keys))
            shard[present] = np.searchsorted(self.boundaries, values, side="right")
        return self._random_split(start, batch.num_rows), shard


def _sortable(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    dtype = values.type
    if pa.types.is_temporal(dtype):
        values = (
            values.cast(pa.int64()) if not pa.types.is_date32(dtype) else values.cast(pa.int32())
        )
    if pa.types.is_dictionary(dtype):
        values = values.cast(dtype.value_type)
    array = values.to_numpy(zero_copy_only=False)
    if array.dtype.kind in "OUS":
        return array.astype(object)
    return array


def range_boundaries(sample: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    """``partitions - 1`` boundaries at evenly spaced quantiles of the (non-null) sample."""
    values = np.sort(_sortable(pc.drop_null(sample)))
    if len(values) == 0 or partitions <= 1:
        return values[:0]
    positions = (np.arange(1, partitions) * len(values)) // partitions
    return values[positions]


STRATIFIED_NEEDS_LABEL = (
    "The stratified strategy keeps class proportions, so it needs a label column: pass "
    "--label COLUMN (label=...), or use --strategy random, hash:COL or range:COL for a dataset "
    "without a label."
)


def make_partitioner(
    strategy: str,
    *,
    label: str | None,
    partitions: int,
    split: Sequence[float] | str,
    seed: int,
    column_names: Sequence[str],
    range_sample: pa.Array | pa.ChunkedArray | None = None,
) -> Partitioner:
    """Build the partitioner for ``strategy``; checks that named columns exist."""
    from shardlearn._validation import unknown_name_message

    name, column = parse_strategy(strategy)
    if partitions < 1:
        raise SchemaError(f"The number of partitions must be an int >= 1. Got {partitions}.")
    if column is not None and column not in column_names:
        raise SchemaError(unknown_name_message(f"{name} column", column, column_names))
    if name == "random":
        return RandomPartitioner(partitions, split, seed)
    if name == "stratified":
        if label is None:
            raise SchemaError(STRATIFIED_NEEDS_LABEL)
        return StratifiedPartitioner(label, partitions, split, seed)
    if name == "hash":
        return HashPartitioner(str(column), partitions, split, seed)
    if range_sample is None:
        raise SchemaError("The range strategy needs a sample of its key column.")
    return RangePartitioner(str(column), range_sample, partitions, split, seed)
