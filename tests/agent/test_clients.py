"""Coverage of the client libraries: each one's calls become spans of the right tier
in the trace they were made in — SQLAlchemy (over psycopg 3), psycopg 3, sqlite3
(db); requests, httpx, urllib3 (external, one span per call, not one per layer)."""

from __future__ import annotations

from collections.abc import Callable

from tierscope.testing.apps import AppProcess, Outbound, fetch_trace
from tierscope.testing.collector import CollectorProcess


def test_every_client_library_is_traced(
    collector: CollectorProcess, run_app: Callable[..., AppProcess], outbound: Outbound
) -> None:
    program = run_app(["python", "clients.py"], collector, service="crm-clients")
    assert program.wait(60) == 0, program.log()
    (trace_id,) = [line.split()[1] for line in program.log().splitlines() if line.startswith("trace ")]
    spans = fetch_trace(collector, trace_id, spans=8)
    (job,) = [span for span in spans if span["parent_span_id"] is None]
    assert job["name"] == "sync_clients"
    assert job["tier"] == "platform"

    db = {(span["attributes"].get("db.system"), span["component"]) for span in spans if span["tier"] == "db"}
    assert ("postgresql", "SELECT ? + ?") in db  # SQLAlchemy's span, literals scrubbed
    assert ("postgresql", "SELECT ?") in db  # psycopg 3
    assert ("sqlite", "SELECT ?") in db

    external = [span for span in spans if span["tier"] == "external"]
    queries = sorted(
        (span["attributes"].get("url.full") or span["attributes"].get("http.url", "")).split("?via=")[1]
        for span in external
    )
    assert queries == ["httpx", "requests", "urllib3"], external
    assert {span["component"] for span in external} == {outbound.peer}
