"""What the JSON Lines path costs beyond pyarrow's parse: no range-sized temporaries."""

from __future__ import annotations

import tracemalloc
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlearn.data import _jsonl


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
