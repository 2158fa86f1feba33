"""``shardlearn serve --engine``: what each engine does not apply is refused, before any start."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shardlearn.cli import app
from shardlearn.exceptions import ShardlearnError
from shardlearn.serve import ServeConfig


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--engine", "ray", "--workers", "2"], "--workers"),
        (["--engine", "ray:auto", "--header-timeout", "3"], "--header-timeout"),
        (["--engine", "ray", "--body-timeout", "3"], "--body-timeout"),
        (["--engine", "ray", "--write-timeout", "3"], "--write-timeout"),
        (["--replicas", "2"], "--replicas"),
        (["--engine", "local", "--replica-cpus", "0.5"], "--replica-cpus"),
        (["--engine", "spark"], "'spark'"),
        (["--engine", "local:somewhere"], "'local:somewhere'"),
    ],
)
def test_an_option_the_engine_does_not_apply_is_refused(
    tmp_path: Path, options: list[str], named: str
) -> None:
    result = CliRunner().invoke(app, ["serve", "--registry", str(tmp_path), *options])
    assert result.exit_code == 1, result.output
    assert named in result.output and "error:" in result.output


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"max_concurrency": None}, "--max-concurrency"),
        ({"keep_alive_timeout": 2.5}, "--keep-alive-timeout"),
    ],
)
def test_ray_serve_refuses_settings_it_cannot_apply(
    tmp_path: Path, settings: dict, named: str
) -> None:
    ray_serve = pytest.importorskip("shardlearn.serve.ray_serve", exc_type=ImportError)
    with pytest.raises(ShardlearnError, match=named):
        ray_serve.RayServe(ServeConfig(registry=tmp_path, **settings), replicas=2)
