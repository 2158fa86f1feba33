"""One 422 names every missing column and every wrong value of a row, not one per request.

Issue #22 finding 7: a client missing three columns had to send three requests to learn them.
Both the fast path (``?proba=false``) and the FastAPI route (``?proba=1``, which the fast path
leaves to the route) answer, over real HTTP, with the records and the columns form.
"""

from __future__ import annotations

import httpx
import pytest

from .conftest import Served, loan_table

#: The fast path answers ``proba=false``; ``proba=1`` is left to the FastAPI route.
ROUTES = ["proba=false", "proba=1"]


def _post(served: Served, query: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{served.url}/v1/models/loans/predict?{query}",
        json=body,
        headers={"Authorization": f"Bearer {served.token}"},
    )


def _records(count: int) -> list[dict]:
    return loan_table(count, seed=5).drop_columns(["default"]).to_pylist()


@pytest.mark.parametrize("query", ROUTES)
def test_a_record_missing_several_columns_gets_one_422_listing_them_all(
    served: Served, query: str
) -> None:
    records = _records(3)
    del records[1]["income"], records[1]["region"]
    response = _post(served, query, {"records": records})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["fields"] == ["income", "region"]
    assert (problem["field"], problem["row"]) == ("income", 1)
    assert "'income'" in problem["error"] and "'region'" in problem["error"]


@pytest.mark.parametrize("query", ROUTES)
def test_columns_missing_from_several_records_are_listed_together(
    served: Served, query: str
) -> None:
    records = _records(4)
    del records[2]["debt_ratio"], records[3]["income"]
    response = _post(served, query, {"records": records})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["fields"] == ["debt_ratio", "income"]
    assert (problem["field"], problem["row"]) == ("debt_ratio", 2)
    assert "2 rows" in problem["error"]


@pytest.mark.parametrize("query", ROUTES)
def test_the_columns_form_missing_several_columns_gets_one_422(served: Served, query: str) -> None:
    records = _records(2)
    columns = ["debt_ratio"]
    body = {"columns": columns, "data": [[r[c] for c in columns] for r in records]}
    response = _post(served, query, body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["fields"] == ["income", "region"]
    assert (problem["field"], problem["row"]) == ("income", None)


@pytest.mark.parametrize("query", ROUTES)
def test_every_wrong_value_of_a_row_is_in_one_422(served: Served, query: str) -> None:
    records = _records(3)
    records[2].update(income="lots", debt_ratio=True, region=7)
    records[1].update(region=8)  # another row's: not mixed into row 2's problem
    response = _post(served, query, {"records": records})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["fields"] == ["income", "debt_ratio", "region"]
    assert (problem["field"], problem["row"]) == ("income", 2)
    assert "'lots'" in problem["error"] and "True" in problem["error"]
    assert "got 7" in problem["error"] and "got 8" not in problem["error"]
