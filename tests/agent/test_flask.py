"""A Flask CRM under gunicorn (sync workers, with and without ``--preload``),
started with ``tierscope-agent run``: every request's trace arrives whole from
every worker, with tiers and parents, and its id is the one in Server-Timing;
nothing queued is lost when gunicorn stops gracefully."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tierscope.testing.apps import AppProcess, Outbound, check_whole_trace, fetch_trace, server_timing
from tierscope.testing.collector import CollectorProcess, free_port

HEADERS = {
    "Connection": "close",
    "User-Agent": "crm-browser/7.1",
    "Cookie": "session=Zq8cookie",
    "Authorization": "Bearer Zq8bearer",
    "X-Customer-Note": "Zq8custom",
}
RUNNERS = {
    "gunicorn with two sync workers": [],
    "gunicorn with two sync workers and --preload": ["--preload"],
}


@pytest.mark.parametrize("extra", RUNNERS.values(), ids=RUNNERS.keys())
def test_every_request_of_every_worker_arrives_whole(
    collector: CollectorProcess,
    run_app: Callable[..., AppProcess],
    outbound: Outbound,
    extra: list[str],
) -> None:
    port = free_port()
    app = run_app(
        [
            "gunicorn",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "20",
            *extra,
            "flask_app:app",
        ],
        collector,
        service="crm-flask",
        port=port,
        # Spans wait in the queue until shutdown: the flush at exit must deliver them.
        env={"APP_SLEEP": "0.05", "OTEL_BSP_SCHEDULE_DELAY": "60000"},
    )

    def call(number: int) -> httpx.Response:
        return httpx.get(f"{app.url}/invoices/{number}", headers=HEADERS, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(24)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    pids = {r.json()["pid"] for r in responses}
    assert len(pids) == 2, "both workers served requests"
    assert app.stop() == 0, app.log()

    for response in responses:
        trace_id, span_id = server_timing(response)
        spans = fetch_trace(collector, trace_id, spans=3)
        by_tier = check_whole_trace(spans, root_span_id=span_id, outbound_peer=outbound.peer)
        root = by_tier["app"][0]
        assert root["name"] == "GET /invoices/<int:invoice_id>"
        assert root["service"] == "crm-flask"
        assert root["resource"]["process.pid"] == response.json()["pid"]
        assert by_tier["db"][0]["attributes"]["db.system"] == "postgresql"
        # Headers: of those sent, only User-Agent and Host (the documented exceptions) leave.
        attributes = root["attributes"]
        assert "crm-browser/7.1" in {attributes.get("http.user_agent"), attributes.get("user_agent.original")}
        values = repr([span["attributes"] for span in spans]) + repr([span["name"] for span in spans])
        assert "Zq8cookie" not in values
        assert "Zq8bearer" not in values
        assert "Zq8custom" not in values
