"""JSON Lines byte ranges, multi-frame ``.zst`` files and Parquet row groups parsed in parallel:
however the input is cut (small block and range sizes force many ranges, frames and groups,
bad rows sit at the cuts) and however many parsers read it, the dataset (shards, rejects with
their lines and reasons, manifest counts) is byte for byte the one a single stream writes; and
the ranges are started largest first without changing the output."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardlearn.data._ranges as ranges_module
from shardlearn.data import Dataset, ingest
from shardlearn.data.readers import reader_options
from shardlearn.exceptions import DataError

from ._rejects import rejects
from ._speculation import fingerprint
from .test_parallel_ingest import _ingest, _quoted_csv, quoted_rows

STRATEGIES = ["random", "stratified", "hash:s", "range:x"]  # shuffled, keyed and ordered
ZSTD = pa.Codec("zstd")


def _frames(data: bytes, cuts: list[int]) -> bytes:
    """``data`` as one Zstandard frame per piece between ``cuts`` (byte offsets)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    return b"".join(
        ZSTD.compress(data[a:b], asbytes=True) for a, b in zip(bounds, bounds[1:], strict=False)
    )


def _split(path: Path, out: Path, range_bytes: int, parsers: int, strategy: str,
           block: int | None = None) -> Dataset:  # fmt: skip
    """An ingest in ranges of ``range_bytes`` (1: every frame of a ``.zst`` a range)."""
    with mock.patch.object(ranges_module, "MERGED_RANGES", 1 << 30):
        return _ingest(path, out, range_bytes, parsers, strategy, block)


def _outcome(path: Path, out: Path, range_bytes: int, parsers: int, strategy: str,
             block: int | None = None) -> object:  # fmt: skip
    """The dataset's fingerprint and rejects (checking the row accounting), or the error."""
    try:
        ds = _split(path, out, range_bytes, parsers, strategy, block)
    except DataError as error:
        return str(error)
    m = ds.manifest
    assert m["rows_read"] == m["rows_written"] + m["rows_rejected"]
    return rejects(ds), fingerprint(ds)


def _passes(strategy: str) -> int:
    """Reads of the input (the manifest counts each pass's ranges): range:COL samples first."""
    return 2 if strategy.startswith("range:") else 1


# -- multi-frame .zst CSV ------------------------------------------------------------------------
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rows=quoted_rows(max_size=50),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    frame_cuts=st.lists(st.integers(1, 4000), min_size=1, max_size=8),
    parsers=st.sampled_from([1, 2, 4]),
    strategy=st.sampled_from(STRATEGIES),
    block=st.sampled_from([None, 64]),
)
def test_csv_zst_frames_split_anywhere_write_what_one_stream_writes(
    rows: list[tuple[int, int, int, int]],
    newline: bytes,
    frame_cuts: list[int],
    parsers: int,
    strategy: str,
    block: int | None,
) -> None:
    """Frames end anywhere: inside a line, a quoted value (with newlines), a CRLF; each frame
    is a range of its own (range size 1), so every frame boundary is a cut to place exactly."""
    data = _quoted_csv(rows, newline)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.csv.zst"
        path.write_bytes(_frames(data, [c % max(len(data), 1) for c in frame_cuts]))
        whole = _outcome(path, Path(tmp) / "whole", 1 << 30, 1, strategy, block)
        split = _outcome(path, Path(tmp) / "split", 1, parsers, strategy, block)
        assert split == whole, data


