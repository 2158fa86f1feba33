"""A multi-frame ``.zst`` whose frames state their data sizes is cut speculatively: its data
offsets come from the frame headers and each range start from its chunk's head, so every
chunk is decompressed once, by its parser (the plan used to decompress every chunk to scan it,
and parsers decompressed again every chunk after the first eight). A quoted newline across a
chunk start is found from the range's scan and the file is planned exactly. Either way the
dataset is the one a single stream writes."""

from __future__ import annotations

import bisect
import random
from itertools import accumulate
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pytest

import shardlearn.data._ingest_run as ingest_run
import shardlearn.data._zst as zst_module

from ._rejects import rejects
from ._speculation import RecordedPlans, fingerprint, ingest_in_ranges

ZSTD = pa.Codec("zstd")
FRAMES = 12  # more than the plan's kept chunks (8), each a chunk of its own


def _write_frames(path: Path, lines: list[str]) -> tuple[list[int], list[int]]:
    """``lines`` as :data:`FRAMES` frames of whole lines; where each frame starts in the file
    and in the data (then the file's and the data's sizes)."""
    step = -(-len(lines) // FRAMES)
    pieces = [("".join(f"{line}\n" for line in lines[k : k + step])).encode()
              for k in range(0, len(lines), step)]  # fmt: skip
    frames = [ZSTD.compress(piece, asbytes=True) for piece in pieces]
    path.write_bytes(b"".join(frames))
    return list(accumulate((len(f) for f in frames), initial=0)), list(
        accumulate((len(p) for p in pieces), initial=0)
    )


def _lines(count: int) -> list[str]:
    return [
        "x,s,label",
        *(f"{i},value {i * 7919 % 100003:06d} of row {i:06d},{'ab'[i % 2]}" for i in range(count)),
    ]


class _Decompressions:
    """Patched over ``_zst.pa``: each zstd stream the ingest opened, as [the data offset where
    it starts, the bytes it returned]; :meth:`whole` counts, per frame, the streams that
    returned all of its data (a chunk's head or a range's last line is not a whole frame)."""

    def __init__(self, path: Path, stored: list[int], data: list[int]) -> None:
        self.file = path.read_bytes()
        self.data_at = dict(zip(stored, data, strict=True))  # frame start -> data offset
        self.data = data
        self.streams: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(pa, name)

    def CompressedInputStream(self, raw: Any, codec: str) -> Any:  # noqa: N802 - pyarrow's name
        if isinstance(raw, pa.BufferReader):  # a chunk's stored bytes (the exact plan)
            where = self.file.find(raw.read())
            raw.seek(0)
        else:  # a file positioned at a chunk's first frame
            where = raw.tell()
        record = [self.data_at[where], 0]
        self.streams.append(record)
        stream = pa.CompressedInputStream(raw, codec)

        class Counted:
            def read(self, size: int) -> bytes:
                piece = stream.read(size)
                record[1] += len(piece)
                return piece

        return Counted()

    def whole(self) -> list[int]:
        """How many streams returned the whole data of each frame."""
        counts = [0] * (len(self.data) - 1)
        for start, size in self.streams:
            for k in range(bisect.bisect_left(self.data, start), len(counts)):
                if self.data[k + 1] <= start + size:
                    counts[k] += 1
        return counts


def test_every_chunk_of_a_zst_is_decompressed_once(tmp_path: Path) -> None:
    """Twelve frames of about 120 KB (more than the 64 KiB a chunk's head is read in), each a
    chunk (range size: one frame's data), two parsers: each frame's data is decompressed
    whole by one stream, the parse's; the dataset and its rejects are the single stream's."""
    lines = _lines(36_000)
    lines[20_000] = "19999,bad"
    path = tmp_path / "in.csv.zst"
    stored, data = _write_frames(path, lines)
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1)
    counted = _Decompressions(path, stored, data)
    plans = RecordedPlans()
    with (
        mock.patch.object(zst_module, "pa", counted),
        mock.patch.object(ingest_run, "plan_ranges", plans),
    ):
        split = ingest_in_ranges(path, tmp_path / "split", data[1], 2)
    assert plans.speculative == [True]
    assert split.manifest["ranges"] == FRAMES
    assert counted.whole() == [1] * FRAMES
    assert rejects(split) == [(20_001, "wrong number of fields (expected 3)")]
    assert fingerprint(split) == fingerprint(whole)


