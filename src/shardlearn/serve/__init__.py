"""The HTTP prediction service: an ASGI app over the model registry.

>>> from shardlearn.serve import ServeConfig, create_app
>>> app = create_app(ServeConfig(registry="models", auth=False))   # doctest: +SKIP
"""

from __future__ import annotations

from shardlearn.serve.app import ServeConfig, create_app
from shardlearn.serve.auth import TokenStore

__all__ = ["ServeConfig", "TokenStore", "create_app"]
