"""Micro-batching: concurrent requests share one prediction call and get their own rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pyarrow as pa

from shardlearn.exceptions import SchemaError
from shardlearn.serve.batching import MicroBatcher
from shardlearn.serve.host import Inference, ServedModel

from .conftest import loan_table, train_model


class CountingModel(ServedModel):
    """A served real model that counts how often it is asked to predict."""

    calls: list[int]

    def infer(self, table):  # type: ignore[no-untyped-def]
        self.calls.append(table.num_rows)
        return super().infer(table)


def test_concurrent_requests_are_predicted_in_fewer_calls(tmp_path: Path) -> None:
    model = train_model(300, seed=4, tmp=tmp_path)
    served = CountingModel("loans", 1, "loans", "Pipeline", None, model, model.classes_.tolist())
    object.__setattr__(served, "calls", [])
    table = loan_table(50, seed=5).drop_columns(["default"])

    async def run() -> list[Inference]:
        batcher = MicroBatcher(max_wait=0.05)
        await batcher.start()
        try:
            return await asyncio.gather(
                *(
                    batcher.infer(served, table.slice(i, 1).to_pydict())
                    for i in range(table.num_rows)
                )
            )
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    assert len(served.calls) < table.num_rows
    assert sum(served.calls) == table.num_rows
    got = np.vstack([r.proba for r in results])
    np.testing.assert_array_equal(got, model.predict_proba(table))
    assert [r.labels[0] for r in results] == model.predict(table).tolist()


def test_a_full_batch_is_predicted_without_waiting_and_stop_cancels_waiters(
    tmp_path: Path,
) -> None:
    model = train_model(300, seed=4, tmp=tmp_path)
    served = CountingModel("loans", 1, "loans", "Pipeline", None, model, model.classes_.tolist())
    object.__setattr__(served, "calls", [])
    rows = [loan_table(1, seed=s).drop_columns(["default"]).to_pydict() for s in range(5)]

    async def run() -> tuple[list[Inference], bool]:
        # The timer would wait an hour: only reaching max_rows can answer the first four.
        batcher = MicroBatcher(max_wait=3600, max_rows=4)
        await batcher.start()
        full = await asyncio.wait_for(
            asyncio.gather(*(batcher.infer(served, r) for r in rows[:4])), timeout=120
        )
        waiting = asyncio.ensure_future(batcher.infer(served, rows[4]))
        await asyncio.sleep(0)  # let it join the pending batch
        await batcher.stop()
        try:
            await waiting
        except asyncio.CancelledError:
            return full, True
        return full, False

    full, cancelled = asyncio.run(run())
    assert served.calls == [4]
    assert cancelled
    assert [r.labels[0] for r in full] == [
        model.predict(loan_table(1, seed=s).drop_columns(["default"]))[0] for s in range(4)
    ]


def test_a_request_that_fails_its_batch_fails_alone(tmp_path: Path) -> None:
    model = train_model(300, seed=4, tmp=tmp_path)
    served = CountingModel("loans", 1, "loans", "Pipeline", None, model, model.classes_.tolist())
    object.__setattr__(served, "calls", [])
    good = loan_table(1, seed=6).drop_columns(["default"]).to_pydict()
    poison = {**good, "income": ["not a number"]}  # as if validation had let it through

    async def run() -> list[Inference | BaseException]:
        # An hour's wait: only the second request's arrival ends the batch, so both share it.
        batcher = MicroBatcher(max_wait=3600, max_rows=2)
        await batcher.start()
        try:
            return await asyncio.wait_for(
                asyncio.gather(
                    batcher.infer(served, poison),
                    batcher.infer(served, good),
                    return_exceptions=True,
                ),
                timeout=120,
            )
        finally:
            await batcher.stop()

    failed, answered = asyncio.run(run())
    assert isinstance(failed, SchemaError) and "'income'" in str(failed)
    assert isinstance(answered, Inference)
    np.testing.assert_array_equal(answered.proba, model.predict_proba(pa.table(good)))
    assert served.calls == [1, 1]  # the shared batch failed (mixed types); each retried alone
