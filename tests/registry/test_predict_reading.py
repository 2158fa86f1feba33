"""Batch prediction reads raw files as ingest does, and every output row says where it came from.

Issue #22 findings 3, 4 and 5: a malformed line is a reject (file, line, reason) and never a
crash; Adult's ``.test`` file with its ``", "`` separators, ``--no-header --columns``, globs and
compressed files are read by ingest's reader; a dataset's predictions carry a row key (shard and
row, or ``--id``) and the ``--keep-columns``, matching the input rows one to one.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import shardlearn as sl
from shardlearn import _terminal
from shardlearn.data import write_dataset
from shardlearn.engine import PROGRESS_ENV, engine
from shardlearn.exceptions import DataError, SchemaError
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import save
from shardlearn.registry.predict import predict_batch
from shardlearn.testing import run_cli

COLUMNS = ["age", "workclass", "hours", "y"]
WORKCLASSES = ["Private", "State-gov", "Self-emp"]


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    workclass = rng.choice(WORKCLASSES, n)
    hours = rng.integers(10, 70, n)
    score = age / 20 + hours / 20 + (workclass == "Self-emp") + rng.normal(0, 0.5, n)
    y = np.where(score > 5, ">50K", "<=50K")
    return pa.table(
        {"id": np.arange(n) + 100, "age": age, "workclass": workclass, "hours": hours, "y": y}
    )


@pytest.fixture(scope="module")
def model() -> sl.Pipeline:
    pre = Preprocessor({"age": "numeric", "workclass": "categorical", "hours": "numeric"}, "y")
    with engine("local", workers=1):
        return sl.Pipeline(pre, sl.LogisticRegression()).fit(_table(300, seed=0), "y")


def _csv_lines(table: pa.Table, separator: str = ",") -> list[str]:
    return [separator.join(str(row[c]) for c in COLUMNS) for row in table.to_pylist()]


MALFORMED = {
    "extra fields": (b"41,Private,40,<=50K,extra,fields", "wrong number of fields (expected 4)"),
    "missing fields": (b"41,Private", "wrong number of fields (expected 4)"),
    "unclosed quote": (b'41,"Private,40,<=50K', "broken quoting"),
    "not UTF-8": (b"41,Priv\xff\xfeate,40,<=50K", "not valid UTF-8"),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_line_is_a_reject_with_its_physical_line_and_the_rest_is_predicted(
    model: sl.Pipeline, tmp_path: Path, kind: str
) -> None:
    table = _table(40, seed=1)
    bad_line, reason = MALFORMED[kind]
    lines = [b",".join(c.encode() for c in COLUMNS), *(s.encode() for s in _csv_lines(table))]
    lines.insert(13, bad_line)  # physical line 14
    source = tmp_path / "new.csv"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "preds.parquet"
    summary = predict_batch(model, source, out, batch_size=7)
    assert (summary.rows_in, summary.rows_predicted, summary.rows_rejected) == (41, 40, 1)
    rejects = pq.read_table(summary.rejects).to_pylist()
    assert [(r["source"], r["line"]) for r in rejects] == [(str(source), 14)]
    assert reason in rejects[0]["reason"]
    got = pq.read_table(out)
    assert got.column_names == ["source", "line", "prediction"]
    assert got.column("line").to_pylist() == [*range(2, 14), *range(15, 43)]
    assert got.column("prediction").to_pylist() == model.predict(table).tolist()


def test_the_cli_reports_rejects_and_exits_0(model: sl.Pipeline, tmp_path: Path, capsys) -> None:
    save(model, tmp_path / "model")
    table = _table(20, seed=2)
    lines = [",".join(COLUMNS), *_csv_lines(table)]
    lines[5] += ",1,2"
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(
        capsys, "predict", str(tmp_path / "model"), str(tmp_path / "new.csv"),
        "--out", str(tmp_path / "p.parquet"), "--workers", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "rows_in=20 = rows_predicted=19 + rows_rejected=1" in out
    assert f"{tmp_path / 'new.csv'}:6: wrong number of fields (expected 4)" in out
    assert "p.rejects.parquet" in out


def _adult_style(table: pa.Table, missing: dict[int, str]) -> str:
    """UCI Adult's layout: no header, ``", "`` separators, ``?`` for missing, dotted labels."""
    lines = []
    for i, row in enumerate(table.to_pylist()):
        row = {**row, "y": row["y"] + "."}
        if i in missing:
            row[missing[i]] = "?"
        lines.append(", ".join(str(row[c]) for c in COLUMNS))
    return "\n".join(lines) + "\n"


