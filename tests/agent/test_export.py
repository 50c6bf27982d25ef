"""Export robustness: the collector black-holed, then answering 503, then back.

Between the agent and a real collector sits a small fault proxy on 127.0.0.1
that forwards, swallows requests without answering, or refuses them. The app's
latency with a broken collector is compared with its latency, measured in the
same test, with a working one.
"""

from __future__ import annotations

import gzip
import itertools
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tierscope.agent.encode import SpanEncoder
from tierscope.agent.export import OtlpHttpSender, parse_partial_success, parse_retry_after
from tierscope.agent.queue import ExportQueue
from tierscope.agent.stats import AgentStats
from tierscope.testing.apps import AppProcess, fetch_trace, recent_traces, server_timing
from tierscope.testing.collector import CollectorProcess, free_port


class FaultProxy:
    """Forwards ``POST /v1/traces`` to a collector, or fails on purpose.

    Modes: ``pass``; ``blackhole`` (reads the request, never answers while the mode
    lasts); an HTTP status such as ``503``, ``429`` or ``401`` (answered with
    ``Retry-After: 1``); ``503 bare`` (a 503 without ``Retry-After``). Every
    request is recorded with its time and the mode that answered it, and its
    body (as sent: gzip-compressed protobuf) is kept.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.mode = "pass"
        self.requests: list[tuple[float, str]] = []
        self.bodies: list[bytes] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = proxy.mode
                proxy.requests.append((time.monotonic(), mode))
                proxy.bodies.append(body)
                if mode == "blackhole":
                    deadline = time.monotonic() + 30
                    while proxy.mode == "blackhole" and time.monotonic() < deadline:
                        time.sleep(0.05)
                    self.close_connection = True
                    return
                if mode == "503 bare":
                    self._answer(503, b"", {})
                    return
                if mode.isdigit():
                    self._answer(int(mode), b"", {"Retry-After": "1"})
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                response = httpx.post(proxy.target + self.path, content=body, headers=headers, timeout=10)
                self._answer(response.status_code, response.content, {})

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.mode = "pass"
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(collector: CollectorProcess) -> Iterator[FaultProxy]:
    fault = FaultProxy(collector.url)
    yield fault
    fault.close()


def _latencies(url: str, count: int) -> list[float]:
    times = []
    with httpx.Client(timeout=30) as client:
        for number in range(count):
            started = time.perf_counter()
            assert client.get(f"{url}/invoices/{number}").status_code == 200
            times.append(time.perf_counter() - started)
    return times


def _p90(times: list[float]) -> float:
    return statistics.quantiles(times, n=10)[-1]


def test_a_broken_collector_does_not_slow_the_app_and_losses_are_reported(
    collector: CollectorProcess, run_app: Callable[..., AppProcess], proxy: FaultProxy
) -> None:
    port = free_port()
    app = run_app(
        ["gunicorn", "-w", "1", "--threads", "1", "-b", f"127.0.0.1:{port}", "flask_app:app"],
        None,
        service="crm-faults",
        port=port,
        env={
            "TIERSCOPE_ENDPOINT": proxy.url,
            "TIERSCOPE_INGEST_KEY": collector.credentials()["ingest_key"],
            "OTEL_BSP_MAX_QUEUE_SIZE": "30",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
            "OTEL_BSP_EXPORT_TIMEOUT": "2500",
        },
    )
    _latencies(app.url, 10)  # warm up: connections, imports
    baseline = _latencies(app.url, 40)

    proxy.mode = "blackhole"
    blackholed = _latencies(app.url, 40)
    time.sleep(3)  # longer than a batch's deadline: a batch is given up
    proxy.mode = "503"
    refused = _latencies(app.url, 40)
    time.sleep(3)

    # Generous bounds for a shared machine, yet far below what one blocked export
    # (a 1 s request timeout, retried) would add to a request.
    for name, times in (("black-holed", blackholed), ("503", refused)):
        assert statistics.median(times) <= statistics.median(baseline) * 1.5 + 0.010, (name, baseline, times)
        assert _p90(times) <= _p90(baseline) * 2 + 0.050, (name, baseline, times)
    assert {mode for _, mode in proxy.requests} >= {"blackhole", "503"}

    proxy.mode = "pass"
    time.sleep(3)  # the batch in flight runs out of deadline, and the queue drains
    response = httpx.get(f"{app.url}/invoices/7", timeout=30)
    trace_id, span_id = server_timing(response)
    spans = fetch_trace(collector, trace_id, spans=3)
    assert span_id in {span["span_id"] for span in spans}

    report = _report_span(collector, "crm-faults")
    attributes = report["attributes"]
    assert attributes["tierscope.agent.spans_dropped"] > 0, attributes  # 120 requests, a queue of 30
    assert attributes["tierscope.agent.spans_failed"] > 0, attributes  # batches given up
    assert report["attributes"]["tierscope.background"] is True  # not a user transaction


SIGTERM_CASES = {
    # Nothing sent before SIGTERM: the flush at exit sends the queue into the black hole.
    "spans still queued": "60000",
    # The batch is already in a request to the black hole, begun with a 30 s timeout.
    "a batch already in flight": "100",
}


@pytest.mark.parametrize("schedule_delay", SIGTERM_CASES.values(), ids=SIGTERM_CASES.keys())
def test_sigterm_flushes_within_the_shutdown_timeout_and_counts_what_it_could_not_send(
    run_app: Callable[..., AppProcess], proxy: FaultProxy, schedule_delay: str
) -> None:
    proxy.mode = "blackhole"
    app = run_app(
        ["python", "nightly.py"],
        None,
        service="erp-nightly",
        env={
            "TIERSCOPE_ENDPOINT": proxy.url,
            "TIERSCOPE_SHUTDOWN_TIMEOUT": "2",
            "OTEL_BSP_SCHEDULE_DELAY": schedule_delay,
            # Without the shutdown deadline the flush would wait for the black hole
            # for 30 s (one request) or 60 s (the batch).
            "OTEL_EXPORTER_OTLP_TIMEOUT": "30000",
            "OTEL_BSP_EXPORT_TIMEOUT": "60000",
        },
    )
    assert app.process is not None
    in_flight = schedule_delay == SIGTERM_CASES["a batch already in flight"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        "steps recorded" not in app.log() or (in_flight and not proxy.requests)
    ):
        assert app.process.poll() is None, app.log()
        time.sleep(0.1)
    assert len(proxy.requests) == (1 if in_flight else 0), app.log()

    started = time.monotonic()
    code = app.stop(signal.SIGTERM)  # the process has no handler: the agent's flushes
    elapsed = time.monotonic() - started
    log = app.log()
    assert code == -signal.SIGTERM, log  # it still ends by SIGTERM, as it would have
    assert elapsed < 2 + 4, (elapsed, log)  # the timeout, plus a margin for a loaded machine
    assert [mode for _, mode in proxy.requests] == ["blackhole"], log  # one try, cut off
    assert "0 spans dropped (queue full), 20 failed to export" in log, log


def _report_span(collector: CollectorProcess, service: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for listed in recent_traces(collector, service):
            if listed["root_name"] == "tierscope.agent.report":
                return fetch_trace(collector, listed["trace_id"], spans=1)[0]
        time.sleep(0.3)
    raise AssertionError("no tierscope.agent.report span arrived")


def _queue(
    url: str, key: str | None, stats: AgentStats, **options: Any
) -> tuple[TracerProvider, ExportQueue]:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "export-test"}), shutdown_on_exit=False
    )
    queue = ExportQueue(
        SpanEncoder(),
        OtlpHttpSender(f"{url}/v1/traces", ingest_key=key),
        stats,
        **{"schedule_delay": 0.05, **options},
    )
    provider.add_span_processor(queue)
    return provider, queue


@pytest.mark.parametrize("status", ["503", "429"])
def test_retry_after_is_honoured_and_the_batch_then_delivered(
    collector: CollectorProcess, proxy: FaultProxy, status: str
) -> None:
    stats = AgentStats()
    provider, queue = _queue(proxy.url, collector.credentials()["ingest_key"], stats, export_deadline=10)
    proxy.mode = status
    provider.get_tracer("t").start_span("GET /retry").end()
    deadline = time.monotonic() + 5
    while not proxy.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.mode = "pass"
    assert queue.force_flush(10_000)
    provider.shutdown()
    (first, refused), (second, passed) = proxy.requests[:2]
    assert (refused, passed) == (status, "pass")
    assert second - first >= 0.95  # Retry-After: 1
    assert stats.spans_exported == 1
    assert stats.export_retries == 1
    assert stats.spans_failed == 0


def test_spans_refused_one_by_one_by_the_collector_are_counted(collector: CollectorProcess) -> None:
    stats = AgentStats()
    provider, queue = _queue(collector.url, collector.credentials()["ingest_key"], stats)
    tracer = provider.get_tracer("t")
    tracer.start_span("GET /fine").end()
    four_days_ago = time.time_ns() - 4 * 86400 * 10**9  # older than the collector accepts
    tracer.start_span("GET /ancient", start_time=four_days_ago).end(end_time=four_days_ago + 10**6)
    assert queue.force_flush(10_000)
    provider.shutdown()
    assert stats.spans_rejected == 1
    assert stats.spans_exported == 1


def test_a_full_queue_drops_the_oldest_and_counts_without_blocking(proxy: FaultProxy) -> None:
    proxy.mode = "blackhole"
    stats = AgentStats()
    provider, _ = _queue(proxy.url, None, stats, max_queue_size=100, max_batch_size=10, shutdown_timeout=0.5)
    tracer = provider.get_tracer("t")
    started = time.perf_counter()
    for number in range(5000):
        tracer.start_span(f"span {number}").end()
    elapsed = time.perf_counter() - started
    assert stats.spans_dropped >= 5000 - 100 - 10  # all but a queue and a batch in flight
    assert elapsed < 5  # never waited on the black hole
    provider.shutdown()


def _sent_names(bodies: list[bytes]) -> list[str]:
    """Span names in the export requests the agent sent, in order."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    names = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(gzip.decompress(body))
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                names.extend(span.name for span in scope_spans.spans)
    return names


