"""When the parsers start each range, and how the end of a file is cut (issue 24: on the
500k-row benchmark file a parser idled while ranges remained, and the last range was parsed
alone): ranges of about one size start in input order; a parser that finishes starts the next
range at once, even while the consumer holds the generator (it converts and writes the range it
was handed), within a bound of ``parsers + 1`` ranges' bytes held; the last round of ranges is
cut into quarter pieces, so the parsers finish together. The output never changes: it is handed
over in input order (here with pieces; the Hypothesis and 1/2/4-parser tests in
test_split_inputs.py and test_parallel_ingest.py check other splits)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import shardlearn.data._ranges as ranges_module
from shardlearn.data.readers import reader_options

from ._rejects import rejects
from ._speculation import fingerprint, ingest_in_ranges
from .test_split_inputs import _csv_rows


def _even_ranges(sizes: list[int]) -> list[ranges_module.ByteRange]:
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    return [
        ranges_module.ByteRange("in.csv", i, start, end, last=i == len(sizes) - 1)
        for i, (start, end) in enumerate(zip(starts, starts[1:], strict=False))
    ]


def test_ranges_of_about_one_size_start_in_input_order() -> None:
    """Eight ranges of one file, a few bytes apart in size (cut at newlines): the first parsed
    early, each free parser takes the next in input order (the old rule took the largest by
    exact bytes: 0, 2, 3, 1, 5, 7, 4, 6 on the benchmark file)."""
    ranges = _even_ranges([1000, 1003, 1009, 998, 1004, 1011, 1001, 1006])
    started: dict[int, bool] = {0: True}
    order = [0]
    following = 0
    while len(order) < len(ranges):
        index = ranges_module.next_range(ranges, started, following, parsers=2)
        assert index is not None
        order.append(index)
        started[index] = True
        if len(started) == 3:  # the consumer takes the next range in order
            started.pop(following)
            following += 1
    assert order == list(range(len(ranges)))


def test_a_much_larger_range_in_the_look_ahead_still_starts_first() -> None:
    """Small files' ranges, then a large file's: the large range starts right after the next
    range to consume (it would otherwise run alone at the end)."""
    ranges = _even_ranges([100, 120, 90, 110, 5000, 5000])
    assert ranges_module.next_range(ranges, {0: True}, 0, parsers=2) == 4


class _RecordingPool(ThreadPoolExecutor):
    """A real thread pool that records the ranges it is given, and sets an event when it has
    been given ``watched`` of them."""

    def __init__(self, workers: int, watched: int) -> None:
        super().__init__(workers)
        self.watched = watched
        self.submitted: list[int] = []
        self.event = threading.Event()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        if fn is ranges_module._parse_range:
            self.submitted.append(args[0].index)
            if len(self.submitted) == self.watched:
                self.event.set()
        return super().submit(fn, *args, **kwargs)


def test_a_parser_starts_the_next_range_while_the_consumer_holds_the_generator(
    tmp_path: Path,
) -> None:
    """Two parsers, six ranges: the consumer takes range 0 and keeps the generator (as the
    ingest does while it writes that range's rows). Two more ranges are then running; when one
    of them ends, its parser starts a fourth (3 ranges held: the bound) without waiting for
    the consumer to ask for range 1. Before, nothing started until the consumer came back."""
    path = tmp_path / "in.csv"
    path.write_text("x,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(3000)))
    options = reader_options(block_size=1 << 16)
    size = path.stat().st_size
    with _RecordingPool(2, watched=4) as pool:
        ranges = ranges_module.plan_ranges(
            str(path), options, size // 6 + 1, pool, whole=True, parsers=2, speculate=True
        )
        assert ranges is not None and len(ranges) == 6
        parsed = ranges_module.parse_ranges(ranges, options, {}, pool, 2)
        first = next(parsed)
        assert first[0].index == 0
        # Not a synchronising sleep: the old schedule never starts a fourth range here (the
        # wait runs out and the test fails); the new one starts it as range 1 or 2 ends.
        assert pool.event.wait(timeout=60), pool.submitted
        assert pool.submitted[:4] == [0, 1, 2, 3]
        rest = list(parsed)
    assert [r.index for r, _, _ in [first, *rest]] == list(range(6))
    assert sorted(pool.submitted) == list(range(6))
    firsts = [int(batches[0].lines[0]) for _, _, batches in [first, *rest]]
    assert firsts == [2, *(r.first_line for r, _, _ in rest)]  # line 1 is the header


def _pieces_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut the last round into pieces in a small file too (a piece is at least 1 MiB else)."""
    monkeypatch.setattr(ranges_module, "TAIL_PIECE_BYTES", 1, raising=False)


@pytest.mark.parametrize(("parsers", "body"), [(2, 6), (4, 4)])
def test_the_last_round_of_ranges_is_cut_into_quarter_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parsers: int, body: int
) -> None:
    """Seven ranges' worth of bytes make 8 even ranges (a multiple of the parsers); the last
    round (one range per parser) is cut into 4 pieces per parser, a quarter of a range each.
    Before, the plan was 8 even ranges, and the last one was parsed alone."""
    _pieces_everywhere(monkeypatch)
    path = tmp_path / "in.csv"
    rows = (f"{i * 7919 % 10007},{'ab'[i % 2]}\n" for i in range(4000))
    path.write_text("x,label\n" + "".join(rows))
    size = path.stat().st_size
    longest = 13
    with ThreadPoolExecutor(parsers) as pool:
        plan = ranges_module.plan_ranges(
            str(path), reader_options(), size // 7 + 1, pool, whole=True, parsers=parsers
        )
    assert plan is not None
    lengths = [r.end - r.start for r in plan]
    assert len(plan) == body + 4 * parsers, lengths
    assert all(abs(n - size / 8) <= longest for n in lengths[:body]), lengths
    assert all(abs(n - size / 32) <= longest for n in lengths[body:]), lengths
    assert [r.start for r in plan] == [0, *[r.end for r in plan[:-1]]] and plan[-1].end == size


