"""Datasets, models and predictions on ``s3://`` against a real S3 API (moto's server).

The server listens on 127.0.0.1 on a free port and is stopped at the end of the module. The
S3 options travel in the URI (``?endpoint_override=HOST:PORT&scheme=http``) so that worker
processes started before this module (the local engine reuses idle workers) need nothing from
the environment but the credentials; a second test uses only the environment variables
(``AWS_ENDPOINT_URL``), the way a cluster is configured.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
from cluster_helpers import read_own_shards, write_csv

from shardlearn.data import Dataset, ingest
from shardlearn.engine import engine
from shardlearn.exceptions import DataError
from shardlearn.metrics import evaluate
from shardlearn.models import LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import load, save
from shardlearn.registry.predict import predict_batch

pytest.importorskip("moto.server")  # s3_endpoint and s3_bucket: tests/conftest.py


def test_ingest_train_evaluate_save_predict_on_s3(s3_endpoint, s3_bucket, tmp_path):
    s3_bucket("lake")
    options = f"?endpoint_override={s3_endpoint}&scheme=http"
    source = write_csv(tmp_path / "jobs.csv")
    dataset = ingest(source, "label", f"s3://lake/jobs{options}", partitions=4, seed=0)
    assert dataset.uri.startswith("s3://lake/jobs")
    assert all(s.uri.startswith("s3://lake/jobs/") and s.uri.endswith(options)
               for s in dataset.shards())  # fmt: skip
    reopened = Dataset.open(f"s3://lake/jobs{options}")
    assert reopened.manifest_sha256 == dataset.manifest_sha256

    with engine("local", workers=2) as eng:
        shards = reopened.shards("train")
        with eng.workers(2) as group:
            group.assign(shards)
            reads = [r for worker in group.run(read_own_shards) for r in worker]
            owned = {s.path: rank for rank, part in enumerate(group.shards) for s in part}
        # Every shard was read from S3 by the worker that owns it, in another process; the
        # driver sent only shard metadata (a few hundred bytes, not the shard's bytes).
        assert sorted(r["path"] for r in reads) == sorted(s.path for s in shards)
        assert all(owned[r["path"]] == r["rank"] and r["pid"] != os.getpid() for r in reads)
        assert {r["path"]: r["rows"] for r in reads} == {s.path: s.rows for s in shards}
        sent = max(len(pickle.dumps(part)) for part in group.shards)
        assert sent < 1500 < sum(s.bytes for s in shards)

        model = Pipeline(Preprocessor.auto(reopened.schema), LogisticRegression(tol=1e-9))
        model.fit(reopened)
        report = evaluate(model, reopened, split="test")
        uri = f"s3://lake/models/jobs{options}"
        save(model, uri)
        loaded = load(uri)
        out = tmp_path / "preds.parquet"
        summary = predict_batch(loaded, f"s3://lake/jobs{options}", out, splits=["test"])

    local = ingest(source, "label", tmp_path / "jobs", partitions=4, seed=0)
    with engine("local", workers=2):
        reference = Pipeline(Preprocessor.auto(local.schema), LogisticRegression(tol=1e-9))
        reference.fit(local)
    np.testing.assert_allclose(model.estimator.coef_, reference.estimator.coef_, atol=1e-6)
    test = reopened.read("test")
    np.testing.assert_array_equal(loaded.predict_proba(test), model.predict_proba(test))
    assert summary.rows_in == summary.rows_predicted == reopened.num_rows("test")
    assert pq.read_table(out).column("prediction").to_pylist() == list(model.predict(test))
    assert 0.6 < report.metrics["accuracy"] <= 1.0


def test_plain_s3_uris_use_the_aws_environment_variables(
    s3_endpoint, s3_bucket, tmp_path, monkeypatch
):
    s3_bucket("plain")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_endpoint}")
    source = write_csv(tmp_path / "jobs.csv", n=120)
    dataset = ingest(source, "label", "s3://plain/jobs", partitions=2, seed=1)
    assert [s.uri for s in dataset.shards("train")] == [
        "s3://plain/jobs/train/part-00000.parquet",
        "s3://plain/jobs/train/part-00001.parquet",
    ]
    with engine("local", workers=1):  # in this process, which has the variable
        model = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression()).fit(dataset)
    save(model, "s3://plain/models/jobs")
    table = Dataset.open("s3://plain/jobs").read("test")
    loaded = load("s3://plain/models/jobs")
    np.testing.assert_array_equal(loaded.predict(table), model.predict(table))


def test_a_missing_bucket_is_a_clear_error(s3_endpoint):
    with pytest.raises(DataError, match=r"No dataset at 's3://nowhere/jobs.*manifest.json"):
        Dataset.open(f"s3://nowhere/jobs?endpoint_override={s3_endpoint}&scheme=http")


@pytest.fixture(scope="module")
def s3_dataset(s3_endpoint, s3_bucket, tmp_path_factory):
    s3_bucket("shared")
    source = write_csv(tmp_path_factory.mktemp("s3src") / "jobs.csv", n=200, seed=3)
    uri = f"s3://shared/jobs?endpoint_override={s3_endpoint}&scheme=http"
    return ingest(source, "label", uri, partitions=4, split=(1.0, 0.0, 0.0), seed=0)


def test_each_engine_reads_its_shards_straight_from_s3(any_engine, s3_dataset):
    shards = s3_dataset.shards("train")
    with any_engine.workers(2) as group:
        group.assign(shards)
        reads = [r for worker in group.run(read_own_shards) for r in worker]
        owned = {s.path: rank for rank, part in enumerate(group.shards) for s in part}
    assert sorted(owned) == sorted(r["path"] for r in reads) == sorted(s.path for s in shards)
    for read in reads:
        assert read["rank"] == owned[read["path"]] and read["pid"] != os.getpid()
    # What the workers read is exactly what the driver reads, shard by shard.
    expected = {s.path: read_own_shards(_DriverState(s))[0]["digest"] for s in shards}
    assert {r["path"]: r["digest"] for r in reads} == expected


class _DriverState:
    """The one attribute read_own_shards needs, for reading a shard in this process."""

    def __init__(self, shard):
        self.shards, self.rank = [shard], -1
