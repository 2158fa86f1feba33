"""The ASGI application: prediction, model listing, health, readiness and metrics.

The Open Inference Protocol (KServe V2) routes of :mod:`.v2` answer beside the native ones,
through the same auth, validation, micro-batcher and metrics.
``create_app(ServeConfig(...))`` returns a FastAPI app; ``shardlearn serve`` (or
:func:`~shardlearn.serve.run`) runs it under uvicorn with the header, body and keep-alive
timeouts and the concurrency limit of :mod:`.server`. Bad input is always a 4xx whose body
names the field and the row; a 5xx means a bug, and reaches only the request it belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError

from shardlearn import __version__
from shardlearn._validation import Interval, Type, validate_params
from shardlearn.exceptions import ShardlearnError
from shardlearn.registry import Registry
from shardlearn.serve.auth import TokenStore
from shardlearn.serve.batching import Columns, MicroBatcher
from shardlearn.serve.fastpath import Predict, PredictFastPath
from shardlearn.serve.host import Inference, ModelHost, ServedModel
from shardlearn.serve.schemas import (
    InputProblem,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    records_to_columns,
)
from shardlearn.serve.telemetry import BodyLimit, Telemetry
from shardlearn.serve.v2 import InferRoute, add_v2_routes

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("shardlearn.serve")


_POSITIVE = [Interval("real", 0, None, closed="neither")]
_LIMITS: dict[str, list[Any]] = {
    "header_timeout": _POSITIVE,
    "body_timeout": _POSITIVE,
    "keep_alive_timeout": _POSITIVE,
    "write_timeout": _POSITIVE,
    "batch_max_rows": [Interval("int", 1, None)],
    "max_concurrency": [Interval("int", 1, None), Type(type(None))],
}


@dataclass
class ServeConfig:
    """Settings of one prediction server.

    Parameters
    ----------
    registry : path-like
        The model registry directory.
    models : list of str
        References to serve (``NAME``, ``NAME@STAGE``, ``NAME:VERSION``); empty = every model.
    token_file : path-like, optional
        Hashed bearer tokens (``shardlearn serve token create``); default ``REGISTRY/tokens``.
    auth : bool
        Require a bearer token on ``/v1`` and ``/metrics`` (default True).
    max_body_bytes, max_rows : int
        Request limits; past either the answer is 413.
    batch_wait_ms : float
        How long a request waits for others to be predicted with (0 disables micro-batching).
    reject_extra : bool
        Answer 422 for columns the model does not know instead of ignoring them.
    reload_interval : float
        Seconds between checks of the registry for newly promoted versions (0 disables).
    batch_max_rows : int
        A micro-batch is predicted as soon as it holds this many rows.
    header_timeout : float
        Seconds a client has to send a request's headers, from the moment it connects (or
        starts its next request on a kept-alive connection); then 408 and the connection is
        closed.
    body_timeout : float
        Seconds a client has to send the whole body once the headers are in; then 408 and
        the connection is closed.
    keep_alive_timeout : float
        Seconds an idle kept-alive connection stays open between requests.
    write_timeout : float
        Seconds an answer may wait for a client that stopped reading it (the server's send
        buffer full, nothing taken); then the connection is aborted.
    max_concurrency : int or None
        Open connections plus requests in flight beyond which a request is answered 503
        (None = no limit).
    allow_unsigned, allow_unencrypted : bool
        Serve unsigned (plaintext) versions although a signing or public key (an encryption
        key) is configured; by default they are refused (``--allow-unsigned``,
        ``--allow-unencrypted``).

    Notes
    -----
    The five limits are applied by the HTTP server: :func:`~shardlearn.serve.run` (and
    ``shardlearn serve``) or ``uvicorn.Config(app, **uvicorn_options(config))``.
    """

    registry: str | Path
    models: list[str] = field(default_factory=list)
    token_file: str | Path | None = None
    auth: bool = True
    max_body_bytes: int = 8 * 1024 * 1024
    max_rows: int = 10_000
    batch_wait_ms: float = 2.0
    reject_extra: bool = False
    reload_interval: float = 2.0
    batch_max_rows: int = 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    write_timeout: float = 30.0
    max_concurrency: int | None = 1000
    allow_unsigned: bool = False
    allow_unencrypted: bool = False

    def __post_init__(self) -> None:
        validate_params("ServeConfig", vars(self), _LIMITS)

    @property
    def tokens_path(self) -> Path:
        return Path(self.token_file) if self.token_file else Path(self.registry) / "tokens"


def _load_tokens(config: ServeConfig) -> TokenStore | None:
    if not config.auth:
        log.warning("authentication is OFF (--no-auth): anyone who can reach the port can predict")
        return None
    store = TokenStore(config.tokens_path)
    if not len(store):
        raise ShardlearnError(
            f"no tokens in {config.tokens_path}: create one with "
            f"`shardlearn serve token create --token-file {config.tokens_path}` "
            "(or pass --no-auth to serve without authentication)"
        )
    return store


_NO_FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    },
    "security": [{"HTTPBearer": []}],  # checked in the handler, see _Authorize.check
}


def parse_request(body: bytes) -> PredictRequest:
    """The request body as a :class:`PredictRequest`; a 422 naming the field otherwise."""
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from None


# json.dumps with non-default separators builds a JSONEncoder on every call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_BEARER = HTTPBearer(auto_error=False, description="A token from `shardlearn serve token`.")


class _Authorize:
    """The auth check: 401 without a bearer token, 403 with a wrong one.

    Called as a FastAPI dependency on most routes; the predict route calls :meth:`check`
    directly with the header (FastAPI's dependency resolution cost more than the prediction
    of a row), which applies the same parsing as ``HTTPBearer``.
    """

    def __init__(self, tokens: TokenStore | None) -> None:
        self.tokens = tokens

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        if self.tokens is None:
            return
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise InputProblem(
                "missing bearer token: send 'Authorization: Bearer TOKEN'", status=401
            )
        self._verify(credentials.credentials)

    def check(self, authorization: str | None) -> None:
        """Raise the 401/403 :class:`InputProblem` unless ``authorization`` holds a token."""
        if self.tokens is None:
            return
        scheme, token = get_authorization_scheme_param(authorization)
        if not (authorization and scheme and token) or scheme.lower() != "bearer":
            raise InputProblem(
                "missing bearer token: send 'Authorization: Bearer TOKEN'", status=401
            )
        self._verify(token)

    def _verify(self, token: str) -> None:
        if self.tokens is not None and not self.tokens.verify(token):
            raise InputProblem("the bearer token is not valid for this server", status=403)


def _info(model: ServedModel) -> ModelInfo:
    return ModelInfo(
        name=model.name,
        version=model.version,
        reference=model.reference,
        model_type=model.model_type,
        stage=model.stage,
        classes=model.classes,
        input_schema=model.input_schema,
        metrics=model.metrics,
    )


def _problem_response(problem: InputProblem) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return JSONResponse(problem.to_dict(), status_code=problem.status, headers=headers)


def _validation_response(_: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    row = next((int(p) for p in location if p.isdigit()), None)
    field_name = next((p for p in reversed(location) if not p.isdigit()), None)
    message = f"{first.get('msg', 'invalid request')}" + (
        f" at {'.'.join(location)}" if location else ""
    )
    body = {
        "error": message,
        "field": field_name,
        "row": row,
        "fields": [field_name] * bool(field_name),
    }
    return JSONResponse(body, status_code=422)


async def _infer(batcher: MicroBatcher, model: ServedModel, columns: Columns) -> Inference:
    """The batcher's answer; a prediction that raises becomes this request's problem only."""
    try:
        return await batcher.infer(model, columns)
    except ShardlearnError as error:  # raised on purpose about these rows, e.g. a DataError
        raise InputProblem(str(error)) from None
    except Exception as error:
        # Validation let through rows the model cannot predict: a bug, answered as a 500 to
        # this request alone (the batcher already isolated it from the others).
        log.exception("prediction of a validated request to %s failed", model.name)
        raise InputProblem(f"the model failed on this request: {error}", status=500) from None


async def _reload_loop(host: ModelHost, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(host.refresh)


def create_app(config: ServeConfig) -> FastAPI:
    """Build the prediction service for ``config``.

    Models are loaded at start-up (``/readyz`` answers 503 until they are); the token file is
    read once, here, so a server without tokens fails at once instead of refusing every request.
    """
    tokens = _load_tokens(config)
    registry = Registry(
        config.registry,
        allow_unsigned=config.allow_unsigned,
        allow_unencrypted=config.allow_unencrypted,
    )
    host = ModelHost(registry, config.models)
    batcher = MicroBatcher(max_wait=config.batch_wait_ms / 1000.0, max_rows=config.batch_max_rows)
    telemetry = Telemetry()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(host.load_all)
        # Everything loaded so far (libraries, models) lives as long as the server: move it out
        # of the collector's sight, so a full collection does not walk millions of long-lived
        # objects in the middle of a request (it showed up as tens of ms at p99).
        gc.collect()
        gc.freeze()
        await batcher.start()
        reloader = (
            asyncio.create_task(_reload_loop(host, config.reload_interval))
            if config.reload_interval > 0
            else None
        )
        try:
            yield
        finally:
            if reloader is not None:
                reloader.cancel()
            await batcher.stop()

    app = FastAPI(
        title="shardlearn prediction service",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry hooks look up the global providers on every request
        # (a fifth of a single-row prediction's time); the service exports its own metrics.
        telemetry=_NO_FASTAPI_TELEMETRY,
    )
    app.add_exception_handler(InputProblem, lambda _, e: _problem_response(e))
    # The decorator form: add_exception_handler's type takes a handler of any Exception.
    app.exception_handler(RequestValidationError)(_validation_response)
    authorize = _Authorize(tokens)
    authorized = [Depends(authorize)]
    app.state.host = host
    _add_health_routes(app, host)
    predict_json = _add_model_routes(app, host, batcher, telemetry, config, authorize)
    infer_v2 = add_v2_routes(
        app,
        host,
        telemetry,
        authorize=authorize.check,
        infer=functools.partial(_infer, batcher),
        max_rows=config.max_rows,
        reject_extra=config.reject_extra,
    )

    @app.get("/metrics", dependencies=authorized, response_class=Response)
    async def metrics() -> Response:
        return Response(telemetry.exposition(), media_type="text/plain; version=0.0.4")

    app.add_middleware(PredictFastPath, predict=predict_json)
    app.add_middleware(InferRoute, answer=infer_v2)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)  # outside the fast path
    return app


def _add_health_routes(app: FastAPI, host: ModelHost) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if host.ready:
            return JSONResponse({"status": "ready", "models": sorted(host.references)})
        return JSONResponse({"status": "loading"}, status_code=503)


def _add_model_routes(
    app: FastAPI,
    host: ModelHost,
    batcher: MicroBatcher,
    telemetry: Telemetry,
    config: ServeConfig,
    authorize: _Authorize,
) -> Predict:
    """Add the model routes; returns the predict function for :class:`PredictFastPath`."""
    authorized = [Depends(authorize)]

    def served(name: str) -> ServedModel:
        model = host.get(name)
        if model is None:
            known = ", ".join(sorted(host.references)) or "none"
            raise InputProblem(f"no model named {name!r} is served (served: {known})", status=404)
        return model

    @app.get("/v1/models", dependencies=authorized)
    async def list_models() -> list[ModelInfo]:
        return [_info(model) for model in host.served()]

    @app.get("/v1/models/{name}", dependencies=authorized)
    async def describe(name: str) -> ModelInfo:
        return _info(served(name))

    # The hot path: the body is read and validated here, in one pydantic-core call on the raw
    # bytes, and the answer is serialised with json.dumps -- FastAPI's body dependency and
    # response-model round trip cost more than the prediction of a row. The OpenAPI document
    # still describes both bodies (openapi_extra, response_model).
    async def predict_json(
        name: str, authorization: str | None, body: bytes, proba: bool, *, count: bool = True
    ) -> bytes:
        """The JSON answer for one predict request; raises the 4xx problem otherwise.

        ``count=False`` (the fast path's attempt) leaves errors to be counted by the route.
        """
        started = time.perf_counter()
        authorize.check(authorization)
        model = served(name)
        request = parse_request(body)
        try:
            if model.input_schema is None:
                raise InputProblem(f"model {name!r} has no input schema; re-save it", status=409)
            columns = records_to_columns(
                request,
                model.input_schema,
                max_rows=config.max_rows,
                reject_extra=config.reject_extra,
            )
            result = await _infer(batcher, model, columns)
        except InputProblem as problem:
            if count:
                telemetry.error(name, "bad_input" if problem.status < 500 else "server")
                telemetry.observe(name, problem.status, time.perf_counter() - started)
            raise
        rows = len(result.labels)
        telemetry.observe(name, 200, time.perf_counter() - started, rows=rows)
        answer = {
            "model": model.name,
            "version": model.version,
            "classes": model.classes,
            "predictions": result.labels.tolist(),
            "probabilities": None if result.proba is None or not proba else result.proba.tolist(),
        }
        return _ENCODE(answer).encode()

    # Well-formed requests are answered by PredictFastPath (see create_app) with the same
    # predict_json; this route answers the rest and is what the OpenAPI document describes
    # (openapi_extra, response_model).
    @app.post(
        "/v1/models/{name}/predict",
        response_model=PredictResponse,
        openapi_extra=_PREDICT_BODY,
    )
    async def predict(name: str, request: Request, proba: bool = True) -> Response:
        answer = await predict_json(
            name, request.headers.get("authorization"), await request.body(), proba
        )
        return Response(answer, media_type="application/json")

    return functools.partial(predict_json, count=False)
