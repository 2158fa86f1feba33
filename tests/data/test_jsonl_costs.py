"""What the JSON Lines path costs beyond pyarrow's parse: no range-sized temporaries, and the
schema sample's head parsed by the ingest's parsers at once."""

from __future__ import annotations

import json
import threading
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlearn.data import _jsonl, ingest
from shardlearn.data._ingest_run import IngestRun

from ._speculation import fingerprint, ingest_in_ranges, recording_early_parses


@settings(max_examples=100, deadline=None)
@given(
    raw=st.lists(st.sampled_from([b"{}", b"\n", b"\n\n", b'"a"', b"\r"]), max_size=60).map(
        b"".join
    ),
    piece=st.integers(1, 9),
)
def test_the_line_count_in_pieces_is_the_whole_count(raw: bytes, piece: int) -> None:
    """A range's newlines are counted a piece at a time: every piece counts, the last short
    one too (pieces of 1 to 9 bytes against up to 120 bytes)."""
    with mock.patch.object(_jsonl, "_COUNT_PIECE", piece):
        assert _jsonl.count_lines(raw) == raw.count(b"\n")


def test_counting_a_range_allocates_no_range_sized_temporary() -> None:
    """Counting the lines of a 4 MiB range allocates at most one piece (1 MiB) of numpy
    temporaries: a range-sized one takes fresh pages the kernel zeroes, and pushes the next
    range's read onto fresh pages too."""
    raw = b'{"a": 1.5}\n' * (400 << 10)
    tracemalloc.start()
    try:
        count = _jsonl.count_lines(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 400 << 10
    assert peak <= (1 << 20) + (64 << 10), peak
    assert _jsonl.count_lines(b"") == 0 and _jsonl.count_lines(np.zeros(3, np.uint8).tobytes()) == 0


def _threads_of_parses(patch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Record (first line, thread name) of each block Arrow parses."""
    seen: list[tuple[int, str]] = []
    parse = _jsonl._BlockParse._parse

    def recorded(self: _jsonl._BlockParse, parsed: np.ndarray, expected: int) -> pa.Table:
        seen.append((self.block.first, threading.current_thread().name))
        return parse(self, parsed, expected)

    patch.setattr(_jsonl._BlockParse, "_parse", recorded)
    return seen


def test_the_first_chunk_is_parsed_on_several_threads_and_the_rest_on_the_caller() -> None:
    """A schema sample reads the first chunk while nothing else runs: its blocks are parsed at
    once (a timestamp-like column and bad lines in several of them), the blocks after it by
    the caller, and the rows are those of one thread."""
    lines = [
        json.dumps({"x": i + 0.5, "t": "2020-01-01" if i % 3 else "b", "label": i % 2})
        for i in range(400)
    ]
    for bad in (20, 150, 230):
        lines[bad] = '{"x": [1], "t": '
    data = ("\n".join(lines) + "\n").encode()
    results = []
    for threads in (1, 3):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_jsonl, "READ_BYTES", 2048)  # about 40 lines a block
            patch.setattr(_jsonl, "CHUNK_LINES", 250)
            seen = _threads_of_parses(patch)
            reader = _jsonl.JsonLinesReader("f", 1 << 20, None, {}, (), threads)
            parts = list(reader.batches(pa.BufferReader(data)))
        columns = [[c.to_pylist() for c in p.batch.columns] for p in parts]
        rows = [r for values in columns for r in zip(*values, strict=True)]
        lines_of = [int(n) for p in parts for n in p.lines]
        results.append((reader.names, rows, lines_of, sorted(r for p in parts for r in p.invalid)))
        head = {name for first, name in seen if first <= 250}
        rest = {name for first, name in seen if first > 250}
        caller = threading.current_thread().name
        if threads == 1:
            assert head == rest == {caller}
        else:
            assert len(head) == 3 and all(n.startswith("shardlearn-jsonl") for n in head)
            assert rest == {caller}
    assert results[0] == results[1]
    assert len(results[0][3]) == 3


def test_ingest_samples_a_json_lines_head_with_its_parsers(tmp_path: Path) -> None:
    """``parsers`` threads parse the schema sample's head too (one parser: the caller alone),
    and the dataset is the same byte for byte."""
    lines = [json.dumps({"x": i * 0.25, "c": "ab"[i % 2], "label": i % 3}) for i in range(900)]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    files = []
    for parsers in (1, 2):
        out = tmp_path / f"out{parsers}"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_jsonl, "READ_BYTES", 4096)
            seen = _threads_of_parses(patch)
            ingest(source, "label", out, partitions=2, parsers=parsers, progress=False)
        head = {name for _, name in seen if name.startswith("shardlearn-jsonl")}
        assert len(head) == (parsers if parsers > 1 else 0)
        files.append({str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.parquet")})
    assert files[0] == files[1] and len(files[0]) == 6


def test_the_head_guesses_the_numeric_columns_from_the_lines_that_name_them() -> None:
    """Ingest may start parsing before its schema sample: the guess is the columns Arrow reads
    as int64 or float64 in the lines that name the columns (a nested or text column is no
    guess, a key first seen after them is no column), with the names the reader gives."""
    lines = [json.dumps({"i": k, "f": k + 0.5, "s": "ab", "n": [k], "z": None}) for k in range(30)]
    lines.append(json.dumps({"i": 1, "late": 2.5}))
    data = ("\n".join(lines) + "\n").encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_jsonl, "NAME_RECORDS", 30)
        names, types = _jsonl.head_types(pa.BufferReader(data), 1 << 20)
        assert names == _jsonl.column_names(pa.BufferReader(data), 1 << 20)
    assert names == ["i", "f", "s", "n", "z"]
    assert types == {"i": pa.int64(), "f": pa.float64()}
    assert _jsonl.head_types(pa.BufferReader(b'{"i": 1}\n{"i": "x"}\n'), 1 << 20) is None
    assert _jsonl.head_types(pa.BufferReader(b"\n\n"), 1 << 20) is None


@pytest.mark.parametrize(("floats_from", "stands"), [(None, True), (10_000, False)])
def test_json_lines_parse_early_with_the_head_guess_and_give_the_dataset_of_one_parser(
    tmp_path: Path, floats_from: int | None, stands: bool
) -> None:
    """A JSON Lines file's first ranges start parsing before the schema sample with the head's
    guess: a right one (x int64 in the head and the schema) is used, a wrong one (float64 in
    the schema) dropped; with bad lines after the head, 2 and 4 parsers write the files (rows
    and rejects) of 1 parser."""
    lines = []
    for i in range(24_000):
        x = i + 0.5 if floats_from is not None and i >= floats_from else i
        lines.append(json.dumps({"x": x, "s": f"v{i % 13}", "label": "ab"[i * 7 % 3 % 2]}))
    for bad in range(3_000, 24_000, 2_500):
        lines[bad] = ['{"x": 1,', '{"x": [1], "label": "a"}', "[1]"][bad % 3]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    used: list[int] = []
    with mock.patch.object(IngestRun, "_early_parses", recording_early_parses(used)):
        prints = {
            n: fingerprint(ingest_in_ranges(path, tmp_path / f"o{n}", path.stat().st_size // 6, n))
            for n in (1, 2, 4)
        }
    assert prints[2] == prints[1] and prints[4] == prints[1]
    assert prints[1][1]["rows_read"] == 24_000 and prints[1][1]["rows_rejected"] == 9
    # One range fewer than the parsers starts early: the sample keeps a core of its own.
    assert used == ([1, 3] if stands else [0, 0])
