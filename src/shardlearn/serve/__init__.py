"""The HTTP prediction service: an ASGI app over the model registry.

>>> from shardlearn.serve import ServeConfig, run
>>> config = ServeConfig(registry="models")

``run(config, port=8000)`` then serves until stopped (so it is not run as a test).

``run`` applies the header, body and keep-alive timeouts and the concurrency limit of the
config (see :mod:`shardlearn.serve.server`); ``create_app`` alone builds the ASGI app, for an
own uvicorn set up with ``uvicorn_options(config)``.
"""

from __future__ import annotations

# The serve extra's packages, checked first so that `import shardlearn.serve` (or any module
# of it) without them fails with one line naming the extra, not with fastapi's name alone.
try:
    import fastapi  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f"shardlearn.serve needs {missing.name!r}, from the serve extra: "
        "pip install 'shardlearn[serve]'",
        name=missing.name,
    ) from None

from shardlearn.serve.app import ServeConfig, create_app  # noqa: E402
from shardlearn.serve.auth import TokenStore  # noqa: E402
from shardlearn.serve.server import run, uvicorn_options  # noqa: E402

__all__ = ["ServeConfig", "TokenStore", "create_app", "run", "uvicorn_options"]
