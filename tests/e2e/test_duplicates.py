"""Retries and reordering store each span once (RELIABILITY.md T-07)."""

from __future__ import annotations

import os
import random

import psycopg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess


def count(collector: CollectorProcess, trace_ids: list[bytes]) -> tuple[int, int]:
    with psycopg.connect(collector.database_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT span_id) FROM spans WHERE trace_id = ANY(%s)", (trace_ids,)
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def test_the_same_request_twice_stores_each_span_once(collector: CollectorProcess) -> None:
    key = collector.credentials()["ingest_key"]
    trace_id = os.urandom(16)
    body = otlp.request([otlp.span(f"span {i}", trace_id=trace_id) for i in range(20)]).SerializeToString()
    first = otlp.post(collector.url, key, body)
    second = otlp.post(collector.url, key, body, gzip=True)  # a retry may differ in encoding
    assert first.status_code == second.status_code == 200
    assert ExportTraceServiceResponse.FromString(second.content).partial_success.rejected_spans == 0
    assert count(collector, [trace_id]) == (20, 20)
    metrics = otlp.get_trace(collector.url, collector.credentials()["api_token"], trace_id)
    assert len(metrics.json()["spans"]) == 20


def test_overlapping_shuffled_batches_store_each_span_once(collector: CollectorProcess) -> None:
    """Spans re-batched differently on retry (as a proxy may do), out of order,
    with duplicates inside one request too."""
    key = collector.credentials()["ingest_key"]
    trace_ids = [os.urandom(16) for _ in range(5)]
    spans = [otlp.span(f"op {i}", trace_id=trace_ids[i % 5]) for i in range(100)]
    rnd = random.Random(7)
    for _ in range(6):
        sample = rnd.sample(spans, 40)
        sample.append(sample[0])  # the same span twice in one request
        response = otlp.post(collector.url, key, otlp.request(sample).SerializeToString())
        assert response.status_code == 200
    rnd.shuffle(spans)
    assert otlp.post(collector.url, key, otlp.request(spans).SerializeToString()).status_code == 200
    assert count(collector, trace_ids) == (100, 100)


def test_duplicates_are_counted_in_metrics(collector: CollectorProcess) -> None:
    import httpx

    key = collector.credentials()["ingest_key"]
    body = otlp.request([otlp.span() for _ in range(3)]).SerializeToString()

    def duplicates() -> float:
        for line in httpx.get(f"{collector.url}/metrics").text.splitlines():
            if line.startswith("tierscope_spans_duplicate_total"):
                return float(line.split()[-1])
        return 0.0

    before = duplicates()
    assert otlp.post(collector.url, key, body).status_code == 200
    assert otlp.post(collector.url, key, body).status_code == 200
    assert duplicates() - before == 3
