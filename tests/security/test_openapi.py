"""The OpenAPI document matches the routes, and schemathesis finds no server
error when it drives every operation from it (RELIABILITY.md T-22, the API half).

``TIERSCOPE_SCHEMATHESIS_EXAMPLES`` sets the examples per operation (15 here;
``make fuzz`` runs 300).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tierscope.collector.app import OPENAPI_URL
from tierscope.testing.figures import tally
from tierscope.testing.routes import collector_app, endpoints

from .conftest import Estate

EXAMPLES = int(os.environ.get("TIERSCOPE_SCHEMATHESIS_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_the_document_describes_every_route_and_nothing_else(estate: Estate) -> None:
    served = httpx.get(estate.collector.url + OPENAPI_URL, timeout=20)
    assert served.status_code == 200
    document = served.json()
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    routed = {(e.method, e.path) for e in endpoints(collector_app()) if e.in_schema}
    assert documented == routed, {"undocumented": routed - documented, "not routed": documented - routed}
    old_address = httpx.get(estate.collector.url + "/api/openapi.json", timeout=20).json()
    assert old_address == document
    for path, ops in document["paths"].items():
        for method, operation in ops.items():
            if path.startswith("/api/v1/"):
                assert operation["security"] == [{"apiToken": []}], (method, path)
                assert {"401", "403", "404"} <= operation["responses"].keys(), (method, path)
    assert document["paths"]["/v1/traces"]["post"]["requestBody"]["content"].keys() == {
        "application/x-protobuf",
        "application/json",
    }


def _send(client: httpx.Client, kwargs: dict[str, Any]) -> httpx.Response:
    """Send what schemathesis serialized for ``requests`` with httpx instead.

    The test environment's ``urllib3`` is urllib3-future (grafana-client pulls in
    niquests), whose pools schemathesis' own requests transport cannot inspect.
    """
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["json"] = kwargs["json"]
    elif isinstance(kwargs.get("data"), str | bytes):
        body["content"] = kwargs["data"]
    elif kwargs.get("data") is not None:
        body["data"] = kwargs["data"]
    return client.request(
        kwargs["method"],
        kwargs["url"],
        headers=dict(kwargs.get("headers") or {}),
        params=kwargs.get("params") or None,
        cookies=kwargs.get("cookies") or None,
        **body,
    )


def test_no_operation_answers_a_server_error(estate: Estate) -> None:
    # schemathesis' pytest plugin cannot load a schema from a fixture under this
    # pytest; each operation's Hypothesis strategy is driven directly instead.
    # An admin token reaches every operation's handler; a viewer or a bad key
    # stops at the door, which the role tests cover.
    schema = schemathesis.openapi.from_url(estate.collector.url + OPENAPI_URL)
    headers = {"Authorization": f"Bearer {estate.tenants['acme'].tokens['admin']}"}
    failures: dict[str, str] = {}
    sent: list[int] = []
    server_errors: list[str] = []
    with httpx.Client(timeout=30) as client:
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(
                max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
            )
            @given(case=operation.as_strategy())
            def drive(case: Any) -> None:
                kwargs = case.as_transport_kwargs(base_url=estate.collector.url, headers=headers)
                response = _send(client, kwargs)
                sent.append(response.status_code)
                if response.status_code >= 500:
                    server_errors.append(
                        f"{case.as_curl_command()} -> {response.status_code} {response.text[:300]}"
                    )
                case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=kwargs)

            try:
                drive()
            except (Exception, BaseExceptionGroup) as exc:  # all operations run; failures reported together
                failures[operation.label] = str(exc)[:1500]
    operations = len([e for e in endpoints(collector_app()) if e.in_schema])
    assert len(sent) >= operations * 2, "every operation was driven"
    assert not server_errors, "\n".join(server_errors)
    assert not failures, "\n\n".join(f"{label}: {problem}" for label, problem in failures.items())
    row = tally("T-22 API").describe(
        "schemathesis generates requests for every operation of the OpenAPI document (served at "
        "/api/v1/openapi.json, held equal to the routes) with an admin token; NUL characters in "
        "parameters and bodies",
        "no 5xx; status codes, content types and bodies as documented; a NUL character in any "
        "parameter or body is a 400",
    )
    row.note(operations=operations, examples_per_operation=EXAMPLES, requests=len(sent), server_errors=0)
    for status in sent:
        row.count_in("answers", status)


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("GET", "/api/v1/transactions", {"service": "crm\x00web"}, None),
        ("GET", "/api/v1/experiences", {"page": "/a\x00b"}, None),
        ("GET", "/api/v1/slos/no%00such", None, None),
        ("POST", "/api/v1/silences", None, {"matchers": {"service": "a\x00b"}, "comment": "\x00"}),
    ],
)
def test_a_nul_character_is_bad_input_not_a_server_error(
    estate: Estate, method: str, path: str, params: dict[str, str] | None, body: Any
) -> None:
    """The first schemathesis find: PostgreSQL text cannot hold NUL, and the
    driver's refusal surfaced as 500."""
    response = estate.call(method, path, estate.tenants["acme"].tokens["admin"], body=body, params=params)
    assert response.status_code in {400, 404, 422}, response.text
    assert "detail" in response.json()
    tally("T-22 API").count(nul_requests=1).count_in("nul_answers", response.status_code)
