"""Micro-batching: concurrent small requests for one model are predicted together.

Each request puts its rows and a future on the model's queue. A collector task takes the first
waiting request, keeps collecting for at most ``max_wait`` seconds or until ``max_rows`` rows,
then runs one vectorised ``predict_proba`` over the concatenated rows and hands every request
its slice. Under light load a request waits at most ``max_wait``; under heavy load hundreds of
single-row requests cost one prediction call.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import pyarrow as pa

from shardlearn.serve.host import Inference, ServedModel

__all__ = ["MicroBatcher"]


@dataclass
class _Pending:
    model: ServedModel
    table: pa.Table
    future: asyncio.Future[Inference]


class MicroBatcher:
    """Collects prediction requests and predicts them in batches.

    Parameters
    ----------
    max_wait : float
        Seconds the first request of a batch waits for company (default 2 ms).
    max_rows : int
        A batch is predicted as soon as it has this many rows.
    """

    def __init__(self, max_wait: float = 0.002, max_rows: int = 1024) -> None:
        self.max_wait = max_wait
        self.max_rows = max_rows
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the collector on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        """Stop the collector; waiting requests get a cancellation."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def infer(self, model: ServedModel, table: pa.Table) -> Inference:
        """Predictions for ``table``'s rows, computed together with concurrent requests."""
        if self._queue is None or self.max_wait <= 0:
            return model.infer(table)
        future: asyncio.Future[Inference] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(model, table, future))
        return await future

    async def _collect(self) -> None:
        queue = self._queue
        if queue is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            rows = batch[0].table.num_rows
            deadline = loop.time() + self.max_wait
            while rows < self.max_rows:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    break
                batch.append(item)
                rows += item.table.num_rows
            self._predict(batch)

    @staticmethod
    def _predict(batch: list[_Pending]) -> None:
        # Requests that arrived across a hot reload may hold different model versions.
        by_model: dict[int, list[_Pending]] = {}
        for item in batch:
            by_model.setdefault(id(item.model), []).append(item)
        for items in by_model.values():
            try:
                table = pa.concat_tables([item.table for item in items])
                result = items[0].model.infer(table)
            except Exception as error:  # noqa: BLE001 - handed to each waiting request
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            start = 0
            for item in items:
                stop = start + item.table.num_rows
                if not item.future.done():
                    item.future.set_result(result.rows(start, stop))
                start = stop
