"""The server's log handler: one write per event-loop iteration, the same text as logging's."""

from __future__ import annotations

import asyncio
import io
import logging

from shardlearn.serve.telemetry import LOG_FORMAT, LoopBatchedStreamHandler, SecondCachedFormatter


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(stream: CountingStream) -> logging.Logger:
    handler = LoopBatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.Logger("test_log_handler")
    logger.addHandler(handler)
    return logger


def test_lines_of_one_loop_iteration_are_written_together_after_it() -> None:
    stream = CountingStream()
    logger = _logger(stream)

    async def serve() -> str:
        for request in range(3):
            logger.info("request %d", request)
        kept = stream.getvalue()
        await asyncio.sleep(0)
        return kept

    assert asyncio.run(serve()) == ""
    assert stream.getvalue() == "INFO request 0\nINFO request 1\nINFO request 2\n"
    assert stream.writes == 1


def test_a_warning_is_written_at_once_after_the_kept_lines() -> None:
    stream = CountingStream()
    logger = _logger(stream)

    async def serve() -> str:
        logger.info("first")
        logger.warning("second")
        return stream.getvalue()

    assert asyncio.run(serve()) == "INFO first\nWARNING second\n"


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    stream = CountingStream()
    _logger(stream).info("from a thread")
    assert stream.getvalue() == "INFO from a thread\n"


def test_the_cached_time_is_the_text_logging_writes() -> None:
    plain, cached = logging.Formatter(LOG_FORMAT), SecondCachedFormatter(LOG_FORMAT)
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.05, 1_700_000_000.5):
        record = logging.LogRecord("shardlearn.serve.access", logging.INFO, "", 0, "x", (), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert cached.format(record) == plain.format(record)
