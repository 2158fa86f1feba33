"""Hostile input files (issue #21, findings 7 and 8): every row is written or rejected with a
reason, and a file that cannot be read is one line of error with nothing written."""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardlearn as sl
from shardlearn.data import Dataset, write_dataset
from shardlearn.data._line_guard import REFUSED_TEXT_CHARS, LineGuard
from shardlearn.exceptions import DataError, ShardlearnError
from shardlearn.testing import run_cli
from tests.data._rejects import rejects as _rejects

ADULT_LINES = 300  # lines of adult.data copied into the test's folder (header included)
CSV_HEADER = "x,n,y\n"


def _float_rows(count: int) -> list[str]:
    return [f"{i * 0.5},{i},{'a' if i % 2 else 'b'}" for i in range(count)]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _reconciled(ds: Dataset) -> bool:
    m = ds.manifest
    return (
        m["rows_read"]
        == m["rows_written"] + m["rows_rejected"]
        == ds.num_rows() + len(_rejects(ds))
    )


@pytest.fixture
def adult_csv(shared_datasets: Path, tmp_path: Path) -> Path:
    """The first lines of the real Adult file, copied into the test's folder."""
    with open(shared_datasets / "adult" / "adult.data", "rb") as source:
        head = [source.readline() for _ in range(ADULT_LINES)]
    path = tmp_path / "adult.csv"
    path.write_bytes(b"".join(head))
    return path


def _adult_label(path: Path) -> str:
    return path.read_bytes().split(b"\n", 1)[0].decode().split(",")[-1].strip()


def _one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, _, err = run_cli(capsys, *args)
    assert code == 1, err
    assert err.startswith("error:") and err.strip().count("\n") == 0, err
    return err


# -- finding 7: infinities and JSON values that are not scalars ------------------------------------
def test_infinite_numbers_are_rejects_with_a_reason(tmp_path: Path) -> None:
    rows = _float_rows(200)
    rows[2], rows[4], rows[6] = "inf,2,a", "-Infinity,4,a", "1e999,6,b"
    source = _write_lines(tmp_path / "in.csv", [CSV_HEADER.strip(), *rows])
    ds = sl.ingest(source, "y", tmp_path / "ds", partitions=2)
    reason = "column 'x': an infinite value (--allow-non-finite keeps it)"
    assert _rejects(ds) == [(4, reason), (6, reason), (8, reason)]
    assert _reconciled(ds) and ds.manifest["rows_written"] == 197
    x = [v for s in ds.splits for v in ds.read(s, ["x"])["x"].to_pylist()]
    assert all(abs(v) < float("inf") for v in x)


def test_dates_the_features_cannot_encode_are_rejects_and_training_works(tmp_path: Path) -> None:
    # Issue #21 finding 3: "0001-01-01" and "9999-12-31" were ingested, then train failed.
    rows = [f"2024-01-{1 + i % 28:02d},{i},{'a' if i % 3 else 'b'}" for i in range(120)]
    rows[3], rows[5] = "0001-01-01,3,a", "9999-12-31 23:59:59,5,b"
    source = _write_lines(tmp_path / "in.csv", ["when,n,y", *rows])
    ds = sl.ingest(source, "y", tmp_path / "ds", partitions=2, seed=0)
    reason = (
        "column 'when': a date-time outside 1684-07-28 to 2255-06-05, "
        "the range shardlearn can encode"
    )
    assert _rejects(ds) == [(5, reason), (7, reason)]
    assert _reconciled(ds) and ds.manifest["rows_written"] == 118
    with sl.engine("local", workers=1):
        model = sl.Pipeline(sl.Preprocessor.auto(ds.schema), sl.LogisticRegression()).fit(ds)
    assert model.predict(ds.read("train")).shape == (ds.num_rows("train"),)


