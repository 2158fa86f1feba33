"""The Open Inference Protocol (KServe V2, REST) beside the native API.

Routes: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2`` (server metadata),
``GET /v2/models/{name}`` (model metadata), ``GET /v2/models/{name}/ready`` and
``POST /v2/models/{name}/infer``; the model routes also as
``/v2/models/{name}/versions/{v}/...`` (404 unless ``v`` is the version served). The GET routes
are FastAPI routes; infer is answered by the ASGI middleware :class:`InferRoute`, outside
FastAPI's routing (as the native fast path).

A model's input schema maps to one input tensor per column (numeric -> ``FP64``, boolean ->
``BOOL``, categorical, text and date-time -> ``BYTES``, date-times as ISO-8601 strings), each
of shape ``[N]`` or ``[N, 1]``; the outputs are ``label`` (``[N]``, ``BYTES``/``INT64``/
``BOOL``/``FP64`` after the classes' type) and, for models with probabilities,
``probabilities`` (``[N, n_classes]``, ``FP64``, in the order of the model's classes).

An inference request goes through the native route's steps: the bearer token (401/403), the
served model (404), the row limit (413), the same value validation (:mod:`.schemas`), the same
micro-batcher and the same metrics. Tensor data is accepted as JSON or as Triton's binary tensor
extension (``Inference-Header-Content-Length``, what ``tritonclient`` sends by default), and
answered in the form the request asks for. Errors use the protocol's body,
``{"error": "..."}``: 400 for a bad tensor (every problem of the request in one message), 401
without a token, 404 for an unknown model. Parameters the server does not implement are
refused, not ignored.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from shardlearn import __version__
from shardlearn.serve.batching import Columns
from shardlearn.serve.fastpath import read_body
from shardlearn.serve.host import Inference, ModelHost, ServedModel
from shardlearn.serve.schemas import InputProblem, tensors_to_columns
from shardlearn.serve.telemetry import Telemetry

__all__ = ["InferRoute", "add_v2_routes", "input_tensors", "output_tensors"]

#: The tensor datatype of each schema kind.
DATATYPES = {
    "numeric": "FP64",
    "boolean": "BOOL",
    "categorical": "BYTES",
    "text": "BYTES",
    "datetime": "BYTES",
}
_BINARY_DTYPES = {"FP64": np.dtype("<f8"), "BOOL": np.dtype("?")}
_HEADER_LENGTH = "inference-header-content-length"
_REQUEST_PARAMETERS = {"binary_data_output"}
_INPUT_PARAMETERS = {"binary_data_size"}
_OUTPUT_PARAMETERS = {"binary_data"}

Authorize = Callable[["str | None"], None]
Infer = Callable[[ServedModel, Columns], Awaitable[Inference]]


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class _Requested(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """An inference request of the Open Inference Protocol."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[_Tensor]
    outputs: list[_Requested] | None = None


def _error(message: str, status: int) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _problem_message(problem: InputProblem) -> str:
    if problem.row is None or f"row {problem.row}" in problem.message:
        return problem.message
    return f"{problem.message} (row {problem.row})"


def _status(problem: InputProblem) -> int:
    # The native route's 422 (a request that cannot be predicted) is the protocol's 400.
    return 400 if problem.status == 422 else problem.status


def _unknown_parameters(where: str, given: dict[str, Any] | None, known: set[str]) -> list[str]:
    unknown = sorted(set(given or {}).difference(known))
    if not unknown:
        return []
    allowed = ", ".join(sorted(known))
    return [f"{where} has unsupported parameter(s) {', '.join(unknown)} (supported: {allowed})"]


def model_metadata(model: ServedModel) -> dict[str, Any]:
    """The protocol's model metadata: one input tensor per column, the outputs."""
    schema = model.input_schema or {"columns": []}
    inputs = [
        {"name": c["name"], "datatype": DATATYPES[c["kind"]], "shape": [-1]}
        for c in schema["columns"]
    ]
    outputs = [{"name": "label", "datatype": _label_datatype(model.classes), "shape": [-1]}]
    if hasattr(model.model, "predict_proba"):
        n_classes = len(model.classes)
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, n_classes]})
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": "shardlearn",
        "inputs": inputs,
        "outputs": outputs,
    }