def test_a_quoted_newline_across_a_chunk_start_plans_the_zst_exactly(tmp_path: Path) -> None:
    """A value of 200 lines starts the fifth frame: the speculative cut there (after the
    frame's first newline) is wrong, the file is planned exactly (the plan decompresses its
    chunks) and parsed again; the dataset and the rejects' lines are the single stream's."""
    lines = _lines(6000)
    first = -(-len(lines) // FRAMES) * 4  # the fifth frame's first line
    lines[first] = f'{first - 1},"' + "\n".join(f"part {k}" for k in range(200)) + '",b'
    lines[4000] = "3999,bad"
    path = tmp_path / "in.csv.zst"
    _, data = _write_frames(path, lines)
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1)
    plans = RecordedPlans()
    with mock.patch.object(ingest_run, "plan_ranges", plans):
        split = ingest_in_ranges(path, tmp_path / "split", data[1], 2)
    assert plans.speculative == [True, False]
    assert split.manifest["ranges"] >= FRAMES - 1
    assert rejects(split) == [(4001 + 199, "wrong number of fields (expected 3)")]
    assert fingerprint(split) == fingerprint(whole)


def _write_unsized_frames(path: Path, pieces: list[bytes]) -> tuple[list[int], list[int]]:
    """``pieces`` as frames written by a streaming compressor (no data size in their
    headers); where each frame starts in the file and in the data (then the sizes)."""
    frames = []
    for piece in pieces:
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as stream:
            stream.write(piece)
        frames.append(sink.getvalue().to_pybytes())
    path.write_bytes(b"".join(frames))
    assert all(size is None for _, size in zst_module._frames(str(path)) or [(0, 0)])
    return list(accumulate((len(f) for f in frames), initial=0)), list(
        accumulate((len(p) for p in pieces), initial=0)
    )


def _line_pieces(lines: list[str]) -> list[bytes]:
    step = -(-len(lines) // FRAMES)
    return [("".join(f"{line}\n" for line in lines[k : k + step])).encode()
            for k in range(0, len(lines), step)]  # fmt: skip


def test_a_zst_of_unsized_frames_is_decompressed_once(tmp_path: Path) -> None:
    """Twelve frames that do not state their data sizes, each a chunk, two parsers: the plan
    cuts at the chunks without decompressing them (it decompressed every chunk to learn its
    size, and parsers decompressed again every chunk after the first eight); each frame's data
    is decompressed whole once, by its parser, and all streams together return the data plus
    the chunks' heads (under 5% more here; 1.72 times the data before). The dataset and its
    rejects are the single stream's."""
    lines = _lines(36_000)
    lines[20_000] = "19999,bad"
    path = tmp_path / "in.csv.zst"
    stored, data = _write_unsized_frames(path, _line_pieces(lines))
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1)
    counted = _Decompressions(path, stored, data)
    plans = RecordedPlans()
    with (
        mock.patch.object(zst_module, "pa", counted),
        mock.patch.object(ingest_run, "plan_ranges", plans),
    ):
        split = ingest_in_ranges(path, tmp_path / "split", data[1], 2)
    assert plans.speculative == [True]
    chunks = zst_module.frame_index(str(path), data[1], 2)
    assert chunks is not None and split.manifest["ranges"] == chunks.chunks >= FRAMES // 2
    assert counted.whole() == [1] * FRAMES
    assert sum(size for _, size in counted.streams) < 1.05 * data[-1]
    assert rejects(split) == [(20_001, "wrong number of fields (expected 3)")]
    assert fingerprint(split) == fingerprint(whole)


@pytest.mark.parametrize("quoted", [False, True], ids=["long-line", "long-line-and-quoted"])
def test_unsized_frames_cut_inside_lines(tmp_path: Path, quoted: bool) -> None:
    """Frames cut at arbitrary bytes, with a line of about 2.7 frames' data (a chunk without a
    newline has no lines of its own: its range is empty, the range before holds them); with
    ``quoted`` also a value of 6000 lines (longer than a chunk) across a chunk start, a wrong
    cut: the file is planned exactly and parsed again. The dataset and its rejects are the
    single stream's either way."""
    lines = _lines(6000)
    lines[3000] = f"2999,{random.Random(5).randbytes(30_000).hex()},b"
    if quoted:
        lines[1000] = '999,"' + "\n".join(f"part {k}" for k in range(6000)) + '",b'
    lines[5000] = "4999,bad"
    text = "".join(f"{line}\n" for line in lines).encode()
    step = len(text) // FRAMES + 1
    path = tmp_path / "in.csv.zst"
    _write_unsized_frames(path, [text[k : k + step] for k in range(0, len(text), step)])
    chunks = zst_module.frame_index(str(path), step, 2)
    assert chunks is not None
    assert b"" in [zst_module.chunk_lines(chunks, k, 1 << 20) for k in range(chunks.chunks)]
    whole = ingest_in_ranges(path, tmp_path / "whole", 1 << 30, 1)
    plans = RecordedPlans()
    with mock.patch.object(ingest_run, "plan_ranges", plans):
        split = ingest_in_ranges(path, tmp_path / "split", step, 2)
    assert plans.speculative == ([True, False] if quoted else [True])
    assert rejects(split) == [(5001 + 5999 * quoted, "wrong number of fields (expected 3)")]
    assert fingerprint(split) == fingerprint(whole)
