"""When the parsers start each range (issue 24: on the 500k-row benchmark file a parser idled
while ranges remained, and the last range was parsed alone): ranges of about one size start in
input order, and a parser that finishes starts the next range at once, within the bound of
``parsers + 1`` ranges held, even while the consumer holds the generator (it converts and
writes the range it was handed). The output never changes: it is handed over in input order
(the Hypothesis and 1/2/4-parser tests in test_split_inputs.py and test_parallel_ingest.py
check the datasets)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import shardlearn.data._ranges as ranges_module
from shardlearn.data.readers import reader_options


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
