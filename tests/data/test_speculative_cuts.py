"""Speculative cuts: a plain CSV is cut at newlines without reading it first; each range's own
scan checks its cut as it is parsed, and a cut inside a quoted value (or beside a row longer
than a block) makes the ingest plan the file exactly and run again. Either way the dataset is
byte for byte the one a single stream writes, and every reject keeps its physical line."""

from __future__ import annotations

import warnings
from pathlib import Path
from unittest import mock

import pytest

import shardlearn.data._ingest_run as ingest_run
import shardlearn.data._ranges as ranges_module
from shardlearn.data import ingest
from shardlearn.exceptions import DataError

from ._rejects import rejects
from ._speculation import (
    RecordedPlans,
    fingerprint,
    ingest_in_ranges,
    numbered_lines,
    write_quoted_csv,
)


def test_a_clean_csv_is_read_once_and_writes_the_single_stream_dataset(tmp_path: Path) -> None:
    """No pass over the bytes before the parse: each range is read once, by its parser (the
    plan used to read and scan every range first); rows, lines and rejects are unchanged."""
    lines = numbered_lines(3000)
    lines[1234] = "1233,bad"
    path = tmp_path / "clean.csv"
    path.write_text("\n".join(lines) + "\n")
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1)
    read: list[int] = []
    original = ranges_module._read

    def counting(byte_range: ranges_module.ByteRange) -> bytes:
        data = original(byte_range)
        read.append(len(data))
        return data

    plans = RecordedPlans()
    with (
        mock.patch.object(ranges_module, "_read", counting),
        mock.patch.object(ingest_run, "plan_ranges", plans),
    ):
        split = ingest_in_ranges(path, tmp_path / "split", path.stat().st_size // 6, 2)
    assert split.manifest["ranges"] >= 6
    assert plans.speculative == [True]
    assert sum(read) == path.stat().st_size
    assert rejects(split) == [(1235, "wrong number of fields (expected 3)")]
    assert fingerprint(split) == fingerprint(whole)


def test_a_cut_inside_a_quoted_value_plans_again_and_keeps_every_line(tmp_path: Path) -> None:
    """The middle of the file lies in a value of 200 lines: the speculative cut there is
    wrong, the file is planned exactly (its cut moves past the value) and the ingest runs
    again, leaving nothing of the first run; rejects after the value keep their physical
    lines, and the dataset is the single stream's."""
    path = write_quoted_csv(tmp_path)
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1)
    assert rejects(whole) == [(500, "wrong number of fields (expected 3)")]
    plans = RecordedPlans()
    with mock.patch.object(ingest_run, "plan_ranges", plans):
        split = ingest_in_ranges(path, tmp_path / "split", path.stat().st_size // 2, 2)
    assert plans.speculative == [True, False]
    assert split.manifest["ranges"] == 2
    assert rejects(split) == rejects(whole)
    assert fingerprint(split) == fingerprint(whole)
    assert [p.name for p in (tmp_path / "split").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("parsers", [1, 2, 4])
def test_a_wrong_cut_after_a_right_one_and_in_a_later_file(tmp_path: Path, parsers: int) -> None:
    """Files parsed side by side: the first is cut right, the second wrongly (its first
    range holds rows of both kinds: rows of both files were handed over first); only the
    second is planned again, and 1, 2 and 4 parsers write the dataset that one stream per
    file writes."""
    first = tmp_path / "a.csv"
    first.write_text("\n".join(numbered_lines(3000)) + "\n")
    lines = numbered_lines(600)
    value = "\n".join(f"part {k}" for k in range(50))
    for i in range(420, 600):
        lines[i] = f'{i},"{value}",a'  # the last 30% of the rows: 98% of the bytes
    second = tmp_path / "b.csv"
    second.write_text("\n".join(lines) + "\n")
    paths = [str(first), str(second)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The label column")
        whole = ingest(paths, "label", tmp_path / "whole", partitions=3, progress=False,
                       parsers=1, kinds={"s": "text"})  # fmt: skip
    plans = RecordedPlans()
    range_bytes = second.stat().st_size // 4
    with (
        mock.patch.object(ingest_run, "plan_ranges", plans),
        mock.patch.object(ranges_module, "RANGE_BYTES", range_bytes),
    ):
        split = ingest(paths, "label", tmp_path / "split", partitions=3, progress=False,
                       parsers=parsers, kinds={"s": "text"})  # fmt: skip
    assert plans.speculative == [True, True, False]  # the first file's checked cuts are kept
    assert split.manifest["ranges"] >= 4
    assert fingerprint(split) == fingerprint(whole)


@pytest.mark.parametrize("where", ["end of the first range", "end of the file"])
def test_a_row_longer_than_a_block_at_a_cut_reads_the_file_as_the_stream_does(
    tmp_path: Path, where: str
) -> None:
    """A row longer than the block size decides its fate by where its stream ends (pyarrow
    takes it at the end of a stream only): at a speculative cut the file is planned again,
    which reads it as one stream; the outcome, rejects or error, is the single stream's."""
    lines = numbered_lines(60)
    long = f'7,"{"w" * 200}",a'
    if where == "end of the file":
        lines.append(long)
        text = "\n".join(lines)  # no newline after the last row
    else:
        lines.insert(31, long)
        text = "\n".join(lines) + "\n"
    path = tmp_path / "long.csv"
    path.write_text(text)
    cut = text.index(long) + len(long) // 2 if where != "end of the file" else len(text) // 2

    def outcome(out: Path, range_bytes: int, parsers: int) -> object:
        try:
            ds = ingest_in_ranges(path, out, range_bytes, parsers, block_size=64)
        except DataError as error:
            return str(error)
        return rejects(ds), fingerprint(ds)

    whole = outcome(tmp_path / "whole", 1 << 30, 1)
    plans = RecordedPlans()
    with mock.patch.object(ingest_run, "plan_ranges", plans):
        split = outcome(tmp_path / "split", cut, 2)
    assert split == whole
    assert plans.speculative == [True, False]
