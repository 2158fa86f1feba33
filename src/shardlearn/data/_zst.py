"""The frames of a Zstandard file, so that a multi-frame ``.zst`` can be read in pieces.

A Zstandard file is a sequence of frames (RFC 8878), each decompressible on its own: ``zstd``
on concatenated files, ``pzstd``, the seekable format and writers that flush a frame per batch
make several. :func:`frame_index` walks the frame and block headers (a few bytes each, the
compressed data is not decompressed) and groups consecutive frames into even chunks of at most
about ``target`` bytes of data, a multiple of the parsers (:mod:`shardlearn.data._balance`): the
units that ingest's byte-range planner
(:mod:`shardlearn.data._ranges`) decompresses side by side. A chunk's data starts where its
first frame's does, so the bytes ``[start, end)`` of the decompressed file are read
(:func:`read_plain`) by decompressing from the frame that holds ``start``.

When every frame states its data size (``zstd``, ``pzstd`` and one-shot writers write it;
zstd refuses a frame whose data is not that size), the index knows each chunk's data offset
from the headers alone, and :func:`line_starts` places the ranges' starts from each chunk's
head (decompressed up to its first newline): the plan then decompresses nothing else, and
each chunk is decompressed once, by the parser of its range. Otherwise a range is named by its
chunk, not by data offsets: :func:`chunk_lines` gives the lines that start in a chunk (from
the chunk's own data and the next chunk's head), so a parser decompresses its chunk without
knowing where the chunk's data starts, and each chunk is still decompressed once. Only an
exact plan (after a wrong cut) decompresses the chunks (:func:`read_chunk`) to learn their
sizes, as it must to scan them.

A file that is not a sequence of whole frames (truncated, corrupt headers, trailing bytes) has
no index: it is read as one stream, whose reader reports the error with the last good line.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa

from shardlearn.data._balance import even_bounds, range_count
from shardlearn.exceptions import DataError

__all__ = [
    "FrameIndex",
    "check_unchanged",
    "chunk_lines",
    "frame_index",
    "line_starts",
    "read_chunk",
    "read_plain",
]

_MAGIC = 0xFD2FB528
_SKIPPABLE = 0x184D2A50  # to 0x184D2A5F: skippable frames (metadata such as a seek table)
_READ = 1 << 20
_ASSUMED_RATIO = 4  # data bytes per compressed byte when a frame does not state its size


@dataclass(frozen=True)
class FrameIndex:
    """Chunks of whole frames of ``path``: chunk ``k`` is stored at bytes
    ``[stored[k], stored[k + 1])`` of the file and holds data bytes ``[plain[k], plain[k + 1])``
    (``plain``: from the frame headers when every frame states its size, else filled in once
    the chunks have been decompressed); ``modified``: the file's modification time (ns) when
    it was indexed; ``target``: the data bytes a chunk was meant to hold."""

    path: str
    size: int
    stored: tuple[int, ...]
    plain: tuple[int, ...] = ()
    modified: int = 0
    target: int = 0

    @property
    def chunks(self) -> int:
        return len(self.stored) - 1


def _frames(path: str) -> list[tuple[int, int | None]] | None:
    """(offset, stated data size or None) of every data frame, then (file size, None); None
    if the file is not a sequence of whole frames."""
    frames: list[tuple[int, int | None]] = []
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        position = 0
        while position < size:
            handle.seek(position)
            head = handle.read(18)  # the magic number and the largest frame header
            if len(head) < 8:
                return None
            magic = int.from_bytes(head[:4], "little")
            if magic & 0xFFFFFFF0 == _SKIPPABLE:
                position += 8 + int.from_bytes(head[4:8], "little")
                continue
            if magic != _MAGIC or head[4] & 0x08:  # the reserved bit must be zero
                return None
            header, content = _frame_header(head[4])
            stated = int.from_bytes(head[4 + header - content : 4 + header], "little")
            frames.append((position, stated + (256 if content == 2 else 0) if content else None))
            position = _skip_blocks(handle, position + 4 + header, size)
            if position < 0:
                return None
            position += 4 if head[4] & 0x04 else 0  # the content checksum
    return [*frames, (size, None)] if position == size else None


def _frame_header(descriptor: int) -> tuple[int, int]:
    """(length of the frame header after the magic number, bytes of its content size)."""
    single = bool(descriptor & 0x20)
    content = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
    dictionary = (0, 1, 2, 4)[descriptor & 0x03]
    return 1 + (0 if single else 1) + dictionary + content, content


def _skip_blocks(handle: BinaryIO, position: int, size: int) -> int:
    """The offset after the last block of a frame whose first block starts at ``position``;
    -1 if the blocks run past the end of the file or one is of the reserved type."""
    while position + 3 <= size:
        handle.seek(position)
        header = int.from_bytes(handle.read(3), "little")
        kind, length = (header >> 1) & 0x03, header >> 3
        if kind == 3:
            return -1
        position += 3 + (1 if kind == 1 else length)  # an RLE block stores one byte
        if header & 0x01:  # the last block
            return position if position <= size else -1
    return -1


def frame_index(path: str, target: int, parsers: int = 1) -> FrameIndex | None:
    """The chunks of ``path``: whole frames, at most about ``target`` data bytes each, as
    even as the frames allow and a multiple of ``parsers`` chunks when there are several
    (:mod:`shardlearn.data._balance`), with their data offsets (``plain``) when every frame
    states its data size; None when it holds fewer than two data frames or is not a sequence
    of whole frames."""
    modified = os.stat(path).st_mtime_ns
    frames = _frames(path)
    if frames is None or len(frames) < 3:
        return None
    data = [
        content if content is not None else (following - offset) * _ASSUMED_RATIO
        for (offset, content), (following, _) in zip(frames, frames[1:], strict=False)
    ]
    bounds = even_bounds(data, range_count(sum(data), target, parsers))
    stored = [0, *(frames[b][0] for b in bounds[1:])]  # from 0: skippable frames first
    plain: tuple[int, ...] = ()
    if all(content is not None for _, content in frames[:-1]):
        # Stated sizes are checked as the frames decompress (zstd refuses a frame whose
        # data is not its stated size), so a range's bytes are where these offsets say.
        sums = [0, *itertools.accumulate(data)]
        plain = tuple(sums[b] for b in bounds)
    return FrameIndex(path, frames[-1][0], tuple(stored), plain, modified, target)


def line_starts(
    index: FrameIndex, limit: int, mapper: Callable[..., Iterable[int | None]]
) -> list[int] | None:
    """Where the ranges of ``index`` (``plain`` known, from the headers) start without
    decompressing its chunks: 0, then the byte after the first newline at or after each later
    chunk's first data byte (a line that spans chunks lies in one range; a chunk without a
    newline starts no range), found from the chunk's head alone (``mapper``: ``map`` on the
    plan's pool). None when a chunk's head holds no newline within ``limit`` bytes (the file
    is then read as one stream) or a read fails (the one-stream read reports it)."""
    found = list(mapper(functools.partial(_line_start, index, limit), range(1, index.chunks)))
    if any(start is None for start in found):
        return None
    size = index.plain[-1]
    return sorted({0, *(start for start in found if start is not None and start < size)})


def _line_start(index: FrameIndex, limit: int, chunk: int) -> int | None:
    """Runs on the pool: the data offset after the first newline at or after chunk
    ``chunk``'s first data byte (the data size if none follows); None: none within ``limit``
    bytes, or unreadable."""
    try:
        with open(index.path, "rb") as handle:
            return index.plain[chunk] + len(_head(handle, index, chunk, limit))
    except OSError:
        return None


def read_plain(index: FrameIndex, start: int, end: int) -> bytes:
    """The decompressed bytes ``[start, end)`` of ``index.path`` (``index.plain`` known); a
    file that changed since it was indexed (its size, or data that no longer decompresses) is
    an error, and so is data that does not decompress in a file that did not change (its
    offsets were read from its frame headers, nothing of it decompressed before)."""
    try:
        return _read_plain(index, start, end)
    except OSError as error:
        check_unchanged(index, start, end)
        raise DataError(
            f"Cannot read {index.path!r}: its zstd data is corrupt or truncated ({error}) in "
            f"its data bytes {start}-{end}. Nothing was written."
        ) from None


def check_unchanged(index: FrameIndex, start: int, end: int) -> None:
    """An error if ``index.path`` is no longer the file indexed (its size or modification
    time): data bytes ``[start, end)`` decompressed when it was indexed are then stale."""
    try:
        info = os.stat(index.path)
    except OSError:
        raise _changed(index, start, end) from None
    if info.st_size != index.size or info.st_mtime_ns != index.modified:
        raise _changed(index, start, end)


def _read_plain(index: FrameIndex, start: int, end: int) -> bytes:
    chunk = bisect.bisect_right(index.plain, start) - 1
    with open(index.path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size != index.size:
            raise _changed(index, start, end)
        handle.seek(index.stored[chunk])
        stream = pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), "zstd")
        skip = start - index.plain[chunk]
        while skip > 0:
            piece = stream.read(min(skip, _READ))
            if not piece:
                raise _changed(index, start, end)
            skip -= len(piece)
        data = stream.read(end - start)
        if len(data) != end - start or (end == index.plain[-1] and stream.read(1)):
            raise _changed(index, start, end)
    return data


def chunk_lines(index: FrameIndex, chunk: int, limit: int) -> bytes | None:
    """The data of the lines that start in chunk ``chunk``: from the byte after its first
    newline (from its start in chunk 0) through the next chunks' data up to their first
    newline, the range :func:`line_starts` would start there; empty when the chunk holds no
    newline (its data lies in the range before). Decompresses the chunk once and the next
    one's head, without its data offset (frames that do not state their sizes). None when it
    holds more than ``limit`` bytes or its data is corrupt (the caller plans exactly); a file
    that changed since it was indexed is an error."""
    stored = index.stored[chunk], index.stored[chunk + 1]
    check_unchanged(index, *stored)
    read = read_chunk(index, chunk, limit)
    if read is None:
        check_unchanged(index, *stored)
        return None
    data, head = read
    start = 0 if chunk == 0 else data.find(b"\n") + 1
    if chunk and not start:
        return b""
    return data[start:] + head


def read_chunk(index: FrameIndex, chunk: int, limit: int) -> tuple[bytes, bytes] | None:
    """Chunk ``chunk``'s data, and the data after it up to its first newline (included); None
    when the chunk holds more than ``limit`` bytes or its data is corrupt (the one-stream
    read reports that)."""
    try:
        with open(index.path, "rb") as handle:
            handle.seek(index.stored[chunk])
            stored = handle.read(index.stored[chunk + 1] - index.stored[chunk])
            stream = pa.CompressedInputStream(pa.BufferReader(stored), "zstd")
            pieces, held = [], 0
            while piece := stream.read(_READ):
                pieces.append(piece)
                held += len(piece)
                if held > limit:
                    return None
            return b"".join(pieces), _head(handle, index, chunk + 1, limit)
    except OSError:
        return None


def _head(handle: BinaryIO, index: FrameIndex, chunk: int, limit: int) -> bytes:
    """The data from the start of chunk ``chunk`` up to its first newline (included); an
    OSError past ``limit`` bytes without one (the caller reads the file as one stream)."""
    if chunk >= index.chunks:
        return b""
    handle.seek(index.stored[chunk])
    stream = pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), "zstd")
    pieces: list[bytes] = []
    held, size = 0, 1 << 12  # a line is usually short: small reads first, then larger
    while piece := stream.read(size):
        newline = piece.find(b"\n")
        if newline >= 0:
            pieces.append(piece[: newline + 1])
            break
        pieces.append(piece)
        held += len(piece)
        size = min(2 * size, 1 << 16)
        if held > limit:
            raise OSError("no newline within the limit")
    return b"".join(pieces)


def _changed(index: FrameIndex, start: int, end: int) -> DataError:
    """The error for a file that changed; ``start``, ``end``: the planned bytes (data offsets,
    or stored ones for a chunk of frames that do not state their sizes)."""
    return DataError(
        f"{index.path!r} changed while it was being ingested (its bytes {start}-{end} were "
        "planned); nothing was written. Ingest it again once nothing writes to it."
    )
