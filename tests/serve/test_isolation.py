"""A client's poison rows fail only its own request: validated per row, isolated per batch."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor
from shardlearn.preprocess.datetime import EARLIEST, LATEST, in_supported_range
from shardlearn.registry import Registry
from shardlearn.registry.predict import predict_batch, rejects_path
from shardlearn.serve import ServeConfig

from .conftest import RunningServer, loan_table

ROUNDS = 8
OUT_OF_RANGE = ["0001-01-01", "9999-12-31", "1600-02-29T12:00:00", "2300-01-01T00:00:00+05:00"]


def dated_table(rows: int, seed: int) -> pa.Table:
    """Loan rows with an account opening date (2000-2024) among the inputs."""
    rng = np.random.default_rng(seed)
    start = datetime(2000, 1, 1)
    opened = [start + timedelta(days=int(d)) for d in rng.integers(0, 9000, rows)]
    return loan_table(rows, seed).append_column("opened", pa.array(opened, pa.timestamp("us")))


def records(rows: int, seed: int) -> list[dict]:
    table = dated_table(rows, seed).drop_columns(["default"])
    return [{**r, "opened": r["opened"].isoformat()} for r in table.to_pylist()]


@pytest.fixture(scope="module")
def dated_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Pipeline]:
    root = tmp_path_factory.mktemp("dated")
    dataset = write_dataset(dated_table(400, seed=0), root / "data", "default", partitions=2)
    with engine("local", workers=1):
        model = Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression()).fit(dataset)
    registry = Registry(root / "models")
    registry.register(model, "loans")
    return registry, model


def test_dates_the_encoder_cannot_encode_are_out_of_range() -> None:
    assert in_supported_range(EARLIEST) and in_supported_range(LATEST)
    assert not in_supported_range(EARLIEST - timedelta(microseconds=1))
    assert not in_supported_range(LATEST + timedelta(microseconds=1))
    assert all(not in_supported_range(datetime.fromisoformat(v)) for v in OUT_OF_RANGE)


def test_bad_dates_are_422_and_never_fail_a_concurrent_clients_request(
    dated_model: tuple[Registry, Pipeline],
) -> None:
    registry, model = dated_model
    # Three rows end a micro-batch: a bad request (two rows) that got past validation would
    # share every batch with the good client's request sent alongside it (the timer is only a
    # backstop; neither request fills a batch alone).
    config = ServeConfig(registry=registry.root, auth=False, batch_max_rows=3, batch_wait_ms=200)
    good_rows = records(ROUNDS, seed=1)
    bad_rows = records(ROUNDS, seed=2)
    for i, row in enumerate(bad_rows):
        row["opened"] = OUT_OF_RANGE[i % len(OUT_OF_RANGE)]

    async def both_clients(url: str) -> list[tuple[httpx.Response, httpx.Response]]:
        path = "/v1/models/loans/predict"
        async with (
            httpx.AsyncClient(base_url=url) as good,
            httpx.AsyncClient(base_url=url) as bad,
        ):
            return [
                await asyncio.gather(
                    good.post(path, json={"records": [good_rows[i]]}),
                    bad.post(path, json={"records": [good_rows[i], bad_rows[i]]}),
                )
                for i in range(ROUNDS)
            ]

    with RunningServer(config) as server:
        answers = asyncio.run(both_clients(server.url))

    assert [(g.status_code, b.status_code) for g, b in answers] == [(200, 422)] * ROUNDS
    for _, bad in answers:
        problem = bad.json()
        assert (problem["field"], problem["row"]) == ("opened", 1)
        assert f"from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}" in problem["error"]
    table = dated_table(ROUNDS, seed=1).drop_columns(["default"])
    got = [good.json()["probabilities"][0] for good, _ in answers]
    np.testing.assert_allclose(got, model.predict_proba(table), rtol=1e-12)


def test_batch_predict_rejects_out_of_range_dates_and_predicts_the_rest(
    dated_model: tuple[Registry, Pipeline], tmp_path: Path
) -> None:
    _, model = dated_model
    rows = records(6, seed=3)
    for row, value in zip(rows[1::2], OUT_OF_RANGE, strict=False):
        row["opened"] = value
    source = tmp_path / "new.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = predict_batch(model, source, tmp_path / "out.parquet", proba=True)
    assert (summary.rows_in, summary.rows_predicted, summary.rows_rejected) == (6, 3, 3)
    rejects = pq.read_table(rejects_path(tmp_path / "out.parquet")).to_pylist()
    assert [r["line"] for r in rejects] == [2, 4, 6]  # the JSON Lines file's lines
    assert all("'opened'" in r["reason"] and "supported range" in r["reason"] for r in rejects)
    kept = dated_table(6, seed=3).drop_columns(["default"]).take([0, 2, 4])
    predicted = pq.read_table(tmp_path / "out.parquet").column("prediction").to_pylist()
    assert predicted == model.predict(kept).tolist()
