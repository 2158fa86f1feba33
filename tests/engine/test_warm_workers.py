"""Warm data on worker groups, on the local engine and a real local Ray cluster: a group opened
in a warm scope (:mod:`shardlearn._warm`) has its workers keep what they read for the scope's
next group, their counts reach the driver's counters, and ending the scope empties them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from shardlearn import _warm
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.search import randint, search

SHARDS, WORKERS = 4, 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=240) > 0).astype(np.int64)
    table = pa.table({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "y": y})
    out = tmp_path_factory.mktemp("warm-workers") / "ds"
    return write_dataset(table, out, label="y", partitions=SHARDS, strategy="stratified")


def _read_own_shards(state):
    return sum(shard.read().num_rows for shard in state.shards)


def _rows_read(eng, dataset, scope):
    """Rows the workers of a new group read, and the shard files they read from storage."""
    with _warm.scope(scope, budget=10**9) as counters:
        with eng.workers(WORKERS) as group:
            group.assign(dataset.shards("train"))
            rows = sum(group.run(_read_own_shards))
    return rows, counters.builds["shard_reads"], len(set(counters.readers))


def test_workers_keep_a_scope_across_groups_until_it_ends(engine_name, dataset):
    rows = dataset.num_rows("train")
    scope = f"warm-workers-{engine_name}"
    with engine(engine_name, workers=WORKERS) as eng:
        first = _rows_read(eng, dataset, scope)
        again = _rows_read(eng, dataset, scope)
        _warm.release(scope)
        released = _rows_read(eng, dataset, scope)
        _warm.release(scope)
        outside = eng.workers(WORKERS)
        outside.assign(dataset.shards("train"))
        assert sum(outside.run(_read_own_shards)) == rows  # no scope: plain reads
        outside.close()
    assert first == (rows, SHARDS, WORKERS)  # each worker read its shards, counted here
    assert again == (rows, 0, 0)  # the next group's workers read nothing
    assert released == (rows, SHARDS, WORKERS)  # the scope ended: its data was dropped


def test_a_search_on_workers_gives_the_same_results_warm_or_not(engine_name, dataset, monkeypatch):
    space = {"max_depth": randint(2, 5), "n_estimators": 3, "execution": "workers"}

    def run(budget):
        monkeypatch.setenv(_warm.BUDGET_ENV, budget)  # passed to the workers, Ray's too
        with engine(engine_name, workers=WORKERS) as eng:
            result = search(dataset, models="xgboost", space=space, trials=3, cv=2, seed=1,
                            engine=eng, refit=False, verbose=0)  # fmt: skip
        return {t["trial"]: t["fold_scores"] for t in result.trials}, result.reuse

    warm, reuse = run("1000000000")
    cold, cold_reuse = run("0")
    assert warm == cold and len(warm) == 3
    assert reuse["shard_reads"] == 0 and reuse["preprocessor_shard_reads"] == SHARDS
    assert cold_reuse["shard_reads"] == 3 * 2 * SHARDS  # every trial, both folds
    assert reuse["most_reads_of_a_shard"] <= 1 and cold_reuse["readers"] == WORKERS
