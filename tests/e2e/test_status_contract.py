"""The OTLP/HTTP status-code contract (RELIABILITY.md T-09 to T-12), table-driven.

Each case sends one request to a running collector and checks the status, the
body (a ``google.rpc.Status`` in the request's encoding for errors; partial
success for spans refused one by one), what was stored, and that the server
still serves afterwards. Bad input never gives 500.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tierscope.store import tenants
from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess, PeakRss
from tierscope.testing.figures import Tally, tally

LIMIT = 16 * 1024 * 1024
_REGISTERED = error_details_pb2.BadRequest  # JSON Status details name this type
NOW = time.time_ns()
DAY = 86_400 * 10**9


@pytest.fixture(scope="module")
def server(collector_factory: Callable[..., CollectorProcess]) -> CollectorProcess:
    return collector_factory(TIERSCOPE_MAX_BODY_SIZE=str(LIMIT))


@pytest.fixture(scope="module")
def keys(server: CollectorProcess) -> dict[str, str]:
    """The default tenant's keys, plus one revoked and one expired ingest key."""

    async def make() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(server.database_url, autocommit=True) as conn:
            other = await tenants.create_tenant(conn, "revoked-tenant")
            await tenants.revoke(conn, "revoked-tenant", key=other.ingest_key)
            rotated = await tenants.create_tenant(conn, "rotated-tenant")
            await tenants.rotate(
                conn, "rotated-tenant", ("ingest",), grace=__import__("datetime").timedelta(0)
            )
        return {"revoked": str(other.ingest_key), "expired": str(rotated.ingest_key)}

    return {**server.credentials(), **asyncio.run(make())}