def test_allow_non_finite_keeps_infinities_in_python_and_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _float_rows(50)
    rows[0] = "-inf,0,b"
    source = _write_lines(tmp_path / "in.csv", [CSV_HEADER.strip(), *rows])
    ds = sl.ingest(source, "y", tmp_path / "py", allow_non_finite=True)
    code, _, err = run_cli(
        capsys, "ingest", str(source), "--label", "y", "--out", str(tmp_path / "cli"),
        "--allow-non-finite", "--json",
    )  # fmt: skip
    assert code == 0, err
    for out in (ds, Dataset.open(tmp_path / "cli")):
        x = [v for s in out.splits for v in out.read(s, ["x"])["x"].to_pylist()]
        assert out.manifest["rows_rejected"] == 0 and float("-inf") in x
        assert out.manifest["read_options"]["allow_non_finite"] is True


def test_write_dataset_refuses_infinities_unless_allowed_like_ingest(tmp_path: Path) -> None:
    table = pa.table(
        {
            "x": [1.0, float("inf"), -float("inf"), 4.0],
            "f": pa.array([1.0, 2.0, 3.0, float("inf")], pa.float32()),
            "clean": [1.0, 2.0, 3.0, 4.0],
            "y": ["a", "b", "a", "b"],
        }
    )
    with pytest.raises(DataError) as refused:
        write_dataset(table, tmp_path / "refused", "y", partitions=1)
    message = str(refused.value)
    assert "'x' (2)" in message and "'f' (1)" in message and "clean" not in message
    assert "allow_non_finite=True" in message and "\n" not in message
    assert not (tmp_path / "refused").exists()
    kept = write_dataset(table, tmp_path / "kept", "y", partitions=1, allow_non_finite=True)
    x = kept.read("train", ["x"])["x"].to_pylist()
    assert sorted(x) == [-float("inf"), 1.0, 4.0, float("inf")]


def test_nan_text_outside_the_missing_markers_is_a_missing_value(tmp_path: Path) -> None:
    rows = _float_rows(50)
    rows[3] = "nan,3,a"
    source = _write_lines(tmp_path / "in.csv", [CSV_HEADER.strip(), *rows])
    ds = sl.ingest(source, "y", tmp_path / "ds", na_values=["?"], split=(1.0, 0.0, 0.0))
    assert ds.manifest["rows_rejected"] == 0
    assert ds.read("train", ["x"])["x"].null_count == 1


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_lists_and_objects_are_rejects_not_values(tmp_path: Path) -> None:
    records: list[object] = [
        {"x": i * 1.0, "c": "a" if i % 2 else "b", "y": "yes" if i % 3 else "no"}
        for i in range(100)
    ]
    records[4] = {"x": 4.0, "c": "a", "y": ["yes"]}
    records[5] = {"x": 5.0, "c": {"k": 1}, "y": "no"}
    records[6] = {"x": [6, 7], "c": "a", "y": "yes"}
    ds = sl.ingest(_jsonl(tmp_path / "in.jsonl", records), "y", tmp_path / "ds")
    assert ds.classes == ["no", "yes"]
    assert _rejects(ds) == [
        (5, "column 'y': a JSON list where a single value is expected"),
        (6, "column 'c': a JSON object where a single value is expected"),
        (7, "column 'x': a JSON list where a single value is expected"),
    ]
    assert _reconciled(ds)


def test_jsonl_infinities_are_rejects(tmp_path: Path) -> None:
    lines = [json.dumps({"x": i * 1.0, "y": "ab"[i % 2]}) for i in range(60)]
    lines[1], lines[2] = '{"x": Infinity, "y": "a"}', '{"x": -1e999, "y": "b"}'
    ds = sl.ingest(_write_lines(tmp_path / "in.jsonl", lines), "y", tmp_path / "ds")
    assert [line for line, _ in _rejects(ds)] == [2, 3] and _reconciled(ds)


# -- finding 8: corrupt compressed files, undecodable and over-long lines ----------------------
def _truncated_gzip(path: Path, rows: int = 20000) -> Path:
    data = gzip.compress(
        ("".join(f"{r}\n" for r in [CSV_HEADER.strip(), *_float_rows(rows)])).encode()
    )
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _not_gzip(path: Path, rows: int = 100) -> Path:
    return _write_lines(path, [CSV_HEADER.strip(), *_float_rows(rows)])


