"""TaskGraph and its scheduler: structure errors, dependency order, cache tokens, resume."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlearn.engine import Resources, TaskGraph, engine
from shardlearn.engine.local import LocalEngine
from shardlearn.exceptions import GraphCycleError, SpecError, TaskFailed
from shardlearn.testing import check_dependencies, wait_for_file


def _add(*values):
    return sum(values)


def _count_and_add(counter: str, *values):
    path = Path(counter)
    path.write_text(str(int(path.read_text() or 0) + 1) if path.exists() else "1")
    return sum(values)


def _fail_if_exists(flag: str, value):
    if Path(flag).exists():
        raise RuntimeError("asked to fail")
    return value


def _as_set(value):
    return {value}


@st.composite
def dags(draw) -> dict[int, list[int]]:
    """Random DAGs: node i may depend on any nodes < i."""
    n = draw(st.integers(1, 10))
    return {
        i: sorted(draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else []) for i in range(n)
    }


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edges=dags())
def test_random_dags_run_in_dependency_order(any_engine, tmp_path, edges):
    check_dependencies(any_engine, tmp_path, edges)


def test_cycles_show_their_path():
    graph = TaskGraph()
    graph.add("a", _add, graph.ref("c"))
    graph.add("b", _add, graph.ref("a"))
    graph.add("c", _add, graph.ref("b"))
    with pytest.raises(GraphCycleError, match=r"^Cycle detected: a -> b -> c -> a$"):
        graph.validate()
    loop = TaskGraph()
    loop.add("self", _add, depends_on=["self"])
    with pytest.raises(GraphCycleError, match="self -> self"):
        loop.validate()


def test_graph_definition_errors():
    graph = TaskGraph()
    graph.add("load", _add, 1)
    with pytest.raises(SpecError, match="already in the graph"):
        graph.add("load", _add, 2)
    with pytest.raises(SpecError, match="expected a function"):
        graph.add("x", 3)
    with pytest.raises(SpecError, match="retries"):
        graph.add("y", _add, retries=-1)
    graph.add("train", _add, graph.ref("laod"))
    with pytest.raises(SpecError, match="'train' depends on 'laod'.*Did you mean 'load'"):
        graph.validate()
    ok = TaskGraph()
    ok.add("a", _add, 1)
    with pytest.raises(SpecError, match="Unknown output task 'b'"):
        ok.run(LocalEngine(workers=1), outputs=["b"], progress=False)


def test_outputs_select_what_runs_and_results_flow_through_containers():
    graph = TaskGraph()
    a = graph.add("a", _add, 1, 2)
    b = graph.add("b", _add, *[a, a])
    graph.add("unrelated", _add, 100)
    graph.add("c", sum, [a, b])
    with engine("local", workers=1) as eng:
        assert graph.run(eng, outputs=["c", "a"], progress=False) == {"c": 9, "a": 3}
    assert "unrelated" in graph.last_run.skipped
    assert graph.last_run.released == ["b"]  # a is an output, so it is kept


def test_tokens_change_with_upstream_inputs_only():
    def build(x, y):
        graph = TaskGraph()
        a = graph.add("a", _add, x)
        graph.add("b", _add, a, np.arange(3))
        graph.add("c", _add, y)
        return graph.tokens()

    base = build(1, 1)
    assert base == build(1, 1)
    changed = build(2, 1)
    assert changed["a"] != base["a"] and changed["b"] != base["b"] and changed["c"] == base["c"]


def test_rerun_resumes_after_a_failure(tmp_path):
    counter, flag, cache = tmp_path / "count", tmp_path / "fail", tmp_path / "cache"
    graph = TaskGraph()
    a = graph.add("a", _count_and_add, str(counter), 1)
    b = graph.add("b", _fail_if_exists, str(flag), a)
    graph.add("c", _add, b, 1)
    flag.write_text("on")
    with engine("local", workers=1) as eng:
        with pytest.raises(TaskFailed, match="'b' failed.*asked to fail.*Cancelled dependents: c"):
            graph.run(eng, cache_dir=cache, progress=False)
        flag.unlink()
        assert graph.run(eng, cache_dir=cache, progress=False) == {"c": 2}
    assert graph.last_run.cached == ["a"] and graph.last_run.started == ["b", "c"]
    assert counter.read_text() == "1"  # 'a' ran once


def test_results_that_cannot_be_stored_are_recomputed(tmp_path):
    graph = TaskGraph()
    graph.add("s", _as_set, 3)
    with engine("local", workers=1) as eng:
        for _ in range(2):
            assert graph.run(eng, cache_dir=tmp_path, progress=False) == {"s": {3}}
            assert graph.last_run.started == ["s"]


def test_progress_bar_reports_tasks(capsys):
    graph = TaskGraph()
    for i in range(3):
        graph.add(f"t{i}", _add, i)
    with engine("local", workers=1) as eng:
        graph.run(eng, progress=True)
    assert "3/3" in capsys.readouterr().err


def test_graph_retries_a_task_whose_worker_died(tmp_path):
    from shardlearn.testing._engine_workers import _task_dies_once

    graph = TaskGraph()
    graph.add("flaky", _task_dies_once, str(tmp_path), 21, retries=1)
    outcome = {}
    with engine("local", workers=2, max_retries=0) as eng:
        thread = threading.Thread(target=lambda: outcome.update(graph.run(eng, progress=False)))
        thread.start()
        wait_for_file(tmp_path / "task-started")
        import os
        import signal

        os.kill(int((tmp_path / "task-started").read_text()), signal.SIGKILL)
        thread.join(120)
    assert outcome == {"flaky": 42}
    assert graph.last_run.retried == ["flaky"]


def test_resources_must_be_resources():
    graph = TaskGraph()
    with pytest.raises(SpecError, match="Resources"):
        graph.add("a", _add, resources={"cpus": 1})
    with pytest.raises(ValueError, match="'gpus' of Resources must be a number >= 0"):
        Resources(gpus=-1)
