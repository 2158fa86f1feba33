"""The loop every ``local`` worker process runs, and the call wrapper shared with Ray.

A worker process is a fresh interpreter (``python -c ...main_from_fd()``) that talks to its
driver over one socket wrapped in a ``multiprocessing`` Connection. Its first message,
``init``, carries the driver's ``sys.path``, working directory and main script path. The main
script is imported (as ``__mp_main__``, like multiprocessing does) only when a function defined
in it is sent, so a script without an ``if __name__ == "__main__":`` guard still works as long as
it only uses library functions. Messages are tuples ``(kind, call_id, *payload)``; every
message gets exactly one reply ``(call_id, status, value, traceback_text)`` with status ``"ok"`` or
``"error"``, so the driver can always tell a stale reply from the one it waits for.

Warm data (:mod:`shardlearn._warm`). A group opened inside a warm scope (a search) names the
scope in the ``reset`` message of a recycled worker, or in a ``warm`` message to a fresh or
replacement one; the worker then runs every ``run`` call in that scope (:func:`run_in_scope`,
shared with Ray's actors), so its shard tables and feature blocks outlive the group and serve
the scope's next fit, and the reply carries what the call built (:class:`Counted`, unwrapped
and added to the driver's counters by :func:`unwrap_counted`). ``release`` drops a scope's
values when it ends on the driver.

Workers must never outlive their driver: they ignore SIGINT (the driver handles Ctrl-C and
stops them), exit on end-of-file on the pipe, and a watchdog thread exits the process as soon
as the parent process is gone (the parent was killed with SIGKILL and could not clean up).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shardlearn import _warm
from shardlearn.engine.base import WorkerState

__all__ = [
    "WATCHDOG_INTERVAL",
    "Counted",
    "call_guarded",
    "run_in_scope",
    "unwrap_counted",
    "worker_main",
]

#: Seconds between two checks that the parent process is still alive.
WATCHDOG_INTERVAL = 0.2

#: Set in worker processes: nested ``get_engine()`` calls then default to in-process work
#: instead of spawning processes from processes.
IN_WORKER = False

#: True while a worker imports the user's main script; starting an engine then is an error.
IMPORTING_MAIN = False

_MAIN_HINT = (
    "Functions sent to workers must be importable: define them at module level, and put the "
    "code of a script that defines them under `if __name__ == '__main__':`."
)
_main_path: str | None = None
_main_error = ""
#: The warm scope this worker process's calls run in (``Handle.spec``; None: none).
_warm_scope: tuple[str, int | None] | None = None


@dataclass
class Counted:
    """A worker call's result and what it built in its warm scope (:mod:`shardlearn._warm`)."""

    value: Any
    counters: _warm.Counters


def run_in_scope(
    fn: Callable[..., Any],
    state: WorkerState,
    args: tuple,
    kwargs: dict,
    scope: tuple[str, int | None] | None,
) -> tuple[str, Any, str]:
    """``fn(state, *args, **kwargs)`` as :func:`call_guarded`, inside warm scope ``scope``;
    a result computed in a scope comes back as :class:`Counted`."""
    # The group's workers and its driver share the default budget.
    with _warm.worker_scope(scope, state.size + 1) as counters:
        status, value, tb = call_guarded(fn, (state, *args), kwargs)
    if counters is not None and status == "ok":
        value = Counted(value, counters)
    return status, value, tb


def unwrap_counted(value: Any, handle: _warm.Handle | None) -> Any:
    """The result inside a :class:`Counted`, its counts added to ``handle``'s counters."""
    if not isinstance(value, Counted):
        return value
    if handle is not None:
        handle.counters.merge(value.counters)
    return value.value