def _label_datatype(classes: list[Any]) -> str:
    if not classes:
        return "FP64"  # a regressor: its predictions are numbers
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    if all(isinstance(c, float) for c in classes):
        return "FP64"
    return "BYTES"


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail of a request (the tail is empty without one)."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InputProblem(
            f"Inference-Header-Content-Length {header_length!r} is not a length within the "
            f"{len(body)}-byte body",
            status=400,
        )
    return body[: int(header_length)], body[int(header_length) :]


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    """The request and its binary tail; a 400 naming every malformed field otherwise."""
    header, tail = _split_body(body, header_length)
    try:
        request = InferRequest.model_validate_json(header)
    except ValidationError as error:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
            for e in error.errors(include_url=False)
        ]
        message = "malformed inference request: " + "; ".join(problems)
        raise InputProblem(message, status=400) from None
    return request, tail


def _decode_binary(tensor: _Tensor, raw: bytes) -> list[Any]:
    if tensor.datatype == "BYTES":
        values, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ValueError("a BYTES element's 4-byte length is cut off")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise ValueError("a BYTES element is longer than the data")
            values.append(raw[offset : offset + length].decode("utf-8"))
            offset += length
        return values
    dtype = _BINARY_DTYPES.get(tensor.datatype)
    if dtype is None or len(raw) % dtype.itemsize:
        raise ValueError(f"{len(raw)} bytes are not a whole number of {tensor.datatype} values")
    return np.frombuffer(raw, dtype=dtype).tolist()


