"""One spawned worker process as seen from the driver, and the registry that reaps them.

Every process started here is remembered until it is stopped; an ``atexit`` hook kills the
remaining ones, so an interpreter that exits on Ctrl-C (``KeyboardInterrupt``) leaves no
worker behind. A driver killed with SIGKILL cannot run that hook; the workers' own watchdog
(:mod:`shardlearn.engine._worker`) covers that case.
"""

from __future__ import annotations

import atexit
import itertools
import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

from shardlearn.exceptions import EngineError

__all__ = ["Dead", "WorkerProcess", "next_call_id", "stop_all"]

_LIVE: set[WorkerProcess] = set()
_LIVE_LOCK = threading.Lock()
_CALL_IDS = itertools.count(1)

#: Socket buffer size asked for (the kernel caps it at net.core.[rw]mem_max).
_SOCKET_BUFFER = 4 << 20

#: Seconds a worker gets to exit on its own before it is terminated, then killed.
_STOP_GRACE = 1.0

# The worker is a fresh interpreter running this module function: unlike multiprocessing's
# "spawn" it does not re-run the user's main script (which, without an ``if __name__ ==
# "__main__"`` guard, would start engines again). The script is imported only when a function
# defined in it is sent to the worker -- see ``import_main`` in ``_worker``.
_BOOT = "from shardlearn.engine._worker import main_from_fd; main_from_fd()"


def next_call_id() -> int:
    """A fresh id that matches a reply to the message it answers."""
    return next(_CALL_IDS)


class Dead(Exception):
    """Internal: the worker process died (or its pipe broke) during a call."""


class WorkerProcess:
    """A worker interpreter running :func:`~shardlearn.engine._worker.main_from_fd`."""

    def __init__(self, rank: int, size: int) -> None:
        parent_sock, child_sock = socket.socketpair()
        for sock in (parent_sock, child_sock):
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                # Large buffers: megabyte results then move in a few system calls.
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        child_fd = child_sock.fileno()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOT,
                    str(child_fd),
                    str(os.getpid()),
                    str(rank),
                    str(size),
                ],
                pass_fds=(child_fd,),
                stdin=subprocess.DEVNULL,
            )
        except OSError as error:
            parent_sock.close()
            raise EngineError(f"Could not start a local worker process: {error}") from error
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.main_imported = False
        #: The rank this process last served (a recycled process keeps its data for it).
        self.rank = rank
        try:  # a waitable handle that fires when the process exits (Linux >= 5.3)
            self._pidfd: int | None = os.pidfd_open(self.process.pid)
        except (AttributeError, OSError):
            self._pidfd = None
        with _LIVE_LOCK:
            _LIVE.add(self)
        main = sys.modules.get("__main__")
        main_path = getattr(main, "__file__", None) if main is not None else None
        # Not waited for: the reply is skipped as stale, the next call waits for the start-up.
        self.send("init", list(sys.path), os.getcwd(), main_path)

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    @property
    def sentinel(self) -> Any:
        """Something ``multiprocessing.connection.wait`` can wait on for the process's exit."""
        return self._pidfd if self._pidfd is not None else self.conn

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def send(self, kind: str, *payload: Any) -> int:
        """Send one message; returns its call id. Raises :class:`Dead` on a broken pipe."""
        if kind in ("run", "call") and not self.main_imported:
            if getattr(payload[0], "__module__", None) == "__main__":
                # The function lives in the user's script: the worker must import it first.
                self.main_imported = True
                self.send("import_main")
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
                if not self.is_alive():
                    raise Dead(f"worker process {self.pid} exited ({self.process.returncode})")
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
        if graceful and self.is_alive():
            try:
                self.conn.send_bytes(ForkingPickler.dumps(("close", 0)))
                self._join()
            except (OSError, EOFError, BrokenPipeError):
                pass
        for action in (self.process.terminate, self.process.kill):
            if self.is_alive():
                try:
                    action()
                except OSError:  # exited meanwhile
                    pass
                self._join()
        for close in (self.conn.close, lambda: os.close(self._pidfd) if self._pidfd else None):
            try:
                close()
            except OSError:
                pass
        self._pidfd = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def _join(self) -> None:
        try:
            self.process.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            pass


def stop_all() -> None:
    """Kill every worker process still running (the ``atexit`` hook)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for worker in live:
        worker.stop(graceful=False)


atexit.register(stop_all)