@pytest.mark.parametrize("parsers", [2, 4])
def test_pieces_write_the_dataset_and_rejects_of_one_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parsers: int
) -> None:
    """Bad rows and quoted values holding newlines, cut with a tail of pieces (a cut in a
    quoted value: planned exactly, once): the dataset, byte for byte, and the rejects (lines
    and reasons) of one stream."""
    _pieces_everywhere(monkeypatch)
    data, bad = _csv_rows(3000, 97)
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1)
    split = ingest_in_ranges(path, tmp_path / "split", len(data) // 7 + 1, parsers)
    assert whole.manifest["ranges"] == 1
    assert split.manifest["ranges"] >= 8 - parsers + 4 * parsers
    assert [line for line, _ in rejects(split)] == bad
    assert fingerprint(split) == fingerprint(whole)


def test_small_pieces_are_held_beyond_parsers_plus_one_within_the_bytes_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two parsers, two ranges and eight quarter pieces: the consumer takes range 0 and keeps
    the generator. Range 1 and pieces may be held up to three ranges' bytes (range 1 and four
    pieces, in the look-ahead of six), so a fifth parse starts; a bound of parsers + 1 ranges
    held stopped at four, and a parser waited for the consumer."""
    _pieces_everywhere(monkeypatch)
    path = tmp_path / "in.csv"
    path.write_text("x,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(6000)))
    options = reader_options(block_size=1 << 16)
    size = path.stat().st_size
    with _RecordingPool(2, watched=5) as pool:
        ranges = ranges_module.plan_ranges(
            str(path), options, size // 4 + 1, pool, whole=True, parsers=2, speculate=True
        )
        assert ranges is not None and len(ranges) == 10
        parsed = ranges_module.parse_ranges(ranges, options, {}, pool, 2)
        first = next(parsed)
        # Not a synchronising sleep: a count bound never starts a fifth parse here (the wait
        # runs out and the test fails); the bytes bound starts it as a piece ends.
        assert pool.event.wait(timeout=60), pool.submitted
        assert pool.submitted[:5] == [0, 1, 2, 3, 4]
        rest = list(parsed)
    assert [r.index for r, _, _ in [first, *rest]] == list(range(10))
    assert sorted(pool.submitted) == list(range(10))
