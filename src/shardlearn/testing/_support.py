"""Small helpers for test suites: synchronising with workers through files (never sleeps),
killing a worker for real, interrupting a child process, and running the CLI in-process.

``run_cli`` is why ``shardlearn.testing`` is the top layer (it imports ``shardlearn.cli``, on
first use).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from shardlearn.engine import WorkerGroup

#: Seconds a check waits for a worker to reach a synchronisation point before giving up.
SYNC_TIMEOUT = 120.0


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a reader never sees a half-written file (write, then rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def fake_shards(sizes: list[int]) -> list[Any]:
    """Stand-ins for ``shardlearn.data.Shard``: the engine only looks at ``.bytes``."""
    return [SimpleNamespace(index=i, bytes=size) for i, size in enumerate(sizes)]


_RESTORE_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def interruptible(script: str | os.PathLike[str], *args: str) -> list[str]:
    """A command running the Python ``script`` with Ctrl-C (SIGINT) raising KeyboardInterrupt.

    A process started in the background by a non-interactive shell (as some CI runners
    do) ignores SIGINT, and its children inherit that; a test that interrupts a child
    restores the default first.
    """
    return [sys.executable, "-c", _RESTORE_CTRL_C, str(script), *map(str, args)]


def run_cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    """Run ``shardlearn ARGS`` in-process under pytest; returns (exit code, stdout, stderr).

    ``capsys`` is pytest's fixture of that name.
    """
    from shardlearn.cli import app, run_app

    try:
        run_app(app, list(args))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def wait_for_file(path: Path, timeout: float = SYNC_TIMEOUT) -> None:
    """Block until ``path`` exists (a worker reached a point); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.01)


def kill_worker(group: WorkerGroup, rank: int) -> None:
    """Kill worker ``rank`` for real: SIGKILL its process (local) or ``ray.kill`` its actor."""
    pids = getattr(group, "pids", None)
    if pids is not None:
        os.kill(pids[rank], signal.SIGKILL)
        return
    actors = getattr(group, "actors", None)
    if actors is not None:
        import ray

        ray.kill(actors[rank])
        return
    raise AssertionError(f"do not know how to kill a worker of {group!r}")


def announce_and_wait(workdir: str, name: str, *inputs: Any) -> str:
    """Write ``workdir/<name>.pid`` and then wait (up to a few minutes) to be stopped.

    For tests that interrupt or kill a running computation at a known point.
    """
    write_atomic(Path(workdir) / f"{name}.pid", str(os.getpid()))
    deadline = time.monotonic() + SYNC_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return name
