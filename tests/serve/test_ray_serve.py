"""``shardlearn serve --engine ray``: the app in 2 Ray Serve replicas on a real local Ray cluster.

ONE deployment for the module: the real CLI in a child process, connected to the session's Ray
cluster (``ray_cluster``: ``ray.init(num_cpus=2)``) by its address, so this process can find
and kill a replica's actor. Ray and Ray Serve take tens of seconds to start on 2 shared cores,
hence few tests on one deployment; the last one stops it and checks that nothing is left.

The served versions are signed and encrypted with keys set only in the CLI's environment (the
cluster was started without them): a replica serves them only if the keys reached it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from .conftest import loan_table, train_model

pytest.importorskip("ray.serve")

from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE  # noqa: E402

from shardlearn.exceptions import ShardlearnError  # noqa: E402
from shardlearn.registry import Registry, crypto  # noqa: E402
from shardlearn.serve import ServeConfig, TokenStore  # noqa: E402
from shardlearn.serve.ray_serve import REPLICA_HEADER, RayServe  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

SHARDLEARN = [sys.executable, "-c", "from shardlearn.cli import main; main()"]
ROWS = loan_table(5, seed=3).drop_columns(["default"])
#: How long to keep sending requests while waiting for something to show in the answers (a
#: replica seen, a promotion followed, a replacement started): a guard against a hang only.
PATIENCE_SECONDS = 300
#: Signing and encryption keys of the served versions, set where the deployment is made.
KEYS = {crypto.SIGNING_KEY_ENV: "s" * 32, crypto.ENCRYPTION_KEY_ENV: crypto.generate_key()}


@dataclass
class Deployment:
    url: str
    token: str
    registry: Registry
    model: object
    process: subprocess.Popen
    log: Path

    def predict(self, client: httpx.Client, **headers: str) -> httpx.Response:
        body = {"records": ROWS.to_pylist()}
        auth = {"Authorization": f"Bearer {self.token}"} if "no_token" not in headers else {}
        return client.post("/v1/models/loans/predict", json=body, headers=auth)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_controller_running(ray) -> bool:
    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def register(registry: Registry, model: object) -> int:
    """Register ``model`` signed and encrypted with :data:`KEYS`; its version."""
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in KEYS.items():
            patch.setenv(variable, value)
        return registry.register(model, "loans").version


@pytest.fixture(scope="module")
def deployment(ray_cluster, tmp_path_factory) -> Iterator[Deployment]:
    ray = ray_cluster  # started first: the cluster's processes never saw KEYS
    root = tmp_path_factory.mktemp("ray-serve")
    model = train_model(600, seed=0, tmp=root)
    registry = Registry(root / "models")
    registry.promote("loans", register(registry, model), "production")
    token = TokenStore(root / "models" / "tokens").create("tests")
    log = root / "serve.log"
    port = free_port()
    address = ray.get_runtime_context().gcs_address
    command = [
        *SHARDLEARN, "serve", "--registry", str(registry.root), "--engine", f"ray:{address}",
        "--replicas", "2", "--replica-cpus", "0.5", "--port", str(port),
        "--reload-interval", "0.2",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1", **KEYS)
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
    try:
        # The CLI announces the server once Ray Serve reports every replica running.
        announced = next((line for line in process.stdout if line.startswith("Serving")), None)
        assert announced is not None, log.read_text()[-3000:]
        yield Deployment(f"http://127.0.0.1:{port}", token, registry, model, process, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if serve_controller_running(ray):  # only after a failed test: leave no Serve behind
            from ray import serve

            serve.shutdown()


def answers(deployment: Deployment, client: httpx.Client) -> Iterator[httpx.Response]:
    """Predictions of the same rows, one after the other, for :data:`PATIENCE_SECONDS`."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while time.monotonic() < deadline:
        yield deployment.predict(client)


def replicas_answering(
    deployment: Deployment, client: httpx.Client, until: object
) -> dict[str, int]:
    """Requests answered per replica, sent until ``until(seen)``; every one must be a 200."""
    seen: dict[str, int] = {}
    for response in answers(deployment, client):
        assert response.status_code == 200, response.text
        name = response.headers[REPLICA_HEADER]
        seen[name] = seen.get(name, 0) + 1
        if until(seen):
            return seen
    pytest.fail(f"after {PATIENCE_SECONDS} s only {seen} answered")


