"""The HTTP prediction service: an ASGI app over the model registry.

>>> from shardlearn.serve import ServeConfig, run
>>> run(ServeConfig(registry="models"), port=8000)   # doctest: +SKIP

``run`` applies the header, body and keep-alive timeouts and the concurrency limit of the
config (see :mod:`shardlearn.serve.server`); ``create_app`` alone builds the ASGI app, for an
own uvicorn set up with ``uvicorn_options(config)``.
"""

from __future__ import annotations

from shardlearn.serve.app import ServeConfig, create_app
from shardlearn.serve.auth import TokenStore
from shardlearn.serve.server import run, uvicorn_options

__all__ = ["ServeConfig", "TokenStore", "create_app", "run", "uvicorn_options"]