def call_guarded(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[str, Any, str]:
    """Call ``fn``; return ``("ok", result, "")`` or ``("error", summary, traceback_text)``."""
    try:
        return "ok", fn(*args, **kwargs), ""
    except Exception as error:  # any user error becomes TaskFailed on the driver side
        name = getattr(fn, "__qualname__", repr(fn))
        summary = f"{name}: {type(error).__name__}: {error}"
        return "error", summary, traceback.format_exc()


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(WATCHDOG_INTERVAL)


def _reply(conn: Any, call_id: int, status: str, value: Any, tb: str) -> None:
    try:
        conn.send((call_id, status, value, tb))
    except Exception as error:  # e.g. an unpicklable result: report it instead of dying
        conn.send((call_id, "error", f"cannot send the result back: {error!r}", tb))


def _handle(message: tuple, state: WorkerState) -> tuple[str, Any, str]:
    global _warm_scope
    kind = message[0]
    if kind == "run":
        return run_in_scope(message[2], state, message[3], message[4], _warm_scope)
    if kind == "call":
        return call_guarded(message[2], message[3], message[4])
    if kind == "assign":
        state.shards = list(message[2])
        return "ok", None, ""
    if kind == "put":
        state.context[message[2]] = message[3]
        return "ok", None, ""
    if kind == "reset":
        state.rank, state.size = message[2], message[3]
        state.shards, state.context, state.cache = [], {}, {}
        _adopt_environment(message[4])
        _warm_scope = message[5]
        return "ok", None, ""
    if kind == "warm":
        _warm_scope = message[2]
        return "ok", None, ""
    if kind == "release":
        _warm.release(message[2])
        return "ok", None, ""
    if kind == "ping":
        return "ok", os.getpid(), ""
    if kind == "init":
        return _init(*message[2:])
    if kind == "import_main":
        return _import_main()
    return "error", f"unknown message kind {kind!r}", ""


def _adopt_environment(environment: dict[str, str]) -> None:
    """Make ``os.environ`` the driver's current one (a recycled worker started earlier)."""
    for name in set(os.environ) - set(environment):
        del os.environ[name]
    for name, value in environment.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _init(sys_path: list[str], cwd: str, main_path: str | None) -> tuple[str, Any, str]:
    global _main_path
    sys.path[:] = list(dict.fromkeys([*sys_path, *sys.path]))
    try:
        os.chdir(cwd)
    except OSError:  # the driver's directory is gone; stay where we are
        pass
    _main_path = main_path
    return "ok", None, ""


def _import_main() -> tuple[str, Any, str]:
    global IMPORTING_MAIN, _main_error
    if not _main_path:
        return "ok", None, ""
    import multiprocessing.spawn

    IMPORTING_MAIN = True
    try:
        multiprocessing.spawn.import_main_path(_main_path)
        return "ok", None, ""
    except BaseException as error:  # noqa: BLE001 - a script may even call sys.exit()
        _main_error = f" Importing {_main_path} in the worker failed: {error!r}."
        return "error", _main_error, traceback.format_exc()
    finally:
        IMPORTING_MAIN = False


def main_from_fd() -> None:
    """Entry point of a worker interpreter: ``argv = [fd, parent_pid, rank, size]``."""
    from multiprocessing.connection import Connection

    fd, parent_pid, rank, size = (int(arg) for arg in sys.argv[1:5])
    os.set_inheritable(fd, False)  # processes this worker starts must not hold the driver link
    worker_main(Connection(fd), parent_pid, rank, size)


def worker_main(conn: Any, parent_pid: int, rank: int, size: int) -> None:
    """Serve messages from the driver until it says ``close`` or goes away."""
    global IN_WORKER
    IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    state = WorkerState(rank=rank, size=size)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        except Exception as error:  # an argument that cannot be unpickled here
            summary = f"cannot receive the call: {error!r}. {_MAIN_HINT}{_main_error}"
            conn.send((-1, "error", summary, traceback.format_exc()))
            continue
        if message[0] == "close":
            break
        status, value, tb = _handle(message, state)
        _reply(conn, message[1], status, value, tb)
    conn.close()
