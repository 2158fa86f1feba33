"""Parallel byte-range ingest: however a CSV is cut into ranges and however many threads parse
them, the dataset (shards, rejects, manifest counts) is byte for byte the one a single-stream
read writes, and every reject carries its physical line."""

from __future__ import annotations

import gzip
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardlearn.data._ingest_run as ingest_run
import shardlearn.data._ranges as ranges_module
from shardlearn.data import Dataset, ingest
from shardlearn.data._ingest_run import _progress_text
from shardlearn.data.schema import Column, Schema
from shardlearn.exceptions import DataError

from ._rejects import rejects
from ._speculation import fingerprint, ingest_in_ranges

SCHEMA = Schema(
    (
        Column("x", "numeric", "float64"),
        Column("s", "categorical", "string"),
        Column("label", "categorical", "string"),
    ),
    "label",
)
# (text of the line, whether it is rejected); x, s and label are filled in per line.
GOOD = [
    ("{x},plain,{y}", False),
    ('{x},"with, comma",{y}', False),
    ('{x},"say ""hi""",{y}', False),
    ("{x}, spaced ,{y}", False),
    (",missing x,{y}", False),
]
BAD = [
    ("{x},too few", True),
    ("{x},a,b,{y}", True),
    ("oops,not a number,{y}", True),
    ("{x},no label,", True),
]
KINDS = [*GOOD, *BAD, ("", None)]  # None: a blank line, neither a row nor a reject


def _csv(kinds: list[int], newline: str) -> tuple[bytes, list[int], int]:
    """The CSV bytes, the physical lines that must be rejected, and the rows read."""
    lines, bad, rows = ["x,s,label"], [], 0
    for number, kind in enumerate(kinds, start=2):
        text, rejected = KINDS[kind]
        lines.append(text.format(x=number * 0.5, y="ab"[number % 2]))
        rows += rejected is not None
        if rejected:
            bad.append(number)
    return (newline.join(lines) + newline).encode(), bad, rows