def _payload(tensor: _Tensor, tail: bytes, offset: int) -> tuple[list[Any] | bytes, int]:
    """``tensor``'s JSON ``data`` (flattened from ``[N, 1]``), or its slice of the binary
    tail; and the offset of the next tensor's binary data."""
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        if tensor.data is None:
            raise ValueError("has neither 'data' nor parameters.binary_data_size")
        data = tensor.data
        if data and all(isinstance(v, list) for v in data):  # nested as [N, 1]
            if not all(len(v) == 1 for v in data):
                raise ValueError("nested data must hold one value per row")
            data = [v[0] for v in data]
        return data, offset
    if tensor.data is not None:
        raise ValueError("has both 'data' and parameters.binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"binary_data_size {size!r} is not a byte count")
    if offset + size > len(tail):
        raise ValueError(f"binary_data_size {size} runs past the end of the body")
    return tail[offset : offset + size], offset + size


def _rows_of_shape(shape: list[int]) -> int | None:
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return shape[0] if shape[0] >= 0 else None
    return None


def _check_tensor(
    tensor: _Tensor,
    payload: list[Any] | bytes,
    expected: dict[str, str],
    seen: dict[str, list[Any]],
    reject_extra: bool,
) -> tuple[str | None, list[Any] | None]:
    """One tensor's problem (or None) and its flat values (None for an ignored tensor)."""
    if tensor.name in seen:
        return "is sent twice", None
    if tensor.name not in expected:
        return ("is not an input of this model" if reject_extra else None), None
    if tensor.datatype != expected[tensor.name]:
        return f"has datatype {tensor.datatype}; this model takes {expected[tensor.name]}", None
    try:
        data = _decode_binary(tensor, payload) if isinstance(payload, bytes) else payload
    except (ValueError, UnicodeDecodeError) as error:
        return f"binary data: {error}", None
    n = _rows_of_shape(tensor.shape)
    if n is None:
        return f"has shape {tensor.shape}; send [N] or [N, 1]", None
    if len(data) != n:
        return f"has shape {tensor.shape} but {len(data)} values", None
    return None, data


def input_tensors(
    request: InferRequest, tail: bytes, schema: dict[str, Any], *, reject_extra: bool
) -> dict[str, list[Any]]:
    """Each column's raw values, from the request's tensors; every tensor problem in one 400.

    Checks names (each column once; unknown names refused with ``reject_extra``, else ignored
    as the native route does), datatypes, shapes, and that all tensors have the same rows.
    """
    expected = {c["name"]: DATATYPES[c["kind"]] for c in schema["columns"]}
    problems = _unknown_parameters("the request", request.parameters, _REQUEST_PARAMETERS)
    values: dict[str, list[Any]] = {}
    rows: dict[str, int] = {}
    offset = 0
    for tensor in request.inputs:
        where = f"input {tensor.name!r}"
        problems += _unknown_parameters(where, tensor.parameters, _INPUT_PARAMETERS)
        try:
            payload, offset = _payload(tensor, tail, offset)
        except ValueError as error:
            problems.append(f"{where} {error}")
            values.setdefault(tensor.name, [])
            continue
        problem, data = _check_tensor(tensor, payload, expected, values, reject_extra)
        if problem:
            problems.append(f"{where} {problem}")
        elif data is not None:
            rows[tensor.name] = len(data)
        if data is not None or problem:
            values.setdefault(tensor.name, data or [])
    if offset != len(tail):
        problems.append(f"the body holds {len(tail) - offset} bytes past the tensors' binary data")
    missing = sorted(set(expected).difference(values))
    if missing:
        problems.append(f"missing input(s) {', '.join(map(repr, missing))}")
    if len(set(rows.values())) > 1:
        problems.append(f"inputs have different numbers of rows: {rows}")
    if problems:
        raise InputProblem("; ".join(problems), status=400)
    return {name: values[name] for name in expected}


def _binary_output(request: InferRequest, requested: _Requested | None) -> bool:
    own = (requested.parameters or {}).get("binary_data") if requested else None
    if own is not None:
        return bool(own)
    return bool((request.parameters or {}).get("binary_data_output", False))


def _raw(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        encoded = [str(v).encode("utf-8") for v in values]
        return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    dtype = {"FP64": "<f8", "INT64": "<i8", "BOOL": "?"}[datatype]
    return np.asarray(values, dtype=dtype).tobytes()


def output_tensors(
    request: InferRequest, model: ServedModel, result: Inference
) -> tuple[dict[str, Any], bytes]:
    """The response's ``outputs`` (and their binary tail) for the requested names."""
    label_type = _label_datatype(model.classes)
    convert = {"BYTES": str, "INT64": int, "BOOL": bool, "FP64": float}[label_type]
    rows = len(result.labels)
    available: dict[str, tuple[str, list[int], list[Any]]] = {
        "label": (label_type, [rows], [convert(v) for v in result.labels.tolist()])
    }
    if result.proba is not None:
        proba = result.proba
        available["probabilities"] = ("FP64", list(proba.shape), proba.ravel().tolist())
    wanted = request.outputs or []
    names = [r.name for r in wanted] if request.outputs is not None else list(available)
    problems = [
        f"output {n!r} does not exist (outputs: {', '.join(available)})"
        for n in names
        if n not in available
    ]
    for r in wanted:
        problems += _unknown_parameters(f"output {r.name!r}", r.parameters, _OUTPUT_PARAMETERS)
    if problems:
        raise InputProblem("; ".join(problems), status=400)
    by_name = {r.name: r for r in wanted}
    outputs, tail = [], []
    for name in names:
        datatype, shape, data = available[name]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if _binary_output(request, by_name.get(name)):
            raw = _raw(datatype, data)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            tensor["data"] = data
        outputs.append(tensor)
    return {"outputs": outputs}, b"".join(tail)


#: ``answer(name, version, authorization, header length, body)`` -> status, headers, body.
Answer = Callable[
    ["str", "str | None", "str | None", "str | None", bytes],
    Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]],
]


