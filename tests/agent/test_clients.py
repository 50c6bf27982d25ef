"""Coverage of the client libraries: each one's calls become spans of the right tier,
made by that library's own instrumentation (its scope), in the trace they were
made in — SQLAlchemy (over psycopg 3), psycopg 3, psycopg2, sqlite3 (db);
requests, httpx, urllib3 (external, one span per call, not one per layer)."""

from __future__ import annotations

import time
from collections.abc import Callable

from tierscope.testing.apps import AppProcess, Outbound, fetch_trace
from tierscope.testing.collector import CollectorProcess

DB_SCOPES = {
    f"opentelemetry.instrumentation.{name}" for name in ("sqlalchemy", "psycopg", "psycopg2", "sqlite3")
}


def _db_by_scope(spans: list[dict]) -> dict[str, set[str]]:
    """{instrumentation scope: components of its db spans}."""
    by_scope: dict[str, set[str]] = {}
    for span in spans:
        if span["tier"] == "db":
            by_scope.setdefault(span["scope"], set()).add(span["component"])
    return by_scope


def _whole_trace(collector: CollectorProcess, trace_id: str) -> list[dict]:
    """The job's spans, once a span of every database library is in (or 20 s passed)."""
    deadline = time.monotonic() + 20
    spans = fetch_trace(collector, trace_id, spans=9)
    while not _db_by_scope(spans).keys() >= DB_SCOPES and time.monotonic() < deadline:
        time.sleep(0.3)
        spans = fetch_trace(collector, trace_id, spans=9)
    return spans


def test_every_client_library_is_traced(
    collector: CollectorProcess, run_app: Callable[..., AppProcess], outbound: Outbound
) -> None:
    program = run_app(["python", "clients.py"], collector, service="crm-clients")
    assert program.wait(60) == 0, program.log()
    (trace_id,) = [line.split()[1] for line in program.log().splitlines() if line.startswith("trace ")]
    spans = _whole_trace(collector, trace_id)
    (job,) = [span for span in spans if span["parent_span_id"] is None]
    assert job["name"] == "sync_clients"
    assert job["tier"] == "platform"

    # Each library's own instrumentation made its span, literals scrubbed (SQLAlchemy's
    # query shows again in the span of psycopg, the driver below it).
    db_by_scope = _db_by_scope(spans)
    assert "SELECT ? + ?" in db_by_scope["opentelemetry.instrumentation.sqlalchemy"], db_by_scope
    assert {"SELECT ? + ?", "SELECT ?"} <= db_by_scope["opentelemetry.instrumentation.psycopg"]
    assert db_by_scope["opentelemetry.instrumentation.psycopg2"] == {"SELECT ?, ?"}
    assert db_by_scope["opentelemetry.instrumentation.sqlite3"] == {"SELECT ?"}

    external = [span for span in spans if span["tier"] == "external"]
    queries = sorted(
        (span["attributes"].get("url.full") or span["attributes"].get("http.url", "")).split("?via=")[1]
        for span in external
    )
    assert queries == ["httpx", "requests", "urllib3"], external
    assert {span["component"] for span in external} == {outbound.peer}
