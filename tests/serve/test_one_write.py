"""A response leaves the server in one write: its status line and headers with its body.

uvicorn writes the headers as soon as the app starts its answer and the body with the next
message: two system calls and two loopback TCP segments for every single-row prediction.
:class:`~shardlearn.serve.server.LimitedHttpToolsProtocol` holds the headers until the body.
The transport here records what the protocol hands the socket, one entry per write -- the one
thing a client cannot observe deterministically.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from shardlearn.serve.server import LimitedHttpToolsProtocol


class RecordingTransport(asyncio.Transport):
    """The socket's side of a connection: every write the protocol makes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.closed_by_server = False  # before the test's connection_lost
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


async def echo(scope: dict, receive: Any, send: Any) -> None:
    """Answers the request body (``/stream``: in three chunks)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"a", b"b"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"c"})
        return
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _exchange(data: bytes) -> RecordingTransport:
    config = uvicorn.Config(echo, lifespan="off", access_log=False, log_level="warning")
    config.load()
    state = ServerState()
    protocol = functools.partial(LimitedHttpToolsProtocol, header_timeout=5, body_timeout=5)(
        config=config, server_state=state, app_state={}
    )
    transport = RecordingTransport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    protocol.data_received(data)
    while state.tasks:
        await asyncio.wait(set(state.tasks))
    transport.closed_by_server = transport.closed
    protocol.connection_lost(None)
    return transport


def _post(body: bytes, path: str = "/", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (
        path.encode(),
        len(body),
        extra,
        body,
    )


def test_a_response_is_one_write_of_headers_and_body() -> None:
    writes = asyncio.run(_exchange(_post(b'{"predictions":["no"]}'))).writes
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b'\r\n\r\n{"predictions":["no"]}')


def test_pipelined_requests_are_answered_in_order_one_write_each() -> None:
    writes = asyncio.run(_exchange(_post(b"first") + _post(b"second"))).writes
    assert len(writes) == 2
    assert writes[0].endswith(b"\r\n\r\nfirst") and writes[1].endswith(b"\r\n\r\nsecond")


def test_a_head_answer_without_body_is_written_when_the_response_ends() -> None:
    request = b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n"
    writes = asyncio.run(_exchange(request)).writes
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n")


def test_100_continue_goes_out_at_once_before_the_answer() -> None:
    request = _post(b"body", extra=b"expect: 100-continue\r\n")
    writes = asyncio.run(_exchange(request)).writes
    assert writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(writes) == 2 and writes[1].endswith(b"\r\n\r\nbody")


@pytest.mark.parametrize("keep_alive", [True, False])
def test_a_streamed_answer_sends_headers_with_its_first_chunk(keep_alive: bool) -> None:
    extra = b"" if keep_alive else b"connection: close\r\n"
    transport = asyncio.run(_exchange(_post(b"", path="/stream", extra=extra)))
    writes = transport.writes
    assert len(writes) == 3
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n1\r\na\r\n")
    assert writes[1:] == [b"1\r\nb\r\n", b"1\r\nc\r\n0\r\n\r\n"]
    assert transport.closed_by_server is not keep_alive