def test_a_full_queue_drops_the_oldest_spans_and_sends_the_newest(
    collector: CollectorProcess, proxy: FaultProxy
) -> None:
    stats = AgentStats()
    # No send before the flush (a long schedule delay, a batch larger than the queue):
    # 20 spans into a queue of 5.
    provider, queue = _queue(
        proxy.url,
        collector.credentials()["ingest_key"],
        stats,
        max_queue_size=5,
        max_batch_size=100,
        schedule_delay=60,
    )
    tracer = provider.get_tracer("t")
    for number in range(20):
        tracer.start_span(f"span {number}").end()
    assert queue.force_flush(10_000)
    provider.shutdown()
    assert _sent_names(proxy.bodies) == [f"span {number}" for number in range(15, 20)]
    assert stats.spans_dropped == 15
    assert stats.spans_exported == 5


@pytest.mark.parametrize("status", ["401", "403", "413"])
def test_a_batch_the_collector_can_never_accept_is_counted_and_not_retried(
    proxy: FaultProxy, status: str
) -> None:
    proxy.mode = status  # answered with Retry-After: 1, which must not tempt the agent
    stats = AgentStats()
    provider, queue = _queue(proxy.url, "wrong-key", stats, export_deadline=10)
    tracer = provider.get_tracer("t")
    tracer.start_span("GET /a").end()
    tracer.start_span("GET /b").end()
    started = time.monotonic()
    assert queue.force_flush(10_000)
    elapsed = time.monotonic() - started
    provider.shutdown()
    assert [mode for _, mode in proxy.requests] == [status]  # one request, no second try
    assert elapsed < 0.95  # did not wait for the Retry-After either
    assert stats.spans_failed == 2
    assert stats.export_retries == 0
    assert stats.spans_exported == 0


