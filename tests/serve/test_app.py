"""The prediction service over real HTTP: predictions, auth, validation, limits, metrics."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from .conftest import Served, loan_table


def auth(served: Served) -> dict[str, str]:
    return {"Authorization": f"Bearer {served.token}"}


def rows(count: int, seed: int) -> list[dict]:
    table = loan_table(count, seed).drop_columns(["default"])
    return table.to_pylist()


def test_predictions_equal_the_model_on_the_same_rows(served: Served) -> None:
    records = rows(40, seed=7)
    response = httpx.post(
        f"{served.url}/v1/models/loans/predict", json={"records": records}, headers=auth(served)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    table = loan_table(40, seed=7).drop_columns(["default"])
    assert body["predictions"] == served.model.predict(table).tolist()
    np.testing.assert_allclose(body["probabilities"], served.model.predict_proba(table), rtol=1e-12)
    assert body["model"] == "loans" and body["version"] == 1
    assert body["classes"] == served.model.classes_.tolist()


def test_columns_and_data_form_gives_the_same_answer(served: Served) -> None:
    records = rows(5, seed=8)
    columns = list(records[0])
    data = [[record[c] for c in columns] for record in records]
    by_records = httpx.post(
        f"{served.url}/v1/models/loans/predict", json={"records": records}, headers=auth(served)
    ).json()
    by_columns = httpx.post(
        f"{served.url}/v1/models/loans/predict",
        json={"columns": columns, "data": data},
        headers=auth(served),
    ).json()
    assert by_records == by_columns


def test_concurrent_single_row_requests_are_each_answered_correctly(served: Served) -> None:
    records = rows(60, seed=9)
    expected = served.model.predict(loan_table(60, seed=9).drop_columns(["default"])).tolist()

    async def send_all() -> list[str]:
        async with httpx.AsyncClient(base_url=served.url, headers=auth(served)) as client:
            responses = await asyncio.gather(
                *(
                    client.post("/v1/models/loans/predict", json={"records": [record]})
                    for record in records
                )
            )
        return [r.json()["predictions"][0] for r in responses]

    assert asyncio.run(send_all()) == expected


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer sl_wrong"}, 403),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ({"Authorization": "Bearer"}, 401),
    ],
)
def test_requests_without_a_valid_token_are_refused(
    served: Served, headers: dict, status: int
) -> None:
    for method, path in [
        ("POST", "/v1/models/loans/predict"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/loans"),
        ("GET", "/metrics"),
    ]:
        response = httpx.request(
            method, f"{served.url}{path}", json={"records": rows(1, 1)}, headers=headers
        )
        assert response.status_code == status, (path, response.text)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_readiness_need_no_token(served: Served) -> None:
    assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{served.url}/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["loans"]


@pytest.mark.parametrize(
    ("mutate", "field", "row"),
    [
        (lambda r: r[2].pop("income"), "income", 2),
        (lambda r: r[1].update(income="lots"), "income", 1),
        (lambda r: r[0].update(region=3), "region", 0),
        (lambda r: r[3].update(debt_ratio=True), "debt_ratio", 3),
    ],
    ids=["missing-column", "text-in-numeric", "number-in-categorical", "bool-in-numeric"],
)
def test_bad_records_are_422_naming_field_and_row(
    served: Served, mutate: object, field: str, row: int
) -> None:
    records = rows(4, seed=3)
    mutate(records)  # type: ignore[operator]
    response = httpx.post(
        f"{served.url}/v1/models/loans/predict", json={"records": records}, headers=auth(served)
    )
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["row"] == row


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"records": []},
        {"records": "x"},
        {"records": [1, 2]},
        {"columns": ["income"], "data": [[1, 2]]},
        {"records": [{}], "columns": ["a"], "data": [[1]]},
        {"unknown": 1},
    ],
)
def test_malformed_bodies_are_422_not_500(served: Served, body: dict) -> None:
    response = httpx.post(f"{served.url}/v1/models/loans/predict", json=body, headers=auth(served))
    assert response.status_code == 422, response.text
    assert "error" in response.json()


def test_invalid_json_is_422(served: Served) -> None:
    response = httpx.post(
        f"{served.url}/v1/models/loans/predict",
        content=b'{"records": [',
        headers={**auth(served), "content-type": "application/json"},
    )
    assert response.status_code == 422


def test_unseen_category_is_predicted_as_other_not_an_error(served: Served) -> None:
    records = rows(2, seed=4)
    records[0]["region"] = "atlantis"
    records[1]["income"] = None
    response = httpx.post(
        f"{served.url}/v1/models/loans/predict", json={"records": records}, headers=auth(served)
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


def test_extra_columns_are_ignored_by_default(served: Served) -> None:
    records = rows(2, seed=5)
    records[0]["favourite_colour"] = "blue"
    response = httpx.post(
        f"{served.url}/v1/models/loans/predict", json={"records": records}, headers=auth(served)
    )
    assert response.status_code == 200


def test_too_many_rows_is_413(served: Served) -> None:
    records = rows(1, seed=6) * (served.config.max_rows + 1)
    response = httpx.post(
        f"{served.url}/v1/models/loans/predict", json={"records": records}, headers=auth(served)
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_too_large_body_is_413_even_when_streamed_without_length(served: Served) -> None:
    chunk = b" " * 50_000

    def body():
        yield b'{"records": ['
        for _ in range(10):
            yield chunk
        yield b"]}"

    response = httpx.post(
        f"{served.url}/v1/models/loans/predict",
        content=body(),
        headers={**auth(served), "content-type": "application/json"},
    )
    assert response.status_code == 413


def test_unknown_model_is_404_naming_the_served_ones(served: Served) -> None:
    response = httpx.post(
        f"{served.url}/v1/models/nope/predict", json={"records": rows(1, 1)}, headers=auth(served)
    )
    assert response.status_code == 404
    assert "loans" in response.json()["error"]


def test_model_listing_shows_schema_and_version(served: Served) -> None:
    listing = httpx.get(f"{served.url}/v1/models", headers=auth(served)).json()
    assert [m["name"] for m in listing] == ["loans"]
    detail = httpx.get(f"{served.url}/v1/models/loans", headers=auth(served)).json()
    names = [c["name"] for c in detail["input_schema"]["columns"]]
    assert sorted(names) == ["debt_ratio", "income", "region"]
    assert detail["stage"] == "production"


def test_metrics_count_requests_and_errors_per_model(served: Served) -> None:
    httpx.post(
        f"{served.url}/v1/models/loans/predict", json={"records": [{}]}, headers=auth(served)
    )
    text = httpx.get(f"{served.url}/metrics", headers=auth(served)).text
    assert 'shardlearn_requests_total{model="loans",status="200"}' in text
    assert 'shardlearn_errors_total{model="loans",reason="bad_input"}' in text
    assert "shardlearn_request_latency_seconds_bucket" in text


def test_openapi_document_describes_predict(served: Served) -> None:
    spec = httpx.get(f"{served.url}/openapi.json").json()
    assert "/v1/models/{name}/predict" in spec["paths"]


def _counter(text: str, sample: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(sample + " ")]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_the_fast_path_and_the_route_give_the_same_answers(served: Served) -> None:
    # "?proba=true" is answered by PredictFastPath, "?proba=1" (a spelling it leaves to
    # FastAPI's parser) by the route: both must give byte-identical bodies and headers.
    url, records = f"{served.url}/v1/models/loans/predict", rows(3, seed=11)
    fast = httpx.post(f"{url}?proba=true", json={"records": records}, headers=auth(served))
    routed = httpx.post(f"{url}?proba=1", json={"records": records}, headers=auth(served))
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert fast.headers["content-type"] == routed.headers["content-type"]
    quiet = httpx.post(f"{url}?proba=false", json={"records": records}, headers=auth(served))
    assert quiet.json()["probabilities"] is None
    assert quiet.json()["predictions"] == fast.json()["predictions"]


def test_a_bad_request_is_counted_once_and_answered_by_the_route(served: Served) -> None:
    sample = 'shardlearn_errors_total{model="loans",reason="bad_input"}'
    before = _counter(httpx.get(f"{served.url}/metrics", headers=auth(served)).text, sample)
    bad = [{**rows(1, seed=12)[0], "income": "lots"}]
    response = httpx.post(
        f"{served.url}/v1/models/loans/predict", json={"records": bad}, headers=auth(served)
    )
    assert response.status_code == 422 and "income" in response.text
    after = _counter(httpx.get(f"{served.url}/metrics", headers=auth(served)).text, sample)
    assert after == before + 1
