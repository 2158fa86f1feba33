"""Batch prediction: datasets on both engines, raw files streamed, rejects that reconcile."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import registry_helpers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardlearn as sl
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import DataError, SchemaError
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import Registry
from shardlearn.registry.predict import predict_batch, rejects_path

N_ROWS = 240


def _table(n: int = N_ROWS, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    job = rng.choice(["clerk", "nurse", "pilot"], n)
    age = rng.normal(40, 10, n)
    score = age / 10 + (job == "pilot") * 2 + rng.normal(0, 1, n)
    label = np.where(score > 5, "good", np.where(score > 3.5, "fair", "poor"))
    return pa.table({"id": np.arange(n) + 1000, "age": age, "job": job, "y": label})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "people"
    return write_dataset(_table(), out, label="y", partitions=3, split=(0.6, 0.2, 0.2), seed=1)


@pytest.fixture(scope="module")
def pipeline(dataset):
    pre = Preprocessor({"age": "numeric", "job": "categorical"}, label="y")
    with engine("local", workers=1):
        return sl.Pipeline(pre, sl.LogisticRegression(C=0.5)).fit(dataset)


def _expected(model, table: pa.Table, proba: bool) -> dict[str, list]:
    out = {"prediction": model.predict(table).tolist()}
    if proba:
        for j, label in enumerate(model.classes_.tolist()):
            out[f"proba_{label}"] = model.predict_proba(table)[:, j].tolist()
    return out


def test_dataset_prediction_equals_in_memory_prediction(any_engine, dataset, pipeline, tmp_path):
    summary = predict_batch(
        pipeline, dataset.uri, tmp_path / "preds.parquet", proba=True, id_column="id"
    )
    shards = [shard for split in dataset.splits for shard in dataset.shards(split)]
    assert len(shards) >= 3 and len(dataset.splits) == 3
    rows = pa.concat_tables([shard.read() for shard in shards])
    got = pq.read_table(tmp_path / "preds.parquet")
    classes = pipeline.classes_.tolist()
    assert got.column_names == ["id", "prediction", *[f"proba_{c}" for c in classes]]
    assert got.column("id").to_pylist() == rows.column("id").to_pylist()
    expected = _expected(pipeline, rows, proba=True)
    assert got.column("prediction").to_pylist() == expected["prediction"]
    for c in classes:
        np.testing.assert_array_equal(got.column(f"proba_{c}").to_numpy(), expected[f"proba_{c}"])
    assert (summary.rows_in, summary.rows_predicted, summary.rows_rejected) == (N_ROWS, N_ROWS, 0)
    assert [s.source for s in summary.sources] == [s.path for s in shards]
    assert summary.rejects is None and not rejects_path(tmp_path / "preds.parquet").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["preds.parquet"]  # parts cleaned up


def test_dataset_prediction_of_chosen_splits(dataset, pipeline, tmp_path):
    with engine("local", workers=1):  # the in-process debugging path
        summary = predict_batch(pipeline, dataset.uri, tmp_path / "p.parquet", splits=["test"])
    assert summary.rows_in == dataset.num_rows("test")
    got = pq.read_table(tmp_path / "p.parquet")
    assert got.column_names == ["shard", "row", "prediction"]  # keyed by shard and row
    shards = dataset.shards("test")
    assert got.column("shard").to_pylist() == [s.path for s in shards for _ in range(s.rows)]
    assert got.column("row").to_pylist() == [r for s in shards for r in range(s.rows)]
    assert (
        got.column("prediction").to_pylist()
        == _expected(pipeline, dataset.read("test"), proba=False)["prediction"]
    )


def _dirty_csv(path) -> list[int]:
    """A CSV with bad rows; returns the 0-based row numbers that must be rejected."""
    lines = ["id,age,job,unused"]
    bad = []
    rng = np.random.default_rng(3)
    for i in range(150):
        age: str = f"{rng.normal(40, 10):.3f}"
        if i % 17 == 5:
            age, _ = "forty", bad.append(i)
        elif i % 29 == 7:
            age, _ = "inf", bad.append(i)
        elif i % 23 == 2:
            age = ""  # missing: the pipeline imputes it
        lines.append(f"{i},{age},{['clerk', 'nurse', 'pilot', 'astronaut'][i % 4]},x")
    path.write_text("\n".join(lines) + "\n")
    return bad


def test_raw_csv_rows_that_fail_validation_go_to_rejects_and_counts_reconcile(pipeline, tmp_path):
    source = tmp_path / "new.csv"
    bad = _dirty_csv(source)
    out = tmp_path / "preds.parquet"
    summary = predict_batch(pipeline, source, out, proba=True, id_column="id", batch_size=40)
    assert summary.rows_in == 150 == summary.rows_predicted + summary.rows_rejected
    assert summary.rows_rejected == len(bad) > 0 and summary.reconciles
    rejects = pq.read_table(summary.rejects).to_pylist()
    assert [r["line"] for r in rejects] == [i + 2 for i in bad]  # physical lines
    assert all(r["source"] == str(source) for r in rejects)
    assert "column 'age': 'forty' is not a valid numeric value" in rejects[0]["reason"]
    assert any("is not finite" in r["reason"] for r in rejects)
    assert rejects[0]["raw"] == source.read_text().splitlines()[bad[0] + 1]
    got = pq.read_table(out)
    good_ids = [str(i) for i in range(150) if i not in bad]
    assert got.column("id").to_pylist() == good_ids  # order kept
    lines = [line.split(",") for line in source.read_text().splitlines()[1:]]
    good = pa.table(
        {
            "age": [float(r[1]) if r[1] else None for r in lines if int(r[0]) not in bad],
            "job": [r[2] for r in lines if int(r[0]) not in bad],
        }
    )
    expected = _expected(pipeline, good, proba=True)
    assert got.column("prediction").to_pylist() == expected["prediction"]
    for label in pipeline.classes_:
        np.testing.assert_array_equal(
            got.column(f"proba_{label}").to_numpy(), expected[f"proba_{label}"]
        )


def test_bare_estimator_rejects_missing_values_it_cannot_impute(centroid_model, tmp_path):
    X, _ = registry_helpers.make_data(n=30, seed=8)
    columns = {f"f{j}": X[:, j].tolist() for j in range(4)}
    columns["f2"][4] = None
    columns["f0"][9] = float("nan")
    pq.write_table(pa.table(columns), tmp_path / "x.parquet")
    summary = predict_batch(centroid_model, tmp_path / "x.parquet", tmp_path / "p.parquet")
    rejects = pq.read_table(summary.rejects).to_pylist()
    assert [(r["line"], r["reason"].split(" is ")[0]) for r in rejects] == [
        (5, "column 'f2'"),  # a Parquet file's line is its 1-based row, as in ingest
        (10, "column 'f0'"),
    ]
    assert json.loads(rejects[1]["raw"])["f0"] is None
    keep = [i for i in range(30) if i not in (4, 9)]
    got = pq.read_table(tmp_path / "p.parquet").column("prediction").to_pylist()
    assert got == centroid_model.predict(X[keep]).tolist()


def test_several_raw_files_keep_file_then_row_order(pipeline, tmp_path):
    table = _table(n=60, seed=4)
    pq.write_table(table.slice(0, 25), tmp_path / "a.parquet")
    with open(tmp_path / "b.jsonl", "w") as handle:
        for row in table.slice(25).to_pylist():
            handle.write(json.dumps(row) + "\n")
        handle.write("{not json\n")
        handle.write(json.dumps({"id": 9999, "age": "old", "job": "nurse"}) + "\n")
    # A glob: a folder is read as ingest reads one, as a (Hive-partitioned) Parquet dataset.
    summary = predict_batch(
        pipeline, str(tmp_path / "*"), tmp_path / "out" / "p.parquet", id_column="id",
        batch_size=16,
    )  # fmt: skip
    assert [s.source for s in summary.sources] == [
        str(tmp_path / "a.parquet"),
        str(tmp_path / "b.jsonl"),
    ]
    assert (summary.rows_in, summary.rows_predicted, summary.rows_rejected) == (62, 60, 2)
    got = pq.read_table(tmp_path / "out" / "p.parquet")
    assert got.column("id").to_pylist() == table.column("id").to_pylist()
    assert got.column("prediction").to_pylist() == pipeline.predict(table).tolist()
    reasons = [r["reason"] for r in pq.read_table(summary.rejects).to_pylist()]
    assert reasons[0].startswith("invalid JSON")
    assert "column 'age': 'old' is not a valid numeric value" in reasons[1]


def test_missing_model_column_names_the_column_and_the_file(pipeline, tmp_path):
    pq.write_table(_table(n=5).drop_columns(["job"]), tmp_path / "x.parquet")
    with pytest.raises(SchemaError, match="x.parquet has no column 'job', which the model needs"):
        predict_batch(pipeline, tmp_path / "x.parquet", tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


def test_missing_id_column_is_named(pipeline, tmp_path):
    (tmp_path / "x.csv").write_text("age,job\n30,nurse\n")
    with pytest.raises(SchemaError, match="no id column 'key'"):
        predict_batch(pipeline, tmp_path / "x.csv", tmp_path / "p.parquet", id_column="key")


def test_unknown_input_format_and_missing_input_are_clear(pipeline, tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(SchemaError, match="Cannot tell the format of .*x.xlsx.*--format"):
        predict_batch(pipeline, tmp_path / "x.xlsx", tmp_path / "p.parquet")
    with pytest.raises(DataError, match="does not exist"):
        predict_batch(pipeline, tmp_path / "nope.csv", tmp_path / "p.parquet")


def test_proba_needs_predict_proba(dataset, tmp_path):
    with engine("local", workers=1):
        svc = sl.Pipeline(Preprocessor({"age": "numeric"}, label="y"), sl.LinearSVC()).fit(dataset)
    with pytest.raises(DataError, match="LinearSVC has no predict_proba"):
        predict_batch(svc.estimator, dataset.uri, tmp_path / "p.parquet", proba=True)


def test_model_given_as_a_registry_reference(pipeline, tmp_path):
    registry = Registry(tmp_path / "models")
    registry.register(pipeline, "people", stage="production")
    pq.write_table(_table(n=20, seed=9), tmp_path / "x.parquet")
    summary = predict_batch(
        f"{registry.root}/people@production", tmp_path / "x.parquet", tmp_path / "p.parquet"
    )
    assert summary.rows_predicted == 20
    got = pq.read_table(tmp_path / "p.parquet").column("prediction").to_pylist()
    assert got == pipeline.predict(_table(n=20, seed=9)).tolist()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cells=st.lists(
        st.one_of(
            st.floats(-50, 50, allow_nan=False).map(lambda v: f"{v:.4f}"),
            st.sampled_from(["", "abc", "inf", "-inf", "1e400", "NaN", " 7 "]),
        ),
        min_size=1,
        max_size=60,
    ),
    batch_size=st.integers(1, 25),
)
def test_counts_reconcile_and_order_holds_for_any_mix_of_rows(
    centroid_model, tmp_path_factory, cells, batch_size
):
    """Property: every input row is predicted or rejected, once, in input order."""
    tmp = tmp_path_factory.mktemp("prop")
    lines = ["row,f0,f1,f2,f3"] + [f"{i},{c},1.0,2.0,3.0" for i, c in enumerate(cells)]
    (tmp / "in.csv").write_text("\n".join(lines) + "\n")
    summary = predict_batch(
        centroid_model, tmp / "in.csv", tmp / "p.parquet", id_column="row", batch_size=batch_size
    )
    assert summary.rows_in == len(cells) == summary.rows_predicted + summary.rows_rejected
    predicted = [int(r) for r in pq.read_table(tmp / "p.parquet").column("row").to_pylist()]
    rejected = []
    if summary.rejects is not None:
        rejected = [line - 2 for line in pq.read_table(summary.rejects).column("line").to_pylist()]
    assert predicted == sorted(predicted) and rejected == sorted(rejected)
    assert sorted(predicted + rejected) == list(range(len(cells)))
    for i, cell in enumerate(cells):
        try:
            value = float(cell)
            valid = np.isfinite(value)
        except ValueError:
            valid = False
        assert (i in predicted) == bool(valid), (i, cell)
