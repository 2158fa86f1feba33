"""Build the app from an environment variable, for uvicorn's multi-process ``--workers`` mode.

Each uvicorn worker process imports this module and calls :func:`app_from_env`; the settings
travel as JSON in ``SHARDLEARN_SERVE_CONFIG``, set by ``shardlearn serve`` before it starts
uvicorn.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from fastapi import FastAPI

from shardlearn.serve.app import ServeConfig, create_app
from shardlearn.serve.telemetry import configure_logging

__all__ = ["CONFIG_ENV", "app_from_env", "config_to_env"]

CONFIG_ENV = "SHARDLEARN_SERVE_CONFIG"


def config_to_env(config: ServeConfig) -> str:
    """The JSON form of ``config`` stored in :data:`CONFIG_ENV`."""
    return json.dumps(asdict(config), default=str)


def app_from_env() -> FastAPI:
    """The app described by :data:`CONFIG_ENV`."""
    configure_logging()
    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))