def _csv_rows(count: int, bad_every: int) -> tuple[bytes, list[int]]:
    """CSV lines with a bad row (too few fields / not a number / too many fields, in turn)
    every ``bad_every`` lines, and quoted values holding newlines."""
    lines, bad = ["x,s,label"], []
    line = 2
    for i in range(count):
        label = "ab"[i % 2]
        if i % bad_every == bad_every - 1:
            lines.append([f"{i},too few", f"oops,v{i},{label}", f"{i},a,b,{label}"][i % 3])
            bad.append(line)
            line += 1
        elif i % 17 == 5:
            lines.append(f'{i},"two\nlines",{label}')
            line += 2
        else:
            lines.append(f"{i},v{i % 7},{label}")
            line += 1
    return ("\n".join(lines) + "\n").encode(), bad


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_csv_zst_one_two_and_four_parsers_write_byte_identical_datasets(
    tmp_path: Path, strategy: str
) -> None:
    """Frames ending at row ends and inside rows, bad rows on the lines next to the cuts."""
    data, bad = _csv_rows(900, 23)
    newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == 10).tolist()
    # Frames end where a bad line starts (a row end) or three bytes into it.
    cuts = [newlines[line - 2] + 1 + 3 * (k % 2) for k, line in enumerate(bad)]
    path = tmp_path / "in.csv.zst"
    path.write_bytes(_frames(data, cuts))
    whole = _ingest(path, tmp_path / "whole", 1 << 30, 1, strategy)
    assert whole.manifest["ranges"] == _passes(strategy)
    assert [line for line, _ in rejects(whole)] == bad
    for parsers in (1, 2, 4):
        split = _split(path, tmp_path / f"p{parsers}", 1, parsers, strategy)
        m = split.manifest
        assert m["ranges"] >= 10 and m["parsers"] == parsers
        assert m["rows_read"] == m["rows_written"] + m["rows_rejected"] == 900
        assert fingerprint(split) == fingerprint(whole)


def test_a_single_frame_zst_is_one_stream(tmp_path: Path) -> None:
    data, _ = _csv_rows(300, 50)
    path = tmp_path / "in.csv.zst"
    path.write_bytes(ZSTD.compress(data, asbytes=True))
    ds = _ingest(path, tmp_path / "ds", 100, 2, "random")
    assert ds.manifest["ranges"] == 1


# -- JSON Lines ----------------------------------------------------------------------------------
JSON_LINES = [
    b'{"x": {x}, "s": "v{i}", "label": "{y}"}',
    b'{"x": {x}, "s": "with \\"quote\\"", "label": "{y}"}',
    b'{"label": "{y}", "s": "keys in another order", "x": {x}}',
    b'{"x": "{x}", "s": "x as text", "label": "{y}"}',
    b'{"x": 7, "s": "an integer", "label": "{y}"}',
    b'{"x": {x}, "s": "a label missing"}',
    b"",
    b"   ",
    b"{not json",
    b"[1, 2]",
    b'{"x": [1], "s": "a list", "label": "{y}"}',
    b'{"x": NaN, "s": "not finite", "label": "{y}"}',
    b'\xef\xbb\xbf{"x": 1, "s": "bom", "label": "{y}"}',
    b'{"x": 1, "s": "\xff not utf-8", "label": "{y}"}',
    b'{"x": 2, "s": "' + b"long" * 30 + b'", "label": "{y}"}',
    b'{"x": oops, "s": "bad value", "label": "{y}"}',
]


