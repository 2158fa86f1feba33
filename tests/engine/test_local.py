"""The local engine's own behaviour: scripts, errors, process reuse, the in-process path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from shardlearn.engine import engine
from shardlearn.exceptions import EngineError, TaskFailed
from shardlearn.testing import fake_shards


def _shard_count(state):
    return len(state.shards)


def _run_script(tmp_path, code: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_script_without_main_guard_works_with_library_functions(tmp_path):
    result = _run_script(
        tmp_path,
        """
        import operator
        from shardlearn.engine import engine

        with engine("local", workers=2) as eng:
            print(eng.submit(operator.mul, 6, 7).result())
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"


def test_script_functions_need_a_main_guard_and_work_with_one(tmp_path):
    guarded = _run_script(
        tmp_path,
        """
        from shardlearn.engine import engine

        def square(state, x):
            return (state.rank, x * x)

        if __name__ == "__main__":
            with engine("local", workers=2) as eng, eng.workers(2) as group:
                print(group.run(square, 3))
        """,
    )
    assert guarded.returncode == 0, guarded.stderr
    assert guarded.stdout.strip() == "[(0, 9), (1, 9)]"

    unguarded = _run_script(
        tmp_path,
        """
        from shardlearn.engine import engine

        def square(state, x):
            return x * x

        with engine("local", workers=2) as eng, eng.workers(2) as group:
            print(group.run(square, 3))
        """,
    )
    assert unguarded.returncode == 1
    assert "if __name__ == '__main__':" in unguarded.stderr


def test_in_process_engine_runs_in_the_calling_process():
    import os

    with engine("local", workers=1) as eng:
        assert eng.submit(os.getpid).result() == os.getpid()
        with eng.workers() as group:
            group.assign(fake_shards([3, 2, 1]))
            assert group.size == 1
            assert group.run(_shard_count) == [3]


def test_closed_groups_hand_their_processes_to_the_next_group():
    with engine("local", workers=2) as eng:
        with eng.workers(2) as first:
            pids = set(first.pids)
        with eng.workers(2) as second:
            assert set(second.pids) == pids
            second.assign(fake_shards([1]))
            assert second.run(_shard_count) == [1, 0]  # state was reset


def _env(state, name):
    return os.environ.get(name)


def test_a_recycled_process_takes_the_drivers_current_environment(monkeypatch):
    monkeypatch.setenv("SHARDLEARN_TEST_GONE", "old")
    with engine("local", workers=2) as eng:
        with eng.workers(2) as first:
            pids = set(first.pids)
            assert first.run(_env, "SHARDLEARN_TEST_GONE") == ["old", "old"]
        monkeypatch.setenv("SHARDLEARN_TEST_NEW", "credentials")  # exported after the start
        monkeypatch.delenv("SHARDLEARN_TEST_GONE")
        with eng.workers(2) as second:
            assert set(second.pids) == pids
            assert second.run(_env, "SHARDLEARN_TEST_NEW") == ["credentials", "credentials"]
            assert second.run(_env, "SHARDLEARN_TEST_GONE") == [None, None]


def test_bad_arguments_have_clear_errors():
    with engine("local", workers=2) as eng:
        with pytest.raises(EngineError, match="n >= 1"):
            eng.workers(0)
        with pytest.raises(EngineError, match="Expected a function"):
            eng.submit("not a function")
        with eng.workers(2) as group:
            with pytest.raises(EngineError, match="non-empty string"):
                group.put("", 1)
            with pytest.raises(EngineError, match="bytes"):
                group.assign([object()])
        with pytest.raises(EngineError, match="closed"):
            group.run(_shard_count)
    with pytest.raises(EngineError, match="closed"):
        eng.submit(_shard_count, None)


def test_unpicklable_argument_is_task_failed():
    with engine("local", workers=2) as eng:
        with pytest.raises(TaskFailed, match="cannot send"):
            eng.submit(_shard_count, lambda: None).result()


def test_ray_engine_without_ray_names_the_extra(tmp_path):
    result = _run_script(
        tmp_path,
        """
        import sys
        sys.modules["ray"] = None  # as if the extra were not installed
        from shardlearn.engine import engine
        try:
            with engine("ray"):
                pass
        except ImportError as error:
            print(error)
        """,
    )
    assert "pip install 'shardlearn[ray]'" in result.stdout, result.stderr
