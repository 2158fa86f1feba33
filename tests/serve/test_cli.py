"""``shardlearn serve`` and ``shardlearn serve token`` as a user runs them."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from typer.testing import CliRunner

from shardlearn.cli import app
from shardlearn.registry import Registry
from shardlearn.serve import TokenStore

from .conftest import train_model

SHARDLEARN = [sys.executable, "-c", "from shardlearn.cli import main; main()"]
STARTUP_TIMEOUT = 120


def test_token_create_prints_a_token_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    result = CliRunner().invoke(
        app, ["serve", "token", "create", "--token-file", str(token_file), "--name", "ci"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert token.startswith("sl_")
    assert token not in token_file.read_text()
    assert TokenStore(token_file).verify(token)
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"


def test_serve_without_tokens_refuses_to_start_with_advice(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.register(train_model(200, seed=0, tmp=tmp_path), "loans")
    result = subprocess.run(
        [*SHARDLEARN, "serve", "--registry", str(registry.root)],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    assert result.returncode == 1
    assert "token create" in result.stderr


def test_serve_an_empty_registry_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*SHARDLEARN, "serve", "--registry", str(tmp_path / "nothing"), "--no-auth"],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    assert result.returncode == 1
    assert "no models" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    registry.register(train_model(200, seed=0, tmp=tmp_path), "loans")
    port = _free_port()
    process = subprocess.Popen(
        [*SHARDLEARN, "serve", "--registry", str(registry.root), "--port", str(port), "--no-auth"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    try:
        seen = []
        while not any("Uvicorn running on" in line for line in seen):
            seen.append(lines.get(timeout=STARTUP_TIMEOUT))
        assert any("authentication is OFF" in line for line in seen)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["name"] for m in models] == ["loans"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=STARTUP_TIMEOUT) == 0


def test_serve_with_two_workers_authenticates_logs_access_and_hot_reloads(
    tmp_path: Path,
) -> None:
    # The benchmark's configuration: one process per core. Every worker must read the token
    # file, write the access log (without payloads) and pick up a newly promoted version.
    registry = Registry(tmp_path / "models")
    first = registry.register(train_model(200, seed=0, tmp=tmp_path), "loans")
    registry.promote("loans", first.version, "production")
    token = TokenStore(registry.root / "tokens").create("tests")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1/models/loans/predict"
    record = {"income": 48_213.0, "debt_ratio": 0.25, "region": "atlantis"}
    process = subprocess.Popen(
        [*SHARDLEARN, "serve", "--registry", str(registry.root), "--port", str(port),
         "--workers", "2", "--reload-interval", "0.2"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    seen: list[str] = []

    def wait_for_line(text: str, times: int = 1) -> None:
        while sum(text in line for line in seen) < times:
            seen.append(lines.get(timeout=STARTUP_TIMEOUT))

    def version() -> int:
        # A new connection per request, so the two processes both get asked.
        response = httpx.post(
            url, json={"records": [record]}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text
        return response.json()["version"]

    try:
        wait_for_line("Application startup complete", times=2)  # once per worker
        assert version() == 1
        assert httpx.post(url, json={"records": [record]}).status_code == 401
        wait_for_line('"POST /v1/models/loans/predict" 200')
        access = [line for line in seen if "shardlearn.serve.access" in line]
        assert access and not any("atlantis" in line or token in line for line in access)

        second = registry.register(train_model(200, seed=1, tmp=tmp_path, C=0.1), "loans")
        registry.promote("loans", second.version, "production")
        answers: list[int] = []
        while answers[-10:] != [2] * 10 and len(answers) < 5000:
            answers.append(version())
        assert answers[-10:] == [2] * 10, f"still answering version 1 after {len(answers)}"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=STARTUP_TIMEOUT) == 0