@pytest.mark.parametrize("make", [_truncated_gzip, _not_gzip], ids=["truncated", "not-gzip"])
def test_corrupt_compressed_file_is_one_line_error_with_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object
) -> None:
    source = make(tmp_path / "in.csv.gz")  # type: ignore[operator]
    with pytest.raises(
        DataError, match=r"in\.csv\.gz.*gzip data is corrupt or truncated"
    ) as caught:
        sl.ingest(source, "y", tmp_path / "ds", block_size=1 << 14)
    assert "\n" not in str(caught.value) and "Nothing was written" in str(caught.value)
    assert not (tmp_path / "ds").exists()
    err = _one_line_error(
        capsys, "ingest", str(source), "--label", "y", "--out", str(tmp_path / "cli")
    )
    assert "gzip data is corrupt or truncated" in err and not (tmp_path / "cli").exists()


def test_truncated_gzip_names_the_last_good_line_and_keeps_the_old_dataset(tmp_path: Path) -> None:
    good = _write_lines(tmp_path / "good.csv", [CSV_HEADER.strip(), *_float_rows(100)])
    old = sl.ingest(good, "y", tmp_path / "ds")
    source = _truncated_gzip(tmp_path / "in.csv.gz", rows=200_000)
    with pytest.raises(DataError, match=r"the last good line is (\d+)") as caught:
        sl.ingest(source, "y", tmp_path / "ds", overwrite=True, block_size=1 << 16)
    last = int(caught.value.args[0].split("the last good line is ")[1].split(".")[0])
    # The line named is one the truncated file still holds in full, and close to its last.
    intact = zlib.decompressobj(wbits=31).decompress(source.read_bytes()).count(b"\n")
    assert intact - 1000 <= last <= intact
    assert Dataset.open(tmp_path / "ds").manifest_sha256 == old.manifest_sha256


def _adult_with(adult_csv: Path, line: int, replace: bytes, by: bytes) -> Path:
    lines = adult_csv.read_bytes().split(b"\n")
    assert replace in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(replace, by, 1)
    adult_csv.write_bytes(b"\n".join(lines))
    return adult_csv