def test_without_retry_after_the_waits_between_retries_grow(proxy: FaultProxy) -> None:
    proxy.mode = "503 bare"
    stats = AgentStats()
    # Backoff 0.5 s, doubling, jitter ±20 %: tries at about 0, 0.5, 1.5 and 3.5 s;
    # the next wait (about 4 s) would pass the 6 s deadline, so the batch is given up.
    provider, queue = _queue(proxy.url, None, stats, export_deadline=6)
    provider.get_tracer("t").start_span("GET /backoff").end()
    assert queue.force_flush(20_000)
    provider.shutdown()
    times = [when for when, _ in proxy.requests]
    assert len(times) >= 4, times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)][:3]
    # A loaded machine only lengthens waits: lower bounds are exact, upper ones generous.
    for gap, backoff in zip(gaps, (0.5, 1.0, 2.0), strict=True):
        assert backoff * 0.8 - 0.01 <= gap <= backoff * 1.2 + 2.0, gaps
    assert stats.export_retries == len(times) - 1
    assert stats.spans_failed == 1


def test_an_export_that_raises_counts_its_batch_as_failed_and_the_queue_goes_on(
    collector: CollectorProcess, swallowed_errors: list[BaseException]
) -> None:
    stats = AgentStats()
    provider, queue = _queue(collector.url, collector.credentials()["ingest_key"], stats)
    sender = queue._sender
    send = sender.send

    def broken(body: bytes, deadline: float) -> Any:
        raise RuntimeError("sender broke")

    sender.send = broken  # type: ignore[method-assign]
    tracer = provider.get_tracer("t")
    tracer.start_span("GET /lost-1").end()
    tracer.start_span("GET /lost-2").end()
    assert queue.force_flush(10_000)  # flush waiters are released even so
    assert stats.spans_failed == 2
    assert [str(error) for error in swallowed_errors] == ["sender broke"]
    swallowed_errors.clear()  # provoked on purpose (in this process, and its copy in the file)
    Path(os.environ["TIERSCOPE_AGENT_ERRORS_FILE"]).unlink(missing_ok=True)

    sender.send = send  # type: ignore[method-assign]
    tracer.start_span("GET /after").end()
    assert queue.force_flush(10_000)
    provider.shutdown()
    assert stats.spans_exported == 1
    assert stats.spans_failed == 2


