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


def _whole_trace(collector: CollectorProcess, trace_id: str, scopes: set[str] = DB_SCOPES) -> list[dict]:
    """The job's spans, once a span of each database library in ``scopes`` is in (or 20 s passed)."""
    deadline = time.monotonic() + 20
    spans = fetch_trace(collector, trace_id, spans=len(scopes) + 1)
    while not _db_by_scope(spans).keys() >= scopes and time.monotonic() < deadline:
        time.sleep(0.3)
        spans = fetch_trace(collector, trace_id, spans=len(scopes) + 1)
    return spans


def _run_clients(run_app: Callable[..., AppProcess], collector: CollectorProcess, **env: str) -> str:
    """Run the clients program; the id of its job's trace."""
    program = run_app(["python", "clients.py"], collector, service="crm-clients", env=env)
    assert program.wait(60) == 0, program.log()
    (trace_id,) = [line.split()[1] for line in program.log().splitlines() if line.startswith("trace ")]
    return trace_id


def _via(external: list[dict]) -> list[str]:
    """Which library made each outbound call (the ``via`` query parameter)."""
    return sorted(
        (span["attributes"].get("url.full") or span["attributes"].get("http.url", "")).split("?via=")[1]
        for span in external
    )


def test_every_client_library_is_traced(
    collector: CollectorProcess, run_app: Callable[..., AppProcess], outbound: Outbound
) -> None:
    trace_id = _run_clients(run_app, collector)
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
    assert _via(external) == ["httpx", "requests", "urllib3"], external
    assert {span["component"] for span in external} == {outbound.peer}


def test_disabled_instrumentations_make_no_spans_and_the_others_still_do(
    collector: CollectorProcess, run_app: Callable[..., AppProcess]
) -> None:
    trace_id = _run_clients(run_app, collector, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="sqlite3, urllib3")
    spans = _whole_trace(collector, trace_id, DB_SCOPES - {"opentelemetry.instrumentation.sqlite3"})
    scopes = {span["scope"] for span in spans}
    assert "opentelemetry.instrumentation.sqlite3" not in scopes
    assert "opentelemetry.instrumentation.urllib3" not in scopes
    # requests runs on urllib3: its own span is still there, and only one per call.
    assert _via([span for span in spans if span["tier"] == "external"]) == ["httpx", "requests"]
    assert {"opentelemetry.instrumentation.sqlalchemy", "opentelemetry.instrumentation.psycopg"} <= scopes
