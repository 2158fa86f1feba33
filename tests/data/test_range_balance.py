"""The range plan keeps every parser busy: a file of more than one range is cut into a multiple
of the parsers' number of ranges of even size (issue 24: a 115 MB CSV made 7 ranges of 16 MiB
on 2 parsers, so one parser idled for the whole last round), never larger than the range size
(bounded memory); so are a Parquet file's row groups and a ``.zst``'s frames, as far as their
units allow. The output does not change (tests/data/test_parallel_ingest.py and
test_split_inputs.py check 1, 2 and 4 parsers and Hypothesis splits)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import shardlearn.data._ranges as ranges_module
from shardlearn.data._balance import range_count
from shardlearn.data.readers import reader_options

from ._speculation import fingerprint
from .test_parallel_ingest import _ingest

ROWS = 3000


def _write(path: Path, seed: int) -> int:
    """A CSV (x, s, label) or JSON Lines file of :data:`ROWS` rows of uneven length; the
    length of its longest line."""
    rng = np.random.default_rng(seed)
    words = ["a" * int(n) for n in rng.integers(1, 40, ROWS)]
    values = rng.normal(size=ROWS).round(4)
    if path.suffix == ".jsonl":
        lines = [
            json.dumps({"x": float(x), "s": s, "label": "ab"[i % 2]})
            for i, (x, s) in enumerate(zip(values, words, strict=True))
        ]
    else:
        lines = ["x,s,label"] + [
            f"{x},{s},{'ab'[i % 2]}" for i, (x, s) in enumerate(zip(values, words, strict=True))
        ]
    path.write_text("\n".join(lines) + "\n")
    return max(len(line) + 1 for line in lines)


def _plan(path: Path, range_bytes: int, parsers: int) -> list[ranges_module.ByteRange]:
    with ThreadPoolExecutor(parsers) as pool:
        plan = ranges_module.plan_ranges(
            str(path), reader_options(), range_bytes, pool, whole=True, parsers=parsers
        )
    assert plan is not None
    return plan


def _check_balance(plan: list[ranges_module.ByteRange], parsers: int, most: float) -> None:
    """A multiple of ``parsers`` ranges, none more than 1.5 times another nor longer than
    ``most``, tiling the file (bytes, or rows of a Parquet file) in order."""
    lengths = [r.end - r.start for r in plan]
    assert len(plan) % parsers == 0, (len(plan), parsers)
    assert max(lengths) <= 1.5 * min(lengths), lengths
    assert max(lengths) <= most, (lengths, most)  # never much larger than a range (memory)
    assert [r.start for r in plan] == [0, *[r.end for r in plan[:-1]]]
    assert [r.last for r in plan] == [False] * (len(plan) - 1) + [True]


# (file size / range size, parsers): the old plan made ceil(ratio) ranges, not a multiple.
CASES = [(2.5, 2), (6.85, 2), (4.3, 3), (6.85, 4), (9.2, 4)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize(("ratio", "parsers"), CASES)
def test_a_file_is_cut_into_a_multiple_of_the_parsers_of_even_ranges(
    tmp_path: Path, suffix: str, ratio: float, parsers: int
) -> None:
    path = tmp_path / f"in{suffix}"
    longest = _write(path, seed=int(ratio * 100) + parsers)
    size = path.stat().st_size
    range_bytes = int(size / ratio)
    plan = _plan(path, range_bytes, parsers)
    assert len(plan) > int(ratio) and plan[-1].end == size
    _check_balance(plan, parsers, most=range_bytes + longest)


UNIT_CASES = [(6.85, 4), (4.3, 3)]  # the old greedy runs: 6 for 4 parsers, 5 for 3


@pytest.mark.parametrize(("ratio", "parsers"), UNIT_CASES)
def test_parquet_row_groups_make_a_multiple_of_the_parsers_of_even_runs(
    tmp_path: Path, ratio: float, parsers: int
) -> None:
    """Runs of 100-row groups (the plan used to group them greedily into runs of at least a
    range each)."""
    plain, parquet = tmp_path / "in.csv", tmp_path / "in.parquet"
    _write(plain, seed=parsers)
    pq.write_table(pacsv.read_csv(plain), parquet, row_group_size=100)
    metadata = pq.read_metadata(parquet)
    group_bytes = [metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups)]
    plan = _plan(parquet, int(sum(group_bytes) / ratio), parsers)
    assert plan[-1].end == ROWS and plan[0].row_groups is not None
    _check_balance(plan, parsers, most=ROWS / ratio + 100)


@pytest.mark.parametrize(("ratio", "parsers"), UNIT_CASES)
def test_zst_frames_make_a_multiple_of_the_parsers_of_even_ranges(
    tmp_path: Path, ratio: float, parsers: int
) -> None:
    """Chunks of Zstandard frames of 40 lines each (grouped greedily before, as row groups)."""
    plain, zst = tmp_path / "in.csv", tmp_path / "in.csv.zst"
    _write(plain, seed=parsers)
    lines = plain.read_bytes().splitlines(keepends=True)
    frames = [b"".join(lines[i : i + 40]) for i in range(0, len(lines), 40)]
    zst.write_bytes(b"".join(pa.compress(f, codec="zstd", asbytes=True) for f in frames))
    size = plain.stat().st_size
    plan = _plan(zst, int(size / ratio), parsers)
    assert plan[-1].end == size and plan[0].frames is not None
    _check_balance(plan, parsers, most=size / ratio + max(map(len, frames)))


@pytest.mark.parametrize(
    ("size", "range_bytes", "parsers", "count"),
    [
        (100, 100, 4, 1),  # one range: a small file stays whole
        (685, 100, 1, 7),  # one parser: nothing to balance
        (685, 100, 2, 8),
        (685, 100, 3, 9),
        (120, 100, 4, 2),  # 4 ranges of 30 bytes: below half a range, kept at 2
        (250, 100, 4, 4),  # 4 ranges of 62 bytes: at least half a range
    ],
)
def test_range_count(size: int, range_bytes: int, parsers: int, count: int) -> None:
    assert range_count(size, range_bytes, parsers) == count


def test_an_ingest_plans_for_its_parsers_and_writes_the_same_dataset(tmp_path: Path) -> None:
    """The ingest passes its parser count to the plan (7 ranges' worth of bytes on 2 parsers
    make 8 ranges), and the dataset is the single-stream one, byte for byte."""
    path = tmp_path / "in.csv"
    _write(path, seed=7)
    range_bytes = int(path.stat().st_size / 6.85)
    whole = _ingest(path, tmp_path / "whole", 1 << 30, 1, "random")
    split = _ingest(path, tmp_path / "split", range_bytes, 2, "random")
    assert split.manifest["ranges"] == 8 and split.manifest["parsers"] == 2
    assert fingerprint(split) == fingerprint(whole)
