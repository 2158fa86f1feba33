"""schemathesis against the live server's own /openapi.json: no request yields a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from .conftest import Served

# Bounded for CI: examples per operation, derandomized so a failure reproduces.
EXAMPLES_PER_OPERATION = 25


def test_no_generated_request_is_a_server_error(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/models/{name}/predict", "/v1/models"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def never_a_server_error(case: schemathesis.Case) -> None:
            # With the token (to reach the handlers) and as generated (to probe auth itself).
            for headers in ({"Authorization": f"Bearer {served.token}"}, None):
                response = case.call(headers=headers)
                case.validate_response(response, checks=[not_a_server_error])

        never_a_server_error()