def test_an_adult_style_test_file_reads_with_no_header_columns_and_trimming(
    model: sl.Pipeline, tmp_path: Path, capsys
) -> None:
    table = _table(50, seed=3)
    missing = {4: "workclass", 9: "age"}
    source = tmp_path / "adult.test"  # the format comes from the extension: .test is CSV
    source.write_text(_adult_style(table, missing))
    out = tmp_path / "p.parquet"
    summary = predict_batch(
        model, source, out, header=False, columns=COLUMNS, keep_columns=["workclass", "y"]
    )
    assert (summary.rows_in, summary.rows_predicted, summary.rows_rejected) == (50, 50, 0)
    expected = table.to_pydict()
    for row, column in missing.items():
        expected[column][row] = None  # "?" is missing, as in ingest; the pipeline imputes it
    expected = pa.table(expected)
    got = pq.read_table(out)
    assert got.column("workclass").to_pylist() == expected.column("workclass").to_pylist()
    assert got.column("y").to_pylist() == [y + "." for y in table.column("y").to_pylist()]
    assert got.column("line").to_pylist() == list(range(1, 51))
    assert got.column("prediction").to_pylist() == model.predict(expected).tolist()
    save(model, tmp_path / "model")
    code, stdout, err = run_cli(
        capsys, "predict", str(tmp_path / "model"), str(source), "--no-header",
        "--columns", ",".join(COLUMNS), "--out", str(tmp_path / "cli.parquet"),
    )  # fmt: skip
    assert code == 0, err
    assert "rows_in=50 = rows_predicted=50 + rows_rejected=0" in stdout
    cli = pq.read_table(tmp_path / "cli.parquet").column("prediction").to_pylist()
    assert cli == got.column("prediction").to_pylist()


def test_the_real_adult_test_file_predicts_as_its_ingested_dataset(
    shared_datasets: Path, tmp_path: Path
) -> None:
    """Same model, same rows: adult.test read raw by predict == adult.test read by ingest."""
    source = shared_datasets / "adult" / "adult.test"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    ds = sl.ingest(source, label="Y", out=tmp_path / "ds", partitions=1, split=(1.0, 0.0, 0.0))
    with engine("local", workers=1):
        model = sl.Pipeline(sl.Preprocessor.auto(ds.schema), sl.GaussianNB()).fit(ds)
    raw = predict_batch(model, source, tmp_path / "raw.parquet", proba=True)
    stored = predict_batch(model, ds.uri, tmp_path / "ds.parquet", proba=True)
    assert raw.rows_in == stored.rows_in == 16281 and raw.rows_rejected == 0
    a, b = pq.read_table(tmp_path / "raw.parquet"), pq.read_table(tmp_path / "ds.parquet")
    assert a.column("line").to_pylist() == list(range(2, 16283))
    assert b.column("row").to_pylist() == list(range(16281))  # one shard, input order
    for column in a.column_names[2:]:
        assert a.column(column).to_pylist() == b.column(column).to_pylist(), column


