"""Ingest from files: formats, validation with rejects, reconciled counts, atomic output."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlearn.data import Dataset, ingest
from shardlearn.exceptions import DataError, SchemaError
from tests.data._rejects import rejects as _rejects

HEADER = "id,amount,city,label\n"


def _csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(r + "\n" for r in rows))
    return path


def _clean_rows(n: int, start: int = 0) -> list[str]:
    cities = ["paris", "oslo", "rome"]
    labels = ["yes", "no", "no", "no"]
    return [f"{i},{i * 1.5:.1f},{cities[i % 3]},{labels[i % 4]}" for i in range(start, start + n)]


def _ids(ds: Dataset) -> list[int]:
    return sorted(v for s in ds.splits for v in ds.read(s, ["id"])["id"].to_pylist())


def _reconciled(ds: Dataset) -> bool:
    m = ds.manifest
    return (
        m["rows_read"]
        == m["rows_written"] + m["rows_rejected"]
        == ds.num_rows() + m["rows_rejected"]
    )


def test_clean_csv_ingests_every_row(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _clean_rows(200))
    ds = ingest(source, "label", tmp_path / "ds", partitions=3, strategy="stratified")
    assert _ids(ds) == list(range(200))
    assert ds.manifest["rows_read"] == 200 and ds.manifest["rows_rejected"] == 0
    assert [(c.name, c.kind, c.dtype) for c in ds.schema] == [
        ("id", "numeric", "int64"),
        ("amount", "numeric", "float64"),
        ("city", "categorical", "string"),
        ("label", "categorical", "string"),
    ]
    assert ds.classes == ["no", "yes"]
    assert ds.manifest["class_counts"] == {"no": 150, "yes": 50}
    assert ds.rejects_uri is None


def test_truncated_and_overlong_lines_are_rejected_with_line_numbers(tmp_path: Path) -> None:
    rows = _clean_rows(50)
    rows[9] = "9,13.5"  # line 11 (the header is line 1)
    rows[19] = "19,28.5,rome,no,extra"  # line 21
    ds = ingest(_csv(tmp_path / "in.csv", rows), "label", tmp_path / "ds", partitions=2)
    assert _rejects(ds) == [
        (11, "wrong number of fields (expected 4)"),
        (21, "wrong number of fields (expected 4)"),
    ]
    assert _ids(ds) == [i for i in range(50) if i not in (9, 19)]
    assert _reconciled(ds)
    raw = ds.read_rejects()["raw"].to_pylist()
    assert raw == ["9,13.5", "19,28.5,rome,no,extra"]


def test_text_in_numeric_column_is_rejected_naming_the_column(tmp_path: Path) -> None:
    rows = _clean_rows(120)
    rows[100] = "100,lots,rome,no"  # beyond tolerance it stays numeric: 1 bad value in 120
    ds = ingest(_csv(tmp_path / "in.csv", rows), "label", tmp_path / "ds", partitions=2)
    assert ds.schema["amount"].dtype == "float64"
    assert _rejects(ds) == [(102, "column 'amount': not a valid float64 value")]
    assert ds.read_rejects()["raw"].to_pylist() == ["100,lots,rome,no"]
    assert _reconciled(ds)


def test_missing_labels_are_rejected(tmp_path: Path) -> None:
    rows = _clean_rows(30)
    rows[3] = "3,4.5,oslo,"
    rows[4] = "4,6.0,oslo,NA"
    ds = ingest(_csv(tmp_path / "in.csv", rows), "label", tmp_path / "ds", max_reject_rate=0.1)
    assert _rejects(ds) == [(5, "missing label"), (6, "missing label")]
    assert _reconciled(ds)


def test_broken_quoting_rejects_only_the_broken_line(tmp_path: Path) -> None:
    rows = _clean_rows(40)
    rows[5] = '5,7.5,"oslo,no'  # line 7: the quote never closes
    ds = ingest(_csv(tmp_path / "in.csv", rows), "label", tmp_path / "ds", partitions=2)
    assert _rejects(ds) == [(7, "broken quoting: a quote is not closed on this line")]
    assert _ids(ds) == [i for i in range(40) if i != 5]
    assert _reconciled(ds)


def test_blank_lines_are_skipped_and_line_numbers_stay_right(tmp_path: Path) -> None:
    rows = _clean_rows(10)
    rows[2] = ""
    rows[6] = "6,x"  # line 8
    ds = ingest(_csv(tmp_path / "in.csv", rows), "label", tmp_path / "ds", max_reject_rate=0.2)
    assert _rejects(ds) == [(8, "wrong number of fields (expected 4)")]
    assert ds.manifest["blank_lines"] == 1
    assert ds.manifest["rows_read"] == 9


def test_too_many_rejects_fail_and_leave_no_dataset(tmp_path: Path) -> None:
    rows = _clean_rows(20)
    for i in range(0, 20, 4):
        rows[i] = f"{i},1.0"
    with pytest.raises(DataError, match=r"5 of 20 rows \(25.00%\) were rejected.*max-reject-rate"):
        ingest(_csv(tmp_path / "in.csv", rows), "label", tmp_path / "ds", max_reject_rate=0.1)
    assert not (tmp_path / "ds").exists()  # the output folder it created is removed again


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), (HEADER, "only a header")],
    ids=["empty-file", "header-only"],
)
def test_files_without_rows_are_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "in.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        ingest(tmp_path / "in.csv", "label", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="'.*nope.csv' does not exist"):
        ingest(tmp_path / "nope.csv", "label", tmp_path / "ds")
    with pytest.raises(DataError, match=r"pattern '.*\*.csv' matches no file"):
        ingest(str(tmp_path / "*.csv"), "label", tmp_path / "ds")
    with pytest.raises(SchemaError, match="Cannot tell the format.*--format"):
        (tmp_path / "x.dat").write_text(HEADER)
        ingest(tmp_path / "x.dat", "label", tmp_path / "ds")


def test_unknown_label_column_suggests_the_right_one(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _clean_rows(5))
    with pytest.raises(SchemaError, match="Unknown label column 'lable'. Did you mean 'label'"):
        ingest(source, "lable", tmp_path / "ds")
    with pytest.raises(SchemaError, match="Unknown partitioning column 'town'"):
        ingest(source, "label", tmp_path / "ds", strategy="hash:town")


def test_single_class_label_warns_but_writes(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", [f"{i},1.0,rome,no" for i in range(10)])
    with pytest.warns(UserWarning, match="single class"):
        ds = ingest(source, "label", tmp_path / "ds", partitions=2)
    assert ds.classes == ["no"]


def test_globs_several_files_and_compression(tmp_path: Path) -> None:
    zstd = pytest.importorskip("pyarrow").Codec("zstd")
    (tmp_path / "in").mkdir()
    _csv(tmp_path / "in" / "a.csv", _clean_rows(30, 0))
    text = (HEADER + "".join(r + "\n" for r in _clean_rows(30, 30))).encode()
    (tmp_path / "in" / "b.csv.gz").write_bytes(gzip.compress(text))
    text = (HEADER + "".join(r + "\n" for r in _clean_rows(30, 60))).encode()
    with pa.CompressedOutputStream(str(tmp_path / "in" / "c.csv.zst"), zstd.name) as out:
        out.write(text)
    ds = ingest(str(tmp_path / "in" / "*.csv*"), "label", tmp_path / "ds", partitions=2)
    assert _ids(ds) == list(range(90))
    assert len(ds.manifest["sources"]) == 3


def test_bad_line_in_gzip_file_is_located(tmp_path: Path) -> None:
    rows = _clean_rows(30)
    rows[12] = "12"
    text = (HEADER + "".join(r + "\n" for r in rows)).encode()
    (tmp_path / "in.csv.gz").write_bytes(gzip.compress(text))
    ds = ingest(tmp_path / "in.csv.gz", "label", tmp_path / "ds", max_reject_rate=0.1)
    table = ds.read_rejects()
    assert table["line"].to_pylist() == [14]
    assert table["source"].to_pylist() == [str(tmp_path / "in.csv.gz")]


def test_tsv_jsonl_and_parquet_inputs(tmp_path: Path) -> None:
    rows = [r.split(",") for r in _clean_rows(40)]
    (tmp_path / "in.tsv").write_text(
        "id\tamount\tcity\tlabel\n" + "".join("\t".join(r) + "\n" for r in rows)
    )
    records = [{"id": int(r[0]), "amount": float(r[1]), "city": r[2], "label": r[3]} for r in rows]
    lines = [json.dumps(r) for r in records]
    lines[7] = "{not json"
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "in.parquet")
    tsv = ingest(tmp_path / "in.tsv", "label", tmp_path / "tsv", partitions=2)
    jsonl = ingest(tmp_path / "in.jsonl", "label", tmp_path / "jsonl", partitions=2)
    parquet = ingest(tmp_path / "in.parquet", "label", tmp_path / "pq", partitions=2)
    assert _ids(tsv) == _ids(parquet) == list(range(40))
    assert _ids(jsonl) == [i for i in range(40) if i != 7]
    assert _rejects(jsonl)[0][0] == 8 and _rejects(jsonl)[0][1].startswith("invalid JSON")
    assert jsonl.schema["amount"].dtype == parquet.schema["amount"].dtype == "float64"


def test_no_header_with_columns_and_schema_file(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("".join(r + "\n" for r in _clean_rows(20)))
    (tmp_path / "schema.yaml").write_text(
        "columns:\n"
        "  - {name: id, kind: numeric, dtype: int64}\n"
        "  - {name: amount, kind: numeric}\n"
        "  - {name: city, kind: text}\n"
        "  - {name: label, kind: categorical}\n"
    )
    with pytest.raises(SchemaError, match="need column names"):
        ingest(tmp_path / "in.csv", "label", tmp_path / "ds", header=False)
    ds = ingest(
        tmp_path / "in.csv",
        "label",
        tmp_path / "ds",
        header=False,
        columns=["id", "amount", "city", "label"],
        schema=tmp_path / "schema.yaml",
    )
    assert _ids(ds) == list(range(20))
    assert ds.schema["city"].kind == "text"
    assert ds.schema["amount"].dtype == "float64"


def test_label_strip_merges_dotted_labels(tmp_path: Path) -> None:
    a = _csv(tmp_path / "a.csv", ["1,1.0,rome,yes", "2,2.0,rome,no"])
    b = _csv(tmp_path / "b.csv", ["3,1.0,rome,yes.", "4,2.0,rome,no."])
    assert ingest([a, b], "label", tmp_path / "raw", partitions=1).classes == [
        "no",
        "no.",
        "yes",
        "yes.",
    ]
    assert ingest([a, b], "label", tmp_path / "ds", partitions=1, label_strip=".").classes == [
        "no",
        "yes",
    ]


def test_same_input_and_seed_give_identical_shards(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _clean_rows(300))
    first = ingest(source, "label", tmp_path / "a", strategy="stratified", seed=3)
    second = ingest(source, "label", tmp_path / "b", strategy="stratified", seed=3)
    assert [s.sha256 for s in first.shards(None)] == [s.sha256 for s in second.shards(None)]


def test_overwrite_replaces_and_refuses_without_it(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _clean_rows(30))
    ingest(source, "label", tmp_path / "ds", partitions=2)
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        ingest(source, "label", tmp_path / "ds", partitions=2)
    ds = ingest(source, "label", tmp_path / "ds", partitions=3, overwrite=True)
    assert {s.index for s in ds.shards()} == {0, 1, 2}


def test_range_ingest_orders_shards(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _clean_rows(500))
    ds = ingest(
        source, "label", tmp_path / "ds", partitions=4, strategy="range:amount", split=(1.0,)
    )
    ranges = [(t.column("amount").to_numpy().min(), t.column("amount").to_numpy().max())
              for t in (s.read() for s in ds.shards())]  # fmt: skip
    for (_, high), (low, _) in zip(ranges, ranges[1:], strict=False):
        assert high <= low
    assert len(ranges) == 4


@pytest.mark.filterwarnings("ignore:The label column 'label' has a single class")
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 300),
    bad=st.sets(st.integers(0, 299), max_size=5),
    partitions=st.integers(1, 5),
    strategy=st.sampled_from(["random", "stratified", "hash:city", "range:amount"]),
    seed=st.integers(0, 100),
)
def test_ingest_every_row_is_written_once_or_rejected(
    n: int, bad: set[int], partitions: int, strategy: str, seed: int
) -> None:
    rows = _clean_rows(n)
    bad = {b for b in bad if b < n and b != 0}
    for b in bad:
        rows[b] = f"{b},1.0"
    with tempfile.TemporaryDirectory() as tmp:
        source = _csv(Path(tmp) / "in.csv", rows)
        ds = ingest(
            source, "label", Path(tmp) / "ds", partitions, strategy, seed=seed, max_reject_rate=1.0
        )
        assert _ids(ds) == sorted(set(range(n)) - bad)
        assert sorted(line - 2 for line, _ in _rejects(ds)) == sorted(bad)
        assert _reconciled(ds)


def test_shards_are_readable_by_batches(tmp_path: Path) -> None:
    source = _csv(tmp_path / "in.csv", _clean_rows(100))
    ds = ingest(source, "label", tmp_path / "ds", partitions=2, split="0.5,0.5")
    assert ds.splits == ["train", "valid"]
    sizes = [b.num_rows for b in ds.iter_batches("valid", batch_size=9)]
    assert sum(sizes) == ds.num_rows("valid") and max(sizes) <= 9
    assert np.isclose(ds.num_rows("train"), 50, atol=15)


@pytest.mark.parametrize("block_size", [512, 4096, 1 << 20])
def test_typed_fast_path_falls_back_to_text_mid_file(tmp_path: Path, block_size: int) -> None:
    # Numeric columns are parsed typed until a value of another type appears; from there the
    # file is re-read as text. Rows must still be written once or rejected once, with the
    # right lines, wherever the blocks end.
    rows = _clean_rows(1500)
    broken = {700: "700,abc,rome,no", 701: "701,1.0", 1200: "1200,9e,oslo,yes", 1400: ""}
    for index, text in broken.items():
        rows[index] = text
    rows[300] = "300,1.0,rome"  # a refused row before the switch
    source = _csv(tmp_path / "in.csv", rows)
    ds = ingest(source, "label", tmp_path / "ds", partitions=3, block_size=block_size)
    assert _ids(ds) == sorted(set(range(1500)) - {300, 700, 701, 1200, 1400})
    assert _rejects(ds) == [
        (302, "wrong number of fields (expected 4)"),
        (702, "column 'amount': not a valid float64 value"),
        (703, "wrong number of fields (expected 4)"),
        (1202, "column 'amount': not a valid float64 value"),
    ]
    assert ds.manifest["blank_lines"] == 1
    assert _reconciled(ds)
