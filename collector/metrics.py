"""The collector's own metrics, served at ``GET /metrics`` for Prometheus.

Metrics live in a registry owned by the app (never the process-global one), so
two collectors in one process, as in tests, do not share counters.

With several worker processes (``TIERSCOPE_WORKERS``), each worker writes its
samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode, set up by ``tierscope up``), and whichever worker answers a
scrape reports the sum over all of them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROCESS_DIR)
    return Path(value) if value else None


def forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges of worker processes that no longer exist (a worker
    killed and replaced would otherwise count its in-flight requests forever)."""
    for path in directory.glob("gauge_live*_*.db"):
        match = re.search(r"_(\d+)\.db$", path.name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:
            pass


def exposition(registry: CollectorRegistry) -> bytes:
    """The text format for a scrape: this worker's registry, or all workers'."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(registry)
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined, path=str(directory))
    return generate_latest(combined)


# Request and store latencies span sub-millisecond reads to multi-second stalls.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.spans_accepted = Counter(
            "tierscope_spans_accepted",
            "Spans stored durably (acknowledged with 200).",
            ["tenant"],
            registry=r,
        )
        self.spans_rejected = Counter(
            "tierscope_spans_rejected",
            "Spans not stored, by reason: refused one by one (partial success), or in a "
            "decoded request the store could not take (store_unavailable).",
            ["reason"],
            registry=r,
        )
        self.requests_refused = Counter(
            "tierscope_requests_refused",
            "Whole ingest requests refused, by reason (the spans they carried were not stored).",
            ["reason"],
            registry=r,
        )
        self.spans_duplicate = Counter(
            "tierscope_spans_duplicate", "Spans received again and stored only once.", registry=r
        )
        self.attributes_truncated = Counter(
            "tierscope_attributes_truncated", "Attribute values cut to the size limit.", registry=r
        )
        self.requests = Counter(
            "tierscope_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "tierscope_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_write_group = Histogram(
            "tierscope_store_write_group_requests",
            "Requests whose spans one store write held (concurrent requests are written together).",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
            registry=r,
        )
        self.store_write_latency = Histogram(
            "tierscope_store_write_duration_seconds",
            "Time to write one request's spans to the store, COMMIT included.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "tierscope_http_requests_in_flight",
            "HTTP requests being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight_bytes = Gauge(
            "tierscope_ingest_bytes_in_flight",
            "Decompressed request bytes held now (bounded by TIERSCOPE_MAX_INFLIGHT_BYTES per worker).",
            registry=r,
            multiprocess_mode="livesum",
        )