def test_a_glob_of_two_files_one_compressed_and_a_uri_are_read_in_order(
    model: sl.Pipeline, tmp_path: Path
) -> None:
    table = _table(30, seed=4)
    header = ",".join(COLUMNS)
    first = [header, *_csv_lines(table.slice(0, 12))]
    first.insert(5, "")  # a blank line is skipped, not a row
    (tmp_path / "part-1.csv").write_text("\n".join(first) + "\n")
    second = "\n".join([header, *_csv_lines(table.slice(12))]) + "\n"
    (tmp_path / "part-2.csv.gz").write_bytes(gzip.compress(second.encode()))
    (tmp_path / "other.csv").write_text(header + "\n")  # not matched by the glob
    summary = predict_batch(model, str(tmp_path / "part-*"), tmp_path / "p.parquet")
    files = [str(tmp_path / "part-1.csv"), str(tmp_path / "part-2.csv.gz")]
    assert [s.source for s in summary.sources] == files
    assert (summary.rows_in, summary.rows_predicted, summary.blank_lines) == (30, 30, 1)
    got = pq.read_table(tmp_path / "p.parquet")
    assert got.column("source").to_pylist() == [files[0]] * 12 + [files[1]] * 18
    assert got.column("line").to_pylist() == [2, 3, 4, 5, *range(7, 15), *range(2, 20)]
    assert got.column("prediction").to_pylist() == model.predict(table).tolist()
    uri = f"file://{tmp_path / 'part-2.csv.gz'}"  # a URI, as ingest takes it
    predict_batch(model, uri, tmp_path / "u.parquet")
    by_uri = pq.read_table(tmp_path / "u.parquet")
    assert by_uri.column("source").to_pylist() == [uri] * 18
    assert by_uri.column("prediction").to_pylist() == model.predict(table.slice(12)).tolist()


def test_format_and_delimiter_options_are_ingests(model: sl.Pipeline, tmp_path: Path) -> None:
    table = _table(15, seed=5)
    text = "\n".join([";".join(COLUMNS), *_csv_lines(table, ";")]).replace("Private", "-")
    (tmp_path / "new.dat").write_text(text + "\n")
    with pytest.raises(SchemaError, match="Cannot tell the format of .*new.dat.*--format"):
        predict_batch(model, tmp_path / "new.dat", tmp_path / "p.parquet")
    summary = predict_batch(
        model, tmp_path / "new.dat", tmp_path / "p.parquet", format="csv", delimiter=";"
    )
    assert summary.rows_predicted == 15
    expected = table.to_pydict()
    expected["workclass"] = [None if w == "Private" else w for w in expected["workclass"]]
    got = pq.read_table(tmp_path / "p.parquet").column("prediction").to_pylist()
    assert got == model.predict(pa.table(expected)).tolist()  # "-" is missing, as in ingest
    summary = predict_batch(
        model, tmp_path / "new.dat", tmp_path / "p.parquet", format="csv", delimiter=";",
        na_values=[], keep_columns=["workclass"],
    )  # fmt: skip
    kept = pq.read_table(tmp_path / "p.parquet").column("workclass").to_pylist()
    assert kept == [w.replace("Private", "-") for w in table.column("workclass").to_pylist()]


@pytest.fixture(scope="module")
def ordered(tmp_path_factory) -> sl.Dataset:
    """Rows sorted by id, two shards by id range: shard order is input order."""
    out = tmp_path_factory.mktemp("ordered") / "ds"
    return write_dataset(
        _table(120, seed=6), out, label="y", partitions=2, strategy="range:id", seed=2
    )


def test_dataset_predictions_carry_shard_row_and_kept_columns_one_to_one(
    model: sl.Pipeline, ordered: sl.Dataset, tmp_path: Path
) -> None:
    shards = ordered.shards("train")
    assert len(shards) == 2 and all(s.rows for s in shards)
    with engine("local", workers=2):
        summary = predict_batch(
            model, ordered.uri, tmp_path / "p.parquet", proba=True, keep_columns=["id", "age"]
        )
    got = pq.read_table(tmp_path / "p.parquet")
    classes = model.classes_.tolist()
    assert got.column_names == ["shard", "row", "id", "age", "prediction"] + [
        f"proba_{c}" for c in classes
    ]
    assert summary.rows_in == summary.rows_predicted == 120
    rows = pa.concat_tables([s.read() for s in shards])
    assert got.column("shard").to_pylist() == [s.path for s in shards for _ in range(s.rows)]
    assert got.column("row").to_pylist() == [r for s in shards for r in range(s.rows)]
    assert got.column("id").to_pylist() == rows.column("id").to_pylist() == list(range(100, 220))
    assert got.column("age").to_pylist() == rows.column("age").to_pylist()
    assert got.column("prediction").to_pylist() == model.predict(rows).tolist()
    np.testing.assert_array_equal(
        got.column(f"proba_{classes[0]}").to_numpy(), model.predict_proba(rows)[:, 0]
    )
    for shard in shards:  # the key finds each row in its shard
        mine = got.filter(pc.equal(got.column("shard"), shard.path))
        held = shard.read().take(mine.column("row"))
        assert mine.column("id").to_pylist() == held.column("id").to_pylist()


