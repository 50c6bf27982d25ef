"""A FastAPI ERP under uvicorn (``--workers 2``) and gunicorn's uvicorn workers (with
and without ``--preload``): every request's trace arrives whole from every worker,
an asyncio task's spans join the request, and FastAPI's own telemetry does not
double the server span."""

from __future__ import annotations

import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tierscope.testing.apps import AppProcess, Outbound, check_whole_trace, fetch_trace, server_timing
from tierscope.testing.collector import CollectorProcess, free_port

WORKER = "uvicorn.workers.UvicornWorker"
RUNNERS = {
    "uvicorn with two worker processes": ["uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port"],
    "gunicorn with two uvicorn workers": ["gunicorn", "-w", "2", "-k", WORKER, "-b"],
    "gunicorn with two uvicorn workers and --preload": [
        "gunicorn",
        "--preload",
        "-w",
        "2",
        "-k",
        WORKER,
        "-b",
    ],
}


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=RUNNERS.keys())
def test_every_request_of_every_worker_arrives_whole(
    collector: CollectorProcess,
    run_app: Callable[..., AppProcess],
    outbound: Outbound,
    runner: list[str],
) -> None:
    port = free_port()
    address = str(port) if runner[0] == "uvicorn" else f"127.0.0.1:{port}"
    app = run_app(
        [*runner, address, "fastapi_app:app"],
        collector,
        service="erp-fastapi",
        port=port,
        env={"APP_SLEEP": "0.05", "OTEL_BSP_SCHEDULE_DELAY": "60000"},
    )

    def call(number: int) -> httpx.Response:
        return httpx.get(f"{app.url}/orders/{number}", headers={"Connection": "close"}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(24)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert len({r.json()["pid"] for r in responses}) == 2, "both workers served requests"
    # uvicorn ends by re-raising SIGTERM after its graceful shutdown.
    assert app.stop() in (0, -signal.SIGTERM), app.log()

    for response in responses:
        trace_id, span_id = server_timing(response)
        spans = fetch_trace(collector, trace_id, spans=4)
        by_tier = check_whole_trace(spans, root_span_id=span_id, outbound_peer=outbound.peer)
        root = by_tier["app"][0]
        assert root["name"] == "GET /orders/{order_id}"
        assert root["resource"]["process.pid"] == response.json()["pid"]
        statements = sorted(span["component"] for span in by_tier["db"])
        # The asyncio task's query is in the request's trace too.
        assert statements == ["SELECT %s::int * ?", "SELECT %s::int - ?"], statements
        assert not [span for span in spans if span["scope"] == "fastapi"], (
            "FastAPI's native spans doubled ours"
        )


def test_a_plain_starlette_app_is_instrumented_once(
    collector: CollectorProcess, run_app: Callable[..., AppProcess], outbound: Outbound
) -> None:
    port = free_port()
    app = run_app(
        ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "starlette_app:app"],
        collector,
        service="erp-starlette",
        port=port,
    )
    response = httpx.get(f"{app.url}/quotes/12", timeout=30)
    assert response.status_code == 200
    trace_id, span_id = server_timing(response)
    spans = fetch_trace(collector, trace_id, spans=2)
    servers = [span for span in spans if span["kind"] == "server"]
    assert [span["span_id"] for span in servers] == [span_id]
    assert servers[0]["name"] == "GET /quotes/{quote_id:int}"
    (call,) = [span for span in spans if span["tier"] == "external" and span["kind"] == "client"]
    assert call["component"] == outbound.peer
