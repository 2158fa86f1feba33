"""Running the service under uvicorn, with limits on slow, idle and too many clients.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and the number of open
connections and requests in flight (``limit_concurrency``: beyond it a request is answered 503),
but nothing else: a client that opens a connection and sends its headers one byte at a time,
stops in the middle of a body, or stops reading its answer holds the connection (and the
answer's bytes) forever. An ASGI middleware cannot help -- the app is only called once the
headers are complete, and its ``send`` returns once the bytes are handed to the transport -- so
:class:`LimitedHttpToolsProtocol` adds three deadlines to uvicorn's httptools protocol:

* **header timeout** -- from the moment a connection opens (or, on a kept-alive connection,
  the first byte of the next request arrives) until the request's headers are complete;
* **body timeout** -- from the end of the headers until the whole body has arrived;
* **write timeout** -- while the answer waits for a client that stopped reading (the
  transport's buffer is full), at most this long without the client taking any of it.

The first two are answered with ``408 Request Timeout`` and a closed connection; the third
aborts the connection (there is no way to answer a client that does not read). Between
requests, a kept-alive connection is closed after the keep-alive timeout. A prediction that
takes long is not cut off: once the body is in, only the app decides.

The header and body deadlines cost a request two clock reads (uvloop caches the time per loop
iteration) and no timer: each connection has one deadline and at most one timer, created
lazily and moved only when a deadline comes earlier than it fires; when it fires, uvicorn's own
request state says whether headers or a body are still awaited. This runs on every single-row
prediction, where creating and cancelling timers showed up.

Each response also goes out in **one write**: uvicorn writes a response's status line and
headers as soon as the app starts it, and its body with the next message -- two ``send()``
calls and two loopback TCP segments for a single-row prediction, which together were a quarter
of the server's CPU time per request. :class:`_OneWriteResponse` holds the headers back until
the body's first write (or the response's end, or a close), so a response sent as one body
message costs one system call; streamed bodies still go out chunk by chunk.

Not run as a test (it serves until stopped):

>>> from shardlearn.serve import ServeConfig, run
>>> run(ServeConfig(registry="models", header_timeout=5), port=8000)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import Any, cast

from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shardlearn.serve._factory import CONFIG_ENV, config_to_env
from shardlearn.serve.app import ServeConfig, create_app

__all__ = ["LimitedHttpToolsProtocol", "run", "uvicorn_options"]

log = logging.getLogger("shardlearn.serve")

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BASE = HttpToolsProtocol  # its callbacks are called directly: super() costs on every request


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header, body and write deadlines (see the module doc).

    Parameters
    ----------
    *args, **kwargs
        What uvicorn passes to its protocol class.
    header_timeout, body_timeout, write_timeout : float
        Seconds (keyword-only; bind them with :func:`functools.partial`).
    """

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        body_timeout: float,
        write_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.write_timeout = write_timeout
        self._deadline_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    # uvicorn's connection_made takes an asyncio.Transport where asyncio's protocol says
    # BaseTransport; this override keeps uvicorn's signature, hence uvicorn's override error.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._move_deadline(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._write_timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        _BASE.on_message_begin(self)
        if self.cycle is not None:  # the first request's deadline runs from the connection
            self._move_deadline(self.header_timeout)

    def on_headers_complete(self) -> None:
        _BASE.on_headers_complete(self)
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # a request, not an upgrade
            writes = _OneWriteResponse(self.transport, cycle)
            cycle.transport = cast(asyncio.Transport, writes)  # the part of one it uses
            cycle.on_response = writes.on_response
        self._move_deadline(self.body_timeout)  # no longer applies once the body is in

    def _move_deadline(self, seconds: float) -> None:
        self._deadline_at = deadline = self.loop.time() + seconds
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._check)

    def _awaiting(self) -> str | None:
        """``"headers"`` or ``"body"`` while the current request's are still coming in."""
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:  # no request yet, or a new one
            return "headers"
        if cycle.more_body and not cycle.response_complete:
            return "body"
        return None  # answered, or between requests (the keep-alive timeout applies)

    def _check(self) -> None:
        self._timer = None
        awaiting = self._awaiting()
        if awaiting is None or self.transport.is_closing():
            return  # no deadline now; the next request creates a timer
        if self.transport.get_protocol() is not self:
            return  # upgraded (to a WebSocket): no longer an HTTP request's deadline
        if self.loop.time() < self._deadline_at:
            self._timer = self.loop.call_at(self._deadline_at, self._check)
            return
        cycle = self.cycle
        # Answer only when no response of this connection is under way (a pipelined request
        # may arrive while the previous one is still being answered).
        if awaiting == "body":
            answer = not cycle.response_started
        else:
            answer = cycle is None or cycle.response_complete
        if answer:
            self.transport.write(_REQUEST_TIMEOUT)
        # The app waiting for the rest of the body gets http.disconnect once the connection
        # is lost, and whatever it sends then is dropped.
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._write_expired)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_expired(self) -> None:
        # close() would wait for the buffer to drain, which is what never happens: abort
        # drops it. The app blocked in send() is released with a disconnect.
        self._write_timer = None
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning(
            "aborted the connection of %s: it read nothing of its answer for %g s "
            "(--write-timeout)",
            client,
            self.write_timeout,
        )
        self.transport.abort()


