"""A real registry with a real trained model, and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import uvicorn

from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.models import LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import Registry
from shardlearn.serve import ServeConfig, TokenStore, create_app, uvicorn_options

REGIONS = np.array(["north", "south", "east", "west"])


def loan_table(rows: int, seed: int) -> pa.Table:
    """Loan-like rows whose label depends on income, debt ratio and region."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50_000, 15_000, rows).round(0)
    debt = rng.uniform(0, 1, rows)
    region = REGIONS[rng.integers(0, 4, rows)]
    score = income / 20_000 - 3 * debt + (region == "north") - 1.2 + rng.normal(0, 0.3, rows)
    return pa.table(
        {
            "income": income,
            "debt_ratio": debt,
            "region": region,
            "default": np.where(score > 0, "no", "yes"),
        }
    )


def train_model(rows: int, seed: int, tmp: Path, C: float = 1.0) -> Pipeline:
    dataset = write_dataset(loan_table(rows, seed), tmp / f"data-{seed}", "default", partitions=2)
    with engine("local", workers=1):
        return Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression(C=C)).fit(dataset)


@dataclass
class Served:
    url: str
    token: str
    registry: Registry
    model: Pipeline
    config: ServeConfig


def free_listening_socket() -> socket.socket:
    """A socket already listening on a free port: clients may connect before uvicorn runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class RunningServer:
    """uvicorn serving ``config`` on a pre-bound socket, in a background thread."""

    def __init__(self, config: ServeConfig) -> None:
        self.sock = free_listening_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.app = create_app(config)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_level="warning",
                access_log=False,
                lifespan="on",
                **uvicorn_options(config),
            )
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> RunningServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Pipeline, str]:
    """A registry holding one production model, and a token for it."""
    root = tmp_path_factory.mktemp("serve")
    model = train_model(600, seed=0, tmp=root)
    registry = Registry(root / "models")
    version = registry.register(model, "loans")
    registry.promote("loans", version.version, "production")
    token = TokenStore(root / "models" / "tokens").create("tests")
    return registry, model, token


@pytest.fixture(scope="module")
def served(trained: tuple[Registry, Pipeline, str]) -> Iterator[Served]:
    registry, model, token = trained
    config = ServeConfig(registry=registry.root, max_rows=500, max_body_bytes=200_000)
    with RunningServer(config) as running:
        yield Served(running.url, token, registry, model, config)
