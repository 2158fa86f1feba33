"""The schema sample reads a bounded head of the file (the rows a stream starts with), and the
byte-range scan takes its plain path without changing a result, once per range (issue 24)."""

from __future__ import annotations

import io
import tempfile
import tracemalloc
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardlearn.data._ingest_run as ingest_run
import shardlearn.data._ranges as ranges_module
from shardlearn.data._convert import DEFAULT_NA_VALUES
from shardlearn.data._ingest_run import IngestRun
from shardlearn.data.readers import ReaderOptions, SourceReader, blank_rows
from shardlearn.exceptions import DataError

from .test_parallel_ingest import _ingest, _quoted_csv, quoted_rows


def _run(path: Path, block_size: int | None = None) -> IngestRun:
    options = ReaderOptions(na_values=tuple(DEFAULT_NA_VALUES), block_size=block_size or 4 << 20)
    return IngestRun(
        paths=[str(path)], options=options, label="label", out=str(path.parent / "out"),
        partitions=2, strategy="random", fractions=(1.0, 0.0, 0.0), seed=0, overwrite=True,
        schema=None, kinds={}, label_strip=None, max_reject_rate=1.0, trim=True, progress=False,
    )  # fmt: skip


def _stream_sample(run: IngestRun) -> tuple[pa.Table, list[str]]:
    """The sample as ingest took it before: the first rows of a stream of each file."""
    batches, names, rows = [], [], 0
    for path in run.paths:
        reader = SourceReader(path, run.options)
        for raw in reader.batches():
            names = names or reader.column_names
            keep = ~blank_rows(raw.batch)
            batches.append(raw.batch.filter(pa.array(keep)))
            rows += int(keep.sum())
            if rows >= ingest_run.SAMPLE_ROWS:
                break
        if rows >= ingest_run.SAMPLE_ROWS:
            break
    if rows == 0:
        raise DataError(
            f"No data rows in {', '.join(map(repr, run.paths[:3]))}: the input holds only "
            "a header (or blank lines)."
        )
    return pa.Table.from_batches(batches).slice(0, ingest_run.SAMPLE_ROWS), names


class _Counting(io.RawIOBase):
    """A file's stream, counting the bytes read through it."""

    read_bytes = 0

    def __init__(self, raw: pa.NativeFile) -> None:
        self.raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        _Counting.read_bytes += len(data)
        return len(data)


def test_the_sample_reads_a_bounded_head_of_a_large_file(tmp_path: Path) -> None:
    """20,000 rows of a 100,000-row file: the sample reads at most twice the bytes its rows
    take plus the first read (a stream read 32 blocks ahead: the whole file), same rows."""
    lines = ["x,s,label", *(f"{i},v{i % 97},{'ab'[i % 2]}" for i in range(100_000))]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    sample_bytes = len("\n".join(lines[: ingest_run.SAMPLE_ROWS + 1])) + 1
    run = _run(path)
    opened = SourceReader._open_stream

    def counted(self: SourceReader) -> pa.NativeFile:
        return pa.PythonFile(_Counting(opened(self)), mode="r")

    _Counting.read_bytes = 0
    with mock.patch.object(SourceReader, "_open_stream", counted):
        table, names = run._sample()
    assert 0 < _Counting.read_bytes <= 2 * sample_bytes + ranges_module.HEAD_BYTES
    assert _Counting.read_bytes < path.stat().st_size / 2
    reference, reference_names = _stream_sample(run)
    assert table.num_rows == ingest_run.SAMPLE_ROWS
    assert table.equals(reference) and names == reference_names == ["x", "s", "label"]


