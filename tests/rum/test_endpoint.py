"""``POST /v1/rum`` against a running ``tierscope up``: the status-code contract,
CORS, the write-only key, limits, idempotency, sites, and tenant isolation."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.figures import Tally, tally

from .conftest import FAST, api, credentials, tierscope

ORIGIN = "https://erp.example.test"
BODY_TIMEOUT = 2


def beacon(**changes: Any) -> dict[str, Any]:
    """A valid beacon: one page load and one in-page request."""
    page_view = os.urandom(16).hex()
    now = time.time() * 1000
    body: dict[str, Any] = {
        "v": 1,
        "session": "s1",
        "user": "clerk-17",
        "items": [
            {
                "type": "page_load",
                "id": page_view,
                "start": now - 5000,
                "name": "/invoices/4711",
                "url": "https://erp.example.test/invoices/4711?token=secret",
                "status": 200,
                "timing": {"requestStart": 5, "responseStart": 105, "responseEnd": 125, "end": 600},
                "vitals": {"lcp": 480, "cls": 0.02, "ttfb": 105},
            },
            {
                "type": "request",
                "id": os.urandom(16).hex(),
                "page_view": page_view,
                "start": now - 3000,
                "name": "Post invoice",
                "url": "https://erp.example.test/api/invoices/4711/post",
                "method": "post",
                "status": 503,
                "traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01",
                "timing": {"requestStart": 1, "responseStart": 80, "responseEnd": 90, "end": 90},
            },
        ],
    }
    body.update(changes)
    return body


@pytest.fixture(scope="module")
def collector(collector_factory: Callable[..., CollectorProcess]) -> Iterator[CollectorProcess]:
    started = collector_factory(
        **{
            **FAST,
            "TIERSCOPE_RUM_JOIN_WAIT": "1s",
            "TIERSCOPE_RUM_RATE_PER_IP": "20",
            # Above the per-address rate (so one address alone never spends it), below two addresses'.
            "TIERSCOPE_RUM_RATE_PER_KEY": "25",
            "TIERSCOPE_BODY_TIMEOUT": f"{BODY_TIMEOUT}s",
        }
    )
    tierscope(started, "rum", "origins", ORIGIN)
    tierscope(started, "rum", "site", "127.0.0.0/8", "head-office")
    yield started
    started.stop()  # now, not at the end of the session: its store connections are needed by others


def send(
    collector: CollectorProcess,
    body: Any,
    *,
    key: str | None = "rum",
    origin: str | None = ORIGIN,
    content_type: str = "text/plain;charset=UTF-8",
    client: httpx.Client | None = None,
) -> httpx.Response:
    keys = credentials(collector)
    params = {"key": keys.get(f"{key}_key", keys.get("api_token") if key == "api" else key)} if key else {}
    headers = {"content-type": content_type}
    if origin:
        headers["origin"] = origin
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (client or httpx).post(f"{collector.url}/v1/rum", params=params, content=data, headers=headers)


def test_a_valid_beacon_is_stored_and_answered_with_cors_for_its_origin(collector: CollectorProcess) -> None:
    sent = beacon()
    response = send(collector, sent)
    assert response.status_code == 200, response.text
    assert response.json() == {"experiences": 2, "errors": 0}
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["vary"] == "Origin"
    page_view = sent["items"][0]["id"]
    stored = api(collector, f"/api/v1/experiences/{page_view}").json()
    assert stored["url"] == "https://erp.example.test/invoices/4711"  # the query (a token) is dropped
    assert stored["page"] == "/invoices/{id}"
    assert stored["site"] == "head-office"  # from the client IP's range
    assert stored["user"] != "clerk-17"
    assert stored["vitals"] == {"lcp": 480.0, "cls": 0.02, "ttfb": 105.0}
    untraced = wait_for_state(collector, page_view, "untraced")
    # No trace: browser after the response, server = waiting for the first byte, the rest network.
    assert untraced["tier_ms"] == {"browser": 475.0, "network": 25.0, "server": 100.0}
    request = api(collector, f"/api/v1/experiences/{sent['items'][1]['id']}").json()
    assert request["outcome"] == "error"  # a 503 answer
    assert request["method"] == "POST"


def summarized(dsn: str, trace_id: bytes) -> bool:
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute("SELECT 1 FROM trace_summaries WHERE trace_id = %s", (trace_id,)).fetchone()
            is not None
        )


def wait_for_state(collector: CollectorProcess, experience: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = api(collector, f"/api/v1/experiences/{experience}").json()
        if found["state"] == state:
            return dict(found)
        time.sleep(0.2)
    raise AssertionError(f"experience {experience} did not become {state}")


def test_a_beacon_sent_twice_is_stored_once_and_final_vitals_win(collector: CollectorProcess) -> None:
    sent = beacon(site="branch-b")
    final = json.loads(json.dumps(sent))
    final["items"][0].update(final=True, vitals={"lcp": 480, "cls": 0.3, "inp": 350})
    assert send(collector, final).status_code == 200
    assert send(collector, sent).status_code == 200  # the early one arrives last
    page_view = sent["items"][0]["id"]
    rows = api(collector, "/api/v1/experiences", site="branch-b", **{"from": "1h"}).json()["experiences"]
    assert [e["id"] for e in rows].count(page_view) == 1
    stored = api(collector, f"/api/v1/experiences/{page_view}").json()
    assert stored["vitals"] == {"lcp": 480.0, "cls": 0.3, "inp": 350.0, "ttfb": 105.0}
    assert stored["site"] == "branch-b"  # the page's own site wins over the IP range


def _too_old() -> dict[str, Any]:
    body = beacon()
    body["items"][0]["start"] = (time.time() - 10 * 86400) * 1000
    return body


def _bad_field() -> dict[str, Any]:
    body = beacon()
    body["items"][1]["timing"]["responseEnd"] = "soon"
    return body


REFUSALS: dict[str, tuple[dict[str, Any], int, str]] = {
    "a beacon without a key is 401": ({"key": None}, 401, "missing key"),
    "a malformed key is 401": ({"key": "tsr_short"}, 401, "malformed key"),
    "the ingest key cannot send beacons (403)": ({"key": "ingest"}, 403, "ingest key cannot be used"),
    "an API token cannot send beacons (403)": ({"key": "api"}, 403, "api key cannot be used"),
    "a beacon without an Origin is 403": ({"origin": None}, 403, "no Origin header"),
    "an origin not on the key's allow-list is 403": ({"origin": "https://evil.test"}, 403, "is not allowed"),
    "a Content-Type other than text/plain or JSON is 415": (
        {"content_type": "application/xml"},
        415,
        "unsupported Content-Type",
    ),
    "a body that is not JSON is 400": ({"body": b"{not json"}, 400, "not JSON"),
    "a wrong field is 400 naming it": ({"body": _bad_field()}, 400, "items[1].timing.responseEnd"),
    "an unknown field is 400 naming it": ({"body": beacon(colour="red")}, 400, "colour"),
    "an unknown item type is 400": ({"body": beacon(items=[{"type": "spy"}])}, 400, "items[0]"),
    "a start ten days ago is 400": ({"body": _too_old()}, 400, "items[0].start"),
    "a beacon over 64 KiB is 413": ({"body": b"x" * (64 * 1024 + 1)}, 413, "over the limit"),
}


def t15() -> Tally:
    return tally("T-15").describe(
        "allowed and other origins, preflight, sendBeacon text/plain, bad beacons, a flood from one "
        "address, a key past its rate from two addresses, a body over 64 KiB, a body that trickles in, "
        "an API token used as a RUM key, the RUM key on the read API",
        "CORS headers only for allowed origins; 429 with Retry-After past the per-address and per-key "
        "limits while another address and another key get through; 413; 403; a trickling body 408 "
        "(with its CORS headers) and its connection closed at TIERSCOPE_BODY_TIMEOUT",
    )


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_refusals(collector: CollectorProcess, case: str) -> None:
    given, status, message = REFUSALS[case]
    body = given.get("body", beacon())
    options = {k: v for k, v in given.items() if k != "body"}
    response = send(collector, body, **options)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    if status == 403 and "origin" in options:
        assert "access-control-allow-origin" not in response.headers  # the browser hides the answer
    t15().count_in("refusals", status)


def test_a_wrong_field_is_named_in_the_answer(collector: CollectorProcess) -> None:
    response = send(collector, _bad_field())
    assert response.json()["field"] == "items[1].timing.responseEnd"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [(ORIGIN, True), ("https://evil.test", False)],
    ids=["a preflight from an allowed origin gets CORS headers", "a preflight from another origin is 403"],
)
def test_preflight(collector: CollectorProcess, origin: str, allowed: bool) -> None:
    response = httpx.options(
        f"{collector.url}/v1/rum",
        params={"key": credentials(collector)["rum_key"]},
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    if allowed:
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == origin
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "content-type" in response.headers["access-control-allow-headers"]
    else:
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers
    t15().count_in("preflights", "with CORS" if allowed else "refused 403")


def test_the_rum_key_is_write_only(collector: CollectorProcess) -> None:
    rum_key = credentials(collector)["rum_key"]
    assert api(collector, "/api/v1/experiences", token=rum_key).status_code == 403
    assert api(collector, "/api/v1/traces", token=rum_key).status_code == 403
    spans = httpx.post(
        f"{collector.url}/v1/traces",
        content=b"",
        headers={"Authorization": f"Bearer {rum_key}", "content-type": "application/x-protobuf"},
    )
    assert spans.status_code == 403
    t15().count_in("refusals", 403, 3)


def test_a_beacon_body_that_trickles_in_gets_408_and_its_connection_is_closed(
    collector: CollectorProcess,
) -> None:
    """A page (or an attacker with the public RUM key) that never finishes
    sending its beacon is cut off at TIERSCOPE_BODY_TIMEOUT (2 s here)."""
    key = credentials(collector)["rum_key"]
    data = json.dumps(beacon()).encode()
    head = (
        f"POST /v1/rum?key={key} HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    host, port = collector.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + data[:10])
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    head_out, _, body_out = answer.partition(b"\r\n\r\n")
    assert head_out.startswith(b"HTTP/1.1 408"), answer
    assert f"access-control-allow-origin: {ORIGIN}".encode() in head_out.lower()
    detail = json.loads(body_out)["detail"]
    assert detail.startswith(f"the request body did not arrive in full within {BODY_TIMEOUT} s"), detail
    t15().count(trickling_bodies_answered_408=1)


def test_a_flood_from_one_address_gets_429_and_others_still_get_through(collector: CollectorProcess) -> None:
    """The limit is 20 beacons/s per address (bursts of 40) in this collector.

    The flood goes on until 50 beacons were refused (at most 600 sent): how many
    get through first depends on how fast a loaded machine sends them, which
    the bound on the accepted ones takes from the time the flood took."""
    statuses = []
    began = time.monotonic()
    with httpx.Client() as flooding:
        while statuses.count(429) < 50 and len(statuses) < 600:
            response = send(collector, beacon(), client=flooding)
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                assert response.headers.get("access-control-allow-origin") is None  # refused before the key
    elapsed = time.monotonic() - began
    assert set(statuses) == {200, 429}, statuses
    refused = statuses.count(429)
    assert refused == 50, f"only {refused} of {len(statuses)} refused in {elapsed:.1f} s"
    assert statuses[:30] == [200] * 30
    # The burst, then no more than the rate gave back meanwhile.
    assert statuses.count(200) <= 40 + 20 * elapsed + 1, (statuses.count(200), elapsed)
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=other) as elsewhere:
        assert send(collector, beacon(), client=elsewhere).status_code == 200
    t15().note(
        flood_from_one_address=len(statuses),
        flood_accepted=statuses.count(200),
        flood_429=statuses.count(429),
        flood_s=round(elapsed, 1),
        other_address_served=1,
    )


def test_a_key_past_its_rate_gets_429_from_every_address_while_another_key_gets_through(
    collector: CollectorProcess,
) -> None:
    """The key may send 25 beacons/s (bursts of 50) here, each address 20/s (bursts
    of 40): two addresses taking turns spend the key's rate before their own."""
    time.sleep(2.0)  # full buckets again after the flood above, for the key and for 127.0.0.1
    addresses = ("127.0.0.1", "127.0.0.2")
    clients = {a: httpx.Client(transport=httpx.HTTPTransport(local_address=a)) for a in addresses}
    stored = 0
    refused: dict[str, httpx.Response] = {}
    began = time.monotonic()
    try:
        for turn in range(200):
            address = addresses[turn % 2]
            response = send(collector, beacon(), client=clients[address])
            if response.status_code == 200:
                stored += 1
                continue
            assert response.status_code == 429, response.text
            assert response.json()["detail"] == "too many beacons with this key; retry later"
            refused.setdefault(address, response)
            if len(refused) == len(addresses):
                break
        elapsed = time.monotonic() - began
        assert set(refused) == set(addresses), (stored, refused)
        # The key's whole burst went through, then no more than its rate gave back meanwhile.
        assert 50 <= stored <= 50 + 25 * elapsed + 1, (stored, elapsed)
        for response in refused.values():
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["access-control-allow-origin"] == ORIGIN  # the page may read when

        second = json.loads(tierscope(collector, "tenant", "create", "second-shop", "--json").stdout)
        tierscope(collector, "rum", "origins", "--tenant", "second-shop", ORIGIN)
        response = send(collector, beacon(), key=second["rum_key"], client=clients["127.0.0.1"])
        assert response.status_code == 200, response.text
        t15().note(key_rate_stored=stored, key_rate_s=round(elapsed, 1), other_key_served=1)
    finally:
        for client in clients.values():
            client.close()


