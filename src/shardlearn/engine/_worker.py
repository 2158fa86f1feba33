"""The loop every ``local`` worker process runs, and the call wrapper shared with Ray.

A worker process is started with the ``spawn`` method and talks to its driver over one
``multiprocessing`` pipe. Messages are tuples ``(kind, call_id, *payload)``; every message gets
exactly one reply ``(call_id, status, value, traceback_text)`` with status ``"ok"`` or
``"error"``, so the driver can always tell a stale reply from the one it waits for.

Workers must never outlive their driver: they ignore SIGINT (the driver handles Ctrl-C and
stops them), exit on end-of-file on the pipe, and a watchdog thread exits the process as soon
as the parent process is gone (the parent was killed with SIGKILL and could not clean up).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from shardlearn.engine.base import WorkerState

__all__ = ["WATCHDOG_INTERVAL", "call_guarded", "worker_main"]

#: Seconds between two checks that the parent process is still alive.
WATCHDOG_INTERVAL = 0.2

#: Set in worker processes: nested ``get_engine()`` calls then default to in-process work
#: instead of spawning processes from processes.
IN_WORKER = False


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
    kind = message[0]
    if kind == "run":
        fn, args, kwargs = message[2], message[3], message[4]
        return call_guarded(fn, (state, *args), kwargs)
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
        return "ok", None, ""
    if kind == "ping":
        return "ok", os.getpid(), ""
    return "error", f"unknown message kind {kind!r}", ""


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
            conn.send((-1, "error", f"cannot receive the call: {error!r}", traceback.format_exc()))
            continue
        if message[0] == "close":
            break
        status, value, tb = _handle(message, state)
        _reply(conn, message[1], status, value, tb)
    conn.close()