def test_requests_spread_over_both_replicas_and_equal_the_model(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=60) as client:
        seen = replicas_answering(deployment, client, until=lambda seen: len(seen) == 2)
        body = deployment.predict(client).json()
    assert len(seen) == 2 and all(name.startswith("SERVE_REPLICA::") for name in seen)
    np.testing.assert_allclose(
        body["probabilities"], deployment.model.predict_proba(ROWS), rtol=1e-12
    )
    assert body["version"] == 1


def test_tokens_and_validation_are_enforced_in_the_replicas(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=60) as client:
        missing = deployment.predict(client, no_token="1")
        wrong = client.post(
            "/v1/models/loans/predict",
            json={"records": ROWS.to_pylist()},
            headers={"Authorization": "Bearer not-a-token"},
        )
        metrics = client.get("/metrics")
        bad = client.post(
            "/v1/models/loans/predict",
            json={"records": [{"income": "lots", "debt_ratio": 0.1, "region": "north"}]},
            headers={"Authorization": f"Bearer {deployment.token}"},
        )
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers[REPLICA_HEADER]  # answered by a replica, not by Ray's proxy
    assert wrong.status_code == 403
    assert metrics.status_code == 401
    assert bad.status_code == 422 and bad.json()["field"] == "income"


def test_a_promotion_is_followed_by_every_replica(deployment: Deployment, tmp_path) -> None:
    registry = deployment.registry
    newer = train_model(600, seed=1, tmp=tmp_path, C=0.01)
    version = register(registry, newer)
    registry.promote("loans", version, "production")
    followed: set[str] = set()
    with httpx.Client(base_url=deployment.url, timeout=60) as client:
        for response in answers(deployment, client):
            if response.json()["version"] == version:
                followed.add(response.headers[REPLICA_HEADER])
                body = response.json()
            if len(followed) == 2:
                break
    assert len(followed) == 2, f"only {followed} serve version {version}"
    np.testing.assert_allclose(body["probabilities"], newer.predict_proba(ROWS), rtol=1e-12)


def test_a_killed_replica_is_replaced_and_requests_keep_succeeding(
    deployment: Deployment, ray_cluster
) -> None:
    ray = ray_cluster
    with httpx.Client(base_url=deployment.url, timeout=60) as client:
        before = replicas_answering(deployment, client, until=lambda seen: len(seen) == 2)
        victim = sorted(before)[0]
        pid = ray.get(
            ray.get_actor(victim, namespace="serve").__ray_call__.remote(lambda _: os.getpid())
        )
        os.kill(pid, signal.SIGKILL)  # the replica's process, for real
        # Every request after the kill succeeds (the survivor answers while the controller
        # replaces the dead replica) until a new replica answers too.
        after = replicas_answering(deployment, client, until=lambda seen: set(seen) - set(before))
    assert victim not in after
    assert len(set(after) - set(before)) == 1, after


@pytest.mark.parametrize(
    ("same_port", "message"),
    [(True, "already runs an application"), (False, "with its HTTP proxy on")],
    ids=["same-port", "other-port"],
)
def test_a_second_deployment_on_the_cluster_is_refused(
    deployment: Deployment, same_port: bool, message: str
) -> None:
    port = int(deployment.url.rsplit(":", 1)[1]) if same_port else free_port()
    second = RayServe(ServeConfig(registry=deployment.registry.root), replicas=1, port=port)
    with pytest.raises(ShardlearnError, match=message), second:
        pass
    with httpx.Client(base_url=deployment.url, timeout=60) as client:
        assert deployment.predict(client).status_code == 200  # the first one still serves


def test_stopping_the_cli_removes_the_deployment(deployment: Deployment, ray_cluster) -> None:
    deployment.process.send_signal(signal.SIGINT)
    assert deployment.process.wait(timeout=120) == 0, deployment.log.read_text()[-3000:]
    assert not serve_controller_running(ray_cluster)  # it started Ray Serve, so it stopped it
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{deployment.url}/healthz", timeout=5)
