"""``shardlearn serve``: the HTTP prediction service, and ``serve token`` to manage tokens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from shardlearn.cli._common import AllowUnencryptedOption, AllowUnsignedOption, console, fail

if TYPE_CHECKING:
    from shardlearn.serve import ServeConfig

serve_app = typer.Typer(
    help=(
        "Serve registered models over HTTP.\n\n"
        "A served NAME is its production version whenever one exists, else its newest "
        "version, checked again every --reload-interval seconds; /v1/models shows the stage "
        "served.\n\n"
        "Slow and idle clients are cut off: a request's headers must arrive within "
        "--header-timeout of connecting (or of starting the next request), its body within "
        "--body-timeout of the headers (else 408 and the connection is closed), and an idle "
        "connection closes after --keep-alive-timeout; a client that stops reading its answer "
        "for --write-timeout is disconnected. Past --max-concurrency open "
        "connections plus requests in flight a request is answered 503.\n\n"
        "With --engine ray[:ADDRESS] the same service runs as --replicas Ray Serve replicas "
        "spread over a Ray cluster's nodes, behind Ray Serve's HTTP proxy on --host/--port "
        "(every node); each replica loads the models itself, so the registry and the token "
        "file must be reachable from every node. --keep-alive-timeout (whole seconds) and "
        "--max-concurrency (per replica) apply there; --workers and the header, body and "
        "write timeouts do not (put a reverse proxy in front against slow clients).\n\n"
        "Example:\n\n"
        "  shardlearn serve token create --token-file models/tokens\n\n"
        "  shardlearn serve --registry models --model loans@production --port 8000\n\n"
        "  shardlearn serve --registry /shared/models --engine ray:auto --replicas 4"
    ),
    invoke_without_command=True,
    no_args_is_help=False,
)
token_app = typer.Typer(
    help="Create and list bearer tokens.\n\nExample: shardlearn serve token create --name ci",
    no_args_is_help=True,
)
serve_app.add_typer(token_app, name="token")

_TOKEN_FILE_HELP = "Token file (hashed tokens). Default: REGISTRY/tokens."


@serve_app.callback()
def serve(
    ctx: typer.Context,
    registry: str = typer.Option(
        "models", help="Model registry: a directory or an s3:// root (with --token-file)."
    ),
    model: list[str] = typer.Option(
        [], "--model", help="NAME, NAME@STAGE or NAME:VERSION; repeat for several. Default: all."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(
        1, min=1, help="Server processes; one per core serves the most requests."
    ),
    token_file: Path | None = typer.Option(None, help=_TOKEN_FILE_HELP),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve WITHOUT authentication."),
    max_rows: int = typer.Option(10_000, min=1, help="Rows per request (413 past it)."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, min=1, help="Body size limit (413)."),
    batch_wait_ms: float = typer.Option(2.0, min=0.0, help="Micro-batching wait; 0 disables."),
    reject_extra: bool = typer.Option(False, help="422 for columns the model does not know."),
    reload_interval: float = typer.Option(2.0, min=0.0, help="Seconds between registry checks."),
    batch_max_rows: int = typer.Option(1024, min=1, help="Rows that end a micro-batch at once."),
    header_timeout: float = typer.Option(
        10.0, min=0.001, help="Seconds to send a request's headers (408, then closed)."
    ),
    body_timeout: float = typer.Option(
        30.0, min=0.001, help="Seconds to send the body after the headers (408, then closed)."
    ),
    keep_alive_timeout: float = typer.Option(
        5.0, min=0.001, help="Seconds an idle connection stays open between requests."
    ),
    write_timeout: float = typer.Option(
        30.0, min=0.001, help="Seconds an answer waits for a client that stopped reading."
    ),
    max_concurrency: int = typer.Option(
        1000,
        min=0,
        help="Open connections + requests in flight per process (503 past it; 0 = no limit).",
    ),
    allow_unsigned: AllowUnsignedOption = False,
    allow_unencrypted: AllowUnencryptedOption = False,
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local (uvicorn on this machine) or ray[:ADDRESS] (Ray Serve, e.g. ray:auto).",
    ),
    replicas: int = typer.Option(1, min=1, help="Ray Serve replicas (--engine ray)."),
    replica_cpus: float = typer.Option(
        1.0, min=0.0, help="CPUs each Ray Serve replica reserves (--engine ray)."
    ),
) -> None:
    """Serve the registry's models (runs until Ctrl-C); see the command's help."""
    if ctx.invoked_subcommand is not None:
        return
    engine_name, address = _parse_engine(engine)
    _refuse_options_of_the_other_engine(ctx, engine_name)
    from shardlearn.serve import ServeConfig, create_app, run
    from shardlearn.serve.telemetry import configure_logging

    config = ServeConfig(
        registry=str(registry),
        models=list(model),
        token_file=str(token_file) if token_file else None,
        auth=not no_auth,
        max_rows=max_rows,
        max_body_bytes=max_body_bytes,
        batch_wait_ms=batch_wait_ms,
        reject_extra=reject_extra,
        reload_interval=reload_interval,
        batch_max_rows=batch_max_rows,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        keep_alive_timeout=keep_alive_timeout,
        write_timeout=write_timeout,
        max_concurrency=max_concurrency or None,
        allow_unsigned=allow_unsigned,
        allow_unencrypted=allow_unencrypted,
    )
    configure_logging()
    if engine_name == "ray":
        _serve_on_ray(config, replicas, host, port, address, replica_cpus)
        return
    app = create_app(config)  # fails here, once, on a missing token file or empty registry
    console.print(f"Serving {registry} on http://{host}:{port} (docs: /openapi.json)", markup=False)
    run(config, host=host, port=port, workers=workers, app=app)


#: Options that only one engine applies (with what to do instead): given explicitly with the
#: other engine, they are refused.
_LOCAL_ONLY = {
    "workers": "use --replicas",
    "header_timeout": "Ray Serve's proxy has no such limit",
    "body_timeout": "Ray Serve's proxy has no such limit",
    "write_timeout": "Ray Serve's proxy has no such limit",
}
_RAY_ONLY = {"replicas": "use --engine ray", "replica_cpus": "use --engine ray"}


def _parse_engine(spec: str) -> tuple[str, str | None]:
    """``("local", None)``, ``("ray", None)`` or ``("ray", ADDRESS)`` from ``--engine``."""
    name, _, address = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in ("local", "ray") or (name == "local" and address.strip()):
        raise fail(f"--engine must be local, ray or ray:ADDRESS (e.g. ray:auto). Got {spec!r}.")
    return name, address.strip() or None


def _refuse_options_of_the_other_engine(ctx: typer.Context, engine_name: str) -> None:
    ignored = _LOCAL_ONLY if engine_name == "ray" else _RAY_ONLY
    for name, instead in ignored.items():
        # By name: typer carries its own copy of click, whose ParameterSource is another enum.
        source = ctx.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT":
            option = "--" + name.replace("_", "-")
            raise fail(f"{option} has no effect with --engine {engine_name}: {instead}.")


def _serve_on_ray(
    config: ServeConfig, replicas: int, host: str, port: int, address: str | None, cpus: float
) -> None:
    try:
        from shardlearn.serve.ray_serve import RayServe, run_on_ray
    except ImportError as error:
        raise fail(
            f"--engine ray needs Ray Serve ({error}): pip install 'shardlearn[ray]'"
        ) from None

    def announce(deployment: RayServe) -> None:
        console.print(
            f"Serving {deployment.config.registry} on {deployment.url} with {replicas} Ray Serve "
            f"replica(s) (Ctrl-C stops them)",
            markup=False,
        )

    deployment = RayServe(
        config, replicas=replicas, host=host, port=port, address=address, replica_cpus=cpus
    )
    run_on_ray(deployment, announce)


@token_app.command("create")
def token_create(
    registry: Path = typer.Option(Path("models"), help="Model registry directory."),
    token_file: Path | None = typer.Option(None, help=_TOKEN_FILE_HELP),
    name: str = typer.Option("default", help="A name to recognise the token by."),
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from shardlearn.serve import TokenStore

    path = token_file or registry / "tokens"
    token = TokenStore(path).create(name)
    console.print(f"Token {name!r} stored (hashed) in {path}. It is shown only now:", markup=False)
    typer.echo(token)


@token_app.command("list")
def token_list(
    registry: Path = typer.Option(Path("models"), help="Model registry directory."),
    token_file: Path | None = typer.Option(None, help=_TOKEN_FILE_HELP),
) -> None:
    """List the names of stored tokens (never the tokens)."""
    from shardlearn.serve import TokenStore

    for token_name in TokenStore(token_file or registry / "tokens").names():
        typer.echo(token_name)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.add_typer(serve_app, name="serve")
