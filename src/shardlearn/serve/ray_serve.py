"""Serving on a Ray cluster: the same app in N Ray Serve replicas, spread over the nodes.

``shardlearn serve --engine ray[:ADDRESS] --replicas N`` deploys :func:`~shardlearn.serve.
create_app`'s app with Ray Serve (``@serve.deployment`` + ``@serve.ingress``): each replica is
a Ray actor that builds the app from the same :class:`~shardlearn.serve.ServeConfig`, loads
(and verifies the signatures of) the models from the registry itself, micro-batches its own
requests, follows promotions every ``reload_interval`` and keeps its own ``/metrics``. Ray
Serve's HTTP proxy (one per node) spreads requests over the replicas and replaces a replica
that dies. Every answer carries ``X-Shardlearn-Replica``: the replica's Ray actor name.

Tokens stay enforced inside the app (Ray Serve's own authentication is off by default). What
uvicorn enforces for the local server maps onto Ray Serve where it can: the keep-alive timeout
becomes the proxy's (whole seconds), ``max_concurrency`` each replica's
``max_ongoing_requests`` (further requests wait in Ray Serve's queue). The header, body and
write timeouts have no Ray Serve counterpart: ``shardlearn serve`` refuses them with
``--engine ray``; put a reverse proxy in front against slow clients.

The registry and the token file are read by every replica: on a multi-node cluster they must
be reachable from every node (a shared file system, or an ``s3://`` registry). The signing and
encryption key variables of :mod:`shardlearn.registry.crypto` set where the deployment is made
are passed on to the replicas, so they refuse what the local server would refuse.

Not run as a test (it starts a Ray cluster and serves until the block exits):

>>> from shardlearn.serve import ServeConfig
>>> from shardlearn.serve.ray_serve import RayServe
>>> with RayServe(ServeConfig(registry="models"), replicas=2, port=8000) as deployment:
...     deployment.url                                              # doctest: +SKIP
'http://127.0.0.1:8000'
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from shardlearn.exceptions import ShardlearnError
from shardlearn.registry import crypto
from shardlearn.serve.app import ServeConfig, create_app
from shardlearn.serve.telemetry import configure_logging

__all__ = ["APP_NAME", "REPLICA_HEADER", "RayServe", "run_on_ray"]

#: The Ray Serve application name (one shardlearn deployment per cluster).
APP_NAME = "shardlearn"
#: The response header naming the replica that answered (its Ray actor name).
REPLICA_HEADER = "x-shardlearn-replica"
_KEY_VARIABLES = (
    crypto.SIGNING_KEY_ENV,
    crypto.SIGNING_KEY_FILE_ENV,
    crypto.ENCRYPTION_KEY_ENV,
    crypto.ENCRYPTION_KEY_FILE_ENV,
    crypto.PUBLIC_KEY_ENV,
    crypto.PUBLIC_KEY_FILE_ENV,
)


class _ReplicaHeader:
    """Pure ASGI middleware: add ``X-Shardlearn-Replica`` to every HTTP answer."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


class _Replica:
    """One replica: builds the app from the config's JSON when Ray Serve starts it."""

    def __init__(self, config_json: str) -> None:
        self._config = ServeConfig(**json.loads(config_json))

    def __serve_build_asgi_app__(self) -> FastAPI:  # noqa: PLW3201 - Ray Serve's hook name
        configure_logging()
        app = create_app(self._config)
        replica = serve.get_replica_context().replica_id.to_full_id_str()
        app.add_middleware(_ReplicaHeader, replica=replica)
        return app


_Deployment = serve.deployment(name="ShardlearnServe")(serve.ingress()(_Replica))


def _absolute(config: ServeConfig) -> ServeConfig:
    """``config`` with local paths made absolute: replicas do not run in this directory."""

    def resolve(path: str | Path) -> str:
        return str(path) if "://" in str(path) else str(Path(path).expanduser().resolve())

    token_file = None if config.token_file is None else resolve(config.token_file)
    return replace(config, registry=resolve(config.registry), token_file=token_file)