def _outcome(run: IngestRun, sample: object) -> object:
    try:
        return sample(run)  # type: ignore[operator]
    except DataError as error:
        return str(error)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rows=quoted_rows(max_size=60),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    sample_rows=st.integers(1, 40),
    head_bytes=st.integers(1, 200),
    block=st.sampled_from([None, 64]),
    files=st.integers(1, 2),
)
def test_the_head_sample_holds_the_rows_a_stream_starts_with(
    rows: list[tuple[int, int, int, int]],
    newline: bytes,
    sample_rows: int,
    head_bytes: int,
    block: int | None,
    files: int,
) -> None:
    """Quotes anywhere, quoted newlines, blank and refused lines, CRLF, heads cut anywhere
    and grown, one or two files: the head sample is the stream sample (or the same error)."""
    data = _quoted_csv(rows, newline)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k in range(files):
            paths.append(Path(tmp) / f"in{k}.csv")
            paths[-1].write_bytes(data)
        run = _run(paths[0], block)
        run.paths = [str(p) for p in paths]
        with (
            mock.patch.object(ingest_run, "SAMPLE_ROWS", sample_rows),
            mock.patch.object(ranges_module, "HEAD_BYTES", head_bytes),
        ):
            head = _outcome(run, IngestRun._sample)
            stream = _outcome(run, _stream_sample)
    if isinstance(stream, str):
        assert head == stream, data
    else:
        assert isinstance(head, tuple), (head, data)
        assert head[0].equals(stream[0]) and head[1] == stream[1], data


@settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(
        st.sampled_from([b"a", b",", b"\t", b"\n", b"\n", b"\r\n", b"\r", b'"', b"\xff", b"bc"]),
        max_size=50,
    ).map(b"".join),
    limit=st.sampled_from([1, 2, 3, 5, 8, 1 << 20]),
    tsv=st.booleans(),
)
def test_the_plain_scan_equals_the_quote_scan(raw: bytes, limit: int, tsv: bool) -> None:
    """Ranges (or their lines after the last quote) without quotes or lone carriage returns
    take the plain scan: the same result as following the quotes, for both start states."""
    quote, delimiter = (None, 9) if tsv else (34, 44)
    assert ranges_module._scan(raw, quote, delimiter, limit) == ranges_module._scan_quoted(
        raw, quote, delimiter, limit
    )


@settings(max_examples=100, deadline=None)
@given(
    raw=st.lists(st.sampled_from([b"a", b",", b"\n", b"\n\n", b"bc"]), max_size=60).map(b"".join),
    piece=st.integers(1, 9),
)
def test_the_newline_count_in_pieces_is_the_whole_count(raw: bytes, piece: int) -> None:
    """The plain scan counts a range's newlines a piece at a time: every piece counts, the
    last short one too (pieces of 1 to 9 bytes against up to 120 bytes)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    with mock.patch.object(ranges_module, "_COUNT_PIECE", piece):
        assert ranges_module._count_newlines(data) == raw.count(b"\n")
        scan = ranges_module._scan(raw, 34, 44, 1 << 20)
    assert scan == ranges_module._scan_quoted(raw, 34, 44, 1 << 20)


def test_the_plain_scan_allocates_no_range_sized_temporary() -> None:
    """Counting the newlines of a 4 MiB range allocates at most one piece (1 MiB) of numpy
    temporaries: a range-sized one is backed by fresh pages the kernel zeroes, range after
    range (``data == 10`` over the whole range cost about 5% of a CSV ingest's CPU)."""
    raw = b"1.5,abc,0\n" * (400 << 10)
    tracemalloc.start()
    try:
        scan = ranges_module._scan(raw, 34, 44, 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scan.lines == (400 << 10, 400 << 10)
    assert peak <= (1 << 20) + (64 << 10), peak


def test_a_range_strategy_scans_each_range_once(tmp_path: Path) -> None:
    """The range strategy reads the input twice (its key sample, then the rows): the byte
    ranges are planned, and their bytes scanned, once (the sample reads the whole file,
    smaller than the head's first read, unscanned)."""
    lines = ["x,s,label", *(f"{i * 0.5},v{i % 7},{'ab'[i % 2]}" for i in range(3000))]
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    scanned: list[int] = []
    scan = ranges_module._scan

    def counted(raw: bytes, **options: int) -> object:
        scanned.append(len(raw))
        return scan(raw, **options)  # type: ignore[arg-type]

    with mock.patch.object(ranges_module, "_scan", counted):
        ds = _ingest(path, tmp_path / "out", 8 << 10, 2, "range:x")
    assert ds.manifest["rows_written"] == 3000
    assert sum(scanned) == path.stat().st_size
