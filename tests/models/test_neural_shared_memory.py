"""The gradient all-reduce through shared memory (neural_network/_shared.py, issue #23), its ranks
played by threads of this process: the sum, the reuse of the slots, a rank that leaves."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shardlearn.exceptions import EngineError  # noqa: E402
from shardlearn.models.neural_network._shared import (  # noqa: E402
    SharedAllReduce,
    create_exchange,
    remove_exchange,
)

NUMEL = 37


@pytest.fixture
def exchange():
    made: list[str] = []

    def make(size: int) -> list[SharedAllReduce]:
        directory = create_exchange(size, NUMEL)
        made.append(directory)
        ranks = [SharedAllReduce(torch, directory, r, size, NUMEL, 30.0) for r in range(size)]
        for rank in ranks:  # every reading end is open: the writers may connect
            rank.connect()
        return ranks

    yield make
    for directory in made:
        remove_exchange(directory)
        assert not os.path.exists(directory)


def _together(ranks: list[SharedAllReduce], step: Any) -> list[Any]:
    """``step(rank_index, rank)`` on one thread per rank; results (or errors) in rank order."""
    results: list[Any] = [None] * len(ranks)

    def run(index: int) -> None:
        try:
            results[index] = step(index, ranks[index])
        except Exception as error:  # handed to the test thread
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(ranks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_every_rank_gets_the_same_sum_in_rank_order_step_after_step(exchange):
    ranks = exchange(3)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 3, NUMEL)).astype(np.float32)  # step, rank, element

    def steps(index: int, rank: SharedAllReduce) -> list[np.ndarray]:
        sums = []
        for step in range(5):  # more steps than the two parities of the slots
            flat = torch.from_numpy(values[step, index].copy())
            rank.all_reduce(flat)
            sums.append(flat.numpy())
        return sums

    results = _together(ranks, steps)
    for step in range(5):
        expected = (values[step, 0] + values[step, 1]) + values[step, 2]
        for per_rank in results:
            np.testing.assert_array_equal(per_rank[step], expected)
    assert [rank.reductions for rank in ranks] == [5, 5, 5]


@pytest.mark.parametrize("closed", ["both", "writers"])
def test_a_rank_that_leaves_makes_the_others_fail_at_once(exchange, closed):
    """Its ends close with its run (or its process): the others' next write or read fails."""
    ranks = exchange(2)
    leaving = ranks.pop()
    for end in [*leaving.writers, *(leaving.readers if closed == "both" else [])]:
        end.close()
    with pytest.raises(EngineError, match="Worker 1 left the process group"):
        ranks[0].all_reduce(torch.zeros(NUMEL))