def _jsonl(kinds: list[int], newline: bytes) -> bytes:
    lines = []
    for i, kind in enumerate(kinds):
        text = JSON_LINES[kind].replace(b"{x}", str(i * 0.5).encode())
        lines.append(
            text.replace(b"{i}", str(i).encode()).replace(b"{y}", b"ab"[i % 2 : i % 2 + 1])
        )
    return newline.join(lines) + newline


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    kinds=st.lists(st.integers(0, len(JSON_LINES) - 1), min_size=1, max_size=60),
    newline=st.sampled_from([b"\n", b"\r\n"]),
    cuts=st.integers(1, 8),
    parsers=st.sampled_from([1, 2, 4]),
    strategy=st.sampled_from(STRATEGIES),
    block=st.sampled_from([None, 64]),
    zst=st.booleans(),
)
def test_jsonl_split_anywhere_writes_what_one_stream_writes(
    kinds: list[int],
    newline: bytes,
    cuts: int,
    parsers: int,
    strategy: str,
    block: int | None,
    zst: bool,
) -> None:
    """Random JSON Lines (bad JSON, lists, not UTF-8, BOMs, over-long lines with 64-byte
    blocks, blank lines) in 1-8 byte ranges of a plain file, or frames of a ``.zst``."""
    data = b'{"x": 0.5, "s": "first", "label": "a"}\n' + _jsonl(kinds, newline)
    with tempfile.TemporaryDirectory() as tmp:
        if zst:
            path = Path(tmp) / "in.jsonl.zst"
            step = max(1, len(data) // cuts)
            path.write_bytes(_frames(data, list(range(step, len(data), step))))
            range_bytes = 1
        else:
            path = Path(tmp) / "in.jsonl"
            path.write_bytes(data)
            range_bytes = max(1, len(data) // cuts)
        whole = _outcome(path, Path(tmp) / "whole", 1 << 30, 1, strategy, block)
        split = _outcome(path, Path(tmp) / "split", range_bytes, parsers, strategy, block)
        assert split == whole, data


@pytest.fixture(scope="module")
def jsonl_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """1200 lines, every third one bad (so many ranges start or end on a bad line); the
    column names come from the first records only (a key first seen late is not a column)."""
    rng = np.random.default_rng(5)
    kinds = rng.choice([0, 1, 2, 4], size=1200).tolist()
    for i in range(2, 1200, 3):
        kinds[i] = [8, 9, 10, 15][i % 4]
    data = _jsonl(kinds, b"\n") + b'{"x": 1, "s": "z", "label": "a", "late": 1}\n'
    path = tmp_path_factory.mktemp("jsonl") / "in.jsonl"
    path.write_bytes(data)
    return path, [i + 1 for i in range(2, 1200, 3)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_jsonl_one_two_and_four_parsers_write_byte_identical_datasets(
    jsonl_file: tuple[Path, list[int]], tmp_path: Path, strategy: str
) -> None:
    path, bad = jsonl_file
    whole = _ingest(path, tmp_path / "whole", 1 << 30, 1, strategy)
    assert whole.manifest["ranges"] == _passes(strategy)
    assert [line for line, _ in rejects(whole)] == bad
    range_bytes = path.stat().st_size // 17
    with ThreadPoolExecutor(2) as pool:
        plan = ranges_module.plan_ranges(str(path), reader_options(), range_bytes, pool, True)
    assert plan is not None and sum(r.first_line in bad for r in plan) >= 4
    assert sum(r.first_line - 1 in bad for r in plan) >= 4  # ranges ending on a bad line
    for parsers in (1, 2, 4):
        split = _ingest(path, tmp_path / f"p{parsers}", range_bytes, parsers, strategy)
        m = split.manifest
        assert m["ranges"] >= 15 and m["parsers"] == parsers
        assert m["rows_read"] == m["rows_written"] + m["rows_rejected"] == 1201
        assert fingerprint(split) == fingerprint(whole)
    assert split.schema.names == ["x", "s", "label"]


# -- Parquet row groups --------------------------------------------------------------------------
def _parquet(path: Path, rows: int, group: int) -> list[int]:
    """A Parquet file of ``group``-row groups; text x values that are not numbers (rejects)
    on the first and last row of groups. Returns their row numbers (1-based)."""
    x = [str(i * 0.5) for i in range(rows)]
    bad = sorted({r for g in range(group, rows, group) for r in (g - 1, g)} | {0})
    for r in bad:
        x[r] = "oops"
    table = pa.table(
        {
            "x": x,
            "s": [f"v{i % 13}" for i in range(rows)],
            "label": ["ab"[i % 2] for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=group)
    return [r + 1 for r in bad]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_parquet_row_groups_on_one_two_and_four_parsers_write_byte_identical_datasets(
    tmp_path: Path, strategy: str
) -> None:
    path = tmp_path / "in.parquet"
    bad = _parquet(path, 2000, 97)
    whole = _ingest(path, tmp_path / "whole", 1 << 30, 1, strategy)
    assert whole.manifest["ranges"] == _passes(strategy)
    assert [line for line, _ in rejects(whole)] == bad
    for parsers in (1, 2, 4):
        split = _ingest(path, tmp_path / f"p{parsers}", 1500, parsers, strategy)
        m = split.manifest
        assert m["ranges"] >= 8 and m["parsers"] == parsers
        assert m["rows_read"] == m["rows_written"] + m["rows_rejected"] == 2000
        assert fingerprint(split) == fingerprint(whole)


def test_hive_folder_files_with_row_groups_write_what_one_parser_writes(tmp_path: Path) -> None:
    for key in ("a", "b"):
        (tmp_path / "in" / f"k={key}").mkdir(parents=True)
        _parquet(tmp_path / "in" / f"k={key}" / "part-0.parquet", 700, 64)
    one = _ingest(tmp_path / "in", tmp_path / "one", 1 << 30, 1, "hash:s")
    four = _ingest(tmp_path / "in", tmp_path / "four", 2000, 4, "hash:s")
    assert one.manifest["ranges"] == 2 and four.manifest["ranges"] >= 8
    assert fingerprint(four) == fingerprint(one)


# -- largest first -------------------------------------------------------------------------------
class _RecordingPool(ThreadPoolExecutor):
    """A real thread pool that records which ranges it was given, in order."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.order: list[tuple[str, int]] = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        if fn is ranges_module._parse_range:
            self.order.append((Path(args[0].path).name, args[0].index))
        return super().submit(fn, *args, **kwargs)


def test_the_largest_ranges_start_first_and_the_output_keeps_input_order(tmp_path: Path) -> None:
    """Five small files, then one twice as large as all of them: with two parsers its ranges
    start right after the first small file's, not after all the small ones."""
    paths = []
    for index, count in enumerate([40, 40, 40, 40, 40, 400]):
        path = tmp_path / f"part-{index}.csv"
        path.write_bytes(_csv_rows(count, 1000)[0])
        paths.append(path)
    options = reader_options(block_size=1 << 20)
    with _RecordingPool(2) as pool:
        ranges = []
        for path in paths:
            ranges += ranges_module.plan_ranges(str(path), options, 1000, pool, whole=True) or []
        assert len(ranges) >= 8
        parsed = list(ranges_module.parse_ranges(ranges, options, {}, pool, 2))
    assert [(r.path, r.index) for r, _, _ in parsed] == [(r.path, r.index) for r in ranges]
    assert pool.order[0] == ("part-0.csv", 0)
    assert pool.order[1][0] == "part-5.csv"  # the largest range in the look-ahead
    assert sorted(pool.order) == sorted((Path(r.path).name, r.index) for r in ranges)
    lines = [int(raw.lines[0]) for _, _, batches in parsed for raw in batches[:1]]
    assert lines == [r.first_line + (1 if r.index == 0 else 0) for r, _, _ in parsed]


def test_adult_as_a_multi_frame_zst_writes_the_single_stream_dataset(
    shared_datasets: Path, tmp_path: Path
) -> None:
    """The real Adult file (", "-separated, "?" missing) in 64 KiB frames, about 8 ranges on
    2 parsers: the dataset of one stream, and the row count of the datasets README."""
    data = (shared_datasets / "adult" / "adult.data").read_bytes()
    path = tmp_path / "adult.data.zst"
    path.write_bytes(_frames(data, list(range(1 << 16, len(data), 1 << 16))))
    written = []
    for range_bytes, parsers in ((1 << 30, 1), (len(data) // 8, 2)):
        with mock.patch.object(ranges_module, "RANGE_BYTES", range_bytes):
            written.append(
                ingest(
                    path,
                    "Y",
                    tmp_path / str(parsers),
                    format="csv",
                    parsers=parsers,
                    strategy="stratified",
                    progress=False,
                )  # fmt: skip
            )
    assert written[0].manifest["ranges"] == 1 and written[1].manifest["ranges"] >= 7
    assert written[1].manifest["rows_read"] == written[1].manifest["rows_written"] == 32_561
    assert fingerprint(written[1]) == fingerprint(written[0])


@pytest.mark.parametrize("strategy", ["stratified", "hash:s"])
def test_small_compressed_files_are_ranges_and_large_ones_streams_with_one_stream_output(
    tmp_path: Path, strategy: str
) -> None:
    """.gz, .bz2 and single-frame .zst files: a small one is one range (parsed side by side
    with the others, largest first), a larger one a stream; the dataset is the same on 1, 2
    and 4 parsers, bad rows and all."""
    import bz2
    import gzip

    compress = {
        "gz": lambda d: gzip.compress(d, mtime=0),
        "bz2": bz2.compress,
        "zst": lambda d: ZSTD.compress(d, asbytes=True),
    }
    for index, count in enumerate([60, 900, 30, 400, 60, 2000]):
        kind = ["gz", "bz2", "zst"][index % 3]
        data, _ = _csv_rows(count, 13 + index)
        (tmp_path / f"part-{index}.csv.{kind}").write_bytes(compress[kind](data))
    pattern = str(tmp_path / "part-*.csv.*")
    paths = sorted(tmp_path.glob("part-*.csv.*"))
    range_bytes = 4 * 2500  # files up to 2,500 compressed bytes are ranges
    options = reader_options()
    with ThreadPoolExecutor(2) as pool:
        plans = [ranges_module.plan_ranges(str(p), options, range_bytes, pool, True) for p in paths]
    packed = [plan is not None and plan[0].packed for plan in plans]
    assert packed == [p.stat().st_size <= 2500 for p in paths] and 0 < sum(packed) < len(paths)
    whole = _ingest(pattern, tmp_path / "whole", range_bytes, 1, strategy)
    for parsers in (2, 4):
        split = _ingest(pattern, tmp_path / f"p{parsers}", range_bytes, parsers, strategy)
        m = split.manifest
        assert m["rows_read"] == m["rows_written"] + m["rows_rejected"] == 3450
        assert fingerprint(split) == fingerprint(whole)


@pytest.mark.parametrize("change", ["truncate", "corrupt"])
def test_a_zst_changed_while_its_frames_are_parsed_fails_and_writes_nothing(
    tmp_path: Path, change: str
) -> None:
    """Cut short, or rewritten at the same size with bytes that no longer decompress, after
    the plan: one line naming the file, no manifest, no output folder."""
    import shardlearn.data._ingest_run as ingest_run

    data, _ = _csv_rows(900, 23)
    path = tmp_path / "in.csv.zst"
    path.write_bytes(_frames(data, list(range(2000, len(data), 2000))))
    plan = ranges_module.plan_ranges

    def plan_then_change(*args: object, **kwargs: object) -> object:
        ranges = plan(*args, **kwargs)
        stored = path.read_bytes()
        half = len(stored) // 2
        if change == "truncate":
            path.write_bytes(stored[:half])
        else:  # the last frames' blocks overwritten, the size kept
            path.write_bytes(stored[:half] + b"\xff" * (len(stored) - half))
        return ranges

    out = tmp_path / "ds"
    with (
        mock.patch.object(ingest_run, "plan_ranges", plan_then_change),
        pytest.raises(DataError, match="changed while it was being ingested") as caught,
    ):
        _split(path, out, 1, 2, "random")
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert not out.exists()


@pytest.mark.parametrize("rows", [300, 2100])
def test_a_parquet_file_rewritten_while_its_row_groups_are_parsed_fails_and_writes_nothing(
    tmp_path: Path, rows: int
) -> None:
    """Fewer, or more, rows and row groups after the plan: one line naming the file."""
    import shardlearn.data._ingest_run as ingest_run

    path = tmp_path / "in.parquet"
    _parquet(path, 2000, 97)
    plan = ranges_module.plan_ranges

    def plan_then_rewrite(*args: object, **kwargs: object) -> object:
        ranges = plan(*args, **kwargs)
        _parquet(path, rows, 97)
        return ranges

    out = tmp_path / "ds"
    with (
        mock.patch.object(ingest_run, "plan_ranges", plan_then_rewrite),
        pytest.raises(DataError, match="changed while it was being ingested") as caught,
    ):
        _ingest(path, out, 1500, 2, "random")
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert not out.exists()