STATUS_CASES = {
    "delta seconds": ("7", 7.0),
    "an HTTP date 30 s ahead": (None, 30.0),
    "nothing": ("", None),
    "garbage": ("soon", None),
}


@pytest.mark.parametrize(("header", "seconds"), STATUS_CASES.values(), ids=STATUS_CASES.keys())
def test_retry_after_values(header: str | None, seconds: float | None) -> None:
    import email.utils

    now = time.time()
    if header is None:
        header = email.utils.formatdate(now + 30, usegmt=True)
    parsed = parse_retry_after(header, now=now)
    if seconds is None:
        assert parsed is None
    else:
        assert parsed == pytest.approx(seconds, abs=1.0)


def test_partial_success_is_read_from_the_response() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    message = ExportTraceServiceResponse()
    message.partial_success.rejected_spans = 3
    message.partial_success.error_message = "timestamp_out_of_range"
    assert parse_partial_success(message.SerializeToString()) == (3, "timestamp_out_of_range")
    assert parse_partial_success(b"") == (0, "")


def test_losses_are_logged_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    stats = AgentStats(clock=lambda: now[0])
    assert not stats.maybe_log()  # nothing lost: nothing to say
    stats.add("spans_dropped", 5)
    assert stats.maybe_log()
    stats.add("spans_failed", 7)
    now[0] += 59
    assert not stats.maybe_log()  # within the minute
    now[0] += 2
    assert stats.maybe_log()
    now[0] += 120
    assert not stats.maybe_log()  # no new losses
    warnings = [r.getMessage() for r in caplog.records if r.name == "tierscope.agent"]
    assert warnings == [
        "tierscope agent: 5 spans dropped (queue full), 0 failed to export, "
        "0 rejected by the collector so far (0 exported)",
        "tierscope agent: 5 spans dropped (queue full), 7 failed to export, "
        "0 rejected by the collector so far (0 exported)",
    ]
