"""ASGI middleware that answers well-formed prediction requests without FastAPI's routing.

Under load, a single-row prediction spent more time in routing, parameter parsing and the
exception middlewares than in the model. :class:`PredictFastPath` recognises
``POST /v1/models/{name}/predict``, reads the body and calls the same predict function as the
route. Anything that is not a clean success (a missing or wrong token, an unknown model, a
malformed body or query, invalid rows) is handed to the FastAPI app with the body replayed,
so every error is produced by the one route and its exception handlers, unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["PredictFastPath", "read_body"]

#: ``predict(name, authorization header, body, proba)`` -> the JSON answer, or raises.
Predict = Callable[[str, "str | None", bytes, bool], Awaitable[bytes]]
_PREFIX, _SUFFIX = "/v1/models/", "/predict"
_PROBA = {b"": True, b"proba=true": True, b"proba=false": False}


class PredictFastPath:
    """Serve ``POST /v1/models/{name}/predict`` directly; everything else goes to ``app``.

    Parameters
    ----------
    app : ASGI application
        The FastAPI app (it answers every request the fast path declines).
    predict : callable
        The route's own predict function (see :data:`Predict`).
    """

    def __init__(self, app: Any, predict: Predict) -> None:
        self.app = app
        self.predict = predict

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        name = _model_name(scope)
        proba = _PROBA.get(scope.get("query_string", b""))
        if name is None or proba is None:
            await self.app(scope, receive, send)
            return
        body, complete = await read_body(receive)
        if not complete:
            return  # the client left, or the body limit already answered 413
        try:
            answer = await self.predict(name, _authorization(scope), body, proba)
        except Exception:  # noqa: BLE001 - the route answers it again, as it always did
            await self.app(scope, _replay(body, receive), send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def _model_name(scope: dict) -> str | None:
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path = scope["path"]
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    name = path[len(_PREFIX) : -len(_SUFFIX)]
    return name if name and "/" not in name else None


def _authorization(scope: dict) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == b"authorization":
            return value.decode("latin-1")
    return None


async def read_body(receive: Callable) -> tuple[bytes, bool]:
    """The whole request body, and whether it arrived complete (not a disconnect)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Callable) -> Callable[[], Awaitable[dict]]:
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict:
        return pending.pop() if pending else await receive()

    return replayed