def test_another_tenants_experience_is_not_found(collector: CollectorProcess) -> None:
    sent = beacon()
    page_view = sent["items"][0]["id"]
    time.sleep(1.0)  # the flood above may have used this address's tokens
    assert send(collector, sent).status_code == 200
    other = json.loads(tierscope(collector, "tenant", "create", "other", "--json").stdout)
    assert api(collector, f"/api/v1/experiences/{page_view}", token=other["api_token"]).status_code == 404
    listed = api(collector, "/api/v1/experiences", token=other["api_token"], **{"from": "1h"})
    assert listed.json()["experiences"] == []
    assert api(collector, f"/api/v1/experiences/{page_view}").status_code == 200
    assert api(collector, "/api/v1/experiences/not-an-id").status_code == 400


def test_the_script_is_served_small_and_gzipped(collector: CollectorProcess) -> None:
    plain = httpx.get(f"{collector.url}/rum.js", headers={"accept-encoding": "identity"})
    packed = httpx.get(f"{collector.url}/rum.js", headers={"accept-encoding": "gzip"})
    assert plain.status_code == packed.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) <= 6 * 1024
    assert packed.content == plain.content  # httpx inflated it


def test_figures_per_page_and_site_once_the_experiences_are_finished(collector: CollectorProcess) -> None:
    time.sleep(1.0)  # a fresh second of this address's rate
    for lcp in (1000.0, 2000.0, 3000.0, 5000.0):
        body = beacon(site="summary-site")
        body["items"][0]["vitals"] = {"lcp": lcp}
        body["items"][0]["name"] = "Summary page"
        assert send(collector, body).status_code == 200
    deadline = time.monotonic() + 30
    while True:
        answer = api(collector, "/api/v1/experiences/summary", site="summary-site", **{"from": "1h"}).json()
        pages = [g for g in answer["groups"] if g["bt"] == "Summary page"]
        if (pages and pages[0]["count"] == 4) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    (group,) = pages
    assert group["site"] == "summary-site"
    assert group["apdex"] == 1.0  # 600 ms each, T = 1 s
    assert group["vitals"]["lcp"]["p75"] == pytest.approx(3500.0, rel=0.01)  # from the rollups' histogram
    assert group["vitals"]["lcp"]["good"] == 0.5
    assert group["tier_ms"] == {"browser": 475.0, "network": 25.0, "server": 100.0}
    assert answer["thresholds"]["inp"] == {"good": 200.0, "poor": 500.0}


