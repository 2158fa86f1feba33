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
  keeps the counts exact. The quota sequence is computed by a checked guess with numpy, equal
  to the plain recurrence's bit for bit (``_QuotaSequence``).
- ``hash:COL``: the key's hash picks the split and the shard; equal keys share both. A string
  key's hash (blake2b) is computed once per distinct key of the input, not per batch
  (``KeyDigests``: a bounded cache looked up with numpy and Arrow).
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


class KeyDigests:
    """The blake2b digests of string keys, each distinct key's computed once per input.

    The digest of a key decides its rows' split and shard, so it is fixed by the design (Arrow
    has no blake2b, and no other hash keeps the datasets written before); blake2b runs in
    Python, about 1 us a key, and it ran once per distinct key *per batch*. Here a batch's
    distinct keys (Arrow's dictionary encoding) find their cached digests by a fingerprint
    computed with numpy from the keys' buffers (a binary search among the cached
    fingerprints), and each key is compared with the cached key by Arrow, so a fingerprint
    collision is a miss, never a wrong digest. Missing keys are digested in Python and cached
    while the cache holds fewer than :attr:`LIMIT` keys and :attr:`MAX_BYTES` bytes of them;
    past that, they are digested in every batch holding them.
    """

    LIMIT = 1 << 18
    MAX_BYTES = 16 << 20
    FEW = 64  # a batch with this many keys or fewer digests them: cheaper than a look-up

    def __init__(self) -> None:
        self._fingerprints = np.zeros(0, dtype=np.uint64)  # sorted, distinct
        self._digests = np.zeros(0, dtype=np.uint64)  # in the fingerprints' order
        self._slots = np.zeros(0, dtype=np.int64)  # each fingerprint's key in self._keys
        self._keys = pa.array([], pa.string())  # in the order they were cached
        self._bytes = 0

    def __call__(self, values: pa.StringArray) -> np.ndarray:
        """The digest of every row's key (that of an arbitrary key for a null)."""
        encoded = pc.dictionary_encode(values)  # Arrow's hash table: cheap, few keys or many
        keys = encoded.dictionary
        if len(keys) <= self.FEW:
            digests = _blake2b(keys.to_pylist())
        else:
            digests = np.zeros(len(keys), dtype=np.uint64)
            missing = np.flatnonzero(~self._lookup(keys, digests))
            if len(missing):
                keys = keys.take(missing)
                digests[missing] = _blake2b(keys.to_pylist())
                self._insert(keys, digests[missing])
        if not len(digests):
            return np.zeros(len(values), dtype=np.uint64)
        return digests[pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)]

    def _lookup(self, keys: pa.StringArray, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` for the distinct ``keys`` that are cached; returns which they are."""
        found = np.zeros(len(keys), dtype=bool)
        if not len(self._fingerprints) or not len(keys):
            return found
        fingerprints = _string_fingerprints(keys)
        position = np.searchsorted(self._fingerprints, fingerprints)
        position[position == len(self._fingerprints)] = 0
        rows = np.flatnonzero(self._fingerprints[position] == fingerprints)
        position = position[rows]
        same = pc.equal(keys.take(rows), self._keys.take(self._slots[position]))
        same = same.to_numpy(zero_copy_only=False)
        found[rows[same]] = True
        out[rows[same]] = self._digests[position[same]]
        return found

    def _insert(self, keys: pa.StringArray, digests: np.ndarray) -> None:
        """Cache the distinct, uncached ``keys`` that fit, but not a fingerprint twice."""
        sizes = np.diff(_offsets(keys))
        room = min(self.LIMIT - len(self._fingerprints), len(keys))
        fit = int(np.count_nonzero(np.cumsum(sizes[:room]) <= self.MAX_BYTES - self._bytes))
        fingerprints, first = np.unique(
            _string_fingerprints(keys)[:fit], return_index=True
        )  # sorted
        at = np.searchsorted(self._fingerprints, fingerprints)
        keep = first
        if len(self._fingerprints):
            new = self._fingerprints[np.minimum(at, len(self._fingerprints) - 1)] != fingerprints
            keep, fingerprints, at = first[new], fingerprints[new], at[new]
        slots = np.arange(len(self._keys), len(self._keys) + len(keep), dtype=np.int64)
        self._fingerprints = np.insert(self._fingerprints, at, fingerprints)
        self._digests = np.insert(self._digests, at, digests[keep])
        self._slots = np.insert(self._slots, at, slots)
        self._keys = pa.concat_arrays([self._keys, keys.take(keep)])
        self._bytes += int(sizes[keep].sum())


def _blake2b(keys: list[str]) -> np.ndarray:
    """The 8-byte blake2b digest of every key's UTF-8, little-endian, as uint64."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
            for key in keys
        ],
        dtype=np.uint64,
    )


def _offsets(values: pa.StringArray) -> np.ndarray:
    """The ``len(values) + 1`` offsets of a string array's values in its data buffer."""
    if not len(values):
        return np.zeros(1, dtype=np.int64)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)
    return offsets[values.offset : values.offset + len(values) + 1].astype(np.int64)


def _string_fingerprints(values: pa.StringArray) -> np.ndarray:
    """A 64-bit fingerprint of every string (of its bytes; a null's is meaningless), by numpy
    over the array's buffers: splitmix64 of the length plus the sum of (byte + 1) times a
    pseudo-random odd weight per position."""
    offsets = _offsets(values)
    lengths = np.diff(offsets)
    sums = np.zeros(len(values), dtype=np.uint64)
    total = int(offsets[-1] - offsets[0])
    if total:
        data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        starts = offsets[:-1] - offsets[0]
        terms = splitmix64(np.arange(int(lengths.max()), dtype=np.uint64))
        terms |= np.uint64(1)
        terms = terms[np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)]
        terms *= data + np.uint64(1)
        nonempty = lengths > 0
        # reduceat sums each start's terms up to the next start: empty strings have none.
        sums[nonempty] = np.add.reduceat(terms, starts[nonempty])
    sums ^= splitmix64(lengths.astype(np.uint64))
    return _splitmix64_in_place(sums)


def key_hashes(values: pa.Array | pa.ChunkedArray, digests: KeyDigests) -> np.ndarray:
    """A stable 64-bit hash per value (equal values, equal hashes; nulls share one hash).

    Integers and booleans hash by splitmix64, anything else as text by blake2b through
    ``digests`` (a cache kept across the batches of one input).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_integer(values.type) or pa.types.is_boolean(values.type):
        ints = pc.fill_null(values.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        hashes = splitmix64(ints.view(np.uint64) if ints.dtype == np.int64 else ints)
    else:
        hashes = digests(values.cast(pa.string()))
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

    The recurrence (every deficit gains its fraction, the first largest one loses 1) is
    sequential float arithmetic, and its rounding decides near-ties, so the sequence is defined
    by :meth:`_loop`. Past a warm-up it is computed by *speculation*: the sequence is nearly
    periodic, so the next window is guessed as a repeat of its last period, and the guess is
    checked by replaying the recurrence with ``np.add.accumulate`` (one IEEE addition at a time
    in order, as the loop does: the deficits after each step are exactly the loop's for as long
    as the guess agrees). The first disagreement is replaced by the replay's own choice, and
    the next window starts after it, so the output is the loop's, bit for bit.
    """

    _CHUNK = 1 << 16
    _WARM_UP = 4096  # steps by the loop before guessing; the period is looked for in them
    _MAX_PERIOD = 2048
    _MIN_RUN = 64  # a guess right for fewer steps costs more than the loop: loop a while
    _LOOP_STEPS = 4096

    def __init__(self, fractions: Sequence[float]) -> None:
        self.fractions = np.asarray(fractions, dtype=np.float64)
        self.deficit = np.zeros(len(fractions))
        self.sequence = np.zeros(0, dtype=np.int8)
        self._period = 0  # 0: not looked for yet

    def take(self, start: int, count: int) -> np.ndarray:
        while len(self.sequence) < start + count:
            # Grow geometrically (small inputs stay cheap), capped at one chunk per step.
            step = min(self._CHUNK, max(1024, len(self.sequence)))
            self._extend(max(step, start + count - len(self.sequence)))
        return self.sequence[start : start + count]

    def _extend(self, count: int) -> None:
        done = len(self.sequence)
        out = np.empty(done + count, dtype=np.int8)
        out[:done] = self.sequence
        end = done + count
        window = self._MIN_RUN
        while done < end:
            if done < self._WARM_UP:
                done = self._loop(out, done, min(end, self._WARM_UP))
                continue
            if not self._period:
                self._period = _likely_period(out[:done], self._MAX_PERIOD)
            run = self._speculate(out, done, min(end - done, window))
            window = min(2 * run, self._CHUNK) if run == window else max(self._MIN_RUN, 2 * run)
            done += run
            if run < self._MIN_RUN:
                done = self._loop(out, done, min(end, done + self._LOOP_STEPS))
        self.sequence = out

    def _loop(self, out: np.ndarray, begin: int, end: int) -> int:
        """Steps ``begin .. end-1`` of the recurrence, one at a time (the definition)."""
        deficit = self.deficit.tolist()
        fractions = self.fractions.tolist()
        splits = range(len(fractions))
        for i in range(begin, end):
            best, best_value = 0, -2.0
            for s in splits:
                value = deficit[s] + fractions[s]
                deficit[s] = value
                if value > best_value:
                    best, best_value = s, value
            deficit[best] -= 1.0
            out[i] = best
        self.deficit = np.asarray(deficit)
        return end

    def _speculate(self, out: np.ndarray, begin: int, count: int) -> int:
        """Guess steps ``begin ..`` as a repeat of the last period, replay them and keep the
        right prefix plus the replay's correction of the first wrong step: returns how many
        steps were kept (at least one)."""
        period = self._period
        guess = out[begin - period + np.arange(count) % period]
        splits = len(self.fractions)
        # Per split: deficit, +fraction, -1 if chosen (else -0.0, an exact identity), ...
        terms = np.empty((splits, 2 * count + 1))
        terms[:, 0] = self.deficit
        terms[:, 1::2] = self.fractions[:, None]
        terms[:, 2::2] = np.where(guess == np.arange(splits)[:, None], -1.0, -0.0)
        np.add.accumulate(terms, axis=1, out=terms)
        values = terms[:, 1::2]  # the values compared at each step
        # The loop's choice: the first largest value, or split 0 if none exceeds -2.
        chosen = np.argmax(values, axis=0).astype(np.int8)
        chosen[values.max(axis=0) <= -2.0] = 0
        wrong = np.flatnonzero(chosen != guess)
        if not len(wrong):
            out[begin : begin + count] = guess
            self.deficit = terms[:, -1].copy()
            return count
        first = int(wrong[0])
        out[begin : begin + first + 1] = chosen[: first + 1]
        self.deficit = values[:, first].copy()
        self.deficit[chosen[first]] -= 1.0
        return first + 1


def _likely_period(sequence: np.ndarray, longest: int) -> int:
    """The shift up to ``longest`` under which the second half of ``sequence`` best matches
    itself (the smallest such shift): the period of the quota sequence's guesses."""
    tail = sequence[-2 * longest :]
    half = len(tail) // 2
    recent = tail[half:]
    mismatches = [
        int(np.count_nonzero(recent != tail[half - shift : len(tail) - shift]))
        for shift in range(1, half + 1)
    ]
    return int(np.argmin(mismatches)) + 1


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
        self._digests = KeyDigests()

    @property
    def strategy(self) -> str:
        return f"hash:{self.column}"

    def assign(self, batch: Rows, start: int) -> tuple[np.ndarray, np.ndarray]:
        hashes = key_hashes(batch.column(self.column), self._digests)
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
