"""Prometheus metrics and the access log (which never contains payloads).

Both run once per request, so both are kept cheap: the metrics' labelled children are looked
up once per model and status, not through ``labels()`` every time, and the server's log
handler (:func:`configure_logging`) formats the time once per second and writes the lines
logged during one event-loop iteration with one system call (a warning or an error at once).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["ACCESS_LOG", "BodyLimit", "Telemetry", "configure_logging"]

ACCESS_LOG = logging.getLogger("shardlearn.serve.access")
_ACCESS = '%s "%s %s" %s %.1fms'  # client, method, path, status, milliseconds
LOG_FORMAT = "%(asctime)s %(name)s %(message)s"


def configure_logging() -> None:
    """INFO-level logs (the access log among them) on stderr, in every server process.

    ``shardlearn serve`` calls it, and so does each ``--workers`` process: uvicorn configures
    only its own loggers there, and without this the access log of a multi-process server
    would be silently dropped.
    """
    handler = LoopBatchedStreamHandler(sys.stderr)
    handler.setFormatter(SecondCachedFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


class SecondCachedFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that formats the date and time once per second.

    The text is the default ``asctime`` (``2026-01-31 12:00:00,123``, local time): only
    ``time.strftime`` is skipped for the lines of the same second.
    """

    _second = -1
    _text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second, self._text = second, text
        return f"{self._text},{int(record.msecs):03d}"  # logging's "%s,%03d"


class LoopBatchedStreamHandler(logging.StreamHandler):
    """A stream handler that writes the lines of one event-loop iteration together.

    On the event loop's thread a line below WARNING is kept and written, with every other
    line of the same iteration, by a callback the loop runs right after it (one ``write``
    instead of one per request). Elsewhere, and for warnings and errors, the line is written
    at once -- after any kept ones, so the order is kept.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._kept: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            loop = _running_loop() if record.levelno < logging.WARNING else None
            if loop is None:
                self._kept.append(line)
                self.flush()
                return
            self._kept.append(line)
            if len(self._kept) == 1:
                loop.call_soon(self.flush)
        except Exception:  # noqa: BLE001 - logging's own convention for a failing handler
            self.handleError(record)

    def flush(self) -> None:
        self.acquire()
        try:
            kept, self._kept = self._kept, []
            if self.stream is not None:
                if kept:
                    self.stream.write(self.terminator.join(kept) + self.terminator)
                self.stream.flush()
        finally:
            self.release()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# Latency buckets in seconds: sub-millisecond to a few seconds.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Telemetry:
    """Request, latency, row and error metrics per model, on a private Prometheus registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shardlearn_requests_total",
            "Prediction requests by model and HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "shardlearn_errors_total",
            "Prediction requests that failed, by model and reason.",
            ["model", "reason"],
            registry=self.registry,
        )
        self.rows = Counter(
            "shardlearn_predicted_rows_total",
            "Rows predicted, by model.",
            ["model"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shardlearn_request_latency_seconds",
            "Prediction request latency by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # The labelled children, found once: labels() checks its arguments and takes a lock
        # on every call. (model, status) -> requests and latency; model -> rows.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._rows: dict[str, Any] = {}

    def observe(self, model: str, status: int, seconds: float, rows: int = 0) -> None:
        """Record one prediction request."""
        children = self._children.get((model, status))
        if children is None:
            children = self._children[model, status] = (
                self.requests.labels(model, str(status)),
                self.latency.labels(model),
            )
        children[0].inc()
        children[1].observe(seconds)
        if rows:
            predicted = self._rows.get(model)
            if predicted is None:
                predicted = self._rows[model] = self.rows.labels(model)
            predicted.inc(rows)

    def error(self, model: str, reason: str) -> None:
        """Record one failed request."""
        self.errors.labels(model, reason).inc()

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Any]


class BodyLimit:
    """ASGI middleware: answer 413 once a request body passes ``max_bytes``, and log access.

    The limit is enforced while the body streams in, so a client cannot make the server hold a
    huge body in memory by omitting or lying in ``Content-Length``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_seen: list[int] = []

        async def send_logged(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
            await send(message)

        declared = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send_logged)
        else:
            await self._call_limited(scope, receive, send_logged)
        if ACCESS_LOG.isEnabledFor(logging.INFO):
            args = (
                (scope.get("client") or ("-",))[0],
                scope["method"],
                scope["path"],
                status_seen[0] if status_seen else "-",
                (time.perf_counter() - started) * 1000,
            )
            # The record made here: Logger.info would walk the stack for this file and line on
            # every request.
            line = sys._getframe().f_lineno
            record = ACCESS_LOG.makeRecord(
                ACCESS_LOG.name, logging.INFO, __file__, line, _ACCESS, args, None, "__call__"
            )
            ACCESS_LOG.handle(record)

    async def _call_limited(self, scope: dict, receive: Callable, send: Callable) -> None:
        received = 0
        rejected = False

        async def limited_receive() -> dict:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer now; the app sees a disconnect and its own answer is dropped.
                    rejected = True
                    await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not rejected:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, send: Callable) -> None:
        body = (
            b'{"error": "request body exceeds the limit of %d bytes; split the request",'
            b' "field": null, "row": null, "fields": []}' % self.max_bytes
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