def test_an_id_column_replaces_the_default_key(
    model: sl.Pipeline, ordered: sl.Dataset, tmp_path: Path
) -> None:
    with engine("local", workers=1):
        predict_batch(
            model, ordered.uri, tmp_path / "p.parquet", id_column="id", keep_columns=["id", "y"]
        )
    got = pq.read_table(tmp_path / "p.parquet")
    assert got.column_names == ["id", "y", "prediction"]
    assert got.column("id").to_pylist() == list(range(100, 220))


def test_options_that_do_not_apply_are_refused(
    model: sl.Pipeline, ordered: sl.Dataset, tmp_path: Path
) -> None:
    out = tmp_path / "p.parquet"
    with pytest.raises(DataError, match="format, delimiter: only for raw files.*is a dataset"):
        predict_batch(model, ordered.uri, out, format="csv", delimiter=";")
    pq.write_table(_table(5, seed=7), tmp_path / "x.parquet")
    with pytest.raises(
        DataError, match="--delimiter cannot be used with .*x.parquet, which is read as PARQ"
    ):
        predict_batch(model, tmp_path / "x.parquet", out, delimiter=";")
    with pytest.raises(SchemaError, match="add --no-header"):
        predict_batch(model, tmp_path / "x.parquet", out, columns=COLUMNS)
    with pytest.raises(SchemaError, match="'prediction' has the name of an output column"):
        predict_batch(model, tmp_path / "x.parquet", out, keep_columns=["prediction"])
    with pytest.raises(SchemaError, match="'line' has the name of the row key"):
        predict_batch(model, tmp_path / "x.parquet", out, keep_columns=["line"])
    with pytest.raises(SchemaError, match="no column 'zip' to keep"):
        predict_batch(model, tmp_path / "x.parquet", out, keep_columns=["zip"])
    assert not out.exists()


_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bars drawn as on a 200-column terminal, on a console made for this test."""
    monkeypatch.setenv(PROGRESS_ENV, "always")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(_terminal, "_CONSOLES", {})


def _rows_shown(text: str) -> list[tuple[int, str]]:
    """(rows done, total) of every drawn state of the predict bar."""
    frames = re.split(r"[\r\n]", _ESCAPE.sub("", text))
    found = (re.search(r"predict rows .*?(\d+)/(\S+)", frame) for frame in frames)
    return [(int(m.group(1)), m.group(2)) for m in found if m]


def test_a_progress_bar_counts_rows_and_rejects_and_changes_nothing(
    model: sl.Pipeline, ordered: sl.Dataset, tmp_path: Path, terminal, capsys
) -> None:
    table = _table(40, seed=8)
    lines = [",".join(COLUMNS), *_csv_lines(table)]
    lines[3] += ",x"
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n")
    predict_batch(model, tmp_path / "new.csv", tmp_path / "a.parquet", batch_size=16)
    text = capsys.readouterr().err
    done = [rows for rows, _ in _rows_shown(text)]
    # chunk by chunk: 16 rows and the refused line, 16 more, the last 7
    assert {17, 33, 40} <= set(done) and done == sorted(done) and done[-1] == 40
    assert "1 rejected" in text
    predict_batch(model, tmp_path / "new.csv", tmp_path / "b.parquet", verbose=0)
    assert capsys.readouterr().err == ""
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    with engine("local", workers=2):
        predict_batch(model, ordered.uri, tmp_path / "c.parquet")
        shown = _rows_shown(capsys.readouterr().err)
        predict_batch(model, ordered.uri, tmp_path / "d.parquet", verbose=False)
    assert capsys.readouterr().err == ""
    assert shown[-1] == (120, "120")
    assert pq.read_table(tmp_path / "c.parquet").equals(pq.read_table(tmp_path / "d.parquet"))
