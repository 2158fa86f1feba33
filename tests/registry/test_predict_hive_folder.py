"""``predict`` reads a Hive-partitioned Parquet folder as ingest does (issue 25: one reader).

Its ``key=value`` folders become columns, each output row is keyed by its file and 1-based row
(``source``, ``line``), links out of the folder are refused as ingest refuses them, a folder
with a ``manifest.json`` is still read as a dataset, and a folder that is neither is a one-line
error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import shardlearn as sl
from shardlearn.engine import engine
from shardlearn.exceptions import DataError
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import save
from shardlearn.registry.predict import predict_batch
from shardlearn.testing import run_cli


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    workclass = rng.choice(["Private", "State-gov", "Self-emp"], n)
    score = age / 20 + (workclass == "Self-emp") + rng.normal(0, 0.5, n)
    return pa.table(
        {"id": np.arange(n), "age": age, "workclass": workclass, "y": np.where(score > 3, 1, 0)}
    )


@pytest.fixture(scope="module")
def model() -> sl.Pipeline:
    pre = Preprocessor({"age": "numeric", "workclass": "categorical"}, "y")
    with engine("local", workers=1):
        return sl.Pipeline(pre, sl.LogisticRegression()).fit(_table(200, seed=0), "y")


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Path, pa.Table]:
    table = _table(90, seed=1)
    folder = tmp_path / "lake" / "events"
    pads.write_dataset(
        table.drop_columns(["y"]), folder, format="parquet", partitioning=["workclass"],
        partitioning_flavor="hive", max_rows_per_file=20, max_rows_per_group=20,
    )  # fmt: skip
    (folder / "_SUCCESS").write_text("")  # Spark's marker: not data
    return folder, table


def test_a_hive_folder_is_predicted_with_its_keys_as_columns(
    model: sl.Pipeline, lake: tuple[Path, pa.Table]
) -> None:
    folder, table = lake
    out = folder.parent.parent / "p.parquet"
    summary = predict_batch(model, str(folder), out, keep_columns=["id", "workclass"])
    got = pq.read_table(out)
    assert summary.rows_in == summary.rows_predicted == got.num_rows == 90
    files = sorted(str(p) for p in folder.rglob("*.parquet"))
    assert sorted(set(got.column("source").to_pylist())) == files
    for source in files:  # each file's rows keyed 1..n in the file's order
        mine = got.filter(pa.compute.equal(got.column("source"), source))
        ids = pq.read_table(source).column("id").to_pylist()
        assert mine.column("line").to_pylist() == list(range(1, len(ids) + 1))
        assert mine.column("id").to_pylist() == ids
        workclass = Path(source).parent.name.split("=", 1)[1]
        assert set(mine.column("workclass").to_pylist()) == {workclass}
    expected = model.predict(table.take(got.column("id")))
    assert got.column("prediction").to_pylist() == expected.tolist()


def test_the_cli_predicts_a_hive_folder(
    model: sl.Pipeline, lake: tuple[Path, pa.Table], tmp_path: Path, capsys
) -> None:
    folder, _ = lake
    save(model, tmp_path / "model")
    code, out, err = run_cli(
        capsys, "predict", str(tmp_path / "model"), str(folder), "--out",
        str(tmp_path / "p.parquet"), "--workers", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "rows_in=90 = rows_predicted=90 + rows_rejected=0" in out


def test_a_link_out_of_the_folder_is_refused_as_ingest_refuses_it(
    model: sl.Pipeline, lake: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    folder, table = lake
    outside = tmp_path / "outside.parquet"
    pq.write_table(table.drop_columns(["y", "workclass"]).slice(0, 5), outside)
    os.symlink(outside, folder / "workclass=Private" / "linked.parquet")
    with pytest.raises(DataError, match="symbolic link out of"):
        predict_batch(model, str(folder), tmp_path / "p.parquet")
    with pytest.raises(DataError, match="symbolic link out of"):
        sl.ingest(str(folder), None, tmp_path / "ds")


def test_a_folder_neither_dataset_nor_parquet_is_a_one_line_error(
    model: sl.Pipeline, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "csvs"
    folder.mkdir()
    (folder / "a.csv").write_text("age,workclass\n40,Private\n")
    save(model, tmp_path / "model")
    code, out, err = run_cli(
        capsys, "predict", str(tmp_path / "model"), str(folder), "--out",
        str(tmp_path / "p.parquet"),
    )  # fmt: skip
    assert code != 0
    message = err.strip()
    assert "\n" not in message, message
    assert "not a Parquet file" in message and "manifest.json" in message, message
    assert not (tmp_path / "p.parquet").exists()
