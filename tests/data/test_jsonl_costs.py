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
