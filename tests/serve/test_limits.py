"""Slow, idle and too many clients against a real server: cut off or refused, never held."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shardlearn.registry import Registry
from shardlearn.serve import ServeConfig

from .conftest import RunningServer

#: The limits under test are 1 s; a socket still open this long was never cut off.
GIVE_UP_SECONDS = 60
PREDICT_HEADERS = (
    b"POST /v1/models/loans/predict HTTP/1.1\r\nHost: test\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
)


@pytest.fixture(scope="module")
def strict(trained: tuple[Registry, object, str]) -> Iterator[RunningServer]:
    registry, _, _ = trained
    config = ServeConfig(
        registry=registry.root, header_timeout=1, body_timeout=1, keep_alive_timeout=1
    )
    with RunningServer(config) as running:
        yield running


def _connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(server.sock.getsockname(), timeout=GIVE_UP_SECONDS)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if never)."""
    received = b""
    with sock:
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_a_client_that_trickles_its_headers_is_cut_off_with_408(strict: RunningServer) -> None:
    sock = _connect(strict)
    sock.sendall(PREDICT_HEADERS[:20])  # then nothing: the headers never end
    assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_client_that_stops_mid_body_is_cut_off_with_408(strict: RunningServer) -> None:
    sock = _connect(strict)
    sock.sendall(PREDICT_HEADERS + b"Authorization: Bearer x\r\n\r\n" + b'{"records": [')
    assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_the_next_request_on_a_kept_alive_connection_has_the_same_header_deadline(
    trained: tuple[Registry, object, str],
) -> None:
    # A keep-alive timeout far beyond the header timeout: only the latter can end this.
    config = ServeConfig(registry=trained[0].root, header_timeout=1, keep_alive_timeout=600)
    with RunningServer(config) as server:
        sock = _connect(server)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {first!r}"
            first += chunk
        sock.sendall(PREDICT_HEADERS[:20])  # the next request starts; its headers never end
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_nothing_is_closed(strict: RunningServer) -> None:
    assert _read_until_closed(_connect(strict)).startswith(b"HTTP/1.1 408 ")


def test_an_idle_kept_alive_connection_is_closed_after_its_answer(strict: RunningServer) -> None:
    sock = _connect(strict)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}')


def test_a_normal_prediction_is_not_affected(
    strict: RunningServer, trained: tuple[Registry, object, str]
) -> None:
    record = {"income": 48_213.0, "debt_ratio": 0.25, "region": "north"}
    response = httpx.post(
        f"{strict.url}/v1/models/loans/predict",
        json={"records": [record]},
        headers={"Authorization": f"Bearer {trained[2]}"},
    )
    assert response.status_code == 200, response.text


def test_requests_beyond_the_concurrency_limit_are_answered_503(
    trained: tuple[Registry, object, str],
) -> None:
    registry, _, _ = trained
    config = ServeConfig(registry=registry.root, max_concurrency=2, keep_alive_timeout=600)
    with (
        RunningServer(config) as server,
        httpx.Client(base_url=server.url) as first,
        httpx.Client(base_url=server.url) as second,
    ):
        assert first.get("/healthz").status_code == 200  # its connection stays open
        assert second.get("/healthz").status_code == 503


@pytest.mark.parametrize(
    ("setting", "value"),
    [("header_timeout", 0), ("body_timeout", -1), ("max_concurrency", 0), ("batch_max_rows", 0)],
)
def test_invalid_limits_are_refused(setting: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"The '{setting}' parameter of ServeConfig must be"):
        ServeConfig(registry="models", **{setting: value})


def _largest_send_buffer() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024 * 1024  # Linux's usual maximum


class _Records(logging.Handler):
    """Sets ``event`` once a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_a_client_that_stops_reading_its_answer_is_disconnected(
    trained: tuple[Registry, object, str],
) -> None:
    # An answer larger than the kernel's largest send buffer (about 47 bytes a row), to a
    # client that reads none of it: the rest waits in the server's own buffer, and without a
    # write deadline the connection and those bytes were held forever (close() waits for a
    # buffer that never drains).
    registry, _, token = trained
    rows = 3 * _largest_send_buffer() // 2 // 40
    body = json.dumps(
        {"columns": ["income", "debt_ratio", "region"], "data": [[48213.0, 0.25, "north"]] * rows}
    ).encode()
    config = ServeConfig(
        registry=registry.root, write_timeout=1, max_rows=rows, max_body_bytes=len(body)
    )
    aborted = _Records("read nothing of its answer")
    logging.getLogger("shardlearn.serve").addHandler(aborted)
    try:
        with RunningServer(config) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
            sock.settimeout(GIVE_UP_SECONDS)
            sock.connect(server.sock.getsockname())
            sock.sendall(
                b"POST /v1/models/loans/predict HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\nAuthorization: Bearer " + token.encode()
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )  # fmt: skip
            assert aborted.event.wait(GIVE_UP_SECONDS), "the stalled answer was never cut off"
            received = b""
            with contextlib.suppress(ConnectionResetError), sock:
                while chunk := sock.recv(65536):
                    received += chunk
    finally:
        logging.getLogger("shardlearn.serve").removeHandler(aborted)
    head, _, answer = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    declared = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    assert len(answer) < declared  # the rest was dropped with the connection