class RayServe:
    """A shardlearn deployment on Ray Serve; a context manager (deployed on enter).

    Parameters
    ----------
    config : ServeConfig
        What to serve; each replica builds its app from it.
    replicas : int, default=1
        Number of replicas (Ray actors), spread over the cluster's nodes by Ray Serve.
    host, port : str, int
        Where Ray Serve's HTTP proxy listens (on every node).
    address : str, optional
        Ray cluster to connect to (``"auto"``, ``"ray://head:10001"``); by default the Ray
        this process is already connected to, else a new local one (stopped on close).
    replica_cpus : float, default=1.0
        CPUs each replica reserves on its node.

    Notes
    -----
    On close the application is deleted; Ray Serve is shut down if this object started it,
    and Ray too if it started it.
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        replicas: int = 1,
        host: str = "127.0.0.1",
        port: int = 8000,
        address: str | None = None,
        replica_cpus: float = 1.0,
    ) -> None:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise ShardlearnError(
                f"The number of replicas must be an integer >= 1. Got {replicas!r}."
            )
        if not replica_cpus >= 0:
            raise ShardlearnError(f"replica_cpus must be a number >= 0. Got {replica_cpus!r}.")
        if config.max_concurrency is None:
            raise ShardlearnError(
                "Ray Serve needs a limit of requests in flight per replica: set max_concurrency "
                "(--max-concurrency) to a number >= 1 with --engine ray."
            )
        if config.keep_alive_timeout != int(config.keep_alive_timeout):
            raise ShardlearnError(
                "Ray Serve's proxy takes a keep-alive timeout in whole seconds: set "
                f"--keep-alive-timeout to an integer with --engine ray. Got "
                f"{config.keep_alive_timeout}."
            )
        self.config = _absolute(config)
        self.replicas = replicas
        self.host = host
        self.port = port
        self.address = address
        self.replica_cpus = float(replica_cpus)
        self._max_ongoing_requests: int = config.max_concurrency  # not None: checked above
        self._started_ray = False
        self._started_serve = False
        self._deployed = False

    @property
    def url(self) -> str:
        """The proxy's base URL on this node."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> RayServe:
        try:
            self._deploy()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deploy(self) -> None:
        if not ray.is_initialized():
            try:
                ray.init(
                    **({"address": self.address} if self.address else {"include_dashboard": False})
                )
            except Exception as error:
                where = self.address or "a new local instance"
                raise ShardlearnError(f"Could not start or reach Ray ({where}): {error}") from error
            self._started_ray = True
        self._started_serve = not _serve_running()
        serve.start(
            http_options={
                "host": self.host,
                "port": self.port,
                "keep_alive_timeout_s": int(self.config.keep_alive_timeout),  # checked below
            }
        )
        self._check_proxy_address()
        if APP_NAME in serve.status().applications:
            raise ShardlearnError(
                f"Ray Serve on this cluster already runs an application named {APP_NAME!r}: "
                "stop the `shardlearn serve` that deployed it first."
            )
        actor_options: dict[str, Any] = {"num_cpus": self.replica_cpus}
        keys = {name: os.environ[name] for name in _KEY_VARIABLES if os.environ.get(name)}
        if keys:
            actor_options["runtime_env"] = {"env_vars": keys}
        deployment = _Deployment.options(
            num_replicas=self.replicas,
            max_ongoing_requests=self._max_ongoing_requests,
            ray_actor_options=actor_options,
        )
        config_json = json.dumps(asdict(self.config))
        self._deployed = True
        try:
            serve.run(deployment.bind(config_json), name=APP_NAME, route_prefix="/")
        except Exception as error:
            raise ShardlearnError(
                f"Ray Serve could not start the replicas of {APP_NAME!r}: {_first_line(error)} "
                "The replicas' errors are printed above and kept in the Ray session's logs "
                "(logs/serve/ under the session directory)."
            ) from error

    def _check_proxy_address(self) -> None:
        """Refuse HTTP settings that a Ray Serve already running on the cluster ignores."""
        # serve.start only logs a warning when its HTTP options differ from the running
        # instance's; Ray has no public getter for them.
        from ray.serve.context import _get_global_client

        client = _get_global_client()  # raises when no Serve controller runs
        if client is None:
            raise RuntimeError("Ray Serve's client is missing after serve.start")
        actual = client.http_config
        keep_alive = int(self.config.keep_alive_timeout)
        if (actual.host, actual.port, actual.keep_alive_timeout_s) != (
            self.host,
            self.port,
            keep_alive,
        ):
            raise ShardlearnError(
                f"Ray Serve already runs on this cluster with its HTTP proxy on "
                f"{actual.host}:{actual.port}, keep-alive {actual.keep_alive_timeout_s} s: "
                f"serve with --host {actual.host} --port {actual.port} --keep-alive-timeout "
                f"{actual.keep_alive_timeout_s}, or stop it first (`serve shutdown`)."
            )

    def close(self) -> None:
        """Delete the application; stop Ray Serve and Ray if this object started them."""
        if ray.is_initialized():
            if self._started_serve:
                serve.shutdown()
            elif self._deployed and _serve_running():
                serve.delete(APP_NAME)
        if self._started_ray:
            ray.shutdown()
        self._started_ray = self._started_serve = self._deployed = False


def run_on_ray(deployment: RayServe, announce: Callable[[RayServe], None] | None = None) -> None:
    """Deploy, call ``announce(deployment)``, serve until SIGINT or SIGTERM, then close.

    What ``shardlearn serve --engine ray`` runs; the process stays the deployment's owner, so
    stopping it removes the deployment (and the Ray Serve / Ray it started).
    """
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    try:
        with deployment:
            if announce is not None:
                announce(deployment)
            stop.wait()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _serve_running() -> bool:
    """Whether Ray Serve's controller runs on the connected cluster."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