def _ingest(
    path: Path | str,
    out: Path,
    range_bytes: int,
    parsers: int,
    strategy: str,
    block_size: int | None = None,
) -> Dataset:
    return ingest_in_ranges(
        path, out, range_bytes, parsers, strategy=strategy, schema=SCHEMA, block_size=block_size
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    kinds=st.lists(st.integers(0, len(KINDS) - 1), min_size=1, max_size=80),
    newline=st.sampled_from(["\n", "\r\n"]),
    cuts=st.integers(1, 8),
    parsers=st.sampled_from([1, 2, 4]),
    strategy=st.sampled_from(["random", "stratified"]),
)
def test_any_split_writes_the_dataset_a_single_stream_writes(
    kinds: list[int], newline: str, cuts: int, parsers: int, strategy: str
) -> None:
    data, bad, rows = _csv(kinds, newline)
    if rows == len(bad):
        kinds = [*kinds, 0]  # at least one good row, or there is no dataset
        data, bad, rows = _csv(kinds, newline)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.csv"
        path.write_bytes(data)
        whole = _ingest(path, Path(tmp) / "whole", len(data) + 1, 1, strategy)
        split = _ingest(path, Path(tmp) / "split", max(1, len(data) // cuts), parsers, strategy)
        # ceil(size / (size // cuts)), rounded up to a multiple of the parsers
        assert split.manifest["ranges"] <= cuts + parsers
        assert whole.manifest["ranges"] == 1
        assert fingerprint(split) == fingerprint(whole)
        assert [line for line, _ in rejects(split)] == bad
        m = split.manifest
        assert m["rows_read"] == rows == m["rows_written"] + m["rows_rejected"]


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """Two thousand lines with bad rows spread through them (some at range boundaries)."""
    rng = np.random.default_rng(7)
    kinds = rng.choice(len(KINDS), size=2000, p=[0.5, 0.1, 0.1, 0.1, 0.06, *[0.03] * 4, 0.02])
    data, bad, _ = _csv([int(k) for k in kinds], "\n")
    path = tmp_path_factory.mktemp("parallel") / "big.csv"
    path.write_bytes(data)
    return path, bad


@pytest.mark.parametrize("strategy", ["random", "stratified", "hash:s"])
def test_one_two_and_four_parsers_write_byte_identical_datasets(
    big_csv: tuple[Path, list[int]], tmp_path: Path, strategy: str
) -> None:
    path, bad = big_csv
    whole = _ingest(path, tmp_path / "whole", 1 << 30, 1, strategy)
    range_bytes = path.stat().st_size // 13
    # Small writer batches and reject row groups, so that they end inside ranges too.
    with (
        mock.patch.object(ingest_run, "BATCH_ROWS", 97),
        mock.patch.object(ingest_run, "REJECT_ROWS", 11),
    ):
        small = _ingest(path, tmp_path / "small", 1 << 30, 1, strategy)
        results = [_ingest(path, tmp_path / f"p{n}", range_bytes, n, strategy) for n in (1, 2, 4)]
    assert whole.manifest["ranges"] == 1
    assert fingerprint(whole)[1]["rows_read"] == fingerprint(results[0])[1]["rows_read"]
    assert [ds.manifest["parsers"] for ds in results] == [1, 2, 4]
    assert all(ds.manifest["ranges"] >= 10 for ds in results)
    assert fingerprint(results[0]) == fingerprint(small)
    assert fingerprint(results[1]) == fingerprint(results[0])
    assert fingerprint(results[2]) == fingerprint(results[0])
    assert [line for line, _ in rejects(results[2])] == bad


# Field values that move pyarrow's quote state: quoted values holding delimiters, newlines
# (LF and CRLF) and doubled quotes, empty quoted values, stray quotes inside a field (literal),
# quotes that open a value never closed on their line, a value closed then continued, a line
# that is not UTF-8 (emptied by the slow path's LineGuard, its quote ignored).
QUOTED = [
    b"plain", b'"with, comma"', b'"two\nlines"', b'"crlf\r\nvalue"', b'"say ""hi"""', b'""',
    b'mid"quote', b'"open', b'"a"b', b'close"', b'"', b'"""', b" spaced ", b'"\n"', b'\xff"x',
]  # fmt: skip
NUMBERS = [b"1.5", b"2", b"", b"oops", b'"3"', b'"4', b'5"']
LABELS = [b"a", b"b", b"", b'"a"', b'"b']
SHAPES = ["{x},{s},{y}", "{x},{s}", "{x},{s},{y},extra", "", "{s},{s},{y}"]


def quoted_rows(max_size: int) -> st.SearchStrategy[list[tuple[int, int, int, int]]]:
    """Rows for :func:`_quoted_csv`: indices into NUMBERS, QUOTED, LABELS and SHAPES (mostly
    whole rows; some short, long, empty or shifted)."""
    row = st.tuples(
        st.integers(0, len(NUMBERS) - 1),
        st.integers(0, len(QUOTED) - 1),
        st.integers(0, len(LABELS) - 1),
        st.sampled_from([0, 0, 0, 1, 2, 3, 4]),
    )
    return st.lists(row, min_size=1, max_size=max_size)


def _quoted_csv(rows: list[tuple[int, int, int, int]], newline: bytes) -> bytes:
    lines = [b"x,s,label"]
    for x, s, y, shape in rows:
        text = SHAPES[shape].encode()
        text = text.replace(b"{x}", NUMBERS[x]).replace(b"{s}", QUOTED[s])
        lines.append(text.replace(b"{y}", LABELS[y]))
    return newline.join(lines) + newline


def _outcome(path: Path, out: Path, range_bytes: int, parsers: int, block: int | None) -> object:
    """The dataset's fingerprint and rejects, or the error an ingest raised."""
    try:
        ds = _ingest(path, out, range_bytes, parsers, "random", block)
    except DataError as error:
        return str(error)
    m = ds.manifest
    assert m["rows_read"] == m["rows_written"] + m["rows_rejected"]
    return rejects(ds), fingerprint(ds)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rows=quoted_rows(max_size=60),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    cuts=st.integers(1, 8),
    parsers=st.sampled_from([1, 2, 4]),
    merged=st.sampled_from([ranges_module.MERGED_RANGES, 1 << 30]),
    block=st.sampled_from([None, 64]),
)
def test_quotes_anywhere_split_anywhere_write_what_one_stream_writes(
    rows: list[tuple[int, int, int, int]],
    newline: bytes,
    cuts: int,
    parsers: int,
    merged: int,
    block: int | None,
) -> None:
    """Cuts inside quoted values (closed or never closed) move to the next row end: the same
    shards, rejects (line, reason, raw text) and errors as one stream, for any cut. Blocks of
    64 bytes: rows span pyarrow's blocks, and long lines are refused on the slow path."""
    data = _quoted_csv(rows, newline)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.csv"
        path.write_bytes(data)
        whole = _outcome(path, Path(tmp) / "whole", len(data) + 1, 1, block)
        with mock.patch.object(ranges_module, "MERGED_RANGES", merged):
            split = _outcome(path, Path(tmp) / "split", max(1, len(data) // cuts), parsers, block)
        assert split == whole, data


def test_rows_after_a_quoted_newline_keep_their_physical_lines(tmp_path: Path) -> None:
    """A value holding newlines and a quote never closed on its line: every later reject
    names its physical line, on one stream and cut into ranges inside both."""
    lines = ["x,s,label", *(f"{i},v{i},{'ab'[i % 2]}" for i in range(400))]
    lines[100] = '100,"two\nlines\nand three",a'  # physical lines 101-103
    lines[200] = '200,"open,b'  # swallows line 204 up to its first quote
    lines[201] = '201,v"'
    lines[300] = "300,bad"
    path = tmp_path / "multiline.csv"
    path.write_text("\n".join(lines) + "\n")
    expected = [
        (203, "broken quoting: a quote is not closed on this line"),
        (204, "broken quoting: a quote is not closed on this line"),  # 201,v" on its own
        (303, "wrong number of fields (expected 3)"),
    ]
    whole = _ingest(path, tmp_path / "whole", 1 << 30, 1, "random")
    assert rejects(whole) == expected
    size = path.stat().st_size
    for range_bytes in (512, size // 3, 97):
        cut = _ingest(path, tmp_path / f"cut{range_bytes}", range_bytes, 2, "random")
        assert cut.manifest["ranges"] > 1
        assert rejects(cut) == expected
        assert fingerprint(cut) == fingerprint(whole)


def test_the_progress_text_shows_rows_per_second_and_parsers() -> None:
    assert _progress_text(5000, 2.0, 4) == "ingest 5,000 rows, 2,500 rows/s, 4 parsers"
    assert _progress_text(0, 0.0, 1) == "ingest 0 rows, 0 rows/s, 1 parser"


def test_cli_ingest_parsers_option_and_summary(
    big_csv: tuple[Path, list[int]], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from shardlearn.cli import app

    path, _ = big_csv
    args = ["ingest", str(path), "--label", "label", "--out", str(tmp_path / "ds")]
    args += ["--parsers", "2", "--max-reject-rate", "1"]
    with mock.patch.object(ranges_module, "RANGE_BYTES", -(-path.stat().st_size // 5)):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # 5 ranges' bytes, cut into a multiple of the 2 parsers
    assert "; parsed by 2 parsers (6 ranges)" in result.output, result.output[:400]


@pytest.mark.parametrize(
    ("folder", "name", "options", "rows"),
    [
        ("adult", "adult.data", {"label": "Y"}, 32_561),
        (
            "sms_spam",
            "SMSSpamCollection",
            {"label": "label", "format": "tsv", "header": False, "columns": ["label", "text"]},
            5_574,
        ),
    ],
)
def test_real_files_cut_into_ranges_write_the_single_stream_dataset(
    shared_datasets: Path, tmp_path: Path, folder: str, name: str, options: dict, rows: int
) -> None:
    """Adult (", "-separated, "?" missing) and a TSV whose messages hold '"' (data, not quotes):
    about 16 ranges on 2 parsers write what one stream writes; counts as in the README."""
    source = shared_datasets / folder / name
    written = []
    for range_bytes, parsers in ((1 << 30, 1), (source.stat().st_size // 16 + 1, 2)):
        with mock.patch.object(ranges_module, "RANGE_BYTES", range_bytes):
            ds = ingest(
                source,
                out=tmp_path / str(parsers),
                strategy="stratified",
                parsers=parsers,
                progress=False,
                **options,
            )
        written.append(ds)
    assert written[0].manifest["ranges"] == 1 and written[1].manifest["ranges"] >= 15
    assert written[1].manifest["rows_read"] == written[1].manifest["rows_written"] == rows
    assert fingerprint(written[1]) == fingerprint(written[0])


def test_small_files_are_parsed_side_by_side_and_write_what_one_parser_writes(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    for index in range(5):
        kinds = rng.choice(len(KINDS), size=300, p=[0.6, 0.1, 0.1, 0.05, 0.05, *[0.02] * 4, 0.02])
        (tmp_path / f"part-{index}.csv").write_bytes(_csv([int(k) for k in kinds], "\n")[0])
    pattern = str(tmp_path / "part-*.csv")
    one, two = (_ingest(pattern, tmp_path / f"out{n}", 1 << 30, n, "stratified") for n in (1, 2))
    assert (one.manifest["parsers"], one.manifest["ranges"]) == (1, 5)
    assert (two.manifest["parsers"], two.manifest["ranges"]) == (2, 5)
    assert fingerprint(two) == fingerprint(one)
    sources = two.read_rejects().column("source").to_pylist()
    assert sources == sorted(sources)  # file by file, in input order


def test_the_demo_csv_with_its_malformed_lines_is_parsed_in_ranges(tmp_path: Path) -> None:
    """The demo CSV's truncated lines leave quotes open: it is still cut into ranges (it used
    to fall back to one stream) and writes the single-stream dataset byte for byte."""
    from shardlearn.data.demo import write_loans_csv

    path = write_loans_csv(tmp_path / "loans.csv", 4000, seed=5)
    written = []
    for range_bytes, parsers in ((1 << 30, 1), (path.stat().st_size // 9, 2)):
        with mock.patch.object(ranges_module, "RANGE_BYTES", range_bytes):
            ds = ingest(
                path,
                "default",
                tmp_path / f"out{parsers}",
                strategy="stratified",
                parsers=parsers,
                progress=False,
            )
        written.append(ds)
    assert written[0].manifest["ranges"] == 1 and written[1].manifest["ranges"] >= 9
    assert written[1].manifest["rows_rejected"] > 0
    assert fingerprint(written[1]) == fingerprint(written[0])


def _gz_parts(folder: Path, count: int) -> str:
    rng = np.random.default_rng(11)
    for index in range(count):
        kinds = rng.choice(len(KINDS), size=400, p=[0.6, 0.1, 0.1, 0.05, 0.05, *[0.02] * 4, 0.02])
        data = _csv([int(k) for k in kinds], "\n")[0]
        (folder / f"part-{index}.csv.gz").write_bytes(gzip.compress(data, mtime=0))
    return str(folder / "part-*.csv.gz")


def test_gz_files_are_parsed_one_per_parser_and_write_what_one_parser_writes(
    tmp_path: Path,
) -> None:
    pattern = _gz_parts(tmp_path, 5)
    one, two = (_ingest(pattern, tmp_path / f"out{n}", 1 << 30, n, "stratified") for n in (1, 2))
    assert (one.manifest["parsers"], one.manifest["ranges"]) == (1, 5)
    assert (two.manifest["parsers"], two.manifest["ranges"]) == (2, 5)
    assert fingerprint(two) == fingerprint(one)
    sources = two.read_rejects().column("source").to_pylist()
    assert sources == sorted(sources)  # file by file, in input order


def test_a_truncated_gz_among_files_parsed_side_by_side_fails_as_with_one_parser(
    tmp_path: Path,
) -> None:
    """The first error in input order is raised, whatever the timing; nothing is written."""
    pattern = _gz_parts(tmp_path, 4)
    broken = tmp_path / "part-1.csv.gz"
    broken.write_bytes(broken.read_bytes()[:-40])
    messages = []
    for parsers in (1, 2):
        with pytest.raises(DataError) as caught:
            _ingest(pattern, tmp_path / f"out{parsers}", 1 << 30, parsers, "random")
        assert not (tmp_path / f"out{parsers}").exists()
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "part-1.csv.gz" in messages[0] and "last good line" in messages[0]


def test_a_file_cut_short_while_its_ranges_are_parsed_fails_and_writes_nothing(
    big_csv: tuple[Path, list[int]], tmp_path: Path
) -> None:
    """A parser that cannot read its range (the file shrank after the ranges were planned)
    fails the ingest with one line naming the file; no manifest, no output folder."""
    source, _ = big_csv
    path = tmp_path / "shrinking.csv"
    path.write_bytes(source.read_bytes())
    plan = ranges_module.plan_ranges

    def plan_then_truncate(*args: object, **kwargs: object) -> object:
        ranges = plan(*args, **kwargs)
        with open(path, "r+b") as handle:  # the event: the plan is made, the parse not yet
            handle.truncate(path.stat().st_size // 2)
        return ranges

    out = tmp_path / "ds"
    with (
        mock.patch.object(ingest_run, "plan_ranges", plan_then_truncate),
        pytest.raises(DataError, match="changed size while it was being ingested") as caught,
    ):
        _ingest(path, out, path.stat().st_size // 7, 2, "random")
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert not out.exists()


def test_a_quoted_newline_across_a_parser_block_is_read_on_one_stream_and_in_ranges(
    tmp_path: Path,
) -> None:
    """pyarrow cuts its blocks at a newline; one inside a quoted value used to stop the read
    ("parser got out of sync with chunker") wherever a block boundary fell inside the value."""
    lines = ["x,s,label", *(f"{i},v{i},{'ab'[i % 2]}" for i in range(300))]
    for i in range(5, 300, 7):
        lines[i] = f'{i},"a value\non two lines",{"ab"[i % 2]}'
    path = tmp_path / "blocks.csv"
    path.write_text("\n".join(lines) + "\n")
    results = []
    for range_bytes, parsers in ((1 << 30, 1), (path.stat().st_size // 5, 2)):
        with mock.patch.object(ranges_module, "RANGE_BYTES", range_bytes):
            ds = ingest(path, "label", tmp_path / f"out{parsers}", block_size=256, progress=False,
                        parsers=parsers)  # fmt: skip
        results.append(ds)
    assert results[0].manifest["rows_read"] == 300 == results[0].manifest["rows_written"]
    assert results[1].manifest["ranges"] >= 5
    assert fingerprint(results[1]) == fingerprint(results[0])


def test_a_quoted_crlf_split_between_two_parser_blocks_keeps_its_newline(tmp_path: Path) -> None:
    """pyarrow loses the \\n of a quoted \\r\\n when a block ends between the two bytes; the
    reader never ends a block on a \\r. Every position of the value against 64-byte blocks."""
    for pad in range(40):
        lines = ["x,s,label", "1,v,a", "2,v,b", f"3,{'p' * pad},a", '4,"crlf\r\nvalue",b', "5,w,a"]
        path = tmp_path / f"crlf{pad}.csv"
        path.write_bytes(("\n".join(lines) + "\n").encode())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The label column")
            ds = ingest(path, "label", tmp_path / f"out{pad}", partitions=1, split=(1, 0, 0),
                        kinds={"s": "text"}, block_size=64, parsers=1, progress=False)  # fmt: skip
        assert "crlf\r\nvalue" in ds.read().column("s").to_pylist(), pad
