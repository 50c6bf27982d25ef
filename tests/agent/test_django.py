"""A Django ERP under ``manage.py runserver`` (with its autoreloader, stopped with
Ctrl-C) and under gunicorn: each request's trace arrives whole, and Django's
settings are untouched by the agent starting before them."""

from __future__ import annotations

import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tierscope.testing.apps import AppProcess, Outbound, check_whole_trace, fetch_trace, server_timing
from tierscope.testing.collector import CollectorProcess, free_port


@pytest.mark.parametrize("runner", ["runserver", "gunicorn"])
def test_each_request_arrives_whole(
    collector: CollectorProcess,
    run_app: Callable[..., AppProcess],
    outbound: Outbound,
    runner: str,
) -> None:
    port = free_port()
    if runner == "runserver":
        command = ["python", "manage.py", "runserver", f"127.0.0.1:{port}"]
    else:
        command = ["gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "djangoapp.wsgi"]
    app = run_app(
        command,
        collector,
        service="erp-django",
        port=port,
        env={
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
            "DJANGO_SETTINGS_MODULE": "djangoapp.settings",
            "APP_SLEEP": "0.05",
        },
    )

    def call(number: int) -> httpx.Response:
        return httpx.get(f"{app.url}/stock/{number}", headers={"Connection": "close"}, timeout=30)

    with ThreadPoolExecutor(4) as pool:  # concurrent, so that both gunicorn workers serve
        responses = list(pool.map(call, range(12)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert [r.json()["value"] for r in responses] == [n + 7 for n in range(12)]
    pids = {r.json()["pid"] for r in responses}
    assert len(pids) == (2 if runner == "gunicorn" else 1), pids  # runserver: one serving process
    if runner == "runserver":
        assert app.stop(signal.SIGINT, group=True) == 0, app.log()  # Ctrl-C in the terminal
    else:
        assert app.stop() == 0, app.log()

    for response in responses:
        trace_id, span_id = server_timing(response)
        spans = fetch_trace(collector, trace_id, spans=3)
        by_tier = check_whole_trace(spans, root_span_id=span_id, outbound_peer=outbound.peer)
        assert by_tier["app"][0]["name"] == "GET stock/<int:item_id>"
        assert "SELECT %s::int + ?" in [span["component"] for span in by_tier["db"]]
        assert by_tier["app"][0]["resource"]["process.pid"] == response.json()["pid"]
