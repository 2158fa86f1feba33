"""One spawned worker process as seen from the driver, and the registry that reaps them.

Every process started here is remembered until it is stopped; an ``atexit`` hook kills the
remaining ones, so an interpreter that exits on Ctrl-C (``KeyboardInterrupt``) leaves no
worker behind. A driver killed with SIGKILL cannot run that hook; the workers' own watchdog
(:mod:`shardlearn.engine._worker`) covers that case.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import os
import threading
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

from shardlearn.engine._worker import worker_main
from shardlearn.exceptions import EngineError

__all__ = ["Dead", "WorkerProcess", "next_call_id", "stop_all"]

_CONTEXT = multiprocessing.get_context("spawn")
_LIVE: set[WorkerProcess] = set()
_LIVE_LOCK = threading.Lock()
_CALL_IDS = itertools.count(1)

#: Seconds a worker gets to exit on its own before it is terminated, then killed.
_STOP_GRACE = 1.0


def next_call_id() -> int:
    """A fresh id that matches a reply to the message it answers."""
    return next(_CALL_IDS)


class Dead(Exception):
    """Internal: the worker process died (or its pipe broke) during a call."""


class WorkerProcess:
    """A spawned process running :func:`~shardlearn.engine._worker.worker_main`."""

    def __init__(self, rank: int, size: int) -> None:
        parent_conn, child_conn = _CONTEXT.Pipe(duplex=True)
        self.process = _CONTEXT.Process(
            target=worker_main,
            args=(child_conn, os.getpid(), rank, size),
            name=f"shardlearn-worker-{rank}",
            daemon=False,  # workers may start their own processes (torch, nested engines)
        )
        try:
            self.process.start()
        except Exception as error:
            raise EngineError(f"Could not start a local worker process: {error}") from error
        child_conn.close()
        self.conn = parent_conn
        self.busy_with: int | None = None
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    def send(self, kind: str, *payload: Any) -> int:
        """Send one message; returns its call id. Raises :class:`Dead` on a broken pipe."""
        call_id = next_call_id()
        self.send_bytes(ForkingPickler.dumps((kind, call_id, *payload)))
        return call_id

    def send_bytes(self, data: bytes | memoryview) -> None:
        try:
            self.conn.send_bytes(data)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError) as error:
            raise Dead(str(error)) from error

    def receive(self, call_id: int, timeout: float | None = None) -> tuple[str, Any, str] | None:
        """The reply to ``call_id`` (stale ones skipped); None on timeout; Dead if gone."""
        while True:
            ready = wait([self.conn, self.sentinel], timeout)
            if not ready:
                return None
            reply = self.try_receive(call_id)
            if reply is not None:
                return reply

    def try_receive(self, call_id: int) -> tuple[str, Any, str] | None:
        """A reply if one for ``call_id`` is available now, else None; :class:`Dead` if gone."""
        while True:
            try:
                has_data = self.conn.poll()
            except (OSError, EOFError) as error:
                raise Dead(str(error)) from error
            if not has_data:
                if not self.process.is_alive():
                    raise Dead(f"worker process {self.pid} exited ({self.process.exitcode})")
                return None
            try:
                reply_id, status, value, tb = self.conn.recv()
            except (EOFError, OSError, ConnectionResetError) as error:
                raise Dead(str(error)) from error
            if reply_id == call_id or (reply_id == -1 and status == "error"):
                return status, value, tb

    def call(self, kind: str, *payload: Any) -> tuple[str, Any, str]:
        """Send a message and wait for its reply."""
        call_id = self.send(kind, *payload)
        reply = self.receive(call_id)
        if reply is None:  # pragma: no cover - receive() without timeout never returns None
            raise Dead("no reply")
        return reply

    def stop(self, graceful: bool = True) -> None:
        """Stop the process: ask politely when idle, otherwise terminate; always reap it."""
        if graceful and self.process.is_alive():
            try:
                self.conn.send_bytes(ForkingPickler.dumps(("close", 0)))
                self.process.join(_STOP_GRACE)
            except (OSError, EOFError, BrokenPipeError):
                pass
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(_STOP_GRACE)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(_STOP_GRACE)
        try:
            self.conn.close()
        except OSError:
            pass
        with _LIVE_LOCK:
            _LIVE.discard(self)


def stop_all() -> None:
    """Kill every worker process still running (the ``atexit`` hook)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for worker in live:
        worker.stop(graceful=False)


atexit.register(stop_all)
