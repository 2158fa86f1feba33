"""Running the service under uvicorn, with limits on slow, idle and too many clients.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``) and the number of open
connections and requests in flight (``limit_concurrency``: beyond it a request is answered 503),
but nothing else: a client that opens a connection and sends its headers one byte at a time, or
stops in the middle of a body, holds the connection forever. An ASGI middleware cannot help --
the app is only called once the headers are complete -- so :class:`LimitedHttpToolsProtocol`
adds two deadlines to uvicorn's httptools protocol, both answered with ``408 Request Timeout``
and a closed connection:

* **header timeout** -- from the moment a connection opens (or, on a kept-alive connection,
  the first byte of the next request arrives) until the request's headers are complete;
* **body timeout** -- from the end of the headers until the whole body has arrived.

Between requests, a kept-alive connection is closed after the keep-alive timeout. A prediction
that takes long is not cut off: once the body is in, only the app decides.

>>> from shardlearn.serve import ServeConfig, run
>>> run(ServeConfig(registry="models", header_timeout=5), port=8000)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shardlearn.serve._factory import CONFIG_ENV, config_to_env
from shardlearn.serve.app import ServeConfig, create_app

__all__ = ["LimitedHttpToolsProtocol", "run", "uvicorn_options"]

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header and a body deadline (see the module doc).

    Parameters
    ----------
    *args, **kwargs
        What uvicorn passes to its protocol class.
    header_timeout, body_timeout : float
        Seconds (both required, keyword-only; bind them with :func:`functools.partial`).
    """

    def __init__(self, *args: Any, header_timeout: float, body_timeout: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        # The deadline is a time and a phase; the timer is created lazily and only moved when a
        # deadline comes earlier than it fires. A request then costs two clock reads, not two
        # timers created and cancelled (this runs on every single-row prediction).
        self._phase: str | None = None  # "headers", "body" or None (no deadline)
        self._deadline_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers", self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase is None:  # the first request's deadline runs from the connection
            self._arm("headers", self.header_timeout)

    def on_headers_complete(self) -> None:
        self._phase = None
        super().on_headers_complete()
        self._arm("body", self.body_timeout)  # ended at once if there is no body

    def on_message_complete(self) -> None:
        self._phase = None
        super().on_message_complete()

    def _arm(self, phase: str, seconds: float) -> None:
        self._phase = phase
        self._deadline_at = self.loop.time() + seconds
        if self._timer is None or self._timer.when() > self._deadline_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(self._deadline_at, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._phase is None:
            return  # no deadline now; the next one creates a timer
        if self.loop.time() < self._deadline_at:
            self._timer = self.loop.call_at(self._deadline_at, self._check)
            return
        self._expire(in_body=self._phase == "body")

    def _expire(self, *, in_body: bool) -> None:
        self._phase = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        # Answer only when no response of this connection is under way (a pipelined request
        # may arrive while the previous one is still being answered).
        if in_body:
            answer = cycle is not None and not cycle.response_started
        else:
            answer = cycle is None or cycle.response_complete
        if answer:
            self.transport.write(_REQUEST_TIMEOUT)
        # The app waiting for the rest of the body gets http.disconnect once the connection
        # is lost, and whatever it sends then is dropped.
        self.transport.close()


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """The uvicorn settings that apply ``config``'s timeouts and concurrency limit.

    Pass them to ``uvicorn.Config`` or ``uvicorn.run`` along with the app (``create_app``).
    """
    return {
        "http": functools.partial(
            LimitedHttpToolsProtocol,
            header_timeout=config.header_timeout,
            body_timeout=config.body_timeout,
        ),
        "timeout_keep_alive": config.keep_alive_timeout,
        "limit_concurrency": config.max_concurrency,
    }


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
    common = {"host": host, "port": port, "access_log": False, "log_level": "info"}
    if workers == 1:
        uvicorn.run(app, **common, **uvicorn_options(config))
        return
    # Each worker process builds its own app from the settings in the environment.
    os.environ[CONFIG_ENV] = config_to_env(config)
    uvicorn.run(
        "shardlearn.serve._factory:app_from_env",
        factory=True,
        workers=workers,
        **common,
        **uvicorn_options(config),
    )
