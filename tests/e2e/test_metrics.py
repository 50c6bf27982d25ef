"""What /metrics tells an operator after real traffic."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess


def samples(collector: CollectorProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{collector.url}/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_accepted_rejected_refused_and_time(collector: CollectorProcess) -> None:
    key = collector.credentials()["ingest_key"]
    before = samples(collector)
    good = otlp.request([otlp.span(), otlp.span(), otlp.span(start_ns=0)]).SerializeToString()
    assert otlp.post(collector.url, key, good).status_code == 200
    assert otlp.post(collector.url, key, b"garbage!").status_code == 400
    assert otlp.post(collector.url, None, good).status_code == 401
    after = samples(collector)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tierscope_spans_accepted_total", tenant="default") == 2
    assert delta("tierscope_spans_rejected_total", reason="timestamp_out_of_range") == 1
    assert delta("tierscope_requests_refused_total", reason="bad_request") == 1
    assert delta("tierscope_requests_refused_total", reason="unauthenticated") == 1
    assert delta("tierscope_http_requests_total", route="/v1/traces", status="200") == 1
    assert delta("tierscope_http_requests_total", route="/v1/traces", status="400") == 1
    assert delta("tierscope_http_request_duration_seconds_count", route="/v1/traces") == 3
    assert delta("tierscope_store_write_duration_seconds_count") == 1
    assert value(after, "tierscope_http_requests_in_flight") >= 1  # the scrape itself
    assert "tierscope_ingest_bytes_in_flight" in {name for name, _ in after}


def test_health_and_readiness(collector: CollectorProcess) -> None:
    assert httpx.get(f"{collector.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{collector.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_two_workers_report_one_sum(database_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    collector = CollectorProcess(tmp_path, database_url=database_factory(), env={"TIERSCOPE_WORKERS": "2"})
    with collector:
        key = collector.credentials()["ingest_key"]
        metrics_dir = tmp_path / "metrics"

        def counting() -> list[Path]:
            # Each worker keeps its samples in its own file; both must have counted.
            files = metrics_dir.glob("counter_*.db")
            return [f for f in files if b"tierscope_spans_accepted" in f.read_bytes()]

        # The kernel deals connections to the workers as it likes (a busy host
        # may give one of them twenty in a row): send until both have counted.
        sent = 0
        while sent < 200 and (sent < 20 or len(counting()) < 2):
            body = otlp.request([otlp.span(trace_id=os.urandom(16))]).SerializeToString()
            assert (
                httpx.post(
                    f"{collector.url}/v1/traces",
                    content=body,
                    headers={
                        "Content-Type": otlp.PROTOBUF,
                        "Authorization": f"Bearer {key}",
                        "Connection": "close",
                    },
                ).status_code
                == 200
            )
            sent += 1
        text = httpx.get(f"{collector.url}/metrics").text
        assert len(counting()) == 2, f"both workers took some of {sent} requests"
    match = re.search(r'^tierscope_spans_accepted_total\{tenant="default"\} (\S+)$', text, re.M)
    assert match is not None
    assert float(match.group(1)) == sent