def test_undecodable_line_is_a_reject_for_that_line_only(
    adult_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _adult_with(adult_csv, 11, b"Private", "Privé".encode("latin-1"))
    ds = sl.ingest(source, _adult_label(source), tmp_path / "ds")
    assert _rejects(ds) == [(11, "not valid UTF-8 (byte 0xe9 at byte 9 of the line)")]
    assert ds.manifest["rows_written"] == ADULT_LINES - 2 and _reconciled(ds)
    code, out, err = run_cli(
        capsys, "ingest", str(source), "--label", _adult_label(source), "--out",
        str(tmp_path / "cli"), "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["rows_rejected"] == 1


def test_over_long_line_is_a_reject_for_that_line_only(
    adult_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Longer than two 4 MiB blocks: pyarrow's CSV parser cannot hold it at all.
    source = _adult_with(adult_csv, 20, b"Private", b"P" * (9 << 20))
    code, out, err = run_cli(
        capsys, "ingest", str(source), "--label", _adult_label(source), "--out",
        str(tmp_path / "cli"), "--json",
    )  # fmt: skip
    assert code == 0, err
    ds = Dataset.open(tmp_path / "cli")
    ((line, reason),) = _rejects(ds)
    assert line == 20 and re.fullmatch(
        r"line of 94\d{5} bytes, longer than the 4194304-byte limit", reason
    )
    assert ds.manifest["rows_written"] == ADULT_LINES - 2 and _reconciled(ds)
    raw = ds.read_rejects()["raw"][0].as_py()
    assert len(raw) <= 201  # the rejects keep the start of the line, not 9 MB of it


def test_jsonl_undecodable_and_over_long_lines_are_rejects(tmp_path: Path) -> None:
    lines = [json.dumps({"x": i * 1.0, "y": "ab"[i % 2]}).encode() for i in range(100)]
    lines[3] = b'{"x": 1.0, "y": "\xe9"}'
    lines[7] = b'{"x": 1.0, "y": "' + b"a" * 100_000 + b'"}'
    lines[9] = b"[" * 5000  # nested too deeply for Python's json
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    ds = sl.ingest(path, "y", tmp_path / "ds", block_size=1 << 16)
    assert [(line, reason.split(" (")[0]) for line, reason in _rejects(ds)] == [
        (4, "not valid UTF-8"),
        (8, "line of 100020 bytes, longer than the 65536-byte limit"),
        (10, "invalid JSON: nested too deeply"),
    ]
    assert _reconciled(ds)


def test_parquet_infinities_are_rejects_and_nan_is_missing(tmp_path: Path) -> None:
    inf = float("inf")
    x = [1.0, inf, float("nan"), 4.0, -inf] * 20
    pq.write_table(pa.table({"x": x, "y": ["a", "b"] * 50}), tmp_path / "in.parquet")
    ds = sl.ingest(tmp_path / "in.parquet", "y", tmp_path / "ds", max_reject_rate=0.5)
    assert ds.manifest["rows_rejected"] == 40 and _reconciled(ds)
    kept = [v for s in ds.splits for v in ds.read(s, ["x"])["x"].to_pylist()]
    assert kept.count(None) == 20 and all(v is None or abs(v) < inf for v in kept)


GUARD_LIMIT = 2000
GUARD_LINE = st.one_of(
    st.integers(0, 3 * GUARD_LIMIT).map(lambda n: b"a" * n),  # short, at the limit, or longer
    st.just(b"ok \xc3\xa9"),  # UTF-8
    st.just(b"bad \xe9 latin-1"),
)


@settings(max_examples=30, derandomize=True, deadline=None)
@given(lines=st.lists(GUARD_LINE, min_size=1, max_size=120), final_newline=st.booleans())
def test_line_guard_empties_exactly_the_long_and_undecodable_lines(
    lines: list[bytes], final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    guard = LineGuard(io.BytesIO(data), GUARD_LIMIT, first_line=5)
    out = io.BufferedReader(guard).read()

    def refused(line: bytes) -> bool:
        if len(line) + 1 > GUARD_LIMIT:
            return True
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    if not final_newline and not lines[-1]:
        lines = lines[:-1]  # the data ends with the previous line's newline: no line here
    # Every line comes out whole and in place (the last one gains a newline), or empty.
    assert out == b"".join((b"" if refused(line) else line) + b"\n" for line in lines)
    assert sorted(guard.refused) == [5 + i for i, line in enumerate(lines) if refused(line)]
    assert all(len(text) <= REFUSED_TEXT_CHARS + 1 for _, text in guard.refused.values())


def test_a_float_column_with_many_infinities_stays_a_float_column(tmp_path: Path) -> None:
    # 4% "-Infinity": more than inference tolerates as bad values, so they must parse as floats.
    rows = _float_rows(500)
    for i in range(0, 500, 25):
        rows[i] = f"-Infinity,{i},a"
    source = _write_lines(tmp_path / "in.csv", [CSV_HEADER.strip(), *rows])
    ds = sl.ingest(source, "y", tmp_path / "ds", max_reject_rate=0.1)
    assert ds.schema["x"].dtype == "float64" and ds.schema["x"].kind == "numeric"
    assert ds.manifest["rows_rejected"] == 20 and _reconciled(ds)


@pytest.mark.parametrize(
    "header",
    [b"x,n\xe9,y", b'x,"n,y', b"x,n,y," + b"h" * (1 << 17), b"\xff\xfe"],
    ids=["latin-1", "open-quote", "over-long", "utf-16-bom"],
)
def test_a_broken_header_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], header: bytes
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(header + b"\n" + "".join(r + "\n" for r in _float_rows(50)).encode())
    err = _one_line_error(
        capsys, "ingest", str(source), "--label", "y", "--out", str(tmp_path / "ds")
    )
    assert "in.csv" in err or "label column" in err
    with pytest.raises(ShardlearnError):
        sl.ingest(source, "y", tmp_path / "ds", block_size=1 << 16)
    assert not (tmp_path / "ds").exists()