def add_v2_routes(
    app: FastAPI,
    host: ModelHost,
    telemetry: Telemetry,
    *,
    authorize: Authorize,
    infer: Infer,
    max_rows: int,
    reject_extra: bool,
) -> Answer:
    """Add the Open Inference Protocol's GET routes to ``app``; returns the infer handler.

    ``authorize`` raises the 401/403 problem for an ``Authorization`` header without a valid
    token; ``infer`` is the native route's micro-batched prediction. The infer handler is
    served by :class:`InferRoute` (an ASGI middleware, like the native fast path: FastAPI's
    routing cost more than a single-row prediction).
    """

    def model_of(name: str, version: str | None, authorization: str | None) -> ServedModel:
        authorize(authorization)
        model = host.get(name)
        if model is None:
            known = ", ".join(sorted(host.references)) or "none"
            raise InputProblem(f"no model named {name!r} is served (served: {known})", status=404)
        if version is not None and version != str(model.version):
            raise InputProblem(
                f"model {name!r} version {version} is not served (this server serves version "
                f"{model.version})",
                status=404,
            )
        return model

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": host.ready}, status_code=200 if host.ready else 503)

    @app.get("/v2")
    async def server_metadata(request: Request) -> JSONResponse:
        try:
            authorize(request.headers.get("authorization"))
        except InputProblem as problem:
            return _error(problem.message, problem.status)
        return JSONResponse({"name": "shardlearn", "version": __version__, "extensions": []})

    def about_model(
        name: str, version: str | None, request: Request, describe: Callable[[ServedModel], Any]
    ) -> JSONResponse:
        """``describe(model)`` of the served model, or the lookup's 401/403/404 error."""
        try:
            model = model_of(name, version, request.headers.get("authorization"))
        except InputProblem as problem:
            return _error(problem.message, problem.status)
        return JSONResponse(describe(model))

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, request: Request, version: str | None = None) -> JSONResponse:
        return about_model(name, version, request, model_metadata)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, request: Request, version: str | None = None) -> JSONResponse:
        return about_model(name, version, request, lambda m: {"name": m.name, "ready": True})

    async def answer(
        name: str,
        version: str | None,
        authorization: str | None,
        header_length: str | None,
        body: bytes,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        try:
            model = model_of(name, version, authorization)
        except InputProblem as problem:  # not counted, as on the native route
            return _error_answer(problem.message, problem.status)
        started = time.perf_counter()
        try:
            result, rows = await infer_one(model, header_length, body)
        except InputProblem as problem:
            telemetry.error(name, "bad_input" if problem.status < 500 else "server")
            telemetry.observe(name, _status(problem), time.perf_counter() - started)
            return _error_answer(_problem_message(problem), _status(problem))
        telemetry.observe(name, 200, time.perf_counter() - started, rows=rows)
        return result

    async def infer_one(
        model: ServedModel, header_length: str | None, body: bytes
    ) -> tuple[tuple[int, list[tuple[bytes, bytes]], bytes], int]:
        parsed, tail = parse_infer_request(body, header_length)
        if model.input_schema is None:
            raise InputProblem(f"model {model.name!r} has no input schema; re-save it", status=409)
        raw = input_tensors(parsed, tail, model.input_schema, reject_extra=reject_extra)
        rows = len(next(iter(raw.values()))) if raw else 0
        if not rows:
            raise InputProblem("the request has no rows", status=400)
        if rows > max_rows:
            raise InputProblem(
                f"{rows} rows exceed the limit of {max_rows} per request; split the request",
                status=413,
            )
        result = await infer(model, tensors_to_columns(raw, model.input_schema))
        outputs, out_tail = output_tensors(parsed, model, result)
        answer = {"model_name": model.name, "model_version": str(model.version), **outputs}
        if parsed.id is not None:
            answer["id"] = parsed.id
        return _infer_answer(answer, out_tail), rows

    return answer


def _error_answer(message: str, status: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    headers = [(b"content-type", b"application/json")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    return status, headers, json.dumps({"error": message}).encode()


def _infer_answer(
    answer: dict[str, Any], tail: bytes
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    header = json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
    if not tail:
        return 200, [(b"content-type", b"application/json")], header
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(header)).encode()),
    ]
    return 200, headers, header + tail


class InferRoute:
    """ASGI middleware answering ``POST /v2/models/{name}[/versions/{v}]/infer``.

    Every answer, success or protocol error, comes from ``answer`` (see
    :func:`add_v2_routes`); other requests go to ``app``.
    """

    def __init__(self, app: Any, answer: Answer) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        target = _infer_target(scope)
        if target is None:
            await self.app(scope, receive, send)
            return
        body, complete = await read_body(receive)
        if not complete:
            return  # the client left, or the body limit already answered 413
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        status, answer_headers, answer = await self.answer(
            *target,
            headers.get("authorization"),
            headers.get(_HEADER_LENGTH),
            body,
        )
        answer_headers = [*answer_headers, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": answer_headers})
        await send({"type": "http.response.body", "body": answer})


def _infer_target(scope: dict) -> tuple[str, str | None] | None:
    """The model name and version (or None) of an infer request; None for other requests."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    parts = scope["path"].split("/")
    # "", "v2", "models", NAME, ["versions", VERSION,] "infer"
    if parts[:3] != ["", "v2", "models"] or parts[-1] != "infer":
        return None
    if len(parts) == 5 and parts[3]:
        return parts[3], None
    if len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
        return parts[3], parts[5]
    return None
