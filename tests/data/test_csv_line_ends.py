"""CSV line ends the parser honours (\\n, \\r\\n, a lone \\r) on every path: the header read, the
slow path's restart and its LineGuard, one stream and byte ranges. Every line is a row, a
reject with its physical line, or the ingest is one line of DataError with nothing written."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from unittest import mock

import pytest

import shardlearn as sl
from shardlearn.data import _ranges as ranges_module
from shardlearn.data._line_guard import LineGuard
from shardlearn.exceptions import DataError

ROWS = 100


def _csv(newline: str, first: bytes = b"") -> bytes:
    """Header a,b,y and 100 rows; line 51 holds a text value in the numeric column b (the fast
    path stops, the slow path restarts after line 50) and line 61 has a field too many."""
    rows = [f"{i},{'x' if i == 50 else i},{i % 2}" for i in range(1, ROWS + 1)]
    rows[59] += ",9"
    return first + (newline.join(["a,b,y", *rows]) + newline).encode()


def _ingest(path: Path, out: Path, **kwargs: object) -> sl.Dataset:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The label column .* single class", UserWarning)
        return sl.ingest(path, "y", out, partitions=2, max_reject_rate=1.0, **kwargs)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("parsers", [1, 2])
def test_slow_path_restart_keeps_every_line(tmp_path: Path, newline: str, parsers: int) -> None:
    """A lone \\r ends a line for the parser; the restart used to count \\n only, so a file with
    bare carriage returns skipped everything (an 'Empty CSV file' error)."""
    path = tmp_path / "in.csv"
    path.write_bytes(_csv(newline))
    with mock.patch.object(ranges_module, "RANGE_BYTES", len(path.read_bytes()) // 3):
        ds = _ingest(path, tmp_path / "ds", parsers=parsers)
    m = ds.manifest
    assert (m["rows_read"], m["rows_written"], m["rows_rejected"]) == (ROWS, ROWS - 2, 2)
    rejects = ds.read_rejects().to_pydict()
    assert rejects["line"] == [51, 61]
    assert rejects["raw"] == ["50,x,0", "60,60,0,9"]


@pytest.mark.parametrize("first", [b"\r", b"\n", b"\r\n", b"\n\n"])
def test_empty_first_line_is_one_line_error(tmp_path: Path, first: bytes) -> None:
    """An empty line before the header: the header read skipped a lone \\r and the parser took
    the empty line as its header, so the last row vanished (99 of 100)."""
    path = tmp_path / "in.csv"
    path.write_bytes(_csv("\n", first))
    out = tmp_path / "ds"
    with pytest.raises(DataError) as error:
        _ingest(path, out)
    message = str(error.value)
    assert "header must be on line 1" in message and "\n" not in message
    assert not (out / "manifest.json").exists()


def test_header_line_ends_at_a_lone_return(tmp_path: Path) -> None:
    """A bare-\\r file longer than the block size: its header is its first line, not a block."""
    path = tmp_path / "in.csv"
    rows = [f"{i},{i},{i % 2}" for i in range(1, 2001)]
    path.write_bytes(("\r".join(["a,b,y", *rows]) + "\r").encode())
    ds = _ingest(path, tmp_path / "ds", block_size=1 << 14)
    assert ds.manifest["rows_written"] == 2000
    assert ds.num_rows() == 2000


def test_guard_numbers_lines_after_a_lone_return() -> None:
    """The LineGuard counts a lone \\r as the parser does: the refused line keeps its number."""
    data = b"1,2\r3,4\n5,6\n7,\xff\n"
    guard = LineGuard(io.BytesIO(data), 1 << 10, first_line=2)
    assert guard.read() == b"1,2\r3,4\n5,6\n\n"
    assert list(guard.refused) == [5]


def test_guard_refuses_a_line_it_cannot_cut(tmp_path: Path) -> None:
    """A refused line holding a lone \\r (bare-\\r line ends, or a \\r in a quoted value) is
    one line of error, not one reject swallowing many lines."""
    path = tmp_path / "in.csv"
    path.write_bytes(_csv("\r").replace(b"70,70", b"70,7\xff0"))
    out = tmp_path / "ds"
    with pytest.raises(DataError, match="carriage return alone") as error:
        _ingest(path, out)
    assert "\n" not in str(error.value)
    assert not (out / "manifest.json").exists()


def test_lone_return_in_a_newline_file_keeps_later_numbers(tmp_path: Path) -> None:
    """One byte of a \\n file turned into \\r splits its line in two for the parser: the
    undecodable line after it is rejected on its own physical line (the LineGuard counted
    \\n only, so it refused line 72 as 71 and a good row took its reason)."""
    data = _csv("\n").replace(b"30,30,0", b"30,3\r0,0").replace(b"70,70", b"70,7\xff0")
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    ds = _ingest(path, tmp_path / "ds")
    m = ds.manifest
    assert (m["rows_read"], m["rows_rejected"]) == (ROWS + 1, 5)
    rejects = ds.read_rejects().to_pydict()
    assert rejects["line"] == [31, 32, 52, 62, 72]
    assert rejects["raw"][-1].startswith("70,7")


def test_lone_return_beside_a_quote_then_a_refused_line_is_an_error(tmp_path: Path) -> None:
    """Whether a lone \\r beside a quote ends a line only the parser knows: a line refused
    after it cannot be numbered for certain, which is one line of error, never a guess."""
    data = _csv("\n").replace(b"30,30,0", b'30,"3\r0",0').replace(b"70,70", b"70,7\xff0")
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    out = tmp_path / "ds"
    with pytest.raises(DataError, match="Cannot number line") as error:
        _ingest(path, out)
    assert "\n" not in str(error.value)
    assert not (out / "manifest.json").exists()
