"""The worker-side functions of the engine checks.

They live at module level so every engine (processes, Ray actors) can import them by
reference; a test may submit them too (``_task_dies_once``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from shardlearn.engine import WorkerState
from shardlearn.testing._support import SYNC_TIMEOUT, write_atomic


def _square(x: float) -> float:
    return x * x


def _describe(state: WorkerState, tag: str) -> dict:
    calls = state.cache["calls"] = state.cache.get("calls", 0) + 1
    return {
        "rank": state.rank,
        "size": state.size,
        "tag": tag,
        "calls": calls,
        "shards": [s.index for s in state.shards],
        "context": {k: v for k, v in state.context.items() if isinstance(v, int | str)},
    }


def _rank_list(state: WorkerState) -> list[int]:
    return [state.rank] * (state.rank + 1)


def _checksum(state: WorkerState, name: str, extra: np.ndarray | None = None) -> list[float]:
    value = state.context[name]
    out = [float(value.sum()), float(value.size)]
    if extra is not None:
        out += [float(extra.sum()), float(extra.size)]
    return out


def _big_result(state: WorkerState, n: int) -> np.ndarray:
    return np.full(n, state.rank, dtype=np.uint8)


def _raise_value_error(x: Any) -> None:
    raise ValueError(f"bad input {x}")


def _raise_in_worker(state: WorkerState) -> None:
    if state.rank == state.size - 1:
        raise ValueError(f"bad shard on worker {state.rank}")


def _timed(key: str, seconds: float, *inputs: Any) -> tuple[str, int, int]:
    start = time.monotonic_ns()
    time.sleep(seconds)
    return key, start, time.monotonic_ns()


def _touch(path: str, *inputs: Any) -> str:
    Path(path).write_text("ran")
    return path


def _die_once(state: WorkerState, workdir: str) -> dict:
    """On worker 0's first attempt: announce itself, then wait to be killed. Else: report."""
    marker = Path(workdir) / "attempted"
    if state.rank == 0 and not marker.exists():
        marker.write_text(str(os.getpid()))
        write_atomic(Path(workdir) / "started", str(os.getpid()))
        deadline = time.monotonic() + SYNC_TIMEOUT
        while time.monotonic() < deadline:  # killed from outside long before this ends
            time.sleep(0.01)
        raise RuntimeError("worker 0 was not killed")
    summary = _describe(state, "fault")
    summary["cache_was_empty"] = summary["calls"] == 1
    return summary


def _dies_while_rank_0_waits(state: WorkerState, workdir: str) -> int:
    """Worker 1 kills itself on its first attempt; worker 0 returns only once the driver has
    been told (it writes ``lost``): an engine that notices the loss late never tells it."""
    marker = Path(workdir) / "attempted"
    if state.rank == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    if state.rank == 0:
        deadline = time.monotonic() + SYNC_TIMEOUT
        while not (Path(workdir) / "lost").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the driver was not told that worker 1 was lost")
            time.sleep(0.01)
    return state.rank


def _task_dies_once(workdir: str, value: int) -> int:
    marker = Path(workdir) / "task-attempted"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        write_atomic(Path(workdir) / "task-started", str(os.getpid()))
        deadline = time.monotonic() + SYNC_TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("the task process was not killed")
    return value * 2
