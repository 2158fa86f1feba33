"""Choosing an engine: explicit > ``with engine(...)`` > $SHARDLEARN_ENGINE > local; CLI options."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from shardlearn.cli._common import EngineOption, WorkersOption, engine_context
from shardlearn.engine import Engine, engine, engine_from_cli, get_engine
from shardlearn.engine.local import LocalEngine
from shardlearn.exceptions import EngineError


def test_context_manager_sets_and_restores_the_current_engine():
    with engine("local", workers=1) as outer:
        assert get_engine() is outer
        with engine("local", workers=2) as inner:
            assert get_engine() is inner
            assert get_engine(outer) is outer  # explicit wins over the context
        assert get_engine() is outer


def test_existing_engine_is_made_current_and_left_open():
    eng = LocalEngine(workers=1)
    with engine(eng) as current:
        assert current is eng and get_engine() is eng
    assert eng.submit(abs, -3).result() == 3  # still open
    eng.close()


def test_environment_variable_picks_the_default(monkeypatch):
    monkeypatch.setenv("SHARDLEARN_ENGINE", "local")
    monkeypatch.setenv("SHARDLEARN_WORKERS", "1")
    default = get_engine()
    assert isinstance(default, LocalEngine) and get_engine() is default
    monkeypatch.setenv("SHARDLEARN_ENGINE", "spark")
    with pytest.raises(EngineError, match="Unknown engine 'spark'.*Valid: local, ray"):
        get_engine()


@pytest.mark.parametrize(
    ("spec", "workers", "message"),
    [
        ("spark", None, "Unknown engine 'spark'"),
        ("loacl", None, "Did you mean 'local'"),
        ("local:host:1", None, "takes no address"),
        ("local", 0, "integer >= 1"),
        (3, None, "named by a string"),
    ],
)
def test_bad_engine_specs_are_clear_errors(spec, workers, message):
    with pytest.raises(EngineError, match=message):
        engine_from_cli(spec, workers)


def test_engine_from_cli_builds_local_engines():
    with engine_from_cli(None, 3) as eng:
        assert isinstance(eng, Engine) and eng.name == "local" and eng.n_workers == 3


@pytest.mark.ray
def test_engine_from_cli_builds_ray_engines(ray_cluster):
    with engine_from_cli("ray", 2) as eng:
        assert eng.name == "ray" and eng.n_workers == 2
        assert eng.capacity.cpus == 2


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def compute(engine: EngineOption = None, workers: WorkersOption = None) -> None:
        with engine_context(engine, workers) as eng:
            assert get_engine() is eng
            typer.echo(f"{eng.name} {eng.n_workers}")

    return app


def test_shared_cli_options():
    runner = CliRunner()
    ok = runner.invoke(_cli(), ["--engine", "local", "--workers", "1"])
    assert ok.exit_code == 0 and ok.output.strip() == "local 1"
    usage = runner.invoke(_cli(), ["--workers", "0"])
    assert usage.exit_code == 2
    bad = runner.invoke(_cli(), ["--engine", "spark"])
    assert isinstance(bad.exception, EngineError)


def test_passing_the_engine_context_manager_says_how_to_use_it():
    with pytest.raises(EngineError, match="with engine"):
        get_engine(engine("local", workers=1))
