"""Hot reload: a newly promoted version is served without a restart, with no failed request."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from shardlearn.registry import Registry
from shardlearn.serve import ServeConfig, TokenStore

from .conftest import RunningServer, loan_table, train_model

WARM_UP_REQUESTS = 20
TIMEOUT_SECONDS = 60


def test_promoted_version_is_served_while_requests_run(tmp_path: Path) -> None:
    first = train_model(400, seed=1, tmp=tmp_path, C=1.0)
    second = train_model(400, seed=2, tmp=tmp_path, C=0.001)
    registry = Registry(tmp_path / "models")
    registry.promote("loans", registry.register(first, "loans").version, "production")
    token = TokenStore(tmp_path / "tokens").create()
    config = ServeConfig(
        registry=registry.root, token_file=tmp_path / "tokens", reload_interval=0.05
    )
    table = loan_table(30, seed=3).drop_columns(["default"])
    records = table.to_pylist()
    answers: list[tuple[int, int, list]] = []
    warmed, switched, stop = threading.Event(), threading.Event(), threading.Event()

    def keep_predicting(url: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            while not stop.is_set():
                response = client.post("/v1/models/loans/predict", json={"records": records})
                body = response.json()
                version = body.get("version")
                answers.append((response.status_code, version, body.get("probabilities")))
                if len(answers) >= WARM_UP_REQUESTS:
                    warmed.set()
                if version == 2:
                    switched.set()

    with RunningServer(config) as server:
        client = threading.Thread(target=keep_predicting, args=(server.url,))
        client.start()
        try:
            assert warmed.wait(TIMEOUT_SECONDS)
            registry.promote("loans", registry.register(second, "loans").version, "production")
            assert switched.wait(TIMEOUT_SECONDS), "version 2 was never served"
        finally:
            stop.set()
            client.join(TIMEOUT_SECONDS)

    assert all(status == 200 for status, _, _ in answers)
    versions = [version for _, version, _ in answers]
    assert versions == sorted(versions), "a request went back to the old version"
    assert versions[0] == 1 and versions[-1] == 2
    expected = {1: first.predict_proba(table).tolist(), 2: second.predict_proba(table).tolist()}
    for _, version, proba in answers:
        assert proba == expected[version]


def test_a_server_started_before_any_promotion_follows_production_once_there_is_one(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "models")
    first = registry.register(train_model(300, seed=1, tmp=tmp_path), "loans")
    # Reloads are triggered by the test (host.refresh, what the reload loop calls), so each
    # step is checked right after its reload.
    config = ServeConfig(registry=registry.root, auth=False, reload_interval=0)

    with RunningServer(config) as server, httpx.Client(base_url=server.url) as client:

        def served() -> tuple[int, str | None, str]:
            info = client.get("/v1/models/loans").json()
            return info["version"], info["stage"], info["reference"]

        assert served() == (first.version, None, "loans")  # no production yet: the newest
        registry.promote("loans", first.version, "production")
        server.app.state.host.refresh()
        assert served() == (first.version, "production", "loans@production")

        second = registry.register(train_model(300, seed=2, tmp=tmp_path, C=0.01), "loans")
        server.app.state.host.refresh()
        assert served() == (first.version, "production", "loans@production")  # not the newest

        registry.promote("loans", second.version, "production")
        server.app.state.host.refresh()
        assert served() == (second.version, "production", "loans@production")
        prediction = client.post(
            "/v1/models/loans/predict", json={"records": loan_table(1, seed=3).to_pylist()}
        )
        assert prediction.json()["version"] == second.version