def stored(server: CollectorProcess) -> int:
    with psycopg.connect(server.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM spans").fetchone()
        assert row is not None
        return int(row[0])


def one_span(**kwargs: object) -> bytes:
    return otlp.request([otlp.span(**kwargs)]).SerializeToString()  # type: ignore[arg-type]


@dataclass
class Case:
    status: int
    body: bytes | Callable[[], bytes] = b""
    content_type: str = otlp.PROTOBUF
    key: str | None = "ingest_key"  # which credential, None for none
    headers: dict[str, str] = field(default_factory=dict)
    stored: int = 0
    rejected: int = 0
    message: str = ""  # a fragment expected in the error or partial-success message
    raw_key: str | None = None


CASES: dict[str, Case] = {
    "a valid protobuf request is stored": Case(200, one_span(), stored=1),
    "an empty protobuf request is valid and stores nothing": Case(200, b""),
    "a valid JSON request is stored": Case(
        200, otlp.to_json(otlp.request([otlp.span()])), content_type=otlp.JSON, stored=1
    ),
    "garbage is not protobuf": Case(400, b"\xff\xfe not a protobuf at all", message="protobuf"),
    "broken JSON is refused": Case(400, b'{"resourceSpans": [', content_type=otlp.JSON, message="JSON"),
    "a JSON array is not a request": Case(400, b"[1, 2]", content_type=otlp.JSON, message="object"),
    "a wrongly typed JSON field is refused": Case(
        400, b'{"resourceSpans": [{"scopeSpans": "nope"}]}', content_type=otlp.JSON
    ),
    "deeply nested JSON is bad data": Case(400, b"[" * 100_000, content_type=otlp.JSON, message="JSON"),
    "a JSON integer too long to read is bad data": Case(
        400, b'{"resourceSpans": ' + b"1" * 5000 + b"}", content_type=otlp.JSON, message="JSON"
    ),
    "text/plain is an unsupported media type": Case(415, one_span(), content_type="text/plain"),
    "a missing content type is unsupported": Case(415, one_span(), content_type=""),
    "brotli is an unsupported encoding": Case(
        415, one_span(), headers={"Content-Encoding": "br"}, message="Content-Encoding"
    ),
    "truncated gzip is bad data": Case(
        400,
        lambda: gzip.compress(one_span())[:-10],
        headers={"Content-Encoding": "gzip"},
        message="truncated",
    ),
    "gzip header on plain bytes is bad data": Case(
        400, one_span(), headers={"Content-Encoding": "gzip"}, message="gzip"
    ),
    "a body over the limit (Content-Length) is too large": Case(413, b"\x00" * (LIMIT + 1)),
    "a decompression bomb stops at the limit": Case(
        413, lambda: gzip.compress(bytes(64 << 20)) * 32, headers={"Content-Encoding": "gzip"}
    ),
    "no key is unauthenticated": Case(401, one_span(), key=None, message="missing key"),
    "a malformed key is unauthenticated": Case(401, one_span(), key=None, raw_key="Bearer hunter2"),
    "an unknown key is unauthenticated": Case(
        401, one_span(), key=None, raw_key="Bearer tsi_" + "A" * 43, message="unknown"
    ),
    "a basic-auth header is unauthenticated": Case(401, one_span(), key=None, raw_key="Basic dXNlcjpwYXNz"),
    "a revoked key is forbidden": Case(403, one_span(), key="revoked", message="revoked"),
    "a rotated key past its grace period is forbidden": Case(
        403, one_span(), key="expired", message="expired"
    ),
    "a RUM key cannot ingest traces": Case(403, one_span(), key="rum_key", message="rum key"),
    "an API token cannot ingest traces": Case(403, one_span(), key="api_token", message="api key"),
    "a 15-byte trace id is rejected alone": Case(
        200,
        lambda: otlp.request([otlp.span(trace_id=os.urandom(15)), otlp.span()]).SerializeToString(),
        stored=1,
        rejected=1,
        message="invalid_trace_id",
    ),
    "a 7-byte span id is rejected alone": Case(
        200,
        lambda: otlp.request([otlp.span(span_id=os.urandom(7)), otlp.span()]).SerializeToString(),
        stored=1,
        rejected=1,
        message="invalid_span_id",
    ),
    "an all-zero trace id is rejected": Case(
        200, lambda: one_span(trace_id=bytes(16)), rejected=1, message="invalid_trace_id"
    ),
    "a 3-byte parent id is rejected": Case(
        200, lambda: one_span(parent_span_id=b"abc"), rejected=1, message="invalid_parent_span_id"
    ),
    "a non-hex JSON id is rejected alone": Case(
        200,
        lambda: json.dumps(
            {
                "resourceSpans": [
                    {
                        "scopeSpans": [
                            {
                                "spans": [
                                    {
                                        "traceId": "zz" * 16,
                                        "spanId": "ab" * 8,
                                        "name": "x",
                                        "startTimeUnixNano": str(NOW),
                                        "endTimeUnixNano": str(NOW + 1000),
                                    },
                                    {
                                        "traceId": "12" * 16,
                                        "spanId": "ab" * 8,
                                        "name": "y",
                                        "startTimeUnixNano": str(NOW),
                                        "endTimeUnixNano": str(NOW + 1000),
                                    },
                                ]
                            }
                        ]
                    }
                ]
            }
        ).encode(),
        content_type=otlp.JSON,
        stored=1,
        rejected=1,
        message="invalid_trace_id",
    ),
    "a span at the unix epoch is rejected": Case(
        200, lambda: one_span(start_ns=0), rejected=1, message="timestamp_out_of_range"
    ),
    "a span in 2262 is rejected": Case(
        200, lambda: one_span(start_ns=9_200_000_000 * 10**9), rejected=1, message="timestamp_out_of_range"
    ),
    "a span a year ahead is rejected": Case(
        200, lambda: one_span(start_ns=NOW + 365 * DAY), rejected=1, message="timestamp_out_of_range"
    ),
    "a span ending before it starts is rejected": Case(
        200, lambda: one_span(duration_ms=-5), rejected=1, message="end_before_start"
    ),
    "a span 2 days old is still accepted": Case(200, lambda: one_span(start_ns=NOW - 2 * DAY), stored=1),
}


# What each row of docs/reliability.md says; the figures come from the runs below.
def t09() -> Tally:
    return tally("T-09").describe(
        "valid, empty and garbage protobuf; broken, nested and wrongly typed JSON; wrong or missing "
        "Content-Type; brotli; truncated gzip; gzip header on plain bytes; no, malformed, unknown, "
        "basic-auth, revoked, rotated, RUM and API keys on ingest; unknown paths and methods",
        "exactly 200/400/401/403/404/405/413/415, errors as a google.rpc.Status in the request's "
        "encoding naming the problem, never 500, /healthz served after every request",
    )


def t10() -> Tally:
    return tally("T-10").describe(
        "valid spans beside spans with a 15-byte trace id, a 7-byte span id, a zero trace id, a 3-byte "
        "parent, a non-hex JSON id; attribute values of 6,000 bytes",
        "200 with rejected_spans = the bad ones and a message naming each reason; the good ones "
        "stored; long values cut at 2 KiB (whole characters) and counted",
    )


def t11() -> Tally:
    return (
        tally("T-11")
        .describe(
            "a body 1 byte over the 16 MiB limit by Content-Length; 96 MiB chunked; gzip bombs of 2 MB "
            "inflating to 2 GiB each (one among the status cases, three with the RSS sampled)",
            "413 without holding the body; peak RSS growth of the collector's process tree (sampled every "
            "10 ms) under 2 × the limit; /healthz served afterwards",
        )
        .note(limit_mib=LIMIT >> 20, rss_bound_mib=2 * LIMIT >> 20)
    )


def t12() -> Tally:
    return tally("T-12").describe(
        "spans at the epoch, in 2262, a year ahead, ending before they start, 2 days old; absurd query "
        "times; one service sending 10,000 traces, each with its own span name, route and SQL table; "
        "seven absurd start times beside a good span",
        "spans outside the window rejected one by one (partial success) and creating no partition; "
        "query times outside 1970-2262 are 400; names past max_per_service roll into _other and are "
        "counted; components past TIERSCOPE_TOP_COMPONENTS summed in _other; no call dropped",
    )


TIMES = ("timestamp_out_of_range", "end_before_start")


def _send(server: CollectorProcess, keys: dict[str, str], case: Case) -> httpx.Response:
    body = case.body() if callable(case.body) else case.body
    headers = dict(case.headers)
    if case.content_type:
        headers["Content-Type"] = case.content_type
    if case.key is not None:
        headers["Authorization"] = f"Bearer {keys[case.key]}"
    if case.raw_key is not None:
        headers["Authorization"] = case.raw_key
    return httpx.post(f"{server.url}/v1/traces", content=body, headers=headers, timeout=60)


def _status_of(response: httpx.Response) -> status_pb2.Status:
    if response.headers["content-type"].startswith("application/json"):
        return json_format.Parse(response.text, status_pb2.Status())
    return status_pb2.Status.FromString(response.content)


@pytest.mark.parametrize("name", list(CASES))
def test_status_contract(server: CollectorProcess, keys: dict[str, str], name: str) -> None:
    case = CASES[name]
    before = stored(server)
    response = _send(server, keys, case)
    assert response.status_code == case.status, response.content[:500]
    assert stored(server) - before == case.stored
    if case.status == 200:
        if response.headers["content-type"].startswith("application/json"):
            partial = response.json().get("partialSuccess", {})
            rejected = int(partial.get("rejectedSpans", 0))
            message = partial.get("errorMessage", "")
        else:
            reply = ExportTraceServiceResponse.FromString(response.content)
            rejected = reply.partial_success.rejected_spans
            message = reply.partial_success.error_message
        assert rejected == case.rejected
        assert case.message in message
    else:
        status = _status_of(response)
        assert status.message, "an error body says what went wrong"
        assert case.message in status.message
        if case.status == 400:
            assert status.code == code_pb2.INVALID_ARGUMENT
        if case.status == 401:
            assert status.code == code_pb2.UNAUTHENTICATED
            assert response.headers["www-authenticate"].startswith("Bearer")
        if case.status == 403:
            assert status.code == code_pb2.PERMISSION_DENIED
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    t09().count(requests=1, server_errors=int(response.status_code >= 500), healthz_served_after=1)
    t09().count_in("answers", response.status_code)
    if case.status == 413:
        t11().count(refused_413=1)
    elif case.message in TIMES or "2 days" in name:
        t12().count(time_cases=1, spans_rejected=case.rejected, spans_stored=case.stored)
    elif case.rejected:
        t10().count(requests=1, spans_rejected=case.rejected, good_spans_stored=case.stored)


def test_a_json_error_is_json_and_a_protobuf_error_is_protobuf(server: CollectorProcess) -> None:
    as_json = otlp.post(server.url, None, b"{}", content_type=otlp.JSON)
    assert as_json.status_code == 401
    assert as_json.headers["content-type"].startswith("application/json")
    assert json.loads(as_json.text)["message"]
    as_protobuf = otlp.post(server.url, None, b"", content_type=otlp.PROTOBUF)
    assert as_protobuf.headers["content-type"] == otlp.PROTOBUF
    assert status_pb2.Status.FromString(as_protobuf.content).code == code_pb2.UNAUTHENTICATED
    t09().count(requests=2).count_in("answers", 401, 2)


def test_a_bad_request_names_the_field(server: CollectorProcess, keys: dict[str, str]) -> None:
    response = otlp.post(server.url, keys["ingest_key"], b"\x0a\xff\xff", content_type=otlp.PROTOBUF)
    assert response.status_code == 400
    status = status_pb2.Status.FromString(response.content)
    assert status.details, "400 carries a google.rpc.BadRequest"
    assert status.details[0].type_url.endswith("google.rpc.BadRequest")
    t09().count(requests=1).count_in("answers", 400)


def test_an_oversized_chunked_body_is_refused_without_holding_it(
    server: CollectorProcess, keys: dict[str, str]
) -> None:
    """No Content-Length: the limit is applied while reading, and the body is not kept.

    Memory is the peak of the whole process tree while the request runs: the
    uvicorn worker, a child of ``tierscope up``, is the one that reads it."""
    answered = []

    def chunks() -> Iterator[bytes]:
        block = b"\x00" * (1 << 20)
        for _ in range(96):  # 96 MiB offered, 16 MiB allowed
            yield block

    with PeakRss(server) as memory:
        try:
            response = httpx.post(
                f"{server.url}/v1/traces",
                content=chunks(),
                headers={"Content-Type": otlp.PROTOBUF, "Authorization": f"Bearer {keys['ingest_key']}"},
                timeout=60,
            )
            answered.append(response.status_code)
        except httpx.HTTPError:
            pass  # the server may close the connection once it has answered
    assert answered in ([], [413])
    print(f"T-11 chunked 96 MiB, limit 16 MiB: peak RSS growth {memory.growth / 2**20:.1f} MiB")
    assert memory.growth < 2 * LIMIT, f"RSS grew by {memory.growth / 2**20:.1f} MiB at its peak"
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    t11().count(refused_413=len(answered), closed_before_answer=1 - len(answered))
    t11().peak(chunked_96_mib_rss_growth_mib=round(memory.growth / 2**20, 1))


def test_a_decompression_bomb_does_not_grow_memory(server: CollectorProcess, keys: dict[str, str]) -> None:
    bomb = gzip.compress(bytes(64 << 20)) * 32  # 2 MB that inflate to 2 GiB
    with PeakRss(server) as memory:
        for _ in range(3):
            response = otlp.post(
                server.url, keys["ingest_key"], bomb, headers={"Content-Encoding": "gzip"}, timeout=60
            )
            assert response.status_code == 413
    print(f"T-11 gzip bomb, 2 GiB inflated, limit 16 MiB: peak RSS growth {memory.growth / 2**20:.1f} MiB")
    assert memory.growth < 2 * LIMIT, f"RSS grew by {memory.growth / 2**20:.1f} MiB at its peak"
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    t11().count(refused_413=3).peak(bombs_rss_growth_mib=round(memory.growth / 2**20, 1))


def test_unknown_paths_and_methods(server: CollectorProcess) -> None:
    assert httpx.post(f"{server.url}/v1/tracez", content=b"").status_code == 404
    assert httpx.get(f"{server.url}/v1/traces").status_code == 405
    t09().count(requests=2).count_in("answers", 404).count_in("answers", 405)


def test_long_attribute_values_are_truncated_and_counted(
    server: CollectorProcess, keys: dict[str, str]
) -> None:
    long_value = "é" * 3000  # 6000 bytes of UTF-8
    span = otlp.span(attributes={"http.route": "/x", "note": long_value, "short": "ok"})
    response = otlp.post(server.url, keys["ingest_key"], otlp.request([span]).SerializeToString())
    assert response.status_code == 200
    reply = ExportTraceServiceResponse.FromString(response.content)
    assert reply.partial_success.rejected_spans == 0
    assert "1 attribute value(s) truncated to 2048 bytes" in reply.partial_success.error_message
    stored_span = otlp.get_trace(server.url, keys["api_token"], span.trace_id).json()["spans"][0]
    note = stored_span["attributes"]["note"]
    assert len(note.encode()) <= 2048
    assert long_value.startswith(note)
    assert len(note) == 1024  # whole characters only
    assert stored_span["attributes"]["short"] == "ok"
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "tierscope_attributes_truncated_total 1.0" in metrics
    t10().count(requests=1, values_truncated=1)


def test_odd_values_in_resources_are_stored_not_refused(
    server: CollectorProcess, keys: dict[str, str]
) -> None:
    """NaN and infinities (legal in OTLP doubles, not in JSON) and huge service
    names: the batch is stored, with the values made safe and the names cut."""
    import math as _math

    span = otlp.span()
    request = otlp.request([span], service="s" * 200_000)
    resource = request.resource_spans[0].resource
    for key, number in (("load", _math.nan), ("limit", _math.inf)):
        item = resource.attributes.add(key=key)
        item.value.double_value = number
    request.resource_spans[0].scope_spans[0].scope.name = "scope" * 100_000
    response = otlp.post(server.url, keys["ingest_key"], request.SerializeToString())
    assert response.status_code == 200, response.content[:300]
    stored_span = otlp.get_trace(server.url, keys["api_token"], span.trace_id).json()["spans"][0]
    assert stored_span["service"] == "s" * 256
    assert len(stored_span["scope"]) == 256
    assert stored_span["resource"]["load"] == "nan"
    assert stored_span["resource"]["limit"] == "inf"
    assert len(stored_span["resource"]["service.name"]) == 2048


@pytest.mark.parametrize(
    "since", ["1000000000d", "9" * 40 + "d", "0001-01-01T00:00:00+14:00", "inf", "nan", "1e30"]
)
def test_absurd_times_in_queries_are_bad_requests(
    server: CollectorProcess, keys: dict[str, str], since: str
) -> None:
    response = httpx.get(
        f"{server.url}/api/v1/traces",
        params={"since": since},
        headers={"Authorization": f"Bearer {keys['api_token']}"},
    )
    assert response.status_code == 400, response.text
    assert "time" in response.json()["detail"]
    t12().count(absurd_query_times_400=1)
