"""Speculative cuts of JSON Lines: a plain JSON Lines file is cut at newlines without reading it
first (nothing is quoted across lines, so a cut after a newline always ends a line); each parser
counts the newlines of the bytes it parses and every range's first line follows from the ranges
before it. The dataset and every reject's line are those of a single stream."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pytest

import shardlearn.data._ingest_run as ingest_run
import shardlearn.data._ranges as ranges_module
from shardlearn.data import Dataset
from shardlearn.data._balance import range_count
from shardlearn.data.readers import ReaderOptions

from ._rejects import rejects
from ._speculation import RecordedPlans, fingerprint, ingest_in_ranges

BLOCK = 128  # the block size: a longer line is a reject


class _Reads:
    """Counts the bytes the ranges' reads return."""

    def __init__(self) -> None:
        self.bytes = 0
        self.read = ranges_module._read

    def __call__(self, byte_range: ranges_module.ByteRange) -> bytes:
        data = self.read(byte_range)
        self.bytes += len(data)
        return data


def _records(count: int) -> list[str]:
    return [json.dumps({"x": i, "s": f"v{i:05d}", "label": "ab"[i % 2]}) for i in range(count)]


def _split_ingest(path: Path, out: Path, range_bytes: int, parsers: int) -> tuple[Dataset, int]:
    """The ingest of ``path`` in ranges, its only plan speculative: (dataset, bytes read)."""
    plans, reads = RecordedPlans(), _Reads()
    with (
        mock.patch.object(ranges_module, "_read", reads),
        mock.patch.object(ingest_run, "plan_ranges", plans),
    ):
        split = ingest_in_ranges(path, out, range_bytes, parsers, block_size=BLOCK)
    assert plans.speculative == [True]
    return split, reads.bytes


def test_a_clean_json_lines_file_is_read_once_and_writes_the_single_stream_dataset(
    tmp_path: Path,
) -> None:
    """No pass over the bytes before the parse: each range is read once, by its parser (the
    plan used to read every range to count its lines first); rows and lines are unchanged."""
    path = tmp_path / "clean.jsonl"
    path.write_text("\n".join(_records(3000)) + "\n")
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1, block_size=BLOCK)
    split, read = _split_ingest(path, tmp_path / "split", path.stat().st_size // 6, 2)
    assert split.manifest["ranges"] >= 6
    assert read == path.stat().st_size
    assert rejects(split) == []
    assert fingerprint(split) == fingerprint(whole)


def _bad(line: str, kind: int) -> list[str]:
    """``line`` made bad (or odd) in one of five ways, with the same bytes (the cuts stay)."""
    if kind == 0:
        return [line[:-1] + ","]  # invalid JSON
    if kind == 1:
        return line.replace('"v', '"\n', 1).split("\n")  # a raw newline in a string: two rejects
    if kind == 2:
        return [line.replace(": ", ":", 1) + "\r"]  # CRLF (a valid record)
    if kind == 3:
        return [" " * len(line)]  # a blank line
    return [re.sub(r'"v\d{5}"', "[1,2,34]", line)]  # a list in a text column


def _lines_after_cuts(parsers: int) -> tuple[str, list[int], list[int]]:
    """A JSON Lines text with a bad (or blank, or CRLF) line right after each cut that a
    speculative plan of ``parsers`` makes, a line longer than a block right after the last cut,
    and a bad last line without a newline: (text, the cuts, the physical line after each)."""
    lines = _records(3000)
    text = "\n".join(lines)
    size = len(text)
    count = range_count(size, size // 6, parsers)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    cuts = [max(k * size // count, 1) for k in range(1, count)]
    cuts = [next(s for s in starts if s >= cut) for cut in cuts]  # after the newline there
    after = [starts.index(cut) for cut in cuts]
    out = {i: [line] for i, line in enumerate(lines)}
    for kind, index in enumerate(after[:-1]):
        out[index] = _bad(lines[index], kind % 5)
    # The last cut: one line of more than a block, as long as the five lines it stands for.
    last = after[-1]
    long = sum(len(line) + 1 for line in lines[last : last + 5]) - 1
    value = "w" * (long - len(json.dumps({"x": 1, "s": "", "label": "a"})))
    out[last] = [json.dumps({"x": 1, "s": value, "label": "a"})]
    for index in range(last + 1, last + 5):
        out[index] = []
    out[len(lines) - 1] = [lines[-1][:-1] + ","]  # no newline after it; not JSON
    physical = [line for i in range(len(lines)) for line in out[i]]
    assert len(out[last][0]) > BLOCK
    text = "\n".join(physical)
    assert len(text) == size  # the cuts do not move
    return text, cuts, [text[:cut].count("\n") + 1 for cut in cuts]


@pytest.mark.parametrize("parsers", [1, 2, 4])
def test_rejects_right_after_the_cuts_keep_their_lines(tmp_path: Path, parsers: int) -> None:
    """Invalid JSON, a raw newline in a string, a CRLF line, a blank line, a list in a scalar
    column and a line longer than a block, each the first line of a range, and a bad last
    line without a newline: 1, 2 and 4 parsers read each byte once and write the dataset and
    the rejects (same lines, same reasons) that one stream writes."""
    text, cuts, firsts = _lines_after_cuts(parsers)
    path = tmp_path / "dirty.jsonl"
    path.write_bytes(text.encode())
    size = len(text)
    assert ranges_module._cut_points(str(path), size, len(cuts) + 1) == [0, *cuts]
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1, block_size=BLOCK)
    split, read = _split_ingest(path, tmp_path / "split", size // 6, parsers)
    assert split.manifest["ranges"] == len(cuts) + 1
    assert read == size
    lines = [line for line, _ in rejects(split)]
    expected = [firsts[0], firsts[1], firsts[1] + 1, firsts[4], firsts[-1], text.count("\n") + 1]
    assert [line for line in expected if line in lines] == expected
    assert rejects(split) == rejects(whole)
    assert fingerprint(split) == fingerprint(whole)


def test_a_multi_frame_zst_of_unsized_frames_is_cut_at_its_chunks(tmp_path: Path) -> None:
    """A ``.zst`` whose frames do not state their sizes is cut speculatively at its chunks of
    frames (the plan decompresses nothing, each parser its chunk); the dataset and its rejects
    are the single stream's."""
    records = _records(600)
    records[300] = "{not json"
    text = ("\n".join(records) + "\n").encode()
    path = tmp_path / "frames.jsonl.zst"
    frames = []
    for k in range(4):
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as stream:
            stream.write(text[k * len(text) // 4 : (k + 1) * len(text) // 4])
        frames.append(sink.getvalue().to_pybytes())
    path.write_bytes(b"".join(frames))
    with ThreadPoolExecutor(2) as pool:
        plan = ranges_module.plan_ranges(
            str(path), ReaderOptions(), len(text) // 4, pool, whole=True, parsers=2, speculate=True
        )
    assert plan is not None and len(plan) >= 2
    assert all(r.speculative for r in plan)
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1, block_size=BLOCK)
    split, _ = _split_ingest(path, tmp_path / "split", len(text) // 4, 2)
    assert split.manifest["ranges"] >= 2
    assert rejects(split) == rejects(whole) and len(rejects(whole)) == 1
    assert fingerprint(split) == fingerprint(whole)