class _OneWriteResponse:
    """The transport as one uvicorn request cycle sees it: its response's headers go out with
    the first write of its body.

    uvicorn writes the status line and headers once the cycle's ``response_started`` is set;
    that first write is held and prefixed to the next one. Whatever comes before it (``100
    Continue``) is written at once. The held bytes are written when the response completes
    (a ``HEAD`` answer writes no body) or the cycle closes the connection, whichever is first,
    and before uvicorn starts the next pipelined request.
    """

    __slots__ = ("_cycle", "_held", "_on_response", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._on_response = cycle.on_response
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif not self._started and self._cycle.response_started:
            self._started = True
            self._held = data
        else:
            self._transport.write(data)

    def _release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def on_response(self) -> None:
        self._release()
        self._on_response()

    def close(self) -> None:
        self._release()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """The uvicorn settings that apply ``config``'s timeouts and concurrency limit.

    Pass them to ``uvicorn.Config`` or ``uvicorn.run`` along with the app (``create_app``).
    """
    return {
        "http": functools.partial(
            LimitedHttpToolsProtocol,
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
            write_timeout=config.write_timeout,
        ),
        "timeout_keep_alive": config.keep_alive_timeout,
        "limit_concurrency": config.max_concurrency,
    }


#: uvicorn's supervisor kills a worker that answers no ping within this time -- including one
#: still starting (a spawned process answers only once its imports are done). uvicorn's 5 s
#: killed every worker, over and over, on a busy 2-core machine; 60 s still ends a hung one.
_WORKER_HEALTHCHECK_SECONDS = 60


def run(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    app: FastAPI | None = None,
) -> None:
    """Serve ``config`` on ``host:port`` until interrupted, in ``workers`` processes.

    ``app`` is ``create_app(config)`` if the caller built it already (to fail on a missing token
    file or an empty registry before announcing the server); it is built here otherwise.
    """
    import uvicorn

    app = app if app is not None else create_app(config)
    common: dict[str, Any] = {"host": host, "port": port, "access_log": False, "log_level": "info"}
    if workers == 1:
        uvicorn.run(app, **common, **uvicorn_options(config))
        return
    # Each worker process builds its own app from the settings in the environment.
    os.environ[CONFIG_ENV] = config_to_env(config)
    uvicorn.run(
        "shardlearn.serve._factory:app_from_env",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=_WORKER_HEALTHCHECK_SECONDS,
        **common,
        **uvicorn_options(config),
    )
