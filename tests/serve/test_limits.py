"""Slow, idle and too many clients against a real server: cut off or refused, never held."""

from __future__ import annotations

import socket
from collections.abc import Iterator

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