def test_a_beacon_arriving_after_its_trace_was_processed_is_joined(collector: CollectorProcess) -> None:
    """The trace first this time (the browser tests show the beacon first)."""
    trace_id = os.urandom(16)
    root = otlp.span(
        "POST /api/invoices/{id}/post",
        trace_id=trace_id,
        start_ns=time.time_ns() - 3 * 10**9,
        duration_ms=60,
        attributes={"http.request.method": "POST", "http.route": "/api/invoices/{id}/post"},
    )
    query = otlp.span(
        "SELECT",
        kind=Span.SPAN_KIND_CLIENT,
        trace_id=trace_id,
        parent_span_id=root.span_id,
        start_ns=root.start_time_unix_nano + 5 * 10**6,
        duration_ms=45,
        attributes={"db.system": "postgresql", "db.statement": "SELECT 1"},
    )
    body = otlp.request([root, query], service="erp-web").SerializeToString()
    assert otlp.post(collector.url, credentials(collector)["ingest_key"], body).status_code == 200
    dsn = collector.database_url
    assert dsn
    deadline = time.monotonic() + 30
    while not summarized(dsn, trace_id):
        assert time.monotonic() < deadline, "the trace was not processed"
        time.sleep(0.2)

    time.sleep(1.0)  # a fresh second of this address's rate
    sent = beacon()
    sent["items"][1]["traceparent"] = f"00-{trace_id.hex()}-{os.urandom(8).hex()}-01"
    sent["items"][1]["status"] = 200
    assert send(collector, sent).status_code == 200
    joined = wait_for_state(collector, sent["items"][1]["id"], "joined")
    assert joined["trace_id"] == trace_id.hex()
    assert joined["bt"] == "POST /api/invoices/{id}/post"
    assert joined["tier_ms"] == {"browser": 0.0, "network": 30.0, "app": 15.0, "db": 45.0}
