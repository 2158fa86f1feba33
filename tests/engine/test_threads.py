"""Thread worker groups (``workers(prefer="threads")``): the worker-group contract, in process."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from shardlearn.engine import engine
from shardlearn.engine._threads import ThreadGroup
from shardlearn.exceptions import EngineError, TaskFailed
from shardlearn.testing import SYNC_TIMEOUT, fake_shards


def _describe(state, tag):
    calls = state.cache["calls"] = state.cache.get("calls", 0) + 1
    return {
        "rank": state.rank,
        "tag": tag,
        "calls": calls,
        "in_process": state.in_process,
        "shards": [s.index for s in state.shards],
        "seed": state.context.get("seed"),
    }


def test_each_worker_keeps_its_own_state_and_results_come_in_rank_order():
    with engine("local", workers=2) as eng, eng.workers(prefer="threads") as group:
        assert isinstance(group, ThreadGroup) and group.size == 2 and group.shares_memory
        group.assign(fake_shards([50, 10, 30, 20, 40]))
        group.put("seed", 7)
        first = group.run(_describe, "a")
        second = group.run(_describe, tag="b")
        assigned = [[s.index for s in part] for part in group.shards]
    assert [r["rank"] for r in first] == [0, 1]
    assert [r["calls"] for r in second] == [2, 2]
    assert all(r["seed"] == 7 and r["in_process"] for r in second)
    owned = sorted(i for r in first for i in r["shards"])
    assert owned == [0, 1, 2, 3, 4]
    assert sorted(sum([50, 10, 30, 20, 40][i] for i in r["shards"]) for r in first) == [70, 80]
    assert [r["shards"] for r in first] == assigned


def _meet(state, barrier):
    barrier.wait(timeout=SYNC_TIMEOUT)  # both workers must be inside the call at once
    return state.rank


def test_workers_run_at_the_same_time():
    barrier = threading.Barrier(3)
    with engine("local", workers=3) as eng, eng.workers(prefer="threads") as group:
        assert group.run(_meet, barrier) == [0, 1, 2]


def _same_object(state, name, original):
    return state.context[name] is original


def test_put_shares_the_value_instead_of_copying_it():
    values = np.arange(10.0)
    with engine("local", workers=2) as eng, eng.workers(prefer="threads") as group:
        group.put("values", values)
        assert group.run(_same_object, "values", values) == [True, True]


def _fail_on_last(state, finished):
    if state.rank == state.size - 1:
        raise ValueError(f"bad shard on worker {state.rank}")
    finished.append(state.rank)
    return state.rank


def test_a_failing_worker_is_task_failed_with_its_traceback_once_every_worker_finished():
    finished: list[int] = []
    with engine("local", workers=3) as eng, eng.workers(prefer="threads") as group:
        with pytest.raises(
            TaskFailed, match="worker 2: .*ValueError: bad shard on worker 2"
        ) as err:
            group.run(_fail_on_last, finished)
        assert "_fail_on_last" in err.value.remote_traceback
        assert sorted(finished) == [0, 1]
        assert group.run(_describe, "after")[0]["calls"] == 1  # the group is still usable


def _blas_threads(state):
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_gets_each_workers_share_of_the_cpus_while_the_group_is_open():
    before = _blas_threads(None)
    with engine("local", workers=2) as eng:
        with eng.workers(prefer="threads") as group:
            during = group.run(_blas_threads)
            between = _blas_threads(None)  # the driver's own BLAS too, between calls
        assert _blas_threads(None) == before  # restored when the group closes
    assert before and all(threads == [1] * len(before) for threads in [*during, between])


def test_closed_group_and_bad_hints_are_clear_errors():
    with engine("local", workers=2) as eng:
        group = eng.workers(prefer="threads")
        group.close()
        group.close()  # twice is fine
        with pytest.raises(EngineError, match="closed"):
            group.run(_describe, "x")
        with pytest.raises(EngineError, match=r"'prefer' parameter .* Got 'thread'"):
            eng.workers(prefer="thread")
        with pytest.raises(EngineError, match="Expected a function"):
            eng.workers(prefer="threads").run("not a function")


def test_closing_the_engine_closes_its_thread_groups():
    with engine("local", workers=2) as eng:
        group = eng.workers(prefer="threads")
    with pytest.raises(EngineError, match="closed"):
        group.run(_describe, "x")


def test_one_worker_in_process_engine_and_processes_hint_keep_their_groups():
    with engine("local", workers=1) as eng, eng.workers(prefer="threads") as group:
        assert type(group).__name__ == "InProcessGroup" and group.shares_memory
    with engine("local", workers=2) as eng, eng.workers(prefer="processes") as group:
        assert type(group).__name__ == "ProcessGroup" and not group.shares_memory


@pytest.mark.ray
def test_ray_ignores_the_threads_hint(ray_cluster):
    with engine("ray", workers=2) as eng, eng.workers(prefer="threads") as group:
        assert not group.shares_memory
        assert [r["in_process"] for r in group.run(_describe, "ray")] == [False, False]
